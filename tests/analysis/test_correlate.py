"""analysis.correlate against scipy, its Fisher-z intervals (by hand, coverage, none below the minimum number of
encoders), the secondary bootstrap, and the refusal to mix incomparable rows."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import correlate
from analysis.correlate import COLUMNS, MIN_ENCODERS, detectable_r, fisher_interval
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
    assert list(out.columns) == COLUMNS == ["x", "y", "method", "n", "r", "p_value", "ci_low", "ci_high", "ci_method",
                                            "ci_note", "mdr", "underpowered", "boot_low", "boot_high"]
    ref = fn(df["lds"], df["fid"])
    assert out["r"].item() == pytest.approx(ref.statistic, abs=1e-12)
    assert out["p_value"].item() == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["ci_low"].item() <= out["r"].item() <= out["ci_high"].item()
    assert out["boot_low"].item() <= out["r"].item() <= out["boot_high"].item()
    assert out["n"].item() == 20 and out["method"].item() == method and out["ci_note"].item() == ""


def test_fisher_intervals_by_hand():
    """Pearson: tanh(atanh(r) +- 1.96 / sqrt(n - 3)); Spearman: Bonett-Wright se; Kendall: Fieller se."""
    q = stats.norm.ppf(0.975)
    r, n = -0.852, 27
    assert fisher_interval(r, n) == pytest.approx((np.tanh(np.arctanh(r) - q / np.sqrt(24)),
                                                  np.tanh(np.arctanh(r) + q / np.sqrt(24))))
    assert fisher_interval(r, n) == pytest.approx((-0.931, -0.698), abs=5e-4)
    se_s = np.sqrt((1 + r * r / 2) / 24)
    assert fisher_interval(r, n, "spearman")[0] == pytest.approx(np.tanh(np.arctanh(r) - q * se_s))
    assert fisher_interval(r, n, "kendall")[1] == pytest.approx(np.tanh(np.arctanh(r) + q * np.sqrt(0.437 / 23)))
    assert np.isnan(fisher_interval(1.0, 10)).all()  # not a zero-width [1, 1]
    assert detectable_r(27) == pytest.approx(np.tanh((q + stats.norm.ppf(0.8)) / np.sqrt(24)))


def test_no_interval_below_the_minimum_number_of_encoders():
    """The issue's case: 3 encoders gave a bootstrap "[-1.00, -0.97]"; now no interval, and the note says why."""
    df = pd.DataFrame({"lds": [0.1, 0.2, 0.3, 0.45], "fid": [30.0, 26.0, 21.0, 20.0]})
    for n in (3, 4):
        row = correlate(df.head(n), "lds", n_boot=500).iloc[0]
        assert np.isfinite(row["r"]) and row["n"] == n
        assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"]) and np.isnan(row["boot_low"])
        assert row["ci_note"] == f"n = {n} < {MIN_ENCODERS}: no interval" and row["underpowered"]
    five = correlate(_data(n=5), "lds").iloc[0]
    assert np.isfinite(five["ci_low"]) and five["ci_note"] == "" and five["mdr"] > 0.9
    assert correlate(_data(n=5), "lds", method="kendall").iloc[0]["ci_note"] == ""


def test_fisher_interval_coverage():
    """The 95% interval holds the true correlation in about 95% of repeated samples, even at 8 encoders."""
    for n, rho in ((8, -0.6), (27, -0.85)):
        hits = [correlate(_data(n=n, seed=1000 + t, rho=rho), "lds").iloc[0] for t in range(400)]
        rate = np.mean([h["ci_low"] <= rho <= h["ci_high"] for h in hits])
        assert 0.92 <= rate <= 0.98, (n, rate)


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
    assert a["boot_low"].item() != c["boot_low"].item() and a["ci_low"].item() == c["ci_low"].item()
    assert np.isnan(correlate(df, "lds").iloc[0]["boot_low"])  # n_boot=0: no bootstrap


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
