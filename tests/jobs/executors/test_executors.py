"""The executor interface: submit, status and cancel reach an executor through the registry only, and the SLURM
executor reads squeue's word and builds its sbatch parameters (with a stand-in squeue, no cluster)."""
from __future__ import annotations

import os
import stat

import pytest

import jobs.executors
from jobs.executors import EXECUTORS, Executor, SlurmExecutor, SubmitError, get_executor
from jobs.plan import plan
from jobs.spec import load_spec
from jobs.submit import cancel_sweep, submit_sweep, sweep_status

SPEC = ["encoders=[dinov2-vit-b]", "methods=[repa]", "eval_steps=[200]", "scoring.enabled=false",
        "analyze.enabled=false"]


class FakeExecutor(Executor):
    """Holds every submitted job queued until cancelled; runs nothing."""

    name = "fake"
    queue: dict[str, str] = {}

    def submit(self, spec, root, todo, *, record, queued, wait, poll_s):
        submitted = {j.job_id: f"f{len(self.queue) + i}" for i, j in enumerate(todo)}
        record(submitted, note="fake")
        self.queue.update(submitted)
        return submitted, None

    def alive(self, root, sweep, entries):
        return {j: "pending" for j, e in entries.items() if self.queue.get(j) == e["scheduler_id"]}

    def cancel(self, root, sweep, entries):
        live = list(self.alive(root, sweep, entries))
        for j in live:
            del self.queue[j]
        return live


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(EXECUTORS, "fake", FakeExecutor)
    monkeypatch.setattr(FakeExecutor, "queue", {})
    return FakeExecutor


def test_submit_status_and_cancel_go_through_the_registry(fake, tmp_path):
    root, spec = tmp_path / "root", load_spec("smoke", SPEC)
    ids = sorted(j.job_id for j in plan(spec))
    first = submit_sweep(spec, root, executor="fake")
    assert sorted(first.submitted) == ids and first.final is None
    lines = (root / "sweeps" / "smoke" / "submissions.jsonl").read_text().splitlines()
    assert len(lines) == len(ids) and all('"executor": "fake"' in ln and '"note": "fake"' in ln for ln in lines)
    assert {r["state"] for r in sweep_status(spec, root)} == {"pending"}
    again = submit_sweep(spec, root, executor="fake")  # alive on its executor: left alone
    assert not again.submitted and sorted(again.skipped_active) == ids
    assert cancel_sweep(spec, root) == ids
    assert {r["state"] for r in sweep_status(spec, root)} == {"cancelled"}
    fake.queue.clear()  # gone from the queue without a word: not submitted any more, resubmitted next time
    assert sorted(submit_sweep(spec, root, executor="fake").submitted) == ids


def test_an_unknown_executor_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(SubmitError, match="unknown executor 'nope'"):
        submit_sweep(load_spec("smoke", SPEC), tmp_path / "root", executor="nope")
    assert not (tmp_path / "root" / "sweeps").exists()
    assert set(EXECUTORS) == {"slurm", "local", "debug"} and isinstance(get_executor("local"), Executor)


@pytest.fixture
def squeue(tmp_path, monkeypatch):
    """A stand-in squeue on PATH printing ``tmp_path/queue.txt``."""
    script = tmp_path / "bin" / "squeue"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\ncat {tmp_path / 'queue.txt'}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "queue.txt"


def test_slurm_alive_is_what_squeue_lists(squeue, tmp_path):
    squeue.write_text("11_0 RUNNING\n11_1 PENDING\n12 COMPLETING\n13 CONFIGURING\nbad line here\n")
    entries = {"a": {"scheduler_id": "11_0"}, "b": {"scheduler_id": "11_1"}, "c": {"scheduler_id": "12"},
               "d": {"scheduler_id": "13"}, "e": {"scheduler_id": "14"}}
    assert jobs.executors.slurm.slurm_queue()["11_1"] == "PENDING"
    assert SlurmExecutor().alive(tmp_path, "s", entries) == {"a": "running", "b": "pending", "c": "running",
                                                            "d": "pending"}
    assert SlurmExecutor().alive(tmp_path, "s", {}) == {}


def test_slurm_parameters_follow_the_job_and_the_overrides():
    spec = load_spec("smoke", SPEC + ["executor.slurm_partition=gpu", "executor.slurm_additional={exclusive: 1}"])
    train, = (j for j in plan(spec) if j.stage == "train")
    params = SlurmExecutor({"partition": "big", "account": None}).parameters(spec, train)
    assert params["partition"] == "big" and "account" not in params
    assert params["additional_parameters"] == {"exclusive": 1} and params["job_name"] == "smoke-train"
    assert ("gpus_per_node" in params) == (train.resources.gpus > 0)
    cpu = train.model_copy(update={"resources": train.resources.model_copy(update={"gpus": 0})})
    assert "gpus_per_node" not in SlurmExecutor().parameters(spec, cpu)
