"""Fault (issue 19, case 10): the queue's word. With a stub ``sbatch`` that records every call and a stub ``squeue``
that fails or prints nothing, a resubmission of a sweep whose jobs are queued must not send them again (before, every
queued job looked unsubmitted and all were sent again)."""
from __future__ import annotations

import json
import logging

import pytest

from jobs.plan import plan
from jobs.spec import load_spec
from jobs.submit import SubmitError, submit_sweep, sweep_status
from jobs.tasks import write_state

SPEC = ["encoders=[dinov2-vit-b]", "eval_steps=[200]", "scoring.enabled=false", "analyze.enabled=false"]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """Stub sbatch (appends its arguments to ``sbatch.log``, answers with a job id) and squeue (``SQUEUE_MODE``:
    fail, empty, or list one job that is not ours) first on PATH; a sweep recorded as submitted and queued."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'sbatch.log'}\n"
                                    "echo 'Submitted batch job 4242'\n")
    (bin_dir / "squeue").write_text('#!/bin/sh\ncase "$SQUEUE_MODE" in\n'
                                    '  fail) echo "slurm_load_jobs error: Socket timed out" >&2; exit 1;;\n'
                                    '  empty) exit 0;;\n  *) echo "999 RUNNING";;\nesac\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    root = tmp_path / "root"
    spec = load_spec("smoke", SPEC)
    entries = [{"job_id": j.job_id, "executor": "slurm", "scheduler_id": f"100_{i}", "folder": str(tmp_path),
                "submitted_at": "2026-01-01T00:00:00+00:00"} for i, j in enumerate(plan(spec))]
    (root / "sweeps" / "smoke").mkdir(parents=True)
    (root / "sweeps" / "smoke" / "submissions.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return root, spec, tmp_path / "sbatch.log"


def test_a_failing_squeue_is_an_error_and_nothing_is_sent_again(cluster, monkeypatch):
    root, spec, sbatch_log = cluster
    monkeypatch.setenv("SQUEUE_MODE", "fail")
    with pytest.raises(SubmitError, match="squeue failed"):
        submit_sweep(spec, root, executor="slurm")
    assert not sbatch_log.exists()
    assert {r["state"] for r in sweep_status(spec, root)} == {"pending"}  # the jobs' own word, with a warning


def test_an_empty_squeue_leaves_queued_jobs_alone(cluster, monkeypatch, caplog):
    root, spec, sbatch_log = cluster
    monkeypatch.setenv("SQUEUE_MODE", "empty")
    with caplog.at_level(logging.WARNING):
        sub = submit_sweep(spec, root, executor="slurm")
    assert not sub.submitted and not sbatch_log.exists()
    assert "squeue lists no job at all" in caplog.text


def test_a_job_gone_from_a_working_queue_whose_state_agrees_is_sent_again(cluster, monkeypatch):
    root, spec, sbatch_log = cluster
    monkeypatch.setenv("SQUEUE_MODE", "other")  # squeue works and lists another job, none of ours
    failed = next(j.job_id for j in plan(spec) if j.stage == "train")
    write_state(root, failed, state="failed", error="node crashed")
    sub = submit_sweep(spec, root, executor="slurm")
    assert failed in sub.submitted and sbatch_log.exists()
