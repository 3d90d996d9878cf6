"""Fault (issue 19, case 10): the queue's word. With a stub ``sbatch`` that records every call and a stub ``squeue``
that fails or prints nothing, a resubmission of a sweep whose jobs are queued must not send them again (before, every
queued job looked unsubmitted and all were sent again)."""
from __future__ import annotations

import json
import logging

import pytest
from fault_support import stub_slurm  # noqa: F401 (fixture)

from jobs.plan import plan
from jobs.spec import load_spec
from jobs.submit import SubmitError, submit_sweep, sweep_status
from jobs.tasks import write_state

SPEC = ["encoders=[dinov2-vit-b]", "eval_steps=[200]", "scoring.enabled=false", "analyze.enabled=false"]


@pytest.fixture
def cluster(tmp_path, stub_slurm):
    """Stub sbatch and squeue (``fault_support.stub_slurm``); a sweep recorded as submitted and queued."""
    root = tmp_path / "root"
    spec = load_spec("smoke", SPEC)
    entries = [{"job_id": j.job_id, "executor": "slurm", "scheduler_id": f"100_{i}", "folder": str(tmp_path),
                "submitted_at": "2026-01-01T00:00:00+00:00"} for i, j in enumerate(plan(spec))]
    (root / "sweeps" / "smoke").mkdir(parents=True)
    (root / "sweeps" / "smoke" / "submissions.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return root, spec, stub_slurm


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
