"""analysis.correlate against scipy, bootstrap coverage, and the refusal to mix incomparable rows."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import correlate
from analysis.comparable import IncomparableRowsError, parse_select, quality_column, select_comparable


def _data(n=20, seed=0, rho=-0.7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = rho * x + np.sqrt(1 - rho ** 2) * rng.normal(size=n)
    return pd.DataFrame({"encoder": [f"e{i}" for i in range(n)], "lds": x, "fid": 20 + 3 * y,
                         "model": np.where(np.arange(n) % 2, "B", "XL")})


@pytest.mark.parametrize("method,fn", [("pearson", stats.pearsonr), ("spearman", stats.spearmanr),
                                       ("kendall", stats.kendalltau)])
def test_matches_scipy(method, fn):
    df = _data()
    out = correlate(df, "lds", method=method, n_boot=200)
    assert list(out.columns) == ["x", "y", "method", "n", "r", "p_value", "ci_low", "ci_high"]
    ref = fn(df["lds"], df["fid"])
    assert out["r"].item() == pytest.approx(ref.statistic, abs=1e-12)
    assert out["p_value"].item() == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["ci_low"].item() <= out["r"].item() <= out["ci_high"].item()
    assert out["n"].item() == 20 and out["method"].item() == method


def test_by_group_and_missing_values():
    df = _data(n=30)
    df.loc[0, "lds"] = np.nan
    out = correlate(df, ["lds"], by="model", n_boot=0)
    assert list(out["model"]) == ["B", "XL"]
    assert list(out["n"]) == [15, 14]
    for model, part in df.dropna().groupby("model"):
        assert out.set_index("model").loc[model, "r"] == pytest.approx(np.corrcoef(part["lds"], part["fid"])[0, 1])


def test_bootstrap_is_seeded():
    df = _data()
    a = correlate(df, "lds", n_boot=300, seed=1)
    b = correlate(df, "lds", n_boot=300, seed=1)
    c = correlate(df, "lds", n_boot=300, seed=2)
    assert a.equals(b)
    assert a["ci_low"].item() != c["ci_low"].item()


def test_bootstrap_interval_coverage():
    """The 95% interval contains the true correlation in roughly 95% of repeated samples (n = 40)."""
    rho, hits, trials = -0.6, 0, 150
    for t in range(trials):
        row = correlate(_data(n=40, seed=100 + t, rho=rho), "lds", n_boot=400, seed=t).iloc[0]
        hits += row["ci_low"] <= rho <= row["ci_high"]
    assert 0.85 <= hits / trials <= 0.99, hits / trials


def test_degenerate_inputs():
    df = pd.DataFrame({"lds": [1.0, 1.0, 1.0, 1.0], "fid": [1.0, 2.0, 3.0, 4.0]})
    out = correlate(df, "lds")
    assert np.isnan(out["r"].item()) and out["n"].item() == 4
    with pytest.raises(ValueError, match="unknown correlation method"):
        correlate(df, "lds", method="cosine")
    with pytest.raises(KeyError, match="not in the table"):
        correlate(df, "rmsc")


# ---------------------------------------------------------------------------------------------- comparability
def _gen(**overrides):
    rows = []
    for enc in ("a", "b", "c"):
        for step in (100, 200):
            rows.append({"job_id": f"{enc}-{step}", "encoder": enc, "model": "smoke", "method": "repa", "seed": 0,
                         "step": step, "n_samples": 64, "reference": "ref1", "extractor": "synthetic",
                         "sampler_mode": "sde", "sampler_steps": 20, "cfg_scale": 1.0,
                         "fd_synthetic": 10.0 + step / 100 + ord(enc)})
    df = pd.DataFrame(rows)
    for k, v in overrides.items():
        df.loc[0, k] = v
    return df


def test_latest_common_step_is_chosen_and_others_reported():
    sel = select_comparable(_gen())
    assert sel.quality == "fd_synthetic"
    assert set(sel.rows["step"]) == {200} and len(sel.rows) == 3
    assert len(sel.excluded) == 3 and sel.excluded["reason"].str.contains("step != 200").all()
    assert sel.chosen["step"] == 200 and sel.chosen["n_samples"] == 64
    assert "excluded 3 row(s)" in sel.summary()


def test_refuses_mixed_sample_counts_unless_selected():
    gen = _gen(n_samples=32)
    with pytest.raises(IncomparableRowsError, match="n_samples.*--select n_samples=VALUE"):
        select_comparable(gen)
    sel = select_comparable(gen, {"n_samples": 64})
    assert (sel.rows["n_samples"] == 64).all()
    assert sel.excluded["reason"].str.contains("n_samples != 64").sum() == 1
    mixed = select_comparable(gen, parse_select(["n_samples=*"]))
    assert any("mixed on request" in n for n in mixed.notes)


@pytest.mark.parametrize("column,value", [("sampler_mode", "ode"), ("reference", "ref2"), ("cfg_scale", 1.5),
                                          ("sampler_steps", 50)])
def test_refuses_other_incomparable_columns(column, value):
    with pytest.raises(IncomparableRowsError, match=column):
        select_comparable(_gen(**{column: value}))


def test_refuses_runs_without_a_common_step_unless_selected():
    gen = _gen()
    gen = gen[~((gen.encoder == "a") & (gen.step == 200))]
    gen = gen[~((gen.encoder == "b") & (gen.step == 100))]
    with pytest.raises(IncomparableRowsError, match="no training step is common"):
        select_comparable(gen)
    sel = select_comparable(gen, {"step": 200})
    assert set(sel.rows["encoder"]) == {"b", "c"}


def test_refuses_mixed_extractors():
    gen = _gen()
    gen["fid"] = np.nan
    gen.loc[0, "fid"] = 30.0
    with pytest.raises(IncomparableRowsError, match="several quality measures"):
        quality_column(gen)
    assert quality_column(gen, "fd_synthetic") == "fd_synthetic"
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        parse_select(["step"])
    assert parse_select(["step=100", "model=B", "cfg_scale=1.5"]) == {"step": 100, "model": "B", "cfg_scale": 1.5}
