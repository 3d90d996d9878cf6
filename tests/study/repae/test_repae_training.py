"""REPA-E end to end at tiny size on CPU: the preset trains, checkpoints the tuned VAE, resumes exactly, samples
with the tuned VAE and the EMA BN statistics; two gloo ranks match one process; other configs keep their hashes."""
import json

import pytest
import torch
import torch.multiprocessing as mp
from train_support import ddp_worker, free_port, load_samples, log_rows, one_thread  # noqa: F401 (autouse fixture)

import study.training.loop as T
from study.config import ConfigError, SamplerSettings, build_train_config, config_hash, load_train_config
from study.run import build_denoiser, checkpoint_path

TINY = ["device=cpu", "threads=1", "encoder.weights=tiny", "log_every=1"]
# the same at smoke size on the smoke preset (what ddp_worker and a sweep's train_overrides would pass)
AS_OVERRIDES = ["method=repa-e", "method.depth=null", "method.hidden_dim=64", "model.patch_size=1",
                "data.codec=sd-vae", "method.repae.vae_weights=tiny", "method.repae.perceptual_weight=0",
                "method.repae.disc_weights=random"]


def state(run, step):
    return torch.load(checkpoint_path(run, step), map_location="cpu", weights_only=False)


def flat(st):
    out = {f"model.{k}": v for k, v in st["model"].items()} | {f"ema.{k}": v for k, v in st["ema"].items()}
    for part in ("vae", "bn", "ema_bn", "disc"):
        out |= {f"{part}.{k}": v for k, v in st["repae"][part].items()}
    for part in ("opt_vae", "opt_disc"):
        for i, s in st["repae"][part]["state"].items():
            out |= {f"{part}.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)}
    return out


def test_preset_trains_checkpoints_resumes_exactly_and_samples(tmp_path):
    from study.objectives import FlowMatching
    from study.repae import codec_from_checkpoint, tiny_autoencoder
    from study.sampling import sample_images, sample_run

    cfg = load_train_config("smoke-repa-e", [*TINY, "steps=4", "ckpt_every=2", "sample_every=4"])
    assert cfg.method.repae is not None and cfg.data.codec == "sd-vae"
    full = tmp_path / "full"
    T.train(cfg, full)
    st = state(full, 4)
    assert st["meta"]["repae"] and set(st["repae"]) >= {"vae", "vae_config", "bn", "ema_bn", "opt_vae", "disc"}
    assert (full / "samples" / "preview_step_0000004.png").is_file()
    rows = log_rows(full)
    assert set(rows[0]) >= {"loss_vae", "loss_vae_align", "loss_disc", "vae_rec", "vae_kl", "grad_norm_vae"}
    # the VAE, the latent BN and the discriminator all moved
    init = tiny_autoencoder().state_dict()
    assert any(not torch.equal(init[k], v) for k, v in st["repae"]["vae"].items())
    assert int(st["repae"]["bn"]["num_batches_tracked"]) == 4
    assert not torch.equal(st["repae"]["bn"]["running_mean"], st["repae"]["ema_bn"]["running_mean"])

    # killed after step 3 before its checkpoint: resume from step 2 reproduces the uninterrupted run
    part = tmp_path / "part"
    T.train(cfg, part, max_steps=3)
    checkpoint_path(part, 3).unlink()
    T.train(cfg, part)
    a, b = flat(st), flat(state(part, 4))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert [r["loss_vae"] for r in log_rows(part)] == pytest.approx([r["loss_vae"] for r in rows], abs=1e-6)

    # sampling (and so FID) decodes with the tuned VAE and the EMA BN statistics of the checkpoint
    sampler = SamplerSettings(mode="ode", num_steps=2)
    out = sample_run(full, 4, 3, sampler, batch_size=2, device="cpu")
    images, labels = load_samples(out)
    codec = codec_from_checkpoint(st)
    sit = build_denoiser(cfg, image_size=32, num_classes=4, codec=codec, encoder_dims=[64]).sit
    sit.load_state_dict(st["ema"])
    expect = sample_images(sit.eval(), torch.tensor(labels), seeds=[0, 1, 2], codec=codec, objective=FlowMatching(),
                           sampler=sampler)
    assert images.shape == (3, 32, 32, 3) and (expect.permute(0, 2, 3, 1).numpy() == images).all()
    assert json.loads((out / "manifest.json").read_text())["config_hash"] == st["config_hash"]


def test_two_gloo_ranks_match_one_process(tmp_path):
    # no GAN here: the discriminator's BatchNorm is per rank, as in the official code
    overrides = [*AS_OVERRIDES, "steps=2", "ckpt_every=2", "batch_size=8", "method.repae.disc_weight=0"]
    T.train(load_train_config("smoke", ["device=cpu", "data.spec=synthetic:n=64,size=32,classes=4,seed=0",
                                          *overrides]), tmp_path / "single")
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path / "ddp"), overrides), nprocs=2, join=True)
    a, b = state(tmp_path / "single", 2), state(tmp_path / "ddp", 2)
    for part in ("vae", "bn", "ema_bn"):
        for k, v in a["repae"][part].items():
            torch.testing.assert_close(b["repae"][part][k], v, rtol=1e-4, atol=1e-5, msg=f"{part}.{k}")
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    for ra, rb in zip(log_rows(tmp_path / "single"), log_rows(tmp_path / "ddp")):
        assert (rb["loss"], rb["loss_vae"], rb["grad_norm_vae"]) == \
            pytest.approx((ra["loss"], ra["loss_vae"], ra["grad_norm_vae"]), rel=1e-4)


def test_other_configs_keep_their_hashes_and_repae_configs_round_trip(tmp_path):
    for preset in ("repa", "irepa", "irepa-released", "tiny", "smoke"):
        cfg = load_train_config(preset)
        assert "repae" not in cfg.model_dump()["method"]  # so config_hash is what it was before the field
    # the hash before method.repae existed (encoder.bf16 as it was then: the imagenet preset turned it on since)
    assert config_hash(load_train_config("repa", ["encoder.bf16=false"])) == "90bbef5876aa"
    e = load_train_config("irepa-e")
    assert (e.method.projector, e.method.spatial_norm, e.method.repae.vae_lam, e.method.repae.recon) == \
        ("conv", True, 1.5, "l1")
    from study.config import dump_config

    dump_config(e, tmp_path / "config.yaml")
    assert config_hash(load_train_config(str(tmp_path / "config.yaml"))) == config_hash(e)
    swept = build_train_config("irepa-e", "SiT-XL/2", "dinov2-vit-b", steps=1, seed=0, data="/data/in")
    assert swept.method == e.method  # a sweep's method preset carries its REPA-E section
    with pytest.raises(ConfigError, match="data.codec=sd-vae"):
        load_train_config("smoke", ["method=repa-e"])
    with pytest.raises(ConfigError, match="needs align: true"):
        load_train_config("repa-e", ["method.align=false"])


def test_table3a_sweep_plans_repa_e_against_irepa_e():
    from jobs.plan import plan
    from jobs.spec import load_spec

    jobs = plan(load_spec("table3a"))
    trains = [j for j in jobs if j.stage == "train"]
    assert [j.stage for j in jobs].count("eval") == 8 and [j.stage for j in jobs].count("analyze") == 1
    assert {(j.encoder, j.method) for j in trains} == {
        (e, m) for e in ("webssl-vit-dino1b", "pe-vit-g", "dinov3-vit-b16", "dinov2-vit-b") for m in ("repa-e",
                                                                                                       "irepa-e")}
    for job in trains:
        cfg = job.params.config()
        assert (cfg.model.size, cfg.steps, cfg.ckpt_keep, cfg.data.codec) == ("SiT-XL/2", 100_000, [100_000], "sd-vae")
        assert cfg.method.repae is not None and cfg.method.repae.vae_lam == 1.5
        assert cfg.method.spatial_norm == (job.method == "irepa-e")


def test_repa_e_and_irepa_e_trained_as_a_group_equal_separate_runs(tmp_path):
    from study.training import train_group

    base = ["device=cpu", "data.spec=synthetic:n=64,size=32,classes=4,seed=0", *AS_OVERRIDES, "steps=2",
            "ckpt_every=2", "log_every=1", "grad_accum=2"]
    cfgs = [load_train_config("smoke", base),
            load_train_config("smoke", [*base, "method=irepa-e", "method.depth=null", "method.hidden_dim=64",
                                        "method.repae.vae_weights=tiny", "method.repae.perceptual_weight=0",
                                        "method.repae.disc_weights=random"])]
    assert [c.method.name for c in cfgs] == ["repa-e", "irepa-e"]
    for i, cfg in enumerate(cfgs):
        T.train(cfg, tmp_path / f"alone{i}")
    train_group(cfgs, [tmp_path / f"group{i}" for i in range(2)])
    for i in range(2):
        a, b = flat(state(tmp_path / f"alone{i}", 2)), flat(state(tmp_path / f"group{i}", 2))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    va, vb = (state(tmp_path / f"group{i}", 2)["repae"]["vae"] for i in range(2))
    assert any(not torch.equal(va[k], vb[k]) for k in va)  # each run tunes its own VAE


def test_estimate_adds_repa_e_work_per_image():
    from jobs.cost import estimate_spec, repae_train_flops
    from jobs.spec import load_spec

    class Table:  # stand-in counts: which terms enter, and how often
        def get(self, key, compute):
            return {"sd-vae-enc-dec": 100.0, "vgg16-lpips": 10.0, "patchgan": 1.0}[key.split("|")[1]]

    cfg = load_train_config("repa-e")  # SiT-XL/2 aligned after block 8 of 28
    assert repae_train_flops(Table(), cfg, image_size=256, sit_flops=28.0, projector_flops=0.5) == \
        3 * 100 + 3 * 10 + 6 * 1 + 2 * (28 * 8 / 28 + 0.5)
    no_gan = load_train_config("repa-e", ["method.repae.disc_weight=0", "method.repae.perceptual_weight=0"])
    assert repae_train_flops(Table(), no_gan, image_size=256, sit_flops=28.0, projector_flops=0.5) == 300 + 17
    repae = estimate_spec(load_spec("table3a"))
    repa = estimate_spec(load_spec("table3a", ["methods=[repa,irepa]"]))
    assert repae["by_stage"]["train"] > 2 * repa["by_stage"]["train"]  # the VAE dominates (895 vs 237 GFLOPs)
    assert any("REPA-E runs" in a for a in repae["assumptions"])
