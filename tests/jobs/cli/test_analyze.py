"""`repa-study analyze` and `repa-study encoders predict` through the CLI, on the results store."""
import json

import pandas as pd
from click.testing import CliRunner
from study_rows import study_rows

from jobs.cli import cli
from results import ResultStore


def test_analyze_reference_only(tmp_path):
    res = CliRunner().invoke(cli, ["analyze", "--root", str(tmp_path / "empty"), "--reference", "paper",
                                   "--out", str(tmp_path / "rep"), "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    assert "-0.852" in res.output and "report:" in res.output
    assert (tmp_path / "rep" / "report.html").is_file()


def test_reference_choices_are_the_shipped_papers():
    """The option spells the names itself (importing analysis would slow every command down): they must agree."""
    from analysis.paper import PAPERS
    from jobs.cli.analyze import analyze_cmd

    option = next(p for p in analyze_cmd.params if p.name == "reference")
    assert tuple(option.type.choices) == PAPERS


def test_analyze_store_rows_and_refusal(tmp_path):
    store = ResultStore(tmp_path / "runs")
    gen, enc = study_rows()
    store.write("generation", gen)
    store.write("encoders", enc)
    runner = CliRunner()
    res = runner.invoke(cli, ["analyze", "--root", str(store.root), "--n-boot", "50", "--corr", "spearman"])
    assert res.exit_code == 0, res.output
    out = store.root / "reports" / "analysis"
    table = pd.read_csv(out / "correlations.csv")
    assert set(table["method"]) == {"spearman"} and (table["n"] == 5).all()
    # a row measured with another sample count: refused with the way out, then accepted when selected
    extra = gen.iloc[[0]].assign(job_id="other", n_samples=999)
    store.write("generation", extra)
    res = runner.invoke(cli, ["analyze", "--root", str(store.root), "--n-boot", "0"])
    assert res.exit_code != 0 and "--select n_samples" in res.output
    res = runner.invoke(cli, ["analyze", "--root", str(store.root), "--n-boot", "0", "--select", "n_samples=64"])
    assert res.exit_code == 0, res.output


def test_analyze_without_rows_says_what_to_do(tmp_path):
    res = CliRunner().invoke(cli, ["analyze", "--root", str(tmp_path / "none")])
    assert res.exit_code != 0 and "--reference paper" in res.output


def test_predict_tiny_encoder_on_study_rows(tmp_path):
    store = ResultStore(tmp_path / "runs")
    gen, enc = study_rows()
    store.write("generation", gen)
    store.write("encoders", enc)
    res = CliRunner().invoke(cli, ["encoders", "predict", "dinov2-vit-b", "--weights", "tiny", "--data",
                                   "synthetic:n=16,size=32", "--limit", "8", "--device", "cpu", "--fit-on", "results",
                                   "--root", str(store.root), "--json", "--save"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output[res.output.index("{"):])
    (pred,) = payload["predictions"]
    assert pred["model"] == "smoke" and pred["n_known"] == 5 and pred["y"] == "fd_synthetic"
    assert pred["pi_low"] < pred["predicted"] < pred["pi_high"] and 1 <= pred["rank"] <= 6
    assert pred["loo_rmse"] > 0 and 0 < payload["scores"]["lds"] < 1
    # scored on other synthetic data than the known encoders: one warning line, also on stderr
    assert payload["warnings"][0].startswith("dinov2-vit-b was scored with dataset synthetic:n=16,size=32, the "
                                             "encoders the fit knows with synthetic:n=64")
    assert f"warning: {payload['warnings'][0]}" in res.output
    assert all("extrapolates" in w for w in payload["warnings"][1:]) and bool(pred["extrapolated"]) == (
        len(payload["warnings"]) == 2)
    saved = store.read("encoders")
    assert "dinov2-vit-b" in set(saved["encoder"])


def test_predict_refuses_lp_without_probe():
    res = CliRunner().invoke(cli, ["encoders", "predict", "dinov2-vit-b", "--x", "lp_top1"])
    assert res.exit_code != 0 and "--probe" in res.output
