"""analysis.report.analyze: tables, figures and the self-contained HTML report, on tiny synthetic rows."""
import importlib.resources
import json
import re

import numpy as np
import pandas as pd
import pytest
from study_rows import study_rows

from analysis.comparable import IncomparableRowsError
from analysis.display import UnitError, display_value, for_display
from analysis.report import analyze, compute_report, encoder_table, smoke_reason, write_report


def test_smoke_report(tmp_path):
    gen, enc = study_rows()
    out = analyze(gen, enc, tmp_path / "rep", n_boot=200)
    for name in ("report.html", "correlations.csv", "correlations.md", "points.csv", "excluded.csv", "summary.json"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "correlations.csv")
    assert set(table["train_method"]) == {"repa", "irepa"}
    assert set(table["x"]) == {"lp_top1", "lds", "cds", "srss", "rmsc"}
    repa_lds = table[(table.train_method == "repa") & (table.x == "lds")].iloc[0]
    assert repa_lds["n"] == 5 and repa_lds["r"] < -0.9 and repa_lds["y"] == "fd_synthetic"
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 10 and points["lp_top1"].between(0.2, 0.3).all()  # stored as fractions

    excluded = pd.read_csv(out / "excluded.csv")
    assert len(excluded) == 10 and excluded["reason"].str.contains("step != 100").all()
    page = (out / "report.html").read_text()
    assert "Smoke-scale study" in page and "fd_synthetic" in page
    per_encoder = page[page.index("Per-encoder points (this study)"):]
    lp_shown = f"{points.sort_values(['model', 'method', 'encoder'])['lp_top1'].iloc[0] * 100:.3f}"
    assert "lp_top1 in percent" in per_encoder and f"<td>{lp_shown}</td>" in per_encoder  # shown in percent
    assert "not the paper's results" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5  # correlation panels (repa, irepa), methods, CLS mixing (tiny-a@clsmix=0.3), convergence
    assert 'src="http' not in page and "<link" not in page  # self-contained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chosen"]["step"] == 100 and summary["smoke"]
    assert "| study | train_method |" in (out / "correlations.md").read_text()
    gain = pd.read_csv(out / "methods.csv")
    assert len(gain) == 5 and (gain["irepa_change_%"] < 0).all()  # the rows were made with irepa 4 lower
    assert "r is very uncertain" in page


def test_paper_reference_without_compute(tmp_path):
    out = analyze(None, None, tmp_path / "paper", reference="paper", n_boot=200)
    table = pd.read_csv(out / "correlations.csv")
    assert len(table) == 5 and (table["n"] == 27).all()
    assert np.allclose(table["r"], table["published_r"], atol=5e-4)
    page = (out / "report.html").read_text()
    assert "Smoke-scale" not in page and "arXiv 2512.10794" in page
    assert "fig4-occluded:5" in page and "unlabelled-27" in page
    assert len(re.findall(r"data:image/png;base64,", page)) == 4  # + REPA vs iREPA with REPA-E and MeanFlow
    assert (out / "figures" / "paper_correlation.png").stat().st_size > 10_000


def test_user_fid_rows_overlay_the_paper(tmp_path):
    gen, enc = study_rows(quality="fid")
    gen["model"] = "SiT-XL/2"
    gen["extractor"] = "inception"
    enc["dataset"] = "imagenet:val"
    out = analyze(gen, enc, tmp_path / "both", reference="paper", n_boot=100)
    table = pd.read_csv(out / "correlations.csv")
    assert set(table["study"]) == {"this study", "paper (Fig. 4)"}
    assert "grey squares: the paper" in (out / "report.html").read_text()


def test_refusals_are_actionable(tmp_path):
    gen, enc = study_rows()
    gen.loc[0, "n_samples"] = 128
    with pytest.raises(IncomparableRowsError, match="--select n_samples"):
        analyze(gen, enc, tmp_path / "x", n_boot=0)
    out = analyze(gen, enc, tmp_path / "y", select=["n_samples=64"], n_boot=0)
    assert pd.read_csv(out / "excluded.csv")["reason"].str.contains("n_samples != 64").any()
    enc2 = pd.concat([enc, enc.assign(dataset="imagenet:val", job_id=lambda d: d.job_id + "-in")])
    with pytest.raises(IncomparableRowsError, match="encoders.dataset"):
        encoder_table(enc2)
    table, _ = encoder_table(enc2, {"encoders.dataset": "imagenet:val"})
    assert len(table) == 5
    with pytest.raises(UnitError, match="lp_top1 holds 5 value.*divide percentages by 100"):
        encoder_table(enc.assign(lp_top1=enc.lp_top1 * 100))  # percent where a fraction belongs
    out = analyze(gen[gen.n_samples == 64], enc[enc.encoder != "tiny-d"], tmp_path / "w", n_boot=0)
    assert "no encoder scores for tiny-d" in (out / "report.html").read_text()
    with pytest.raises(IncomparableRowsError, match="nothing to analyze"):
        analyze(pd.DataFrame(), None, tmp_path / "z")


def test_smoke_reason():
    gen, _ = study_rows()
    assert "fd_synthetic" in smoke_reason(gen, "fd_synthetic")
    assert smoke_reason(gen.assign(model="SiT-XL/2"), "fid") is None
    assert "synthetic" in smoke_reason(gen.assign(model="SiT-XL/2", dataset="synthetic:n=8"), "fid")


def test_analysis_imports_only_results():
    import subprocess
    import sys

    code = ("import sys, analysis, analysis.report, analysis.predict, analysis.comparable, analysis.paper, "
            "analysis.figures; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('study', 'encoders', 'jobs')); print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_display_converts_fractions_to_percent_only():
    df = pd.DataFrame({"encoder": ["a", "b"], "lp_top1": [0.5, np.nan], "lp_top1_cls": [0.25, 1.0], "lds": [0.4, 0.1]})
    shown = for_display(df)
    assert shown["lp_top1"].iloc[0] == 50.0 and np.isnan(shown["lp_top1"].iloc[1])
    assert list(shown["lp_top1_cls"]) == [25.0, 100.0] and list(shown["lds"]) == [0.4, 0.1]
    assert df["lp_top1"].iloc[0] == 0.5  # a copy: the table keeps its fractions
    assert display_value("lp_top1", 0.873) == pytest.approx(87.3) and display_value("lds", 0.4) == 0.4


def test_report_package_computes_then_writes(tmp_path):
    """analyze = compute_report (data in, data out: nothing written) + write_report (the files, the HTML from the
    package's template, every value escaped)."""
    import analysis.report

    assert {"analyze", "encoder_table", "study_points", "correlation_table", "method_gain", "smoke_reason",
            "compute_report", "write_report", "Report"} <= set(analysis.report.__all__)
    assert (importlib.resources.files("analysis.report") / "templates" / "report.html.j2").is_file()
    gen, enc = study_rows()
    report = compute_report(gen, enc, n_boot=50)
    assert not any(tmp_path.iterdir())
    assert report.paper is None and report.study.quality == "fd_synthetic" and len(report.study.points) == 10
    assert set(report.correlations["study"]) == {"this study"} and report.notes == report.study.notes
    out = write_report(report, tmp_path / "parts", title="a <b> & c")
    whole = analyze(gen, enc, tmp_path / "whole", n_boot=50)
    for name in ("correlations.csv", "correlations.md", "points.csv", "excluded.csv", "comparisons.csv", "seeds.csv",
                 "clsmix.csv", "clsmix_direction.csv", "methods.csv"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    page = (out / "report.html").read_text()
    assert "<title>a &lt;b&gt; &amp; c</title>" in page and "<b>" not in page
    assert "<title>repa-study analysis</title>" in (whole / "report.html").read_text()
