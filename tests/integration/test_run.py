"""`repa-study run`: the summary and report lines (stand-in stages), and a reduced smoke sweep end to end for real."""
from __future__ import annotations

import importlib
import importlib.util

import pytest
from click.testing import CliRunner
from stage_fakes import FAKE_STAGES

from jobs.cli import cli
from results import ResultStore


def _install_fakes(tmp_path, monkeypatch):
    import jobs.tasks as tasks

    monkeypatch.setattr(tasks, "STAGE_FUNCTIONS", dict(tasks.STAGE_FUNCTIONS))
    path = tmp_path / "fake_worker.py"
    path.write_text(FAKE_STAGES)
    spec = importlib.util.spec_from_file_location("fake_worker_run", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_run_prints_summary_and_report(tmp_path, monkeypatch):
    _install_fakes(tmp_path, monkeypatch)
    root = tmp_path / "root"
    args = ["run", "smoke", "--root", str(root), "--executor", "debug", "--set", "encoders=[dinov2-vit-b, mae-vit-l]"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Generation quality (fd_synthetic" in out
    assert "dinov2-vit-b" in out and "mae-vit-l" in out and "irepa" in out
    assert "Encoder scores" in out
    assert f"Report: {root / 'reports' / 'smoke'}" in out
    assert "of 15 jobs done" in out
    # again: everything is already done, nothing runs
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "(15 were already done)" in again.output


def test_run_defaults_to_the_miniature_and_pretrains_its_local_encoders_first(tmp_path, monkeypatch):
    import study.pretrain

    _install_fakes(tmp_path, monkeypatch)
    asked = []
    monkeypatch.setattr(study.pretrain, "pretrain_missing",
                        lambda names, workers=1: asked.append((list(names), workers)) or ["mini-sup", "mini-mim"])
    result = CliRunner().invoke(cli, ["run", "--root", str(tmp_path / "root"), "--executor", "debug",
                                      "--set", "executor.group_methods=false"])
    assert result.exit_code == 0, result.output
    assert "sweep 'mini-quick'" in result.output and "pretrained mini-sup, mini-mim" in result.output
    assert "mini-sup, mini-mim: the weights shipped with the package" in result.output
    assert asked == [(["mini-sup", "mini-mim", "mini-random", "mini-sup@clsmix=0.5", "mini-sup@clsmix=1.0",
                       "mini-sup", "mini-mim", "mini-random"], 2)]
    assert "none" in result.output and "vanilla" in result.output  # the baseline's row in the summary table
    res = CliRunner().invoke(cli, ["run", "mini", "--spec", "smoke"])
    assert res.exit_code == 2 and "two specs given" in res.output


def test_run_rejects_a_bad_override(tmp_path):
    result = CliRunner().invoke(cli, ["run", "smoke", "--root", str(tmp_path / "r"), "--set", "encoders=[nope-vit]"])
    assert result.exit_code != 0 and "unknown encoder 'nope-vit'" in result.output
    assert not (tmp_path / "r").exists()


def _missing_stage_modules() -> list[str]:
    missing = []
    for name in ("study.training.loop", "study.evaluation.evaluate", "study.scoring.score", "analysis.report"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


@pytest.mark.slow
def test_reduced_smoke_sweep_end_to_end(tmp_path):
    """The real stages on a reduced smoke sweep: 2 encoders x {repa, irepa}, few steps, small FD and scoring."""
    missing = _missing_stage_modules()
    if missing:
        pytest.skip(f"stage modules not available yet: {missing}")
    root = tmp_path / "root"
    args = ["run", "--spec", "smoke", "--root", str(root),
            "--set", "encoders=[dinov2-vit-b, dinov2-vit-b@clsmix=0.5]",
            "--set", "steps=20", "--set", "eval_steps=[20]",
            "--set", "train_overrides=[batch_size=8, ckpt_every=10, log_every=10, sample_every=0]",
            "--set", "fid.n_samples=32", "--set", "fid.num_steps=4", "--set", "fid.batch_size=32",
            "--set", "scoring.limit=64", "--set", "scoring.probe=false"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    store = ResultStore(root)
    gen = store.read("generation")
    assert len(gen) == 4
    quality = "fd_synthetic"
    assert gen[quality].notna().all() and gen[quality].nunique() > 1
    enc = store.read("encoders")
    assert sorted(enc["encoder"]) == ["dinov2-vit-b", "dinov2-vit-b@clsmix=0.5"]
    runs = store.read("runs")
    assert set(runs["status"]) == {"done"} and len(runs) == 4 + 4 + 2 + 1
    assert "Report: " in result.output and "Report: none" not in result.output
