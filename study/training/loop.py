"""REPA / iREPA training of a SiT: the loop, read top to bottom like DiT's ``train.py``.

Nothing on the host waits for the GPU between two log steps: the data order, the step's draws (and cached encoder
targets) come ready from the DataLoader (``study.training.batches.StepData``, in its workers when
``data.num_workers`` > 0), the losses and the gradient norm stay on the device, and the loop reads them (one sync) only
at a *check*: a step that logs, checkpoints, previews or ends the run, or every step for a run whose optimizer cannot
skip a step on the device (REPA-E's, an unfused AdamW). A non-finite loss or gradient norm is caught on the device: from
that step on the fused AdamW skips every update (``found_inf``: parameters, moments and step counts untouched), and the
next check (at most ``log_every`` steps later, and always before a checkpoint or preview) stops the run with
:class:`NonFiniteLossError` naming the first bad step; nothing after the last checkpoint is saved. A preemption
signal stops a single process at the end of the step it came in; with several ranks it rides on the loss all-reduce
and every rank stops at the same check, at most ``log_every`` steps later.

``train(cfg, run_dir)`` runs (or resumes) one training run; ``train_group`` trains several runs on one data pipeline
and one encoder forward per step. The config is ``study.config``; the run directory and what a checkpoint holds are
``study.run``'s; a run's parts are built by ``study.training.runs``; the loss of a micro-batch is
``study.objectives``; what each step sees (data order, noise) is ``study.training.batches``; preemption (SIGUSR2 /
SIGTERM -> a checkpoint, then submitit's requeue) is ``study.training.preemption``.
"""
from __future__ import annotations

import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from study.common import all_reduce_mean, barrier, get_logger, init_distributed, progress
from study.config import ConfigError, TrainConfig
from study.data import open_target_caches, stored_latents
from study.objectives import TrainingStep, objective_for
from study.run import append_log, latest_checkpoint, prune_checkpoints, save_checkpoint
from study.sampling import sample_images, save_image_sheet
from study.training.batches import StepData, open_train_dataset, step_noise, unpack_draws
from study.training.group import check_group
from study.training.preemption import PreemptionSave
from study.training.runs import Run, build_run, run_codecs, update_ema

__all__ = ["train", "train_group", "NonFiniteLossError", "REPAE_LOG_KEYS"]

log = get_logger(__name__)

#: The log keys a REPA-E run adds (study.repae.RepaeLosses.log_values); vae_kl is the unweighted KL.
REPAE_LOG_KEYS = ("loss_vae", "loss_vae_align", "loss_disc", "vae_rec", "vae_lpips", "vae_kl", "vae_gan")


#: ``Run.stats``: the step's all-reduced values, in this order (then REPA-E's, REPAE_LOG_KEYS)
STATS = ("loss", "loss_v", "loss_align", "grad_norm", "stop")


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; the run stopped and kept its last good checkpoint."""


def _check_latent_source(cfgs: list[TrainConfig]) -> None:
    """Refuse a latent run on data without stored SD-VAE moments (an image folder, synthetic data, a prepared
    directory made without a VAE) unless ``data.online_vae`` opts in: the SD-VAE encoder would run on every training
    image (+50-190 % per step)."""
    for cfg in cfgs:
        if cfg.data.codec in ("identity", "pixel") or cfg.method.repae is not None or cfg.data.online_vae:
            continue  # (REPA-E encodes every image by design: its VAE changes)
        if stored_latents(cfg.data.spec, cfg.data.split) is not True:
            raise ConfigError(
                f"data.codec={cfg.data.codec} on {cfg.data.spec} ({cfg.data.split}), which stores no SD-VAE latents: "
                "the SD-VAE encoder would run on every training image (+50-190 % per step). Prepare the data once "
                "with `repa-study data prepare --src IMAGENET --out PREPARED` (images + posterior moments, as array "
                "tasks) and train on PREPARED, or set data.online_vae=true to encode every step anyway")


def _save_preview(run: Run, num_classes: int, step: int, device: torch.device) -> Path:
    """A sheet of EMA samples (fixed noise, the ``preview`` section's sampler) to eyeball progress."""
    cfg, n = run.cfg, run.cfg.preview.n
    codec = run.repae.codec() if run.repae is not None else run.codec  # REPA-E: tuned VAE, EMA BN stats
    images = sample_images(run.ema, torch.arange(n) % num_classes, seeds=list(range(n)), codec=codec,
                           objective=objective_for(cfg), sampler=cfg.preview.sampler(cfg.seed), device=device)
    return save_image_sheet(images, run.run_dir / "samples" / f"preview_step_{step:07d}.png")


# ------------------------------------------------------------------------------------------------------ the loop
def train(cfg: TrainConfig, run_dir: str | Path, *, max_steps: int | None = None) -> dict[str, Any]:
    """Train (or resume from the run dir's last checkpoint) up to ``cfg.steps`` (or ``max_steps``, if smaller).

    Returns ``{"run_dir", "step", "checkpoint", "config_hash", "loss", "loss_v", "loss_align"}`` (last logged).
    """
    return train_group([cfg], [run_dir], max_steps=max_steps)[0]


def train_group(cfgs: list[TrainConfig], run_dirs: list[str | Path], *,
                max_steps: int | None = None) -> list[dict[str, Any]]:
    """Train several runs in one process on one data pipeline and one encoder forward per step (e.g. REPA and iREPA
    against the same encoder): each keeps its own run directory, model, EMA, optimizer, noise and checkpoints, so
    each ends exactly as it would trained alone. Returns :func:`train`'s summary per run."""
    from study.pretrain import load_encoder

    # --- set-up: threads, process group, precision
    check_group(cfgs)
    if len(run_dirs) != len(cfgs) or len({Path(d).resolve() for d in run_dirs}) != len(cfgs):
        raise ConfigError("a training group needs one distinct run directory per config")
    cfg0 = cfgs[0]
    _check_latent_source(cfgs)
    if cfg0.threads:
        torch.set_num_threads(cfg0.threads)
    info = init_distributed(cfg0.device)
    device = info.device
    if cfg0.batch_size % (info.world_size * cfg0.grad_accum):
        raise ConfigError(f"batch_size {cfg0.batch_size} must be divisible by world size {info.world_size} x "
                          f"grad_accum {cfg0.grad_accum}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = all(c.tf32 for c in cfgs)
        torch.backends.cudnn.allow_tf32 = all(c.tf32 for c in cfgs)
    stop = min(cfg0.steps, max_steps) if max_steps is not None else cfg0.steps

    # --- data, codecs, frozen encoders or their cached targets (shared, except a REPA-E run's codec: the VAE it
    # tunes), then each run
    dataset = open_train_dataset(cfg0)
    image_size, num_classes = int(dataset.image_size), int(dataset.num_classes)
    stats = cfg0.data.latent_stats or getattr(dataset, "latent_stats", None)
    codecs = run_codecs(cfgs, stats, image_size, device)
    torch.manual_seed(cfg0.seed)
    aligning = any(c.method.align for c in cfgs)
    caches = (open_target_caches(cfg0.data.spec, cfg0.data.split, cfg0.encoder.names, cfg0.encoder.weights,
                                 cfg0.encoder.bf16, dataset=dataset)
              if aligning and cfg0.encoder.targets == "cache" else [])
    bf16 = cfg0.encoder.bf16 and device.type == "cuda"
    encoders = caches or ([load_encoder(n, weights=cfg0.encoder.weights, device=device, bf16=bf16)
                           for n in cfg0.encoder.names] if aligning else [])
    if cfg0.compile and not caches:  # the frozen encoder's forward compiled too, as the SiT's
        for enc in encoders:
            enc.compile()
    runs = [build_run(cfg, Path(d), parts, encoders, dataset=dataset, image_size=image_size,
                      num_classes=num_classes, info=info) for cfg, d, parts in zip(cfgs, run_dirs, codecs)]
    local = cfg0.batch_size // info.world_size
    micro = local // cfg0.grad_accum
    start = min(run.step for run in runs)
    specs = list(dict.fromkeys(run.draws for run in runs))  # runs that draw alike share one draw
    data = StepData(dataset, cfg0.batch_size, cfg0.seed, info.rank, info.world_size, specs, targets=caches)
    loader = data.loader(start, stop, num_workers=cfg0.data.num_workers, pin_memory=device.type == "cuda")
    shared = TrainingStep(cfg0, None, encoders, runs[0].codec, num_classes)
    name = runs[0].run_dir.name if len(runs) == 1 else f"{runs[0].run_dir.name} +{len(runs) - 1}"
    for run in runs:
        run.bad = torch.zeros(5, device=device)

    # --- the loop: one optimizer step per global batch and run
    step = start
    with PreemptionSave() as preempt:
        for batch in progress(loader, desc=f"train {name}", total=stop - start, unit="step"):
            todo = [run for run in runs if run.step == step]  # a run resumed further on waits for the others
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            # stored VAE moments are the input of a latent model only (a pixel-space model reads the images)
            moments = (batch["moments"].to(device, non_blocking=True)
                       if "moments" in batch and any(run.latent for run in runs) else None)
            if caches:  # the encoders' patch tokens, read from their cache with the images
                targets = [t.to(device, non_blocking=True).float() for t in batch["targets"]]
                features = [[t[i * micro:(i + 1) * micro] for t in targets] for i in range(cfg0.grad_accum)]
            else:  # one encoder forward per micro-batch for all runs
                features = [shared.features(images[i * micro:(i + 1) * micro]) if aligning else None
                            for i in range(cfg0.grad_accum)]
            drawn = [unpack_draws(packed.to(device, non_blocking=True), layout) for packed, layout in batch["draws"]]
            for run in todo:
                _optimizer_step(run, step, images, labels, moments, features, drawn[specs.index(run.draws)], micro,
                                info, preempt, device)
            step += 1
            # a stop asked for during any member's step: every member saves this step (the same on every rank: with
            # several ranks the flag comes through each member's all-reduce, read at a check)
            preempted = _check(todo, step, stop, info, preempt)
            for run in todo:
                _after_step(run, stop, num_classes, info, device, preempted)
            if preempted:
                preempt.hand_over()

    if start >= stop:
        log.info("%s is already at step %d (target %d): nothing to do", name, start, stop)
    barrier()
    return [{"run_dir": str(run.run_dir), "step": run.step, "checkpoint": str(latest_checkpoint(run.run_dir)),
             "config_hash": run.hash, **{k: run.last[k] for k in ("loss", "loss_v", "loss_align") if k in run.last}}
            for run in runs]


def _optimizer_step(run: Run, step: int, images: torch.Tensor, labels: torch.Tensor, moments: torch.Tensor | None,
                    features: list, drawn: dict[str, torch.Tensor], micro: int, info, preempt: PreemptionSave,
                    device: torch.device) -> None:
    """Losses over the micro-batches, the all-reduce, clipping, AdamW and EMA: step ``step`` -> ``step + 1``, all on
    the device (``run.stats`` holds the step's values until the loop reads them). ``drawn``: this rank's part of the
    step's draws, made by the DataLoader (on the device already). A REPA-E run (``run.e2e``) also steps its VAE and discriminator and the EMA
    of its latent BN."""
    cfg, latent = run.cfg, run.latent
    draws = {k: v.to(device, non_blocking=True)
             for k, v in step_noise(cfg.seed, step, cfg.batch_size, run.x_shape, run.stepper.objective,
                                    cfg.model.class_dropout, posterior=latent, drawn=drawn).items()}
    times = {k: draws[k] for k in ("r", "t") if k in draws}
    warm = min(1.0, (step + 1) / cfg.optim.warmup_steps) if cfg.optim.warmup_steps else 1.0
    lr = cfg.optim.lr * warm
    for group in run.opt.param_groups:
        group["lr"] = lr
    keys = REPAE_LOG_KEYS if run.e2e is not None else ()
    sums = torch.zeros(4 + len(keys), device=device)  # loss, loss_v, loss_align, stop, REPA-E's values
    for i in range(cfg.grad_accum):
        mb = slice(i * micro, (i + 1) * micro)
        with ExitStack() as sync:
            if i < cfg.grad_accum - 1 and info.distributed:
                for part in run.ddp_parts:
                    sync.enter_context(part.no_sync())
            if run.e2e is not None:  # REPA-E: the SiT's, the VAE's and the discriminator's objectives, one backward
                out = run.e2e.losses(images[mb], labels[mb], draws["eps"][mb], draws["t"][mb], draws["drop"][mb],
                                     draws["post"][mb], run.stepper.targets(images[mb], features[i]), step,
                                     run.autocast)
                loss, loss_v, loss_a, total = out.sit, out.loss_v, out.loss_align, out.total
                extra = out.log_values()
                sums[4:] += torch.tensor([extra[k] for k in keys], device=device) / cfg.grad_accum
            else:
                loss, loss_v, loss_a = run.stepper.losses(
                    images[mb], labels[mb], draws["eps"][mb], {k: v[mb] for k, v in times.items()},
                    draws["drop"][mb], run.autocast, moments=None if moments is None else moments[mb],
                    post=draws["post"][mb] if latent else None, features=features[i] if cfg.method.align else None)
                total = loss
            (total / cfg.grad_accum).backward()
        sums[:3] += torch.stack([loss.detach(), loss_v.detach(), loss_a.detach()]) / cfg.grad_accum
    sums[3] = preempt.requested  # rides on the loss all-reduce: every rank sees every rank's flag
    reduced = all_reduce_mean(sums)
    params = [p for p in run.model.parameters() if p.grad is not None]
    max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    run.stats = torch.cat([reduced[:3], grad_norm.reshape(1).to(reduced), reduced[3:]])
    finite = torch.isfinite(run.stats).all()
    if run.host_checked:  # read now: a non-finite step stops the run before any update
        values = run.stats.tolist()
        if not all(math.isfinite(v) for v in values):
            raise _non_finite(run, step + 1, values)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, grad_norm)
    else:  # the fused AdamW clips (grad / grad_scale) and skips the update from the first non-finite step on
        first = torch.cat([torch.ones(1, device=device), torch.full((1,), float(step + 1), device=device),
                           run.stats[:3]])
        run.bad = torch.where((run.bad[0] > 0) | finite, run.bad, first)
        run.opt.found_inf = run.bad[0]
        run.opt.grad_scale = 1.0 / torch.clamp(max_norm / (grad_norm + 1e-6), max=1.0)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    update_ema(run.ema, run.model.sit, cfg.ema_decay)
    run.extra = {}
    if run.repae is not None:  # the VAE's and discriminator's own clipping and optimizers; the BN's EMA
        run.extra = {**dict(zip(keys, values[len(STATS):])), **run.repae.clip_and_step()}
        run.repae.update_ema(cfg.ema_decay)
    run.step = step + 1
    run.images_seen += cfg.batch_size
    run.pending, run.lr = True, lr


def _non_finite(run: Run, step: int, values: list[float]) -> NonFiniteLossError:
    good = latest_checkpoint(run.run_dir)
    return NonFiniteLossError(
        f"{run.run_dir.name}: non-finite loss at step {step} (loss {values[0]}, loss_v {values[1]}, loss_align "
        f"{values[2]}" + (f", grad_norm {values[3]}" if len(values) > 3 else "") + "); the run stopped without "
        f"updating the model. Last good checkpoint: {good or 'none'}. Lower optim.lr, check the data/codec, or use "
        "precision=fp32.")


def _due(run: Run, step: int, stop: int) -> bool:
    """Whether the loop must read the run's values after ``step``: to log, checkpoint, preview or end, or always."""
    cfg = run.cfg
    return (run.host_checked or step % cfg.log_every == 0 or step == stop or step % cfg.ckpt_every == 0
            or step in cfg.ckpt_keep or bool(cfg.sample_every and step % cfg.sample_every == 0))


def _check(todo: list[Run], step: int, stop: int, info, preempt: PreemptionSave) -> bool:
    """At a check (a due step, or a preemption noticed by a single process): read the stepped runs' values in one
    transfer, stop on a non-finite step, and return whether to save and hand over (a stop flag of any run)."""
    asked = not info.distributed and preempt.requested > 0  # one process: its own flag, no need to wait
    stepped = [run for run in todo if run.pending]
    if not stepped or not (asked or any(_due(run, step, stop) for run in todo)):
        return False
    sizes = [len(run.stats) for run in stepped]
    flat = torch.cat([torch.cat([run.stats, run.bad]) for run in stepped]).tolist()
    at = 0
    for run, n in zip(stepped, sizes):
        run.values, bad = flat[at:at + n], flat[at + n:at + n + 5]
        at += n + 5
        run.pending = False
        if bad[0] > 0:
            raise _non_finite(run, int(bad[1]), bad[2:])
    return asked or any(run.values[STATS.index("stop")] > 0 for run in stepped)


def _after_step(run: Run, stop: int, num_classes: int, info, device: torch.device, preempted: bool) -> None:
    """Logging, preview sheets and checkpoints of the step just taken (a checkpoint too when ``preempted``)."""
    cfg, step, values = run.cfg, run.step, run.values
    if step % cfg.log_every == 0 or step == stop:
        now = time.perf_counter()
        run.last = {"step": step, "loss": values[0], "loss_v": values[1], "loss_align": values[2],
                    "grad_norm": values[3], "images_per_s": run.images_seen / max(now - run.tick, 1e-9),
                    "lr": run.lr, **run.extra}
        run.tick, run.images_seen = now, 0
        if info.is_main:
            append_log(run.run_dir, run.last)
            log.info("%s step %d loss %.4f (v %.4f, align %.4f) %.1f img/s", run.run_dir.name, step, *values[:3],
                     run.last["images_per_s"])
    if cfg.sample_every and step % cfg.sample_every == 0 and info.is_main:
        _save_preview(run, num_classes, step, device)
    if step % cfg.ckpt_every == 0 or step == stop or step in cfg.ckpt_keep or preempted:
        if info.is_main:
            save_checkpoint(run.run_dir, step, model=run.model, ema=run.ema, optimizer=run.opt, cfg=cfg,
                            config_hash=run.hash, world_size=info.world_size, meta=run.meta, repae=run.repae)
            prune_checkpoints(cfg, run.run_dir)
        barrier()
