"""Sweeps on a real (local, single-node) SLURM cluster through submitit's SlurmExecutor.

Needs Debian's slurm-wlm + munge and a running cluster: ``tests/slurm/cluster.sh install && tests/slurm/cluster.sh
up`` (as root). Without them every test here skips and says so. The job bodies are the stand-in stages of
test_submit.py (the SLURM machinery is what is under test): arrays, dependencies, rows, preemption + requeue.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from stage_fakes import FAKE_STAGES

import jobs.executors.slurm
from jobs.plan import plan
from jobs.spec import load_spec
from jobs.submit import submit_sweep, sweep_status
from jobs.tasks import read_state
from results import ResultStore

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("SLURM_TEST_DIR", "/tmp/repa-slurm"))


def _cluster_problem() -> str | None:
    if not shutil.which("sbatch") and not Path("/usr/bin/sbatch").exists():
        return "slurm binaries not installed (run: tests/slurm/cluster.sh install && tests/slurm/cluster.sh up)"
    if (CLUSTER_DIR / "slurm.conf").exists():
        env = {**os.environ, "SLURM_CONF": str(CLUSTER_DIR / "slurm.conf")}
    elif os.environ.get("REPA_STUDY_SLURM_TESTS") == "1":
        env = dict(os.environ)  # opted in: use whatever cluster the environment points at
    else:
        return (f"no test cluster config in {CLUSTER_DIR} (run: tests/slurm/cluster.sh up; or set "
                f"REPA_STUDY_SLURM_TESTS=1 to run these tests on the cluster this machine submits to)")
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"scontrol failed: {exc}"
    if "UP" not in out.stdout:
        return "no SLURM controller answering (run: tests/slurm/cluster.sh up)"
    return None


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """Skip without a cluster; else point clients at it and install the stand-in stages for the jobs."""
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)
    if (CLUSTER_DIR / "slurm.conf").exists():
        monkeypatch.setenv("SLURM_CONF", str(CLUSTER_DIR / "slurm.conf"))
    if (CLUSTER_DIR / "bin" / "sacct").exists():  # the sacct shim (no accounting on the test cluster)
        monkeypatch.setenv("PATH", f"{CLUSTER_DIR / 'bin'}:{os.environ['PATH']}")
    # the jobs import the stand-in stages from this folder (sbatch exports the environment)
    fakes_dir = tmp_path / "fakes"
    fakes_dir.mkdir()
    (fakes_dir / "repa_fake_stages.py").write_text(FAKE_STAGES)
    (fakes_dir / "repa_fake_task.py").write_text(textwrap.dedent("""
        import repa_fake_stages  # noqa: F401 - installs the stand-in stages in the job process
        from jobs.tasks import SweepTask

        class FakeSweepTask(SweepTask):
            pass
    """))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fakes_dir), str(REPO)]))
    monkeypatch.syspath_prepend(str(fakes_dir))
    import jobs.tasks as tasks

    monkeypatch.setattr(tasks, "STAGE_FUNCTIONS", dict(tasks.STAGE_FUNCTIONS))
    for name in ("repa_fake_stages", "repa_fake_task"):
        sys.modules.pop(name, None)
    import repa_fake_task

    monkeypatch.setattr(jobs.executors.slurm, "TASK_CLASS", repa_fake_task.FakeSweepTask)
    return tmp_path


def test_smoke_sweep_through_slurm_arrays_and_dependencies(cluster):
    root = cluster / "root"
    spec = load_spec("smoke", ["encoders=[dinov2-vit-b, mae-vit-l]", "eval_steps=[200]",
                               "models.smoke.train.mem_gb=1", "models.smoke.eval.mem_gb=1",
                               "scoring.resources.mem_gb=1", "analyze.resources.mem_gb=1"])
    jobs = plan(spec)
    sub = submit_sweep(spec, root, executor="slurm", wait=True, poll_s=1)
    assert sub.ok, sweep_status(spec, root)
    ids = set(sub.submitted.values())
    assert len(ids) == len(jobs)
    trains = [sub.submitted[j.job_id] for j in jobs if j.stage == "train"]
    assert len({t.split("_")[0] for t in trains}) == 1 and all("_" in t for t in trains)  # one array
    store = ResultStore(root)
    gen = store.read("generation")
    assert len(gen) == 4 and set(gen["step"]) == {200}
    runs = store.read("runs", dedupe=False)
    assert sorted(runs["job_id"]) == sorted(j.job_id for j in jobs) and set(runs["status"]) == {"done"}
    slurm_ids = {read_state(root, j.job_id)["slurm_job_id"] for j in jobs}
    assert None not in slurm_ids
    log = Path(read_state(root, jobs[0].job_id)["log"])
    assert f"job {jobs[0].job_id}" in log.read_text()  # the job's own log lines reach the submitit log
    # resubmission: everything is done, nothing is submitted
    again = submit_sweep(spec, root, executor="slurm", wait=True, poll_s=1)
    assert again.ok and not again.submitted


def test_interrupted_training_is_requeued_resumes_and_writes_rows_once(cluster, monkeypatch):
    import submitit

    root = cluster / "root"
    monkeypatch.setenv("FAKE_STEP_S", "0.05")  # 200 steps: 10 s of "training"
    spec = load_spec("smoke", ["encoders=[dinov2-vit-b]", "methods=[repa]", "eval_steps=[200]",
                               "scoring.enabled=false", "analyze.enabled=false",
                               "models.smoke.train.mem_gb=1", "models.smoke.eval.mem_gb=1"])
    train_id = next(j.job_id for j in plan(spec) if j.stage == "train")
    sub = submit_sweep(spec, root, executor="slurm", wait=False)
    slurm_id = sub.submitted[train_id]
    entry = json.loads((root / "sweeps" / "smoke" / "submissions.jsonl").read_text().splitlines()[0])
    job = submitit.SlurmJob(folder=entry["folder"], job_id=slurm_id)
    ckpts = root / "jobs" / train_id / "checkpoints"
    deadline = time.time() + 120
    while len(list(ckpts.glob("step_*.pt"))) < 3:
        assert time.time() < deadline, f"training did not checkpoint; state {read_state(root, train_id)}"
        time.sleep(0.2)
    job._interrupt()  # preemption: SIGTERM (ignored by submitit) then USR2 -> checkpoint() + requeue
    entries = {j: {"scheduler_id": s} for j, s in sub.submitted.items()}
    final = jobs.executors.slurm.SlurmExecutor().wait(root, "smoke", entries, poll_s=1)
    assert final == {k: "done" for k in sub.submitted}, sweep_status(spec, root)
    state = read_state(root, train_id)
    assert state["attempt"] == 2 and state["state"] == "done"
    runs = ResultStore(root).read("runs", dedupe=False)
    train_rows = runs[runs["job_id"] == train_id]
    assert len(train_rows) == 1  # rows are written once, by the attempt that finished
    assert train_rows["resumed_from"].iloc[0] >= 30  # the second attempt resumed from a checkpoint
    invocations = [json.loads(line) for line in (root / "invocations.jsonl").read_text().splitlines()]
    assert [i["job_id"] for i in invocations].count(train_id) == 2
    assert len(ResultStore(root).read("generation")) == 1


def test_resubmitting_while_queued_submits_nothing_and_cancel_stops_all(cluster, monkeypatch):
    from jobs.submit import cancel_sweep

    root = cluster / "root"
    monkeypatch.setenv("FAKE_STEP_S", "0.2")  # 40 s of "training": still running when we resubmit and cancel
    spec = load_spec("smoke", ["encoders=[dinov2-vit-b]", "eval_steps=[200]", "scoring.enabled=false",
                               "analyze.enabled=false", "models.smoke.train.mem_gb=1", "models.smoke.eval.mem_gb=1"])
    first = submit_sweep(spec, root, executor="slurm")
    assert len(first.submitted) == 4
    again = submit_sweep(spec, root, executor="slurm")
    assert not again.submitted and sorted(again.skipped_active) == sorted(first.submitted)
    assert sorted(cancel_sweep(spec, root)) == sorted(first.submitted)
    states = {r["job_id"]: r["state"] for r in sweep_status(spec, root)}
    assert set(states.values()) == {"cancelled"}, states
    deadline = time.time() + 60
    while jobs.executors.slurm.slurm_queue().keys() & set(first.submitted.values()):
        assert time.time() < deadline, "cancelled jobs still in the queue"
        time.sleep(0.5)
    assert ResultStore(root).read("runs").empty
