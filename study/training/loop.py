"""REPA / iREPA training of a SiT: the loop, read top to bottom like DiT's ``train.py``.

``train(cfg, run_dir)`` runs (or resumes) one training run. The config is ``study.config.train``; the run directory
and what a checkpoint holds are ``study.run.run_dir``'s; the model is built by ``study.run.build``; the loss of a
micro-batch is ``study.objectives.step``; preemption (SIGUSR2 / SIGTERM -> a checkpoint, then submitit's requeue) is
``study.training.preemption``. ``train_group`` trains several runs on one data pipeline and one encoder forward per step.

Determinism: the data order is a permutation drawn from (seed, epoch); each step's noise, times and label dropout
come from a generator seeded by (seed, step) over the *global* batch and each rank takes its slice. So a resumed run
reproduces the uninterrupted one, and N ranks reproduce one process on the same global batch.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack, nullcontext
from copy import deepcopy
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from study.common import all_reduce_mean, barrier, get_logger, init_distributed, progress
from study.config import ConfigError, FlowSection, MeanFlowSection, TrainConfig, config_hash
from study.data import GridMismatchError, check_token_grid, collate, open_dataset
from study.objectives import TrainingStep, meanflow_settings, sample_time, sample_time_pair
from study.run import (build_codec, build_denoiser, latent_stats_dict, latest_checkpoint, patch_size, prune_checkpoints,
                       restore_checkpoint, run_hash, save_checkpoint, truncate_log, write_run_header)
from study.sampling import sample_images, save_image_sheet
from study.training.preemption import PreemptionSave

__all__ = ["train", "train_group", "check_group", "SHARED_KEYS", "NonFiniteLossError",
           "GridMismatchError", "global_batch_indices", "step_noise", "open_train_dataset"]

log = get_logger(__name__)


#: The log keys a REPA-E run adds (study.repae.RepaeLosses.log_values); vae_kl is the unweighted KL.
REPAE_LOG_KEYS = ("loss_vae", "loss_vae_align", "loss_disc", "vae_rec", "vae_lpips", "vae_kl", "vae_gan")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


# ------------------------------------------------------------------------------------------------------ data
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


def global_batch_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """Dataset indices of the global batch of ``step`` (0-based): epochs of ``n // batch`` steps, each a
    permutation drawn from (seed, epoch); the data position of step s is ``s * batch``."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise ConfigError(f"batch_size {batch} is larger than the dataset ({n} images)")
    epoch, k = divmod(step, per_epoch)
    return _epoch_permutation(n, seed, epoch)[k * batch:(k + 1) * batch]


class _StepBatches(torch.utils.data.Sampler):
    """Yields this rank's indices for steps ``start, start+1, ...`` (a batch sampler for the DataLoader)."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, rank: int, world: int) -> None:
        self.n, self.batch, self.seed, self.start, self.stop = n, batch, seed, start, stop
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        local = self.batch // self.world
        for step in range(self.start, self.stop):
            idx = global_batch_indices(self.n, self.batch, self.seed, step)
            yield idx[self.rank * local:(self.rank + 1) * local].tolist()


def open_train_dataset(cfg: TrainConfig):
    return open_dataset(cfg.data.spec, cfg.data.split, size=cfg.data.image_size)


def step_noise(seed: int, step: int, batch: int, shape: tuple[int, ...], flow: FlowSection, class_dropout: float,
               posterior: bool = False, meanflow: MeanFlowSection | None = None) -> dict[str, torch.Tensor]:
    """The global batch's random draws for ``step`` from a generator seeded by (seed, step): ``eps`` (noise),
    ``t`` (times), ``drop`` (label dropout) and, for stored VAE moments, ``post`` (the posterior sample's noise).
    With ``meanflow`` the times are MeanFlow's ``(r, t)`` pairs and ``r`` is returned too."""
    g = torch.Generator().manual_seed((seed * 7_919 + step * 1_000_003 + 12_345) % (2**63))
    out = {"eps": torch.randn((batch, *shape), generator=g)}
    if meanflow is None:
        out["t"] = sample_time(flow.time, batch, generator=g, mean=flow.time_mean, std=flow.time_std, path=flow.path)
    else:
        out["r"], out["t"] = sample_time_pair(batch, meanflow_settings(meanflow), generator=g)
    out["drop"] = torch.rand(batch, generator=g) < class_dropout
    if posterior:
        out["post"] = torch.randn((batch, *shape), generator=g)
    return out

# ------------------------------------------------------------------------------------------------------ helpers
def _encoder_dims(encoders: list, codec, image_size: int, patch: int, device: torch.device) -> list[int]:
    """Each encoder's feature width, probed on a dummy batch; a token-grid mismatch is a clear error."""
    dims = []
    for enc in encoders:
        try:
            grid = check_token_grid(codec, image_size, patch, enc.spec.grid)
        except GridMismatchError as exc:
            raise GridMismatchError(f"encoder {enc.name}: {exc}") from None
        out = enc.encode(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8, device=device))["patch"]
        if out.shape[1] != grid[0] * grid[1]:
            raise GridMismatchError(f"encoder {enc.name} gives {out.shape[1]} tokens, not the {grid[0]}x{grid[1]} "
                                    "grid its catalog entry promises")
        dims.append(out.shape[-1])
    return dims


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def _autocast(cfg: TrainConfig, device: torch.device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def _save_preview(cfg: TrainConfig, ema: nn.Module, codec, num_classes: int, run_dir: Path, step: int,
                  device: torch.device) -> Path:
    """A sheet of EMA samples (fixed noise, the ``grid`` section's sampler) to eyeball progress."""
    n = cfg.grid.n
    labels = torch.arange(n) % num_classes
    images = sample_images(ema, labels, seeds=list(range(n)), codec=codec, path=cfg.flow.path,
                           sampler=cfg.grid.sampler(cfg.seed), device=device)
    return save_image_sheet(images, run_dir / "samples" / f"grid_step_{step:07d}.png")


# ------------------------------------------------------------------------------------------------------ grouping
# A group of runs shares one data pipeline and one forward of the frozen encoders per step, so everything that
# decides which images a step sees and what the encoders make of them must be the same in every run of the group.
SHARED_KEYS = ("data", "encoder", "batch_size", "grad_accum", "seed", "steps", "device", "threads")


def check_group(cfgs: list[TrainConfig]) -> None:
    """Raise ``ConfigError`` unless ``cfgs`` can train as one group (:data:`SHARED_KEYS` equal)."""
    if not cfgs:
        raise ConfigError("a training group needs at least one config")
    first = cfgs[0].model_dump(mode="json")
    for i, cfg in enumerate(cfgs[1:], start=1):
        other = cfg.model_dump(mode="json")
        differ = [k for k in SHARED_KEYS if other[k] != first[k]]
        if differ:
            raise ConfigError(f"runs 0 and {i} of the group differ in {', '.join(differ)}: runs trained together "
                              f"share the data pipeline and the encoder forward, so {', '.join(SHARED_KEYS)} must "
                              "be equal")


class _Run:
    """One run of a group: its model, EMA, optimizer, loss, run directory and progress."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.step = 0
        self.last: dict[str, Any] = {}
        self.tick, self.images_seen = time.perf_counter(), 0


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

    # --- data, codecs, frozen encoders (shared, except a REPA-E run's codec: the VAE it tunes)
    dataset = open_train_dataset(cfg0)
    image_size = int(dataset.image_size)
    num_classes = int(dataset.num_classes)
    runs = [_Run(cfg, Path(d)) for cfg, d in zip(cfgs, run_dirs)]
    stats = cfg0.data.latent_stats or getattr(dataset, "latent_stats", None)
    codec = None  # the data's codec, built once for the runs whose VAE stays frozen
    for run in runs:
        run.repae = None
        if run.cfg.method.repae is not None:  # REPA-E: its own VAE, normalised by a latent BN (study.repae)
            from study.repae import RepaeParts, resolve_latent_stats

            torch.manual_seed(run.cfg.seed)
            run.repae = RepaeParts(run.cfg.method.repae, optim=run.cfg.optim, init_stats=resolve_latent_stats(stats),
                                   device=device)
            run.codec = run.repae.codec(ema=False)
        else:
            codec = codec or build_codec(cfg0.data.codec, device, stats=stats)
            run.codec = codec
        run.x_shape = (run.codec.channels, image_size // run.codec.downsample, image_size // run.codec.downsample)
        run.latent = hasattr(run.codec, "stats")  # a VAE codec: posterior samples with seeded noise
    torch.manual_seed(cfg0.seed)
    aligning = any(c.method.align for c in cfgs)
    encoders = ([load_encoder(n, weights=cfg0.encoder.weights, device=device,
                              bf16=cfg0.encoder.bf16 and device.type == "cuda") for n in cfg0.encoder.names]
                if aligning else [])
    local = cfg0.batch_size // info.world_size
    micro = local // cfg0.grad_accum

    # --- each run: model, EMA, optimizer, run directory, resume
    for run in runs:
        cfg = run.cfg
        dims = _encoder_dims(encoders, run.codec, image_size, patch_size(cfg), device) if cfg.method.align else []
        torch.manual_seed(cfg.seed)  # model init is identical on every rank (and grouped or not)
        run.model = build_denoiser(cfg, image_size=image_size, num_classes=num_classes, codec=run.codec,
                                   encoder_dims=dims).to(device)
        run.meta = {"image_size": image_size, "num_classes": num_classes, "encoder_dims": dims,
                    "grid": list(run.model.sit.grid), "dataset": getattr(dataset, "id", cfg.data.spec),
                    "codec": getattr(run.codec, "id", cfg.data.codec), "latent_stats": latent_stats_dict(run.codec),
                    **({"repae": True} if run.repae is not None else {})}
        run.ema = deepcopy(run.model.sit).requires_grad_(False).eval()
        run.opt = torch.optim.AdamW(run.model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                    weight_decay=cfg.optim.weight_decay, eps=cfg.optim.eps)
        if info.is_main:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            run.h = write_run_header(cfg, run.run_dir, world_size=info.world_size, device=str(device))
        else:
            run.h = run_hash(cfg)
        barrier()
        ckpt = latest_checkpoint(run.run_dir)
        if ckpt is not None:
            run.step = restore_checkpoint(ckpt, model=run.model, ema=run.ema, optimizer=run.opt, config_hash=run.h,
                                          repae=run.repae,
                                          also_accept=[config_hash(cfg)])  # checkpoints written before run_hash
            log.info("resumed %s from step %d (%s)", run.run_dir, run.step, ckpt.name)
            if info.is_main:
                truncate_log(run.run_dir / "log.jsonl", run.step)
        n_params = sum(p.numel() for p in run.model.sit.parameters())
        log.info("SiT %s: %.2fM params, grid %s, %s, world %d, device %s", cfg.model.size, n_params / 1e6,
                 run.model.sit.grid, cfg.method.name, info.world_size, device)
        run.ddp = run.model
        if info.distributed:
            run.ddp = nn.parallel.DistributedDataParallel(
                run.model, device_ids=[device.index] if device.type == "cuda" else None)
        fwd = torch.compile(run.ddp) if cfg.compile else run.ddp
        run.stepper = TrainingStep(cfg, fwd, encoders if cfg.method.align else [], run.codec, num_classes,
                                   run.model.sit.grid)
        run.autocast = _autocast(cfg, device)
        run.model.train()
        run.e2e, run.ddp_parts = None, [run.ddp]
        if run.repae is not None:  # REPA-E's VAE pass and discriminator get their own DDP wrappers
            def wrap(m: nn.Module) -> nn.Module:
                return (nn.parallel.DistributedDataParallel(
                    m, device_ids=[device.index] if device.type == "cuda" else None) if info.distributed else m)
            vae_fwd, disc_fwd = run.repae.wrap(wrap)
            run.e2e = run.repae.stepper(lam=cfg.method.lam, path=cfg.flow.path, num_classes=num_classes, model=fwd,
                                        denoiser=run.model, vae_pass=vae_fwd, disc=disc_fwd)
            run.ddp_parts = [m for m in (run.ddp, vae_fwd, disc_fwd) if m is not None]
            run.repae.train()
    start = min(run.step for run in runs)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_StepBatches(len(dataset), cfg0.batch_size, cfg0.seed, start, stop, info.rank,
                                            info.world_size),
        collate_fn=collate, num_workers=cfg0.data.num_workers, pin_memory=device.type == "cuda")
    shared = TrainingStep(cfg0, None, encoders, runs[0].codec, num_classes, runs[0].model.sit.grid)
    name = runs[0].run_dir.name if len(runs) == 1 else f"{runs[0].run_dir.name} +{len(runs) - 1}"

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
            features = [shared.features(images[i * micro:(i + 1) * micro]) if aligning else None
                        for i in range(cfg0.grad_accum)]  # one encoder forward per micro-batch for all runs
            sl = slice(info.rank * local, (info.rank + 1) * local)
            for run in todo:
                _optimizer_step(run, step, images, labels, moments, features, sl, micro, info, preempt, device)
            step += 1
            preempted = False
            for run in todo:
                _after_step(run, stop, num_classes, info, device)
                preempted = preempted or run.preempted
            if preempted:
                preempt.hand_over()

    if start >= stop:
        log.info("%s is already at step %d (target %d): nothing to do", name, start, stop)
    barrier()
    return [{"run_dir": str(run.run_dir), "step": run.step, "checkpoint": str(latest_checkpoint(run.run_dir)),
             "config_hash": run.h, **{k: run.last[k] for k in ("loss", "loss_v", "loss_align") if k in run.last}}
            for run in runs]


def _optimizer_step(run: _Run, step: int, images: torch.Tensor, labels: torch.Tensor, moments: torch.Tensor | None,
                    features: list, sl: slice, micro: int, info, preempt: PreemptionSave,
                    device: torch.device) -> None:
    """Losses over the micro-batches, the all-reduce, clipping, AdamW and EMA: step ``step`` -> ``step + 1``.
    A REPA-E run (``run.e2e``) also steps its VAE and discriminator and the EMA of its latent BN."""
    cfg, latent = run.cfg, run.latent
    draws = {k: v[sl].to(device) for k, v in step_noise(cfg.seed, step, cfg.batch_size, run.x_shape, cfg.flow,
                                                         cfg.model.class_dropout, posterior=latent,
                                                         meanflow=cfg.meanflow).items()}
    warm = min(1.0, (step + 1) / cfg.optim.warmup_steps) if cfg.optim.warmup_steps else 1.0
    lr = cfg.optim.lr * warm
    for group in run.opt.param_groups:
        group["lr"] = lr
    keys = REPAE_LOG_KEYS if run.e2e is not None else ()
    sums = torch.zeros(4 + len(keys), device=device)
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
                    images[mb], labels[mb], draws["eps"][mb], draws["t"][mb], draws["drop"][mb], run.autocast,
                    moments=None if moments is None else moments[mb], post=draws["post"][mb] if latent else None,
                    features=features[i] if cfg.method.align else None, r=draws["r"][mb] if "r" in draws else None)
                total = loss
            (total / cfg.grad_accum).backward()
        sums[:3] += torch.stack([loss.detach(), loss_v.detach(), loss_a.detach()]) / cfg.grad_accum
    sums[3] = preempt.requested  # rides on the loss all-reduce: every rank saves at the same step
    values = all_reduce_mean(sums).tolist()
    if not all(math.isfinite(v) for v in values):
        good = latest_checkpoint(run.run_dir)
        raise NonFiniteLossError(
            f"{run.run_dir.name}: non-finite loss at step {step + 1} (loss {values[0]}, loss_v {values[1]}, "
            f"loss_align {values[2]}); the run stopped without updating the model. Last good checkpoint: "
            f"{good or 'none'}. Lower optim.lr, check the data/codec, or use precision=fp32.")
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(),
                                               cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    _update_ema(run.ema, run.model.sit, cfg.ema_decay)
    run.extra = {}
    if run.repae is not None:  # the VAE's and discriminator's own clipping and optimizers; the BN's EMA
        run.extra = {**dict(zip(keys, values[4:])), **run.repae.clip_and_step()}
        run.repae.update_ema(cfg.ema_decay)
    run.step = step + 1
    run.images_seen += cfg.batch_size
    run.values, run.grad_norm, run.lr = values, float(grad_norm), lr
    run.preempted = values[3] > 0


def _after_step(run: _Run, stop: int, num_classes: int, info, device: torch.device) -> None:
    """Logging, preview sheets and checkpoints of the step just taken."""
    cfg, step, values = run.cfg, run.step, run.values
    if step % cfg.log_every == 0 or step == stop:
        now = time.perf_counter()
        run.last = {"step": step, "loss": values[0], "loss_v": values[1], "loss_align": values[2],
                    "grad_norm": run.grad_norm, "images_per_s": run.images_seen / max(now - run.tick, 1e-9),
                    "lr": run.lr, **run.extra}
        run.tick, run.images_seen = now, 0
        if info.is_main:
            with open(run.run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(run.last) + "\n")
            log.info("%s step %d loss %.4f (v %.4f, align %.4f) %.1f img/s", run.run_dir.name, step, *values[:3],
                     run.last["images_per_s"])
    if cfg.sample_every and step % cfg.sample_every == 0 and info.is_main:
        codec = run.repae.codec() if run.repae is not None else run.codec  # REPA-E: tuned VAE, EMA BN stats
        _save_preview(cfg, run.ema, codec, num_classes, run.run_dir, step, device)
    if step % cfg.ckpt_every == 0 or step == stop or step in cfg.ckpt_keep or run.preempted:
        if info.is_main:
            save_checkpoint(run.run_dir, step, model=run.model, ema=run.ema, optimizer=run.opt, cfg=cfg,
                            config_hash=run.h, world_size=info.world_size, meta=run.meta, repae=run.repae)
            prune_checkpoints(cfg, run.run_dir)
        barrier()
