"""study.training without host stalls (issue 18): the permutation drawn once per epoch, a group's draws made once per
distinct spec, values read only at checks while a non-finite step is still never applied, preemption within one
check on several ranks, the fused optimizer and the foreach EMA against the previous code, and the refusal of a
latent run on data without stored latents (smoke model, CPU)."""
import os
import signal

import pytest
import torch
import torch.multiprocessing as mp
from train_support import free_port, one_thread, params, preempted_rank_worker, smoke_config  # noqa: F401

import study.objectives.step as O
import study.training.batches as B
import study.training.loop as T
from study.config import ConfigError
from study.training import global_batch_indices
from study.training.runs import _keep_implementation, adamw, update_ema

BASE = ("encoder.name=dinov2-vit-b", "encoder.weights=tiny")


def test_the_data_order_is_drawn_once_per_epoch():
    B._epoch_permutation.cache_clear()
    first = [global_batch_indices(1000, 10, seed=1, step=s).clone() for s in range(100)]  # one epoch
    assert B._epoch_permutation.cache_info().misses == 1
    global_batch_indices(1000, 10, seed=1, step=100)  # the next epoch: one more draw
    assert B._epoch_permutation.cache_info().misses == 2
    assert sorted(torch.cat(first).tolist()) == list(range(1000))


def test_a_group_draws_each_distinct_spec_once_and_ahead(tmp_path, monkeypatch):
    made = []
    real = B.step_noise

    def counting(seed, step, *args, drawn=None, **kwargs):
        if drawn is None:
            made.append(step)
        return real(seed, step, *args, drawn=drawn, **kwargs)

    monkeypatch.setattr(B, "step_noise", counting)
    monkeypatch.setattr(T, "step_noise", counting)
    cfgs = [smoke_config(*BASE, "steps=3", "method=repa", "method.hidden_dim=32"),
            smoke_config(*BASE, "steps=3", "method=irepa")]
    T.train_group(cfgs, [tmp_path / "a", tmp_path / "b"])
    assert made == [0, 1, 2]  # REPA and iREPA draw alike: one draw per step, made by the data loader


def _poison_from(monkeypatch, call):
    original, calls = O.TrainingStep.losses, {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss, lv, la = original(self, *args, **kwargs)
        return (loss * float("nan"), lv, la) if calls["n"] >= call else (loss, lv, la)

    monkeypatch.setattr(O.TrainingStep, "losses", poisoned)


def test_a_non_finite_step_between_checks_is_never_applied(tmp_path, monkeypatch):
    _poison_from(monkeypatch, 7)  # step 7 is bad; the next check is step 8 (log_every 4)
    sums, real_ema = [], T.update_ema

    def watch(ema, model, decay):
        sums.append(sum(float(p.detach().double().sum()) for p in model.parameters()))
        real_ema(ema, model, decay)

    monkeypatch.setattr(T, "update_ema", watch)
    run = tmp_path / "run"
    with pytest.raises(T.NonFiniteLossError, match=r"non-finite loss at step 7 .*step_0000004.pt"):
        T.train(smoke_config("steps=12", "ckpt_every=4", "log_every=4"), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000004.pt"]  # not step 8
    assert len(sums) == 8 and sums[6] == sums[7] == sums[5] != sums[4]  # steps 7 and 8: the model did not move


def test_one_process_saves_at_the_signalled_step_whatever_log_every(tmp_path, monkeypatch):
    class Requeued(Exception):
        pass

    real = T.step_noise

    def noise_then_signal(seed, step, *args, **kwargs):
        if step == 4:
            signal.raise_signal(signal.SIGUSR2)
        return real(seed, step, *args, **kwargs)

    def previous(signum, frame):
        raise Requeued

    monkeypatch.setattr(T, "step_noise", noise_then_signal)
    old = signal.signal(signal.SIGUSR2, previous)
    try:
        with pytest.raises(Requeued):
            T.train(smoke_config("steps=50", "ckpt_every=100", "log_every=20"), tmp_path / "run")
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_0000005.pt"]


def test_ranks_stop_together_at_the_next_check(tmp_path):
    """Signalled during steps 3 and 4: both ranks save step 4 (the next check, log_every 4) and hand over."""
    mp.spawn(preempted_rank_worker, args=(2, free_port(), str(tmp_path / "run")), nprocs=2, join=True)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_0000004.pt"]


def test_latent_data_without_stored_moments_is_refused_unless_asked(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"stores no SD-VAE latents.*repa-study data prepare.*data.online_vae"):
        T.train(smoke_config("data.codec=sd-vae"), tmp_path / "refused")
    # opted in: the images are encoded every step, as a posterior sample (a tiny VAE in the weights folder)
    from data_support import tiny_vae

    tiny_vae().save_pretrained(os.path.join(os.environ["REPA_STUDY_WEIGHTS"], "stabilityai", "sd-vae-ft-mse"))
    seen = []
    real = O.TrainingStep.model_input

    def spy(self, images, moments, post):
        seen.append(post is not None)
        return real(self, images, moments, post)

    monkeypatch.setattr(O.TrainingStep, "model_input", spy)
    out = T.train(smoke_config("data.codec=sd-vae", "data.online_vae=true", "data.spec=synthetic:n=32,size=64",
                               "model.patch_size=1", "method.align=false", "steps=2"), tmp_path / "online")
    assert out["step"] == 2 and seen == [True, True]


def test_the_foreach_ema_equals_the_two_step_form():
    """One update equals the previous ``e * decay + p * (1 - decay)`` within 1e-6 relative (a few float32 roundings).
    Over 1000 updates the lerp stays closer to the exact (float64) average than the previous form, whose float32
    ``decay`` and ``1 - decay`` do not sum to 1 (a drift of about 2e-8 per update)."""
    torch.manual_seed(0)
    shapes = [(64, 64), (64,), (8, 64)]
    model = [torch.randn(s) for s in shapes]
    ema = [torch.randn(s) for s in shapes]
    old, exact = [e.clone() for e in ema], [e.double() for e in ema]
    for i in range(1000):
        for p in model:
            p.add_(torch.randn_like(p) * 0.01)
        new = [e.clone() for e in ema]
        update_ema(torch.nn.ParameterList(new), torch.nn.ParameterList(model), 0.9999)
        if i == 0:
            for n, e, p in zip(new, ema, model):
                torch.testing.assert_close(n, e * 0.9999 + p * (1 - 0.9999), rtol=1e-6, atol=1e-9)
        ema = new
        for e, p in zip(old, model):
            e.mul_(0.9999).add_(p, alpha=1 - 0.9999)
        for e, p in zip(exact, model):
            e.mul_(0.9999).add_(p.double(), alpha=1 - 0.9999)
    for a, b, x in zip(ema, old, exact):
        assert float((a.double() - x).norm() / x.norm()) < 1e-6 < float((b.double() - x).norm() / x.norm())


def test_fused_adamw_with_the_clip_as_grad_scale_equals_the_previous_update():
    cfg = smoke_config()
    torch.manual_seed(0)
    w0 = [torch.randn(300, 7), torch.randn(300)]
    runs = {}
    for kind in ("previous", "fused"):
        ps = [torch.nn.Parameter(w.clone()) for w in w0]
        opt = (torch.optim.AdamW(ps, lr=1e-2, betas=cfg.optim.betas, eps=cfg.optim.eps, weight_decay=0.0)
               if kind == "previous"
               else adamw(ps, cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 1e-2})}))[0])
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g) * 3
            if kind == "previous":
                torch.nn.utils.clip_grad_norm_(ps, 1.0)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in ps])
                opt.found_inf = torch.zeros(())
                opt.grad_scale = 1.0 / torch.clamp(1.0 / (norm + 1e-6), max=1.0)
            opt.step()
        runs[kind] = ps
    for a, b in zip(runs["previous"], runs["fused"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_the_unfused_optimizer_resumes_fused():
    cfg = smoke_config()
    p = torch.nn.Parameter(torch.randn(5))
    old = torch.optim.AdamW([p], lr=1e-3)  # what checkpoints before issue 18 hold
    p.grad = torch.ones(5)
    old.step()
    new, fused = adamw([p], cfg)
    new.load_state_dict(old.state_dict())
    _keep_implementation(new, fused)
    assert fused and new.param_groups[0]["fused"] and new.state[p]["step"].item() == 1.0
    new.found_inf = torch.zeros(())
    new.step()
    assert new.state[p]["step"].item() == 2.0


def test_a_resumed_run_equals_the_uninterrupted_one_with_checks_apart(tmp_path):
    cfg = smoke_config("steps=8", "ckpt_every=3", "log_every=4", "method=irepa")
    T.train(cfg, tmp_path / "full")
    T.train(cfg, tmp_path / "part", max_steps=5)
    T.train(cfg, tmp_path / "part")
    a, b = params(tmp_path / "full", 8), params(tmp_path / "part", 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
