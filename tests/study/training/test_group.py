"""study.training.loop.train_group: several runs on one data pipeline and one encoder forward per step end exactly as the
same runs trained one by one (parameters, EMA, losses), resume independently, and refuse configs they cannot share."""
import pytest
import torch
from train_support import log_rows, one_thread, params, smoke_config  # noqa: F401 (autouse fixture)

from study.config import ConfigError
from study.training import check_group, train, train_group

BASE = ("steps=6", "ckpt_every=3", "log_every=1", "optim.lr=0.01", "encoder.name=dinov2-vit-b",
        "encoder.weights=tiny")
METHODS = (("method=repa", "method.hidden_dim=32"), ("method=irepa",), ("method.align=false",))


def _cfgs(*extra):
    return [smoke_config(*BASE, *m, *extra) for m in METHODS]


def _assert_same_runs(a, b, step):
    pa, pb = params(a, step), params(b, step)
    assert pa.keys() == pb.keys()
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6, msg=k)
    for ra, rb in zip(log_rows(a), log_rows(b), strict=True):
        assert (rb["loss"], rb["loss_v"], rb["loss_align"], rb["grad_norm"]) == \
            pytest.approx((ra["loss"], ra["loss_v"], ra["loss_align"], ra["grad_norm"]), rel=1e-5)


@pytest.mark.parametrize("accum", [1, 2])
def test_a_group_equals_separate_trainings(tmp_path, accum):
    cfgs = _cfgs(f"grad_accum={accum}")
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"alone{i}")
    out = train_group(cfgs, [tmp_path / f"group{i}" for i in range(len(cfgs))])
    assert [o["step"] for o in out] == [6, 6, 6]
    for i in range(len(cfgs)):
        _assert_same_runs(tmp_path / f"alone{i}", tmp_path / f"group{i}", 6)
    # the comparison is between runs that differ from each other (not three copies of one run)
    repa, irepa = params(tmp_path / "group0", 6), params(tmp_path / "group1", 6)
    assert not torch.allclose(repa["ema.blocks.0.attn.qkv.weight"], irepa["ema.blocks.0.attn.qkv.weight"])
    assert log_rows(tmp_path / "group2")[-1]["loss_align"] == 0.0  # the vanilla run in the group aligns nothing


def test_runs_of_a_group_resume_from_their_own_checkpoints(tmp_path):
    cfgs = _cfgs()
    train(cfgs[0], tmp_path / "g0", max_steps=3)  # one run is ahead: the others catch up, then all go on together
    train_group(cfgs, [tmp_path / f"g{i}" for i in range(len(cfgs))])
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"alone{i}")
        _assert_same_runs(tmp_path / f"alone{i}", tmp_path / f"g{i}", 6)


def test_groups_refuse_what_they_cannot_share(tmp_path):
    cfgs = _cfgs()
    with pytest.raises(ConfigError, match="differ in seed"):
        check_group([cfgs[0], smoke_config(*BASE, "seed=1")])
    with pytest.raises(ConfigError, match="differ in data, batch_size"):
        check_group([cfgs[0], smoke_config(*BASE, "batch_size=4", "data.spec=synthetic:n=32,size=32,classes=4")])
    with pytest.raises(ConfigError, match="one distinct run directory"):
        train_group(cfgs[:2], [tmp_path / "same", tmp_path / "same"])
    check_group(cfgs)  # method, projector, model size and flow may differ


# ------------------------------------------------------------------------------------------------ in a sweep
SWEEP = ["encoders=[dinov2-vit-b]", "methods=[repa, irepa]", "steps=4", "eval_steps=[4]",
         "train_overrides=[batch_size=8, ckpt_every=4, log_every=1, sample_every=0, method.hidden_dim=32]",
         "fid.n_samples=16", "fid.num_steps=2", "fid.batch_size=16", "scoring.enabled=false", "analyze.enabled=false",
         "models={smoke: {}}"]


@pytest.mark.slow
def test_a_grouped_sweep_trains_each_member_once_into_its_own_run(tmp_path):
    from jobs.plan import TrainGroupParams, plan
    from jobs.spec import load_spec
    from jobs.submit import submit_sweep
    from jobs.tasks import is_done, job_dir
    from results import ResultStore

    alone = load_spec("smoke", SWEEP)
    grouped = load_spec("smoke", [*SWEEP, "executor.group_methods=true"])
    plain, group = plan(alone), plan(grouped)
    member_ids = [j.job_id for j in plain if j.stage == "train"]
    [carrier] = [j for j in group if j.stage == "train"]
    assert isinstance(carrier.params, TrainGroupParams) and list(carrier.params.runs) == member_ids
    assert carrier.method == "repa+irepa"
    evals = [j for j in group if j.stage == "eval"]
    assert [j.job_id for j in evals] == [j.job_id for j in plain if j.stage == "eval"]  # evaluation ids unchanged
    assert all(j.depends_on == [carrier.job_id] for j in evals)

    sub = submit_sweep(grouped, tmp_path / "g", executor="debug")
    assert not sub.failed
    for mid in member_ids:
        assert is_done(tmp_path / "g", mid) and (job_dir(tmp_path / "g", mid) / "checkpoints" / "step_0000004.pt").is_file()
    gen = ResultStore(tmp_path / "g").read("generation")
    assert sorted(gen["train_job_id"]) == sorted(member_ids)
    runs = ResultStore(tmp_path / "g").read("runs")
    assert sorted(runs.loc[runs["stage"] == "train", "job_id"]) == sorted(member_ids + [carrier.job_id])

    submit_sweep(alone, tmp_path / "a", executor="debug")
    for mid in member_ids:  # the same runs as trained one by one
        pa, pg = params(job_dir(tmp_path / "a", mid), 4), params(job_dir(tmp_path / "g", mid), 4)
        for k in pa:
            torch.testing.assert_close(pa[k], pg[k], rtol=1e-5, atol=1e-6, msg=k)
    again = submit_sweep(grouped, tmp_path / "g", executor="debug")  # everything done: nothing runs again
    assert set(again.skipped_done) == {j.job_id for j in group} and not again.submitted
