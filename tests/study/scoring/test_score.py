"""score_encoder rows, CLS-mix identities as seen by scoring, writing rows, and the CLI commands."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from study.scoring import score_encoder, spatial_summary, write_rows

DATA = "synthetic:n=30,size=32,classes=3"
ENCODER = "dinov2-vit-b"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


def _score(name, cache, **kw):
    return score_encoder(name, DATA, weights="tiny", device="cpu", batch_size=10, cache_root=cache, **kw)


@pytest.fixture(scope="module")
def base_row(cache):
    return _score(ENCODER, cache)


def test_row_has_the_table_columns(base_row):
    row = base_row
    for key in ("encoder", "encoder_key", "weights", "dataset", "dataset_id", "split", "n_images", "lds", "cds",
                "srss", "rmsc", "lp_top1", "lp_top1_cls", "mask_source", "features_val_seconds", "probe_seconds",
                "total_seconds", "git_commit", "versions", "host"):
        assert key in row, key
    assert row["encoder"] == ENCODER and row["weights"] == "tiny" and row["dataset"] == DATA
    assert row["split"] == "val" and row["dataset_id"].endswith(":val") and row["n_images"] == 30
    assert row["lp_n_train"] == 30 and row["lp_train_split"] == "train"
    assert row["mask_source"].startswith("dataset:synthetic") and row["n_srss"] == 30
    for key in ("lds", "cds", "srss", "rmsc"):
        assert math.isfinite(row[key]), key
    assert 0.0 <= row["lp_top1"] <= 1.0 and 0.0 <= row["lp_top1_cls"] <= 1.0
    assert row["encoder_key"].startswith(f"{ENCODER}|tiny|")


def test_clsmix_zero_scores_like_the_base_encoder(base_row, cache):
    row = _score(f"{ENCODER}@clsmix=0", cache)
    assert row["encoder"] == f"{ENCODER}@clsmix=0" and row["encoder_key"] != base_row["encoder_key"]
    for key in ("lds", "cds", "srss", "rmsc", "lp_top1", "lp_top1_cls"):
        assert row[key] == pytest.approx(base_row[key], abs=1e-6), key


def test_clsmix_one_convex_leaves_no_spatial_structure(base_row, cache):
    from study.scoring import extract_encoder_features

    name = f"{ENCODER}@clsmixc=1"
    row = _score(name, cache)
    # every patch token is the CLS token: all pairs have K = 1
    for key in ("lds", "cds", "srss", "rmsc"):
        assert row[key] == pytest.approx(0.0, abs=1e-5), key
    fs = extract_encoder_features(name, DATA, "val", weights="tiny", device="cpu", cache_root=cache)
    np.testing.assert_allclose(fs.mean.astype(np.float32), fs.cls.astype(np.float32), atol=2e-3)
    assert row["lp_top1_cls"] == pytest.approx(base_row["lp_top1_cls"], abs=1e-9)  # CLS itself is unchanged
    assert abs(row["lp_top1"] - row["lp_top1_cls"]) <= 1 / 30 + 1e-9


def test_srss_min_fraction_filters_images(base_row, cache):
    from study.scoring import extract_encoder_features

    fs = extract_encoder_features(ENCODER, DATA, "val", weights="tiny", device="cpu", cache_root=cache)
    frac = fs.fg_tokens / 256
    expected = int(((frac >= 0.25) & (frac <= 0.75)).sum())
    summary = spatial_summary(fs, srss_min_fraction=0.25)
    assert summary["n_srss"] == expected < 30
    assert summary["n_lds"] == 30 and summary["lds"] == pytest.approx(base_row["lds"])


def test_probe_needs_a_train_split(cache):
    from study.data import open_dataset

    ds = open_dataset(DATA, "val")
    row = score_encoder(ENCODER, ds, probe=False, weights="tiny", device="cpu", cache_root=cache)
    assert math.isnan(row["lp_top1"]) and math.isfinite(row["lds"])
    with pytest.raises(ValueError, match="train split"):
        score_encoder(ENCODER, ds, weights="tiny", device="cpu", cache_root=cache)


def test_write_rows_to_the_store_and_to_a_file(base_row, tmp_path):
    from results import ResultStore

    path = write_rows([base_row])
    assert path.exists()
    df = ResultStore().read("encoders")
    assert list(df["encoder"]) == [ENCODER] and df["lds"].iloc[0] == pytest.approx(base_row["lds"])
    out = write_rows([base_row, {**base_row, "encoder": "other"}], tmp_path / "rows.parquet")
    assert list(pd.read_parquet(out)["encoder"]) == [ENCODER, "other"]
    with pytest.raises(ValueError, match="parquet"):
        write_rows([base_row], tmp_path / "rows.csv")


def test_cli_features_and_score(tmp_path):
    from jobs.cli import cli

    runner = CliRunner()
    data = "synthetic:n=12,size=32,classes=3"
    res = runner.invoke(cli, ["encoders", "features", ENCODER, "--data", data, "--split", "val", "--weights", "tiny",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "12 images" in res.output and "cache:" in res.output
    out = tmp_path / "scores.parquet"
    res = runner.invoke(cli, ["encoders", "score", ENCODER, f"{ENCODER}@clsmix=0.5", "--data", data, "--weights",
                              "tiny", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert list(df["encoder"]) == [ENCODER, f"{ENCODER}@clsmix=0.5"] and (df["n_images"] == 12).all()
    res = runner.invoke(cli, ["encoders", "score", "no-such-encoder", "--data", data, "--weights", "tiny"])
    assert res.exit_code == 1 and "unknown encoder 'no-such-encoder'" in res.output and "Traceback" not in res.output
