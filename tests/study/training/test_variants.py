"""MeanFlow and JiT as training variants: their presets train, checkpoint, resume exactly and sample at tiny size on
CPU; their config sections leave every existing config hash unchanged and reject combinations that cannot work."""
import pytest
import torch
from train_support import SMOKE_DATA, load_samples, log_rows, one_thread, params  # noqa: F401 (autouse fixture)

import study.config.train as C
import study.training.loop as T
from study.config import ConfigError, SamplerSettings, config_hash
from study.sampling import sample_run

_COMMON = [f"data.spec={SMOKE_DATA}", "data.image_size=null", "data.codec=identity", "data.num_workers=0",
           "encoder.weights=tiny", "method.hidden_dim=64", "steps=6", "batch_size=8", "ckpt_every=3",
           "ckpt_keep_every=null", "log_every=1", "sample_every=0", "compile=false", "threads=1", "precision=fp32",
           "device=cpu", "optim.warmup_steps=2", "preview.n=4"]


def tiny(preset: str, *extra: str) -> C.TrainConfig:
    size = "JiT-smoke" if preset.startswith("jit") else "smoke"
    return C.load_train_config(preset, [f"model.size={size}", "model.patch_size=2", *_COMMON, *extra])


@pytest.mark.parametrize("preset,mode,nfe", [("meanflow-repa", "meanflow", 1), ("meanflow-irepa", "meanflow", 4),
                                             ("meanflow-cfg-irepa", "meanflow", 1), ("jit-repa", "ode", 50),
                                             ("jit-irepa", "heun", 3)])
def test_preset_trains_resumes_exactly_and_samples(tmp_path, preset, mode, nfe):
    cfg = tiny(preset)
    full = tmp_path / "full"
    out = T.train(cfg, full)
    assert out["step"] == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log_rows(full))
    assert cfg.method.name == preset and out["loss_align"] != 0.0  # the alignment loss is on

    part = tmp_path / "part"
    T.train(cfg, part, max_steps=4)
    (part / "checkpoints" / "step_0000004.pt").unlink()  # killed before its checkpoint: resume from step 3
    T.train(cfg, part)
    a, b = params(full, 6), params(part, 6)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert [r["loss"] for r in log_rows(part)] == pytest.approx([r["loss"] for r in log_rows(full)], abs=1e-6)

    sampler = SamplerSettings(mode=mode, num_steps=nfe)
    samples = sample_run(full, 6, 4, sampler, batch_size=2, device="cpu")
    images, labels = load_samples(samples)
    assert images.shape == (4, 32, 32, 3) and images.dtype.name == "uint8" and list(labels) == [0, 1, 2, 3]
    again, _ = load_samples(sample_run(full, 6, 4, sampler, batch_size=4, device="cpu", out_dir=tmp_path / "again"))
    assert (again == images).all()  # per-sample noise: the batch size does not matter


def test_meanflow_checkpoint_holds_the_second_time_embedding_and_previews(tmp_path):
    cfg = tiny("meanflow-repa", "steps=2", "sample_every=2")
    T.train(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "step_0000002.pt", weights_only=False)
    assert any(k.startswith("h_embed.") for k in state["ema"])
    assert (tmp_path / "samples" / "preview_step_0000002.png").is_file()  # 1-NFE preview sheet
    with pytest.raises(ValueError, match="cfg_scale 1.0"):
        sample_run(tmp_path, 2, 2, SamplerSettings(mode="meanflow", num_steps=1, cfg_scale=2.0), device="cpu")


def test_new_sections_leave_existing_config_hashes_unchanged():
    for preset in ("repa", "irepa", "irepa-released", "imagenet", "tiny", "smoke"):
        cfg = C.load_train_config(preset)
        dumped = cfg.model_dump(mode="json")
        assert "meanflow" not in dumped and "xpred" not in dumped
        assert C.load_train_config(dumped) == cfg
    # the hashes the presets had before these sections existed (main at the structure commit; encoder.bf16 as it
    # was then: the imagenet preset turned it on since)
    assert config_hash(C.load_train_config("repa", ["encoder.bf16=false"])) == "90bbef5876aa"
    assert config_hash(C.load_train_config("tiny", ["encoder.bf16=false"])) == "347465e3ea3c"
    mf = C.load_train_config("meanflow-cfg-repa")
    assert mf.model_dump(mode="json")["meanflow"]["kappa"] == 0.5
    assert C.load_train_config(mf.model_dump(mode="json")) == mf
    assert config_hash(mf) != config_hash(C.load_train_config("meanflow-repa"))


def test_presets_follow_the_papers():
    mf, jit = C.load_train_config("meanflow-irepa"), C.load_train_config("jit-irepa")
    assert (mf.model.size, mf.steps, mf.meanflow.time_mean, mf.meanflow.equal_fraction) == ("SiT-B/2", 100_000, -0.4,
                                                                                             0.75)
    cfg = C.load_train_config("meanflow-cfg-repa").meanflow
    assert cfg.omega / (1 - cfg.kappa) == 2.0  # Table 3b's CFG 2.0
    assert (jit.model.size, jit.data.codec, jit.data.image_size, jit.steps, jit.preview.num_steps) == \
        ("JiT-B/16", "identity", 256, 200_000, 50)
    assert (jit.method.projector, jit.method.gamma, jit.method.lam) == ("conv", 0.8, 0.5)
    assert (jit.flow.time, jit.flow.time_mean, jit.flow.time_std) == ("lognormal", 0.8, 0.8)


def test_incompatible_objectives_are_clear_errors():
    with pytest.raises(ConfigError, match="set the xpred section"):
        C.load_train_config("tiny", ["model.size=JiT-tiny"])
    with pytest.raises(ConfigError, match="needs a SiT"):
        C.load_train_config("tiny", ["model.size=JiT-tiny", "meanflow.omega=1.0"])
    with pytest.raises(ConfigError, match="set one of them"):
        C.load_train_config("meanflow", ["xpred.t_eps=0.05"])
    with pytest.raises(ConfigError, match="preview.mode"):
        C.load_train_config("tiny", ["preview.mode=meanflow"])
    with pytest.raises(ConfigError, match="does not combine"):
        C.load_train_config("repa-e", ["meanflow.omega=1.0"])
    with pytest.raises(ConfigError, match="linear path"):
        C.load_train_config("meanflow", ["flow.path=cosine"])
    with pytest.raises(ConfigError, match="unknown JiT size"):
        C.load_train_config("jit", ["model.size=JiT-G/16"])


def test_sweep_specs_for_table_3b_and_table_10_plan():
    from jobs.plan import plan
    from jobs.spec import load_spec

    mf4, mf1, jit = (plan(load_spec(name)) for name in ("table3b", "table3b-1nfe", "table10"))
    trains = [j for j in mf4 if j.stage == "train"]
    assert len(trains) == 3 * 2 * 2 and {j.method for j in trains} == {"meanflow-repa", "meanflow-irepa"}
    assert {j.job_id for j in trains} == {j.job_id for j in mf1 if j.stage == "train"}  # trained once for both
    assert {j.params.fid.num_steps for j in mf4 if j.stage == "eval"} == {4}
    assert {j.params.fid.num_steps for j in mf1 if j.stage == "eval"} == {1}
    guided = {j.model: j.params.config() for j in trains
              if j.encoder == "dinov2-vit-b" and j.method == "meanflow-irepa"}
    assert guided["SiT-B/2"].meanflow.kappa == 0.0 and guided["SiT-B/2-cfg2"].meanflow.kappa == 0.5
    assert guided["SiT-B/2"].method.projector == "conv" and guided["SiT-B/2"].steps == 100_000
    cfgs = [j.params.config() for j in jit if j.stage == "train"]
    assert {c.model.size for c in cfgs} == {"JiT-B/16", "JiT-L/16"} and {c.method.name for c in cfgs} == \
        {"jit-repa", "jit-irepa"}
    assert all(c.xpred is not None and c.data.codec == "identity" and c.steps == 200_000 for c in cfgs)
    evals = [j for j in jit if j.stage == "eval"]
    assert {(j.params.fid.mode, j.params.fid.num_steps) for j in evals} == {("ode", 50)}
    assert {j.params.fid.sampler.mode for j in mf4 if j.stage == "eval"} == {"meanflow"}


def test_meanflow_repa_and_irepa_train_as_one_group_like_separate_runs(tmp_path):
    from study.training import train_group

    cfgs = [tiny("meanflow-repa", "steps=3"), tiny("meanflow-irepa", "steps=3")]
    for i, cfg in enumerate(cfgs):
        T.train(cfg, tmp_path / f"alone{i}")
    train_group(cfgs, [tmp_path / f"group{i}" for i in range(2)])
    for i in range(2):
        a, b = params(tmp_path / f"alone{i}", 3), params(tmp_path / f"group{i}", 3)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_sweep_estimate_counts_jit_and_meanflow():
    from jobs.cost import flop_table, meanflow_forwards, train_work

    table = flop_table()
    common = dict(input_size=256, in_channels=3, num_classes=1000, patch_size=None, qk_norm=False, projector="conv",
                  hidden_dim=2048, kernel_size=3, sit_precision="bf16", encoder_precision="tf32")
    jit = train_work(table, size="JiT-B/16", encoders=[], align=False, **common)[("train", "bf16")]
    assert jit / 3 == pytest.approx(2 * 131e6 * 256, rel=0.25)  # a forward: about 2 x params x tokens
    assert meanflow_forwards(None) == 0.0
    assert meanflow_forwards(C.load_train_config("meanflow-repa").meanflow) == 2.0  # the JVP
    assert meanflow_forwards(C.load_train_config("meanflow-cfg-repa").meanflow) == 4.0  # + two guidance forwards
    sit = dict(common, input_size=32, in_channels=4)
    flow = train_work(table, size="SiT-B/2", encoders=[], align=False, **sit)[("train", "bf16")]
    mf = train_work(table, size="SiT-B/2", encoders=[], align=False, extra_forwards=2.0, **sit)[("train", "bf16")]
    assert mf == pytest.approx(flow * 5 / 3)


def test_the_analysis_pairs_repa_and_irepa_within_each_variant():
    from analysis.comparisons import repa_irepa_pairs

    methods = C.method_presets()
    assert {("meanflow-repa", "meanflow-irepa"), ("meanflow-cfg-repa", "meanflow-cfg-irepa"),
            ("jit-repa", "jit-irepa")} <= set(repa_irepa_pairs(methods))


def test_meanflow_on_two_gloo_ranks_matches_one_process(tmp_path):
    """The JVP runs on the plain module (torch.func cannot run a DDP wrapper); the gradients still synchronise."""
    import torch.multiprocessing as mp
    from train_support import ddp_worker, free_port, smoke_config

    overrides = ["steps=3", "ckpt_every=3", "batch_size=8", "method=irepa", "meanflow.kappa=0.5"]
    T.train(smoke_config(*overrides), tmp_path / "single")
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path / "ddp"), overrides), nprocs=2, join=True)
    a, b = params(tmp_path / "single", 3), params(tmp_path / "ddp", 3)
    assert any(k.startswith("ema.h_embed.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    for ra, rb in zip(log_rows(tmp_path / "single"), log_rows(tmp_path / "ddp"), strict=True):
        assert (rb["loss"], rb["grad_norm"]) == pytest.approx((ra["loss"], ra["grad_norm"]), rel=1e-4)
