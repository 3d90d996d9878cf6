"""Submission on the local and debug executors with stand-in stage bodies: dependencies, rows, idempotent
resubmission, failures with their log and error line, cancel + resume from a checkpoint."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from stage_fakes import fakes  # noqa: F401 (fixture)
from stage_fakes import invocations as _invocations

import jobs.executors.local
import jobs.tasks
from jobs.plan import plan
from jobs.spec import load_spec
from jobs.submit import cancel_sweep, collect_sweep, submit_sweep, sweep_status
from results import ResultStore

REDUCED = ["encoders=[dinov2-vit-b, mae-vit-l]", "eval_steps=[200]", "executor.local_workers=2"]


def test_local_executor_runs_everything_with_rows_then_resubmission_is_a_no_op(fakes):
    root = fakes / "root"
    spec = load_spec("smoke", REDUCED)
    jobs = plan(spec)
    assert Counter(j.stage for j in jobs) == {"train": 4, "eval": 4, "score": 2, "analyze": 1}
    sub = submit_sweep(spec, root, executor="local", wait=True)
    assert sub.ok, sweep_status(spec, root)
    store = ResultStore(root)
    gen = store.read("generation")
    assert len(gen) == 4 and set(gen["step"]) == {200}
    assert set(zip(gen["encoder"], gen["method"])) == {(e, m) for e in spec.encoders for m in spec.methods}
    assert gen["train_job_id"].isin([j.job_id for j in jobs if j.stage == "train"]).all()
    for col in ("job_id", "model", "seed", "git_commit", "host", "versions", "started_at", "ended_at"):
        assert gen[col].notna().all(), col
    runs = store.read("runs")
    assert sorted(runs["job_id"]) == sorted(j.job_id for j in jobs) and set(runs["status"]) == {"done"}
    assert len(store.read("encoders")) == 2
    assert (root / "reports" / "smoke" / "index.html").exists()
    assert all(v == 1 for v in _invocations(root).values()) and len(_invocations(root)) == len(jobs)
    assert {r["state"] for r in sweep_status(spec, root)} == {"done"}

    again = submit_sweep(spec, root, executor="local", wait=True)
    assert again.ok and not again.submitted and len(again.skipped_done) == len(jobs)
    assert all(v == 1 for v in _invocations(root).values())
    assert len(store.read("runs", dedupe=False)) == len(jobs)

    paths = collect_sweep(spec, root)
    assert set(paths) == {"generation", "encoders", "runs", "summary"}
    assert "| train | done | 4 |" in paths["summary"].read_text()


def test_failures_are_reported_and_only_unfinished_work_reruns(fakes, monkeypatch):
    root = fakes / "root"
    spec = load_spec("smoke", REDUCED)
    monkeypatch.setenv("FAKE_FAIL_ENCODER", "mae-vit-l")
    from jobs.cli import cli

    result = CliRunner().invoke(cli, ["sweep", "submit", "smoke", *sum((["--set", o] for o in REDUCED), []),
                                      "--root", str(root), "--executor", "local", "--wait"])
    assert result.exit_code == 1, result.output
    rows = {r["job_id"]: r for r in sweep_status(spec, root)}
    failed = [r for r in rows.values() if r["state"] == "failed"]
    assert {(r["stage"], r["label"].split()[1]) for r in failed} == {("train", "mae-vit-l"), ("eval", "mae-vit-l")}
    train_fail = next(r for r in failed if r["stage"] == "train")
    assert train_fail["error"] == "RuntimeError: boom: cannot train mae-vit-l"
    assert Path(train_fail["log"]).is_file() and "boom" in Path(train_fail["log"]).read_text()
    assert "has not finished" in next(r for r in failed if r["stage"] == "eval")["error"]
    status = CliRunner().invoke(cli, ["sweep", "status", "smoke", *sum((["--set", o] for o in REDUCED), []),
                                      "--root", str(root)])
    assert "failed" in status.output and "boom: cannot train mae-vit-l" in status.output
    analyze_id = next(j.job_id for j in plan(spec) if j.stage == "analyze")
    assert rows[analyze_id]["state"] == "done"  # the analysis runs on what finished
    before = _invocations(root)

    monkeypatch.delenv("FAKE_FAIL_ENCODER")
    sub = submit_sweep(spec, root, executor="local", wait=True)
    assert sub.ok
    rerun = {k: v - before.get(k, 0) for k, v in _invocations(root).items() if v - before.get(k, 0)}
    assert set(rerun) == {r["job_id"] for r in failed} | {analyze_id}
    assert all(v == 1 for v in rerun.values())
    assert len(ResultStore(root).read("generation")) == 4


def test_cancel_then_resubmit_resumes_training_from_its_checkpoint(fakes, monkeypatch):
    root = fakes / "root"
    overrides = ["encoders=[dinov2-vit-b]", "methods=[repa]", "eval_steps=[200]", "scoring.enabled=false",
                 "analyze.enabled=false"]
    spec = load_spec("smoke", overrides)
    train_id = next(j.job_id for j in plan(spec) if j.stage == "train")
    monkeypatch.setenv("FAKE_STEP_S", "0.02")
    sub = submit_sweep(spec, root, executor="local", wait=False)  # background driver
    assert sub.final is None and jobs.executors.local.driver_pid(root, "smoke") is not None
    ckpts = root / "jobs" / train_id / "checkpoints"
    deadline = time.time() + 60
    while not list(ckpts.glob("step_*.pt")):
        assert time.time() < deadline, (root / "sweeps" / "smoke" / "driver.log").read_text()
        time.sleep(0.1)
    assert {r["job_id"]: r["state"] for r in sweep_status(spec, root)}[train_id] == "running"
    assert cancel_sweep(spec, root) == sorted(j.job_id for j in plan(spec))
    assert jobs.executors.local.driver_pid(root, "smoke") is None
    assert {r["state"] for r in sweep_status(spec, root)} == {"cancelled"}
    assert ResultStore(root).read("runs").empty

    monkeypatch.setenv("FAKE_STEP_S", "0")
    assert submit_sweep(spec, root, executor="local", wait=True).ok
    runs = ResultStore(root).read("runs", dedupe=False)
    train_rows = runs[runs["job_id"] == train_id]
    assert len(train_rows) == 1 and train_rows["resumed_from"].iloc[0] >= 10
    assert _invocations(root)[train_id] == 2


def test_debug_executor_runs_in_process(fakes):
    root = fakes / "root"
    spec = load_spec("smoke", REDUCED + ["scoring.enabled=false"])
    sub = submit_sweep(spec, root, executor="debug", wait=True)
    assert sub.ok and len(sub.submitted) == 4 + 4 + 1
    assert len(ResultStore(root).read("generation")) == 4


def test_slurm_executor_without_slurm_is_a_clear_error(fakes, monkeypatch):
    import jobs.executors.slurm
    import jobs.submit

    monkeypatch.setattr(jobs.executors.slurm, "slurm_available", lambda: False)
    with pytest.raises(jobs.submit.SubmitError, match="--executor local"):
        submit_sweep(load_spec("smoke", REDUCED), fakes / "root", executor="slurm")


def test_raising_steps_resumes_the_same_run_and_keeps_its_evaluations(fakes):
    """Plan at 100 steps, run, raise to 200: the train id is unchanged, the training resumes at 100, the rows of
    step 100 are not recomputed; lowering the target again needs nothing to run."""
    root = fakes / "root"
    base = ["encoders=[dinov2-vit-b]", "methods=[repa]", "scoring.enabled=false", "steps=100", "eval_steps=[100]"]
    short = load_spec("smoke", base)
    assert submit_sweep(short, root, executor="debug", wait=True).ok
    long = load_spec("smoke", base + ["steps=200", "eval_steps=[100, 200]"])
    train = {j.job_id for j in plan(short) if j.stage == "train"}
    assert train == {j.job_id for j in plan(long) if j.stage == "train"}
    train_id = train.pop()
    status = {r["job_id"]: r["state"] for r in sweep_status(long, root)}
    assert status[train_id] == "not submitted"  # done at 100, its target is now 200
    before = _invocations(root)

    sub = submit_sweep(long, root, executor="debug", wait=True)
    assert sub.ok
    eval_100 = next(j.job_id for j in plan(long) if j.stage == "eval" and j.steps == 100)
    assert eval_100 in sub.skipped_done and train_id in sub.submitted
    assert {j.stage for j in plan(long) if j.job_id in sub.submitted} == {"train", "eval", "analyze"}
    rerun = {k: v - before.get(k, 0) for k, v in _invocations(root).items() if v - before.get(k, 0)}
    assert train_id in rerun and eval_100 not in rerun
    runs = ResultStore(root).read("runs", dedupe=False)
    assert sorted(runs.loc[runs["job_id"] == train_id, "resumed_from"]) == [0, 100]
    gen = ResultStore(root).read("generation", dedupe=False)
    assert sorted(gen["step"]) == [100, 200]  # one row per step: step 100 was not evaluated again
    assert jobs.tasks.reached_step(root, train_id) == 200

    lower = submit_sweep(short, root, executor="debug", wait=True)
    assert lower.ok and not lower.submitted  # the run is past 100: its kept checkpoint serves
