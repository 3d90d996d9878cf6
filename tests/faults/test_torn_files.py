"""Fault (issue 19, case 7): append-only files with a torn last line, as a full disk or a kill leaves them. Before,
a torn ``log.jsonl`` failed the resume and a torn ``submissions.jsonl`` crashed `sweep status` and `sweep submit`;
now the torn line is dropped with a warning."""
from __future__ import annotations

import logging

from stage_fakes import fakes  # noqa: F401 (fixture)
from train_support import log_rows, one_thread, smoke_config  # noqa: F401 (autouse fixture)

from jobs.spec import load_spec
from jobs.submit import submit_sweep, sweep_status
from study.training import train


def test_a_torn_log_line_does_not_stop_the_resume(tmp_path, caplog):
    run = tmp_path / "run"
    train(smoke_config("steps=4", "ckpt_every=2", "log_every=1"), run)
    with open(run / "log.jsonl", "a") as fh:
        fh.write('{"step": 5, "loss": 0.4')  # the line a full disk cut short
    with caplog.at_level(logging.WARNING):
        train(smoke_config("steps=6", "ckpt_every=2", "log_every=1"), run)
    assert [r["step"] for r in log_rows(run)] == [1, 2, 3, 4, 5, 6]
    assert "torn last line" in caplog.text


def test_a_torn_submissions_line_does_not_stop_status_or_submit(fakes, caplog):
    root = fakes / "root"
    spec = load_spec("smoke", ["encoders=[dinov2-vit-b]", "methods=[repa]", "eval_steps=[200]",
                               "scoring.enabled=false", "analyze.enabled=false"])
    assert submit_sweep(spec, root, executor="debug", wait=True).ok
    with open(root / "sweeps" / "smoke" / "submissions.jsonl", "a") as fh:
        fh.write('{"job_id": "train-0123456789ab", "executor": "sl')
    with caplog.at_level(logging.WARNING):
        assert {r["state"] for r in sweep_status(spec, root)} == {"done"}
        again = submit_sweep(spec, root, executor="debug", wait=True)
    assert again.ok and not again.submitted
    assert "torn last line" in caplog.text
