"""Faults of job locks and drivers (issue 19, cases 4 and 5): a group and one of its runs submitted alone at once; a
killed local driver whose job keeps running while the sweep is looked at, resubmitted, or extended."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from stage_fakes import fakes, invocations  # noqa: F401 (fixture)

import study.training
from jobs import tasks
from jobs.executors import driver_pid
from jobs.plan import plan
from jobs.spec import load_spec
from jobs.submit import submit_sweep, sweep_status
from results import ResultStore

ONE = ["encoders=[dinov2-vit-b]", "eval_steps=[200]", "scoring.enabled=false", "analyze.enabled=false"]
SINGLE = [*ONE, "methods=[repa]"]


@pytest.fixture
def fast_locks(monkeypatch):
    """A held lock is looked at again every 0.1 s (job processes read the variable; this process, jobs.locks)."""
    monkeypatch.setenv("REPA_STUDY_LOCK_POLL_S", "0.1")
    monkeypatch.setattr("jobs.locks.LOCK_POLL_S", 0.1)


def _until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ case 4
def test_a_member_submitted_alone_never_trains_while_its_group_holds_it(tmp_path, monkeypatch, fast_locks):
    root = tmp_path / "root"
    group = next(j for j in plan(load_spec("smoke", [*ONE, "executor.group_methods=true"])) if j.stage == "train")
    member = next(j for j in plan(load_spec("smoke", ONE)) if j.job_id in group.params.runs)
    trained, started, release = [], threading.Event(), threading.Event()

    def train_group(cfgs, dirs, **kwargs):
        trained.extend(Path(d).name for d in dirs)
        started.set()
        release.wait(60)
        return [{"run_dir": str(d), "step": c.steps, "config_hash": "h"} for c, d in zip(cfgs, dirs)]

    def train(cfg, run_dir, **kwargs):
        trained.append(Path(run_dir).name)
        return {"run_dir": str(run_dir), "step": cfg.steps, "config_hash": "h"}

    monkeypatch.setattr(study.training, "train_group", train_group)
    monkeypatch.setattr(study.training, "train", train)
    errors = []

    def run(job):
        try:
            tasks.run_job(job, root, sweep="smoke")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(group,))]
    threads[0].start()
    assert started.wait(60)
    threads.append(threading.Thread(target=run, args=(member,)))
    threads[1].start()
    time.sleep(1.0)
    assert trained.count(member.job_id) == 1, "the single job trained the run its group is training"
    release.set()
    for t in threads:
        t.join(60)
    assert not errors and trained.count(member.job_id) == 1, (errors, trained)
    runs = ResultStore(root).read("runs", dedupe=False)
    assert (runs["job_id"] == member.job_id).sum() == 1 and set(runs["status"]) == {"done"}


# ------------------------------------------------------------------------------------------------ case 5
@pytest.fixture
def orphan(fakes, monkeypatch, fast_locks):
    """A sweep whose local driver was killed (SIGKILL) while its training kept running, held until the test
    creates ``release``."""
    root, release = fakes / "root", fakes / "release"
    monkeypatch.setenv("FAKE_HOLD", str(release))
    spec = load_spec("smoke", SINGLE)
    train_id = next(j.job_id for j in plan(spec) if j.stage == "train")
    submit_sweep(spec, root, executor="local")
    _until(lambda: tasks.job_running(root, train_id) is not None, "the training to start")
    pid = driver_pid(root, "smoke")
    os.kill(pid, signal.SIGKILL)
    _until(lambda: driver_pid(root, "smoke") is None, "the driver to die")
    yield root, release, spec, train_id
    release.touch()


def _failures(root, spec) -> list:
    runs = ResultStore(root).read("runs", dedupe=False)
    rows = [] if runs.empty else runs.loc[runs["status"] != "done"].to_dict("records")
    return rows + [s for s in sweep_status(spec, root) if s["state"] == "failed"]


def _resubmit_then_release(spec, root, release, train_id: str, copy: bool) -> object:
    """Resubmit (waiting for the end) while the orphan trains; once a copy of the training has met the orphan's
    lock (``copy``; else after 5 s), nothing may be failed; then the orphan is let go."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(sub=submit_sweep(spec, root, executor="local", wait=True)))
    thread.start()
    log, start = root / "jobs" / train_id / "log.txt", time.time()
    _until(lambda: "already running" in (log.read_text() if log.exists() else "") or
           (not copy and time.time() - start > 5), "a copy of the training to meet the orphan's lock")
    time.sleep(1.0)  # what the driver does about it
    assert not _failures(root, spec), "jobs were recorded failed while the orphan trained"
    release.touch()
    thread.join(120)
    return out.get("sub")


def test_a_killed_drivers_job_shows_running_and_a_resubmission_runs_nothing_twice_and_fails_nothing(orphan):
    root, release, spec, train_id = orphan
    assert {r["job_id"]: r["state"] for r in sweep_status(spec, root)}[train_id] == "running"  # before: lost
    sub = _resubmit_then_release(spec, root, release, train_id, copy=False)
    assert sub is not None and sub.ok, sweep_status(spec, root)
    assert train_id not in sub.submitted and invocations(root)[train_id] == 1
    assert not _failures(root, spec)
    assert {r["state"] for r in sweep_status(spec, root)} == {"done"}


def test_raising_steps_while_the_orphan_trains_continues_it_after(orphan):
    root, release, _, train_id = orphan
    longer = load_spec("smoke", [*SINGLE, "steps=300", "eval_steps=[200, 300]"])
    sub = _resubmit_then_release(longer, root, release, train_id, copy=True)
    assert sub is not None and sub.ok, sweep_status(longer, root)
    assert invocations(root)[train_id] == 2  # the orphan to 200, then the copy from there to 300
    assert tasks.reached_step(root, train_id) == 300
    assert not _failures(root, longer)
