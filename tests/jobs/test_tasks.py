"""jobs.tasks.run_job: the identity columns of the rows a job writes, each hash under its own name."""
from __future__ import annotations

import study.training
from jobs import tasks
from jobs.plan import plan
from jobs.spec import load_spec
from results import JOB_HASH, RUN_HASH, ResultStore
from study.config import config_hash


def test_rows_carry_the_job_hash_and_the_run_hash(tmp_path, monkeypatch):
    jobs = plan(load_spec("smoke", ["encoders=[dinov2-vit-b]", "eval_steps=[200]"]))
    train = next(j for j in jobs if j.stage == "train")
    ev = next(j for j in jobs if j.stage == "eval" and j.params.train_job == train.job_id)
    monkeypatch.setattr(study.training, "train", lambda cfg, run_dir: {"run_dir": str(run_dir), "step": train.steps,
                                                                        "config_hash": "run-abc", "loss": 1.0})
    monkeypatch.setitem(tasks.STAGE_FUNCTIONS, "eval", lambda job, root, run_dir: [
        ("generation", [{"job_id": job.job_id, "step": job.steps, RUN_HASH: "run-abc", "fid": 1.0}])])
    tasks.run_job(train, tmp_path, sweep="smoke")
    tasks.run_job(ev, tmp_path, sweep="smoke")

    store = ResultStore(tmp_path)
    runs = store.read("runs").set_index("job_id")
    assert "config_hash" not in runs.columns
    assert runs[JOB_HASH].to_dict() == {j.job_id: j.job_id.split("-", 1)[1] for j in (train, ev)}
    assert runs.loc[train.job_id, RUN_HASH] == "run-abc"  # the training's summary names its run
    assert runs.loc[train.job_id, "train_config_hash"] == config_hash(train.params.config())
    gen = store.read("generation")
    assert "config_hash" not in gen.columns
    assert gen[[JOB_HASH, RUN_HASH, "train_job_id"]].values.tolist() == [[ev.job_id.split("-", 1)[1], "run-abc",
                                                                          train.job_id]]
