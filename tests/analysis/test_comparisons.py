"""analysis.comparisons: seed spread, the pooled seed-noise yardstick, the paper's comparisons with t intervals,
CLS-mixing directions and the findings sentences; and their place in analyze's report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.comparisons import NO_NOISE, baseline_methods, clsmix_direction, compare, findings, noise_sd, seed_spread
from analysis.design import design_sentence, design_table
from analysis.report import analyze, method_gain, study_points
from results import NO_ENCODER

Q = "fd_synthetic"
ENCODERS = ["mini-sup", "mini-mim", "mini-random", "mini-sup@clsmix=0.5", "mini-sup@clsmix=1.0"]
#: planted cell means: repa with mini-sup 50 below vanilla; CLS mixing makes mini-sup worse; irepa = repa
MEANS = {"mini-sup": 50.0, "mini-mim": 80.0, "mini-random": 95.0, "mini-sup@clsmix=0.5": 60.0,
         "mini-sup@clsmix=1.0": 70.0}
VANILLA = 100.0


def _gen(noise=None, seeds=(0, 1)):
    """Generation rows: vanilla once per seed (encoder none), repa and irepa per encoder; seed ``s`` of cell ``i``
    is the mean +- ``offsets[i]`` (deterministic) or the mean + N(0, noise) (random)."""
    rng = np.random.default_rng(7)
    cells = [("vanilla", NO_ENCODER, VANILLA)] + [(m, e, MEANS[e]) for m in ("repa", "irepa") for e in ENCODERS]
    rows = []
    for i, (method, enc, mean) in enumerate(cells):
        half = 0.5 + 0.25 * i  # a different spread per cell
        for seed in seeds:
            v = mean + (rng.normal(scale=noise) if noise else (half if seed == 0 else -half))
            rows.append({"job_id": f"{method}-{enc}-{seed}", "model": "SiT-mini", "method": method, "encoder": enc,
                         "seed": seed, "step": 200, "n_samples": 256, "reference": "synthetic-ref",
                         "extractor": "synthetic", "sampler_mode": "sde", "sampler_steps": 20, "cfg_scale": 1.0,
                         Q: v})
    return pd.DataFrame(rows)


def _enc():
    rows = []
    for e in ENCODERS:
        alpha = float(e.split("=")[1]) if "@" in e else 0.0
        base = {"mini-sup": (0.60, 0.40), "mini-mim": (0.35, 0.30), "mini-random": (0.15, 0.10)}[e.split("@")[0]]
        lp, lds = base[0] + 0.2 * alpha, base[1] - 0.2 * alpha
        rows.append({"job_id": f"score-{e}", "encoder": e, "dataset": "synthetic:n=64", "lp_top1": lp, "lds": lds,
                     "cds": lds / 8, "srss": lds + 0.05, "rmsc": 0.5 + lds})
    return pd.DataFrame(rows)


def _hand_noise(gen):
    """The pooled within-cell sd and df, computed directly."""
    ss, df = 0.0, 0
    for _, part in gen.groupby(["model", "method", "encoder"]):
        v = part[Q].to_numpy(float)
        ss += ((v - v.mean()) ** 2).sum()
        df += len(v) - 1
    return np.sqrt(ss / df), df


def _row(comp, question, a, b):
    hit = comp[(comp["question"] == question) & (comp["a"] == a) & (comp["b"] == b)]
    assert len(hit) == 1, (question, a, b, comp[["question", "a", "b"]])
    return hit.iloc[0]


def test_seed_spread_lists_each_seed():
    gen = _gen()
    spread = seed_spread(gen, Q)
    assert len(spread) == 11 and (spread["n_seeds"] == 2).all()
    van = spread[spread["method"] == "vanilla"].iloc[0]
    assert van["encoder"] == NO_ENCODER and van["per_seed"] == "s0=100.5, s1=99.5"
    assert van["mean"] == pytest.approx(100.0) and van["min"] == 99.5 and van["max"] == 100.5
    assert van["std"] == pytest.approx(np.sqrt(0.5))
    sup = spread[(spread["method"] == "repa") & (spread["encoder"] == "mini-sup")].iloc[0]
    assert sup["per_seed"] == "s0=50.75, s1=49.25"


def test_noise_sd_pools_the_cells():
    gen = _gen()
    sd, df = noise_sd(gen, Q)
    halves = 0.5 + 0.25 * np.arange(11)
    assert df == 11 and sd == pytest.approx(np.sqrt(np.mean(2 * halves ** 2)))
    assert (sd, df) == pytest.approx(_hand_noise(gen))
    one = noise_sd(gen[gen["seed"] == 0], Q)
    assert np.isnan(one[0]) and one[1] == 0


def test_compare_intervals_match_a_hand_computation():
    gen = _gen()
    comp = compare(gen, Q)
    sd, df = _hand_noise(gen)
    t = stats.t.ppf(0.975, df)
    assert baseline_methods(gen) == ["vanilla"]

    sup = _row(comp, "alignment vs vanilla", "repa / mini-sup", "vanilla")
    assert sup["diff"] == pytest.approx(-50.0)
    assert (sup["ci_low"], sup["ci_high"]) == pytest.approx((-50 - t * sd, -50 + t * sd))  # sqrt(1/2 + 1/2) = 1
    assert bool(sup["distinguishable"]) and sup["n_a"] == 2 and sup["n_b"] == 2 and sup["df"] == 11

    avg = _row(comp, "alignment vs vanilla", "repa / mean over 3 encoders", "vanilla")  # the plain encoders
    half = t * sd * np.sqrt(3 * (1 / 2) / 9 + 1 / 2)
    assert avg["diff"] == pytest.approx(np.mean([50, 80, 95]) - 100)
    assert (avg["ci_low"], avg["ci_high"]) == pytest.approx((avg["diff"] - half, avg["diff"] + half))
    assert avg["n_a"] == 6 and avg["n_b"] == 2

    ir = _row(comp, "iREPA vs REPA", "irepa / mini-sup", "repa / mini-sup")
    assert ir["diff"] == pytest.approx(0.0) and not bool(ir["distinguishable"])
    assert ir["ci_high"] == pytest.approx(t * sd)
    ir_avg = _row(comp, "iREPA vs REPA", "irepa / mean over 3 encoders", "repa / same encoders")
    assert ir_avg["ci_high"] == pytest.approx(t * sd * np.sqrt(3 * (1 / 2 + 1 / 2) / 9))
    assert not bool(ir_avg["distinguishable"])

    mix = _row(comp, "CLS mixing", "repa / mini-sup@clsmix=1.0", "repa / mini-sup")
    assert mix["diff"] == pytest.approx(20.0) and bool(mix["distinguishable"])
    counts = comp["question"].value_counts()
    assert counts["alignment vs vanilla"] == 2 * (5 + 1) and counts["iREPA vs REPA"] == 5 + 1
    assert counts["CLS mixing"] == 2 * 2
    assert NO_ENCODER not in " ".join(comp["a"])  # vanilla is only ever the baseline side


def test_compare_without_vanilla_or_second_seed():
    gen = _gen()
    no_van = compare(gen[gen["method"] != "vanilla"], Q)
    assert "alignment vs vanilla" not in set(no_van["question"]) and len(no_van) == 6 + 4
    one = compare(gen[gen["seed"] == 0], Q)
    assert len(one) == 22 and one["distinguishable"].isna().all() and one["ci_low"].isna().all()
    assert (one["note"] == NO_NOISE).all()
    sentences = findings(one, None, None, Q)
    assert "Only one seed per cell" in sentences[1]
    assert any("repa with mini-sup vs vanilla" in s and "no interval" in s for s in sentences)
    assert not any("distinguishable" in s for s in sentences[2:])


def test_clsmix_direction_says_lp_up_spatial_down_quality_worse():
    points = study_points(_gen(), Q, _enc())
    d = clsmix_direction(points, Q)
    repa = d[(d["method"] == "repa") & (d["base"] == "mini-sup")].set_index("y")
    assert set(repa.index) == {"lp_top1", "lds", "cds", "srss", "rmsc", Q}
    assert repa.loc["lp_top1", "direction"] == "up" and repa.loc["lp_top1", "slope"] == pytest.approx(0.2)
    assert (repa.loc[["lds", "cds", "srss", "rmsc"], "direction"] == "down").all()
    assert repa.loc[Q, "direction"] == "up" and repa.loc[Q, "slope"] == pytest.approx(20.0)
    assert (repa.loc[Q, "at_min"], repa.loc[Q, "at_max"], repa.loc[Q, "alpha_max"]) == pytest.approx((50, 70, 1.0))
    assert repa.loc[Q, "spearman"] == pytest.approx(1.0) and repa.loc[Q, "n"] == 3
    assert clsmix_direction(points[~points["encoder"].str.contains("@")], Q).empty
    # equal values along the curve (one probe accuracy for every alpha: controlled encoders) are flat, whatever
    # the least-squares fit rounds its slope to
    same = points.assign(lp_top1=np.where(points["encoder"].str.startswith("mini-sup"), 0.96484375, 0.5))
    flat = clsmix_direction(same, Q)
    flat = flat[(flat["method"] == "repa") & (flat["y"] == "lp_top1")].iloc[0]
    assert flat["direction"] == "flat" and flat["slope"] == 0.0


def test_findings_are_honest_sentences():
    gen, enc = _gen(), _enc()
    points = study_points(gen, Q, enc)
    corr = pd.DataFrame([{"study": "this study", "train_method": "repa", "model": "SiT-mini", "x": "lds", "y": Q,
                          "method": "pearson", "n": 5, "r": -0.91, "ci_low": -0.99, "ci_high": -0.35}])
    out = findings(compare(gen, Q), corr, clsmix_direction(points, Q), Q)
    assert "synthetic miniature" in out[0] and "not the paper" in out[0]
    sd, df = _hand_noise(gen)
    assert out[1].startswith(f"Seed noise: pooled seed-to-seed sd of fd_synthetic {sd:.3g} ({df} degrees of freedom")
    sup = next(s for s in out if s.startswith("repa with mini-sup vs vanilla"))
    assert "fd_synthetic 50 lower" in sup and sup.endswith("; distinguishable from seed noise.")
    ir = next(s for s in out if s.startswith("irepa, mean over 3 encoders vs repa, same encoders"))
    assert ": not distinguishable from seed noise (difference +0, 95% CI [" in ir and ir.endswith("]).")
    assert "lower" not in ir and "higher" not in ir and "underpowered" not in ir  # no direction without evidence
    assert ("repa runs: Pearson r of fd_synthetic with LDS negative: r -0.91 (95% CI [-0.99, -0.35], n = 5 encoders); "
            "underpowered (with 5 encoders only |r| >= 0.96 is detected 80% of the time): a rerun may not confirm "
            "it.") in out
    assert any("none is given below 5 encoders" in s for s in out)
    mix = next(s for s in out if s.startswith("CLS mixing, repa with mini-sup"))
    assert "LP accuracy up (60% to 80%)" in mix and "fd_synthetic higher (worse) (50 to 70)" in mix
    assert mix.endswith("the paper's pattern (LP up, spatial metrics down, generation worse).")
    assert findings(pd.DataFrame(), None, None, "fid")[0].startswith("These are this study's own runs, not the paper")


def _scaled(k):
    """``_gen()`` with every seed's offset from its cell mean multiplied by ``k`` (same means, k times the noise)."""
    gen = _gen()
    mean = gen.groupby(["method", "encoder"])[Q].transform("mean")
    return gen.assign(**{Q: mean + k * (gen[Q] - mean)})


def test_compare_flags_underpowered_comparisons():
    sd, df = _hand_noise(_gen())
    t, tp = stats.t.ppf(0.975, df), stats.t.ppf(0.8, df)
    sup = _row(compare(_gen(), Q), "alignment vs vanilla", "repa / mini-sup", "vanilla")
    assert sup["mdd"] == pytest.approx((t + tp) * sd)  # se = sd * sqrt(1/2 + 1/2)
    assert not sup["underpowered"]  # mdd 8.4 < max(|-50|, 10% of 100)
    # 8x the noise: the interval still excludes 0, but a difference of 50 is found less than 80% of the time
    sup8 = _row(compare(_scaled(8), Q), "alignment vs vanilla", "repa / mini-sup", "vanilla")
    assert sup8["distinguishable"] and sup8["underpowered"] and sup8["mdd"] > 50
    # 20x: not distinguishable, and a 10% change (10) could not be seen
    sup20 = _row(compare(_scaled(20), Q), "alignment vs vanilla", "repa / mini-sup", "vanilla")
    assert not sup20["distinguishable"] and sup20["underpowered"]
    out = findings(compare(_scaled(8), Q), None, None, Q)
    s8 = next(s for s in out if s.startswith("repa with mini-sup vs vanilla"))
    assert "fd_synthetic 50 lower" in s8 and "distinguishable from seed noise, but underpowered" in s8
    assert s8.endswith("a rerun may not confirm it.")
    s20 = next(s for s in findings(compare(_scaled(20), Q), None, None, Q)
               if s.startswith("repa with mini-sup vs vanilla"))
    assert s20.startswith("repa with mini-sup vs vanilla: not distinguishable from seed noise (difference -50")
    assert "underpowered: only a difference of about" in s20 and "lower" not in s20
    assert compare(_gen(seeds=(0,)), Q)["underpowered"].isna().all()


def test_correlation_findings_state_a_sign_only_when_the_interval_excludes_it():
    def corr(n, r, lo, hi, note=""):
        return {"study": "this study", "train_method": "repa", "model": "m", "x": "srss", "y": Q,
                "method": "pearson", "n": n, "r": r, "ci_low": lo, "ci_high": hi, "ci_note": note}

    rows = pd.DataFrame([corr(3, 0.99, np.nan, np.nan, "n = 3 < 5: no interval")])
    assert findings(None, rows, None, Q)[1] == ("repa runs: Pearson r of fd_synthetic with SRSS +0.99 (n = 3 < 5: no "
                                                "interval): underpowered, not a finding.")
    crossing = findings(None, pd.DataFrame([corr(5, 0.78, -0.33, 0.98)]), None, Q)[1]
    assert crossing == ("repa runs: Pearson r of fd_synthetic with SRSS: not distinguishable from no correlation "
                        "(r +0.78, 95% CI [-0.33, +0.98], n = 5 encoders); underpowered: with 5 encoders only |r| >= "
                        "0.96 is detected 80% of the time.")
    # excludes 0, but 6 encoders find r = -0.9 less than 80% of the time: a rerun may not confirm it
    weak = findings(None, pd.DataFrame([corr(6, -0.9, -0.99, -0.33)]), None, Q)[1]
    assert weak.startswith("repa runs: Pearson r of fd_synthetic with SRSS negative: r -0.90 (95% CI [-0.99, -0.33]")
    assert weak.endswith("a rerun may not confirm it.")
    strong = findings(None, pd.DataFrame([corr(27, -0.85, -0.93, -0.70)]), None, Q)[1]
    assert strong == ("repa runs: Pearson r of fd_synthetic with SRSS negative: r -0.85 (95% CI [-0.93, -0.70], "
                      "n = 27 encoders).")


def test_method_gain_shows_vanilla_as_a_baseline_column():
    points = study_points(_gen(), Q, _enc())
    gain = method_gain(points, Q)
    assert NO_ENCODER not in set(gain["encoder"]) and len(gain) == 5
    sup = gain[gain["encoder"] == "mini-sup"].iloc[0]
    assert sup["vanilla"] == pytest.approx(100.0) and sup["repa_vs_vanilla_%"] == pytest.approx(-50.0)
    assert sup["irepa_change_%"] == pytest.approx(0.0)


def test_analyze_writes_comparisons_and_keeps_vanilla_out_of_the_correlations(tmp_path):
    gen, enc = _gen(noise=2.0), _enc()
    out = analyze(gen, enc, tmp_path / "rep", n_boot=200)
    comp = pd.read_csv(out / "comparisons.csv")
    sd, df = _hand_noise(gen)
    assert comp["noise_sd"].iloc[0] == pytest.approx(sd) and (comp["df"] == df).all()
    sup = _row(comp, "alignment vs vanilla", "repa / mini-sup", "vanilla")
    assert -56 < sup["diff"] < -44 and sup["distinguishable"]
    assert not _row(comp, "iREPA vs REPA", "irepa / mean over 3 encoders", "repa / same encoders")["distinguishable"]
    seeds = pd.read_csv(out / "seeds.csv")
    assert len(seeds) == 11 and seeds["per_seed"].str.match(r"^s0=[0-9.]+, s1=[0-9.]+$").all()

    table = pd.read_csv(out / "correlations.csv")
    assert set(table["train_method"]) == {"repa", "irepa"} and (table["n"] == 5).all()
    assert NO_ENCODER in set(pd.read_csv(out / "points.csv")["encoder"])
    assert NO_ENCODER not in set(pd.read_csv(out / "clsmix.csv")["encoder"])
    assert (out / "clsmix_direction.csv").is_file()
    page = (out / "report.html").read_text()
    assert "no encoder scores" not in page
    for heading in ("Findings at this scale", "Comparisons (difference vs seed noise)", "Per-seed spread"):
        assert f"<h2>{heading}</h2>" in page
    assert page.index("Findings at this scale") < page.index("Rows analysed") < page.index("Correlations")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["noise_sd"]["df"] == df and summary["noise_sd"]["sd"] == pytest.approx(sd)
    assert len(summary["comparisons"]) == len(comp) and "not the paper" in summary["findings"][0]
    assert any(f.startswith("repa with mini-sup vs vanilla") and f.endswith("; distinguishable from seed noise.")
               for f in summary["findings"])


def test_design_says_whether_lp_and_the_spatial_metrics_move_together(tmp_path):
    """r(LP, LDS) across the encoders is reported with its interval and a verdict (confounded, partly, nearly
    independent), and design.csv lists every spatial metric."""
    points = study_points(_gen(noise=2.0), Q, _enc())
    design = design_table(points[points["encoder"] != NO_ENCODER])
    assert list(design["x"]) == ["lds", "cds", "srss", "rmsc"] and (design["n"] == 5).all()
    enc = _enc().set_index("encoder")
    assert design.set_index("x").loc["lds", "r"] == pytest.approx(stats.pearsonr(enc["lds"], enc["lp_top1"])[0])
    sentence = design_sentence(design)
    assert sentence.startswith("Encoder design: across the 5 encoders, LP and LDS correlate at r +0.45 (95% CI")
    assert "partly confounded" in sentence
    tied = pd.DataFrame({"encoder": list("abcde"), "lp_top1": [0.2, 0.4, 0.5, 0.7, 0.9]})
    for m in ("lds", "cds", "srss", "rmsc"):
        tied[m] = tied["lp_top1"] * 0.3 + np.array([0.0, 0.01, -0.01, 0.0, 0.01])
    assert "they move together" in design_sentence(design_table(tied))
    # encoders that vary the two independently (a 2x2 design plus a centre point)
    free = pd.DataFrame({"encoder": list("abcde"), "lp_top1": [0.2, 0.2, 0.9, 0.9, 0.55],
                         "lds": [0.0, 0.2, 0.0, 0.2, 0.1]})
    for m in ("cds", "srss", "rmsc"):
        free[m] = free["lds"]
    free_design = design_table(free)
    assert free_design["r"].abs().max() < 1e-12
    assert "vary nearly independently" in design_sentence(free_design)
    out = analyze(_gen(noise=2.0), _enc(), tmp_path / "rep", n_boot=0)
    assert pd.read_csv(out / "design.csv")["x"].tolist() == ["lds", "cds", "srss", "rmsc"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["findings"][1].startswith("Encoder design:")
    assert "Encoder design: LP against the spatial metrics" in (out / "report.html").read_text()


def test_analyze_with_one_seed_says_so(tmp_path):
    gen = _gen(seeds=(0,))
    out = analyze(gen, _enc(), tmp_path / "one", n_boot=0)
    comp = pd.read_csv(out / "comparisons.csv")
    assert comp["ci_low"].isna().all() and comp["distinguishable"].isna().all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["noise_sd"] == {"sd": None, "df": 0}
    assert "Only one seed per cell" in (out / "report.html").read_text()


def test_paper_only_report_has_no_comparisons(tmp_path):
    out = analyze(None, None, tmp_path / "paper", reference="paper", n_boot=50)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comparisons"] == [] and summary["findings"] == [] and summary["noise_sd"]["sd"] is None
    assert "Findings at this scale" not in (out / "report.html").read_text()
