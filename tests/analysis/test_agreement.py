"""Named FID protocols on generation rows, the analysis' refusal to mix them, and `analyze --agreement A B`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.agreement import protocol_agreement
from analysis.comparable import IncomparableRowsError, select_comparable
from study.evaluation import PROTOCOLS, protocol_name, row_protocol

ENCODERS = [f"enc-{i}" for i in range(8)]
SCREEN = {"protocol": "screen-10k-sde50", "n_samples": 10_000, "sampler_steps": 50}
FULL = {"protocol": "adm-50k-sde250", "n_samples": 50_000, "sampler_steps": 250}


def _rows(settings: dict, fid_of, encoders=ENCODERS, seeds=(0,), step=100_000) -> list[dict]:
    rows = []
    for i, enc in enumerate(encoders):
        for method in ("repa", "irepa"):
            for seed in seeds:
                rows.append({"model": "SiT-B/2", "method": method, "encoder": enc, "seed": seed, "step": step,
                             "fid": fid_of(i, method, seed), "extractor": "inception", "sampler_mode": "sde",
                             "cfg_scale": 1.0, "reference": "adm-ref", **settings})
    return rows


def _full(i, method, seed):
    return 20.0 + 2.0 * i - (3.0 if method == "irepa" else 0.0) + 0.01 * seed


def test_protocol_names():
    assert protocol_name({**PROTOCOLS["adm-50k-sde250"]}) == "adm-50k-sde250"
    assert protocol_name({"extractor": "synthetic", "n_samples": 256, "mode": "sde", "num_steps": 20,
                          "cfg_scale": 1.0}) == "synthetic-256-sde20"
    assert protocol_name({**PROTOCOLS["adm-50k-sde250"], "num_steps": 100}) == "inception-50000-sde100"
    row = {"extractor": "inception", "n_samples": 10_000, "sampler_mode": "sde", "sampler_steps": 50,
           "cfg_scale": 1.0}
    assert row_protocol(row) == "screen-10k-sde50"
    assert row_protocol({**row, "cfg_scale": 2.0}) == "inception-10000-sde50-cfg2"
    assert row_protocol({**row, "sample_rounding": "round"}) == "screen-10k-sde50-round"


def test_analysis_refuses_to_mix_protocols():
    gen = pd.DataFrame(_rows(FULL, _full) + _rows(SCREEN, lambda i, m, s: _full(i, m, s) + 5))
    with pytest.raises(IncomparableRowsError, match="differ in 'protocol'"):
        select_comparable(gen)
    assert set(select_comparable(gen, {"protocol": "adm-50k-sde250"}).rows["n_samples"]) == {50_000}


def test_agreement_of_a_faithful_screen_on_the_runs_under_both():
    # the screen sees only 6 of the 8 encoders, with a biased but order-keeping FID, and 2 seeds (averaged)
    screen = _rows(SCREEN, lambda i, m, s: 1.5 * _full(i, m, s) + 4.0, encoders=ENCODERS[:6], seeds=(0, 1))
    gen = pd.DataFrame(_rows(FULL, _full) + screen)
    res = protocol_agreement(gen, "screen-10k-sde50", "adm-50k-sde250")
    assert len(res.points) == 6 * 2 and set(res.points["n_seeds"]) == {1}  # paired per run: seed 0 only
    enc = res.encoders.set_index(["model", "train_method", "statistic"])
    for method in ("repa", "irepa"):
        for stat in ("spearman", "kendall"):
            row = enc.loc[("SiT-B/2", method, stat)]
            assert row["n"] == 6 and row["r"] == pytest.approx(1.0)
            assert np.isnan(row["ci_low"]) and "no interval" in row["ci_note"]  # not a zero-width [1, 1]
    assert ("all", "all", "spearman") in enc.index
    m = res.methods.iloc[0]
    assert (m["baseline"], m["train_method"], m["n_encoders"], m["same_order"]) == ("repa", "irepa", 6, 1.0)
    # 6 of 6 agree: the exact interval is [0.025 ** (1/6), 1], not a zero-width [1, 1]
    assert (m["same_order_ci_low"], m["same_order_ci_high"]) == pytest.approx((0.025 ** (1 / 6), 1.0))


def test_agreement_detects_a_screen_that_scrambles_the_ranking():
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(ENCODERS))
    # the screen reverses the encoder order and flips REPA vs iREPA for half of the encoders
    flip = {i: (0.5 if perm[i] % 2 else -0.5) for i in range(len(ENCODERS))}
    screen = _rows(SCREEN, lambda i, m, s: 60.0 - 2.0 * i + (flip[i] if m == "irepa" else 0.0))
    res = protocol_agreement(pd.DataFrame(_rows(FULL, _full) + screen), "screen-10k-sde50", "adm-50k-sde250")
    per = res.encoders[(res.encoders["model"] == "SiT-B/2") & (res.encoders["statistic"] == "spearman")]
    assert (per["r"] < -0.9).all()
    assert res.methods.iloc[0]["same_order"] == pytest.approx(0.5)
    lo, hi = res.methods.iloc[0][["same_order_ci_low", "same_order_ci_high"]]
    assert lo < 0.5 < hi


def test_agreement_errors_name_what_to_do():
    gen = pd.DataFrame(_rows(FULL, _full))
    with pytest.raises(IncomparableRowsError, match=r"no generation rows under protocol 'screen-10k-sde50'.*"
                                                     r"'adm-50k-sde250' \(16 rows\)"):
        protocol_agreement(gen, "screen-10k-sde50", "adm-50k-sde250")
    other = pd.DataFrame(_rows(FULL, _full) + _rows(SCREEN, _full, step=50_000))
    with pytest.raises(IncomparableRowsError, match="no run was evaluated under both"):
        protocol_agreement(other, "screen-10k-sde50", "adm-50k-sde250")
    with pytest.raises(IncomparableRowsError, match="no 'protocol' column"):
        protocol_agreement(gen.drop(columns="protocol"), "a", "b")
    mixed = pd.DataFrame(_rows(FULL, _full) + _rows({**SCREEN, "reference": "dataset"}, _full)
                         + _rows(SCREEN, _full))
    with pytest.raises(IncomparableRowsError, match="protocol 'screen-10k-sde50': .*differ in 'reference'"):
        protocol_agreement(mixed, "screen-10k-sde50", "adm-50k-sde250")


def test_analyze_agreement_cli(tmp_path):
    from jobs.cli import cli
    from results import ResultStore

    store = ResultStore(tmp_path / "runs")
    store.write("generation", _rows(FULL, _full) + _rows(SCREEN, lambda i, m, s: _full(i, m, s) * 1.2))
    out = tmp_path / "agree"
    res = CliRunner().invoke(cli, ["analyze", "--root", str(store.root), "--agreement", "screen-10k-sde50",
                                   "adm-50k-sde250", "--n-boot", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "encoder rankings" in res.output and "spearman" in res.output and "same_order" in res.output
    table = pd.read_csv(out / "agreement_encoders.csv")
    assert set(table["statistic"]) == {"spearman", "kendall"} and np.allclose(table["r"], 1.0)
    assert (out / "agreement_methods.csv").is_file() and (out / "agreement_points.csv").is_file()
    bad = CliRunner().invoke(cli, ["analyze", "--root", str(store.root), "--agreement", "x", "x"])
    assert bad.exit_code != 0 and "two different protocols" in bad.output
