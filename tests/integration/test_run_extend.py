"""A run's identity leaves out its length: raising `steps` resumes the same run (bit for bit the uninterrupted one)
and keeps every checkpoint an earlier session kept; lowering it leaves the run at its kept checkpoints; a sweep
raised from 100 to 200 steps keeps its train id, resumes at 100 and does not recompute the rows of step 100."""
from __future__ import annotations

import json

import pytest
import torch
from train_support import params, smoke_config

from study.config import ConfigError
from study.run import run_hash
from study.training import train


def _ckpts(run_dir) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt"))


def test_run_hash_ignores_length_only():
    base = smoke_config("steps=6", "ckpt_every=2", "ckpt_keep=[4]")
    assert run_hash(base) == run_hash(smoke_config("steps=10", "ckpt_every=5", "ckpt_keep=[4, 10]",
                                                   "ckpt_keep_every=3"))
    assert run_hash(base) != run_hash(smoke_config("steps=6", "ckpt_every=2", "ckpt_keep=[4]", "optim.lr=2e-4"))
    assert run_hash(base) != run_hash(smoke_config("steps=6", "ckpt_every=2", "ckpt_keep=[4]", "method=irepa"))


def test_raising_steps_resumes_the_run_and_keeps_earlier_kept_checkpoints(tmp_path):
    common = ["ckpt_every=2", "log_every=1", "threads=1"]
    short = smoke_config("steps=6", "ckpt_keep=[4]", *common)
    run = tmp_path / "run"
    first = train(short, run)
    assert first["step"] == 6 and _ckpts(run) == [4, 6]  # 2 was a resume point
    before = (run / "checkpoints" / "step_0000006.pt").stat().st_mtime_ns

    long = smoke_config("steps=10", "ckpt_keep=[10]", *common)  # the new plan no longer lists 4 or 6
    out = train(long, run)
    assert out["step"] == 10 and out["config_hash"] == first["config_hash"] == run_hash(long)
    assert _ckpts(run) == [4, 6, 10]  # 8 was a resume point; 4 and 6 were kept by the first session
    assert (run / "checkpoints" / "step_0000006.pt").stat().st_mtime_ns == before  # not trained again
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))  # resumed at 6: each step logged once
    sessions = json.loads((run / "provenance.json").read_text())["sessions"]
    assert [(s["steps"], s["ckpt_keep"]) for s in sessions] == [(6, [4]), (10, [10])]

    straight = tmp_path / "straight"
    train(smoke_config("steps=10", "ckpt_keep=[10]", *common), straight)
    a, b = params(run, 10), params(straight, 10)
    for k in a:  # the extended run is the uninterrupted one
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)

    lower = train(smoke_config("steps=4", "ckpt_keep=[4]", *common), run)
    assert lower["step"] == 10 and _ckpts(run) == [4, 6, 10]  # nothing trained, nothing removed

    with pytest.raises(ConfigError, match="already holds another run .*differing: method"):
        train(smoke_config("steps=12", "method=irepa", *common), run)


@pytest.mark.slow
def test_sweep_raised_from_100_to_200_steps_resumes_and_keeps_step_100(tmp_path, monkeypatch):
    """The real stages on the debug executor: plan a spec at 100 steps, run it, raise it to 200."""
    from jobs.plan import plan
    from jobs.spec import load_spec
    from jobs.submit import submit_sweep
    from jobs.tasks import job_dir, reached_step
    from results import ResultStore

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        small = ["dataset=synthetic:n=128,size=32,classes=4,seed=0", "encoders=[dinov2-vit-b]", "methods=[repa]", "scoring.enabled=false", "analyze.enabled=false",
                 "train_overrides=[batch_size=8, ckpt_every=50, log_every=50, sample_every=0, method.hidden_dim=32, "
                 "threads=1]", "fid.n_samples=16", "fid.num_steps=4", "fid.batch_size=16"]
        root = tmp_path / "root"
        short = load_spec("smoke", [*small, "steps=100", "eval_steps=[100]"])
        assert submit_sweep(short, root, executor="debug", wait=True).ok
        (train_id,) = [j.job_id for j in plan(short) if j.stage == "train"]
        run = job_dir(root, train_id)
        assert _ckpts(run) == [100] and reached_step(root, train_id) == 100
        ckpt_100 = (run / "checkpoints" / "step_0000100.pt").stat().st_mtime_ns
        row_100 = ResultStore(root).read("generation")

        long = load_spec("smoke", [*small, "steps=200", "eval_steps=[100, 200]"])
        assert [j.job_id for j in plan(long) if j.stage == "train"] == [train_id]  # same run
        sub = submit_sweep(long, root, executor="debug", wait=True)
        assert sub.ok and sorted(j.steps for j in plan(long) if j.job_id in sub.submitted) == [200, 200]  # train, eval
        assert reached_step(root, train_id) == 200 and _ckpts(run) == [100, 200]
        assert (run / "checkpoints" / "step_0000100.pt").stat().st_mtime_ns == ckpt_100  # resumed, not retrained
        logged = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
        assert logged == [50, 100, 150, 200]
        sessions = json.loads((run / "provenance.json").read_text())["sessions"]
        assert [s["steps"] for s in sessions] == [100, 200]

        gen = ResultStore(root).read("generation", dedupe=False)
        assert sorted(gen["step"]) == [100, 200]  # step 100 was not evaluated again
        assert set(gen["protocol"]) == {"synthetic-16-sde4"} and gen["fd_synthetic"].notna().all()
        old = gen[gen["step"] == 100].iloc[0]
        assert old["written_at"] == row_100.iloc[0]["written_at"] and old["train_job_id"] == train_id
    finally:
        torch.set_num_threads(threads)


def test_a_grouped_sweep_extends_too(tmp_path):
    """executor.group_methods: the group job keeps its id when the target is raised, is not done until every member
    reached it, and trains its members on from their checkpoints; the evaluations of step 4 are not run again."""
    from jobs.plan import plan
    from jobs.spec import load_spec
    from jobs.submit import submit_sweep
    from jobs.tasks import job_dir, job_done, reached_step
    from results import ResultStore

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweep = ["dataset=synthetic:n=64,size=32,classes=4,seed=0", "encoders=[dinov2-vit-b]", "methods=[repa, irepa]",
                 "train_overrides=[batch_size=8, ckpt_every=4, log_every=1, sample_every=0, method.hidden_dim=32, "
                 "threads=1]", "fid.n_samples=16", "fid.num_steps=2", "fid.batch_size=16", "scoring.enabled=false",
                 "analyze.enabled=false", "models={smoke: {}}", "executor.group_methods=true"]
        root = tmp_path / "root"
        short, long = (load_spec("smoke", [*sweep, *s]) for s in (["steps=4", "eval_steps=[4]"],
                                                                  ["steps=8", "eval_steps=[4, 8]"]))
        assert not submit_sweep(short, root, executor="debug").failed
        [group] = [j for j in plan(short) if j.stage == "train"]
        [group_long] = [j for j in plan(long) if j.stage == "train"]
        assert group_long.job_id == group.job_id and list(group_long.params.runs) == list(group.params.runs)
        assert job_done(root, group) and not job_done(root, group_long)
        sub = submit_sweep(long, root, executor="debug")
        assert not sub.failed and group.job_id in sub.submitted
        assert {j.steps for j in plan(long) if j.stage == "eval" and j.job_id in sub.submitted} == {8}
        for mid in group.params.runs:
            assert reached_step(root, mid) == 8 and _ckpts(job_dir(root, mid)) == [4, 8]
        gen = ResultStore(root).read("generation", dedupe=False)
        assert sorted(gen["step"]) == [4, 4, 8, 8]
    finally:
        torch.set_num_threads(threads)
