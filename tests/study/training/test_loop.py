"""study.training.loop: config loading, run directory, resume, grid mismatch and NaN errors (smoke model, CPU)."""
import json

import numpy as np
import pytest
import torch
import yaml
from train_support import SMOKE_DATA, log_rows, one_thread, params, smoke_config  # noqa: F401 (autouse fixture)

import study.config.train as C
import study.objectives.step as O
import study.training.loop as T
from study.config import ConfigError
from study.data import GridMismatchError
from study.objectives import FlowMatching
from study.training import global_batch_indices


def test_presets_and_overrides():
    assert {"repa", "irepa", "irepa-released", "imagenet", "tiny", "smoke"} <= set(C.list_presets())
    repa, irepa, released = (C.load_train_config(p).method for p in ("repa", "irepa", "irepa-released"))
    assert (repa.projector, repa.spatial_norm, repa.lam) == ("mlp", False, 0.5)
    assert (irepa.projector, irepa.kernel_size, irepa.spatial_norm, irepa.gamma, irepa.lam) == ("conv", 3, True, 0.6,
                                                                                                 0.5)
    assert (released.projector, released.kernel_size, released.lam) == ("conv", 1, 1.0)
    cfg = C.load_train_config("tiny", ["method=irepa", "method.gamma=0.8", "model.size=smoke", "encoder.name=[a, b]"])
    assert cfg.method.name == "irepa" and cfg.method.gamma == 0.8 and cfg.model.size == "smoke"
    assert cfg.encoder.names == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown key"):
        C.load_train_config("smoke", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="neither a config file nor a preset"):
        C.load_train_config("no-such-preset")
    with pytest.raises(ConfigError, match="unknown SiT size"):
        C.load_train_config("smoke", ["model.size=SiT-H/2"])


def test_build_train_config_and_config_files(tmp_path):
    cfg = C.build_train_config("irepa", "SiT-B/2", "mocov3-vit-b", steps=123, seed=4, data=SMOKE_DATA,
                               overrides=["batch_size=16"])
    assert (cfg.method.name, cfg.model.size, cfg.encoder.name, cfg.steps, cfg.seed, cfg.batch_size) == \
        ("irepa", "SiT-B/2", "mocov3-vit-b", 123, 4, 16)
    assert cfg.data.codec == "identity"  # synthetic data -> the tiny (pixel space) base
    assert C.build_train_config("repa", "SiT-XL/2", "dinov2-vit-b", steps=1, seed=0, data="/data/in").data.codec \
        == "sd-vae"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"base": "smoke", "method": "irepa", "steps": 3}))
    cfg = C.load_train_config(str(path))
    assert cfg.steps == 3 and cfg.method.projector == "conv" and cfg.model.size == "smoke"


def test_run_dir_contents_and_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = smoke_config("steps=8", "ckpt_every=3", "log_every=1", "method=irepa", "sample_every=4")
    full = tmp_path / "full"
    out = T.train(cfg, full)
    assert out["step"] == 8 and out["checkpoint"].endswith("step_0000008.pt")
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == \
        ["step_0000003.pt", "step_0000006.pt", "step_0000008.pt"]
    assert (full / "samples" / "preview_step_0000004.png").is_file()
    assert C.load_train_config(str(full / "config.yaml")) == cfg
    assert (full / "config_hash").read_text().strip() == out["config_hash"]
    prov = json.loads((full / "provenance.json").read_text())
    assert prov["config_hash"] == out["config_hash"] and "git_commit" in prov and prov["seed"] == cfg.seed
    rows = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert set(rows[0]) >= {"step", "loss", "loss_v", "loss_align", "grad_norm", "images_per_s", "lr"}
    state = torch.load(full / "checkpoints" / "step_0000006.pt", weights_only=False)
    assert state["data_position"] == 6 * cfg.batch_size and set(state["rng"]) >= {"torch", "numpy", "python"}

    # killed after step 7, before its checkpoint: resume from step 6
    part = tmp_path / "part"
    T.train(cfg, part, max_steps=7)
    (part / "checkpoints" / "step_0000007.pt").unlink()
    again = T.train(cfg, part)
    assert again["step"] == 8
    a, b = params(full, 8), params(part, 8)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    rows_b = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == list(range(1, 9))  # the log lines past the checkpoint were replaced
    assert [r["loss"] for r in rows_b] == pytest.approx([r["loss"] for r in rows], abs=1e-6)

    with pytest.raises(ConfigError, match="already holds another run"):  # a length change alone would resume
        T.train(smoke_config("steps=9", "ckpt_every=3", "method=repa"), full)


def test_grid_mismatch_is_a_clear_error(tmp_path):
    with pytest.raises(GridMismatchError, match=r"dinov2-vit-b: SiT grid 8x8 .*encoder grid 16x16.*patch size 2"):
        T.train(smoke_config("model.patch_size=4"), tmp_path / "run")


def test_pooled_encoder_tokens_align_a_coarser_grid(tmp_path):
    """encoder.pool=2 averages the encoder's 16x16 tokens to the 8x8 grid of a patch-4 SiT at 32 px; left out of the
    config's dump at its default 1, so every existing hash stands."""
    from study.config import config_hash

    base, pooled = smoke_config(), smoke_config("model.patch_size=4", "encoder.pool=2")
    assert "pool" not in base.model_dump(mode="json")["encoder"] and config_hash(base) != config_hash(pooled)
    out = T.train(smoke_config("model.patch_size=4", "encoder.pool=2", "steps=2", "log_every=1"), tmp_path / "run")
    assert out["step"] == 2 and np.isfinite(out["loss_align"]) and out["loss_align"] != 0
    with pytest.raises(GridMismatchError, match="encoder.pool=3 does not divide"):
        T.train(smoke_config("model.patch_size=4", "encoder.pool=3"), tmp_path / "other")
    with pytest.raises(GridMismatchError, match="encoder.pool=2"):  # the hint names the option
        T.train(smoke_config("model.patch_size=4"), tmp_path / "third")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    original = O.TrainingStep.losses
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss, lv, la = original(self, *args, **kwargs)
        return (loss * float("nan"), lv, la) if calls["n"] >= 7 else (loss, lv, la)

    monkeypatch.setattr(O.TrainingStep, "losses", poisoned)
    run = tmp_path / "run"
    with pytest.raises(T.NonFiniteLossError, match=r"non-finite loss at step 7 .*step_0000005.pt"):
        T.train(smoke_config("steps=10", "ckpt_every=5"), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000005.pt"]
    assert all(torch.isfinite(v).all() for v in params(run, 5).values() if v.is_floating_point())


def test_cli_train_and_sample(tmp_path):
    from click.testing import CliRunner

    from jobs.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["train", "smoke", "method=irepa", "steps=3", "--print-config"])
    assert res.exit_code == 0, res.output
    assert "projector: conv" in res.output and "steps: 3" in res.output
    res = runner.invoke(cli, ["train", "smoke", "optim.nope=1"])
    assert res.exit_code != 0 and "unknown key" in res.output
    run = tmp_path / "run"
    res = runner.invoke(cli, ["train", "smoke", f"data.spec={SMOKE_DATA}", "steps=2", "ckpt_every=2", "device=cpu",
                              "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    assert (run / "checkpoints" / "step_0000002.pt").is_file()
    res = runner.invoke(cli, ["sample", str(run), "--step", "2", "--n", "3", "--num-steps", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = res.output.strip().splitlines()[-1]
    assert out.endswith("step0000002-sde-steps2-cfg1-seed0") and (tmp_path / "run" / "samples").is_dir()


def test_stored_vae_moments_are_sampled_with_the_step_noise():
    from study.data import LatentStats

    class Latent:
        channels, downsample, stats = 4, 8, LatentStats((0.5,) * 4, (0.1,) * 4, "test")

    step = O.TrainingStep(smoke_config(), None, [], Latent(), 4)
    moments, post = torch.randn(2, 8, 4, 4), torch.randn(2, 4, 4, 4)
    mean, logvar = moments.chunk(2, dim=1)
    want = (mean + torch.exp(0.5 * logvar) * post - 0.1) * 0.5
    torch.testing.assert_close(step.model_input(None, moments, post), want)
    flow = FlowMatching(smoke_config().flow)
    a = T.step_noise(0, 5, 8, (4, 4, 4), flow, 0.1, posterior=True)
    b = T.step_noise(0, 5, 8, (4, 4, 4), flow, 0.1, posterior=True)
    c = T.step_noise(0, 6, 8, (4, 4, 4), flow, 0.1, posterior=True)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["eps"], c["eps"])
    assert set(a) == {"eps", "t", "drop", "post"}


def test_data_order_is_a_per_epoch_permutation():
    steps = [global_batch_indices(20, 4, seed=3, step=s) for s in range(10)]  # 5 steps per epoch
    assert sorted(torch.cat(steps[:5]).tolist()) == list(range(20))
    assert sorted(torch.cat(steps[5:]).tolist()) == list(range(20))
    assert not torch.equal(torch.cat(steps[:5]), torch.cat(steps[5:]))
    assert torch.equal(global_batch_indices(20, 4, seed=3, step=7), steps[7])
    with pytest.raises(ConfigError, match="larger than the dataset"):
        global_batch_indices(3, 4, seed=0, step=0)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    base = ("steps=2", "ckpt_every=2", "batch_size=8", "method=irepa")
    T.train(smoke_config(*base), tmp_path / "full")
    T.train(smoke_config(*base, "grad_accum=4"), tmp_path / "accum")
    a, b = params(tmp_path / "full", 2), params(tmp_path / "accum", 2)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # Adam hides a wrong gradient scale from the parameters; the logged losses and gradient norms do not
    for ra, rb in zip(log_rows(tmp_path / "full"), log_rows(tmp_path / "accum")):
        assert (rb["loss"], rb["grad_norm"]) == pytest.approx((ra["loss"], ra["grad_norm"]), rel=1e-5)
    with pytest.raises(ConfigError, match="divisible"):
        T.train(smoke_config(*base, "grad_accum=3"), tmp_path / "bad")


def test_resume_points_are_pruned_and_kept_steps_stay(tmp_path):
    """Only the newest resume checkpoint survives; ckpt_keep steps and the final step are written and kept."""
    from study.config import load_train_config
    from study.training import train

    cfg = load_train_config("smoke", ["steps=12", "ckpt_every=5", "ckpt_keep=[3, 7]", "threads=1"])
    train(cfg, tmp_path / "run", max_steps=11)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step_0000003.pt", "step_0000007.pt", "step_0000011.pt"]  # 5 and 10 were resume points
    train(cfg, tmp_path / "run")  # resumes from 11 and finishes
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step_0000003.pt", "step_0000007.pt", "step_0000012.pt"]


def test_preemption_signal_saves_at_the_step_boundary_then_hands_over(tmp_path, monkeypatch):
    """SIGUSR2 mid-run (submitit's preemption signal): a checkpoint of the finished step, then the previous
    handler (submitit's requeue; here one that stops the run) gets the signal."""
    import signal

    class Requeued(Exception):
        pass

    calls = []

    def previous_handler(signum, frame):
        calls.append(signum)
        raise Requeued

    real_noise, seen = T.step_noise, []

    def noise_then_signal(seed, step, *args, **kwargs):
        seen.append(step)
        if step == 4:  # during the 5th step
            signal.raise_signal(signal.SIGUSR2)
        return real_noise(seed, step, *args, **kwargs)

    monkeypatch.setattr(T, "step_noise", noise_then_signal)
    old = signal.signal(signal.SIGUSR2, previous_handler)
    try:
        cfg = smoke_config("steps=50", "ckpt_every=100")
        with pytest.raises(Requeued):
            T.train(cfg, tmp_path / "run")
        assert calls == [signal.SIGUSR2] and seen[-1] == 4
        assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_0000005.pt"]
        assert signal.getsignal(signal.SIGUSR2) is previous_handler  # ours is removed again
        monkeypatch.setattr(T, "step_noise", real_noise)
        out = T.train(cfg, tmp_path / "run", max_steps=6)  # the requeued job resumes at step 5
        assert out["step"] == 6
    finally:
        signal.signal(signal.SIGUSR2, old)
