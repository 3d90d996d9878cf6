"""One run of a training group, built whole: its codec, model, EMA, optimizer, objective and run directory
(resumed from its newest checkpoint), and what the loop tracks of it between steps.

The update is cheap on purpose: AdamW ``fused=True`` where the device has the fused kernel (CUDA and CPU in
torch 2.x; ``foreach`` elsewhere), the EMA as one multi-tensor lerp, and DDP with gradients as bucket views, no
buffer broadcast when no buffer changes, and buckets sized to the model (:func:`ddp_bucket_mb`).

Set-up happens in two passes over the group's runs, in a fixed order that the determinism tests rely on: first each
run's codec (a REPA-E run seeds and builds its own VAE), then, after the shared frozen encoders, each run's model
(seeded by its ``seed``, the same on every rank and grouped or not).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import nn

from study.common import DistInfo, barrier, get_logger
from study.config import TrainConfig, config_hash
from study.data import GridMismatchError, check_token_grid, token_grid
from study.objectives import TrainingStep
from study.run import (build_codec, build_denoiser, latent_stats_dict, patch_size, restore_checkpoint,
                       resume_checkpoint, run_hash, truncate_log, write_run_header)
from study.training.batches import DrawSpec

__all__ = ["RunCodec", "Run", "run_codecs", "build_run", "autocast_for", "update_ema", "encoder_dims", "adamw",
           "ddp_bucket_mb"]

log = get_logger(__name__)


@dataclass
class RunCodec:
    """What a run's model sees instead of pixels: the data's codec, or a REPA-E run's own tuned VAE."""

    codec: Any
    repae: Any  # study.repae.RepaeParts, or None
    x_shape: tuple[int, int, int]  # the model-space shape of one image
    latent: bool  # a VAE codec: stored moments become posterior samples with seeded noise


@dataclass
class Run:
    """One run of a group: built once by :func:`build_run`; the loop updates ``step`` and the progress fields."""

    cfg: TrainConfig
    run_dir: Path
    codec: Any
    repae: Any
    x_shape: tuple[int, int, int]
    latent: bool
    model: nn.Module      # the Denoiser (SiT + projectors) the optimizer updates
    ema: nn.Module        # the EMA SiT (what sampling loads)
    opt: torch.optim.Optimizer
    meta: dict[str, Any]  # the checkpoint's ``meta``
    hash: str             # the run hash its checkpoints carry
    stepper: TrainingStep
    autocast: ContextManager
    ddp_parts: list[nn.Module]  # the DDP-wrapped modules (no_sync during gradient accumulation)
    e2e: Any = None             # REPA-E's per-micro-batch objectives (study.repae.RepaeStep), or None
    step: int = 0
    draws: DrawSpec | None = None  # what its step draws depend on (a group draws each distinct spec once)
    fused: bool = False         # fused AdamW: a non-finite step is skipped on the device (``found_inf``)
    # progress between logs
    last: dict[str, Any] = field(default_factory=dict)  # the last logged values
    tick: float = field(default_factory=time.perf_counter)
    images_seen: int = 0
    # on the device until the loop reads them (at most once per log_every steps): the last step's all-reduced
    # [loss, loss_v, loss_align, grad_norm, stop, REPA-E's values ...] and the first non-finite step's record
    # [non-finite seen, its step, loss, loss_v, loss_align]
    stats: Any = None
    bad: Any = None
    pending: bool = False       # stepped since the loop last read ``stats``
    values: list[float] = field(default_factory=list)  # ``stats`` as read at the last check
    lr: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)  # REPA-E's log values of the step

    @property
    def host_checked(self) -> bool:
        """Whether the loop reads this run's values after every step: a REPA-E run (its VAE and discriminator
        steps read their norms anyway) or one whose optimizer cannot skip a non-finite step on the device."""
        return self.e2e is not None or not self.fused


def autocast_for(cfg: TrainConfig, device: torch.device) -> ContextManager:
    """bf16 autocast when ``precision`` is ``bf16`` (or ``auto`` on a GPU), else nothing (fp32)."""
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` over the parameters, as one multi-tensor lerp
    (``ema + (1 - decay) * (model - ema)``; equal to the two-step form within float rounding)."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


def adamw(params, cfg: TrainConfig) -> tuple[torch.optim.AdamW, bool]:
    """The run's AdamW, fused where the parameters' device has the fused kernel, else multi-tensor (foreach);
    returns ``(optimizer, fused)``."""
    params = list(params)
    kw = dict(lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay, eps=cfg.optim.eps)
    try:
        return torch.optim.AdamW(params, fused=True, **kw), True
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(params, foreach=True, **kw), False


def _keep_implementation(opt: torch.optim.Optimizer, fused: bool) -> None:
    """After ``load_state_dict`` (which takes the saved groups' settings: a checkpoint of an unfused optimizer
    says ``fused: None``): this optimizer's implementation again, its step counts where the fused kernel wants them
    (float32 on the parameter's device)."""
    for group in opt.param_groups:
        group["fused"], group["foreach"] = (True, None) if fused else (None, True)
        if fused:
            for p in group["params"]:
                st = opt.state.get(p)
                if st and "step" in st:
                    st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(p.device)


def ddp_bucket_mb(n_params: int) -> int:
    """The DDP gradient bucket in MB: about 32 buckets over the fp32 gradients, at least torch's default 25 MB and
    at most 128 (SiT-XL/2, 675M parameters: 84 MB; SiT-B/2: 25). Fewer, larger all-reduces than the default for
    the large models, still enough buckets for the communication to overlap the backward. Not measured on a GPU."""
    return int(min(128, max(25, n_params * 4 / 2**20 / 32)))


def _changes_buffers(m: nn.Module) -> bool:
    """Whether a forward in training mode may change a buffer (running statistics of a norm layer)."""
    return any(getattr(x, "track_running_stats", False) for x in m.modules())


def encoder_dims(encoders: list, codec, image_size: int, patch: int, device: torch.device,
                 pool: int = 1) -> list[int]:
    """Each encoder's feature width, probed on a dummy batch (a target cache records it); a token-grid mismatch
    (after ``pool``, ``encoder.pool``) is a clear error."""
    dims = []
    for enc in encoders:
        try:
            if enc.spec.grid % pool:
                raise GridMismatchError(f"encoder.pool={pool} does not divide the encoder's {enc.spec.grid}x"
                                        f"{enc.spec.grid} grid")
            grid = check_token_grid(codec, image_size, patch, enc.spec.grid // pool)
        except GridMismatchError as exc:
            sit = token_grid(codec, image_size, patch)[0]
            hint = (f"; or average-pool the encoder's tokens to the SiT's grid: encoder.pool={enc.spec.grid // sit}"
                    if pool == 1 and sit < enc.spec.grid and enc.spec.grid % sit == 0 else "")
            raise GridMismatchError(f"encoder {enc.name}: {exc}{hint}") from None
        if getattr(enc, "cached", False):  # an encoder-target cache (study.data.TargetCache): its width is recorded
            dims.append(int(enc.embed_dim))
            continue
        out = enc.encode(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8, device=device))["patch"]
        if out.shape[1] != grid[0] * grid[1] * pool * pool:
            raise GridMismatchError(f"encoder {enc.name} gives {out.shape[1]} tokens, not the {grid[0]}x{grid[1]} "
                                    "grid its catalog entry promises")
        dims.append(out.shape[-1])
    return dims


def run_codecs(cfgs: list[TrainConfig], stats: Any, image_size: int, device: torch.device) -> list[RunCodec]:
    """Each run's codec: the data's (built once, shared by the runs whose VAE stays frozen) or, for a REPA-E run, its
    own VAE normalised by a latent BN (``study.repae``)."""
    shared, out = None, []
    for cfg in cfgs:
        repae = None
        if cfg.method.repae is not None:
            from study.repae import RepaeParts, resolve_latent_stats

            torch.manual_seed(cfg.seed)
            repae = RepaeParts(cfg.method.repae, optim=cfg.optim, init_stats=resolve_latent_stats(stats),
                               device=device)
            codec = repae.codec(ema=False)
        else:
            shared = shared or build_codec(cfgs[0].data.codec, device, stats=stats)
            codec = shared
        side = image_size // codec.downsample
        out.append(RunCodec(codec, repae, (codec.channels, side, side), hasattr(codec, "stats")))
    return out


def build_run(cfg: TrainConfig, run_dir: Path, parts: RunCodec, encoders: list, *, dataset: Any, image_size: int,
              num_classes: int, info: DistInfo) -> Run:
    """The run's model (seeded), EMA, AdamW, run directory (header written on the main rank) and DDP wrappers,
    resumed from its newest checkpoint."""
    device = info.device
    encoders = encoders if cfg.method.align else []
    dims = encoder_dims(encoders, parts.codec, image_size, patch_size(cfg), device, pool=cfg.encoder.pool)
    torch.manual_seed(cfg.seed)  # model init is identical on every rank (and grouped or not)
    model = build_denoiser(cfg, image_size=image_size, num_classes=num_classes, codec=parts.codec,
                           encoder_dims=dims).to(device)
    meta = {"image_size": image_size, "num_classes": num_classes, "encoder_dims": dims,
            "grid": list(model.sit.grid), "dataset": getattr(dataset, "id", cfg.data.spec),
            "codec": getattr(parts.codec, "id", cfg.data.codec), "latent_stats": latent_stats_dict(parts.codec),
            **({"repae": True} if parts.repae is not None else {})}
    ema = deepcopy(model.sit).requires_grad_(False).eval()
    opt, fused = adamw(model.parameters(), cfg)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        h = write_run_header(cfg, run_dir, world_size=info.world_size, device=str(device))
    else:
        h = run_hash(cfg)
    barrier()
    step = 0
    ckpt = resume_checkpoint(run_dir, move_bad=info.is_main)  # the newest good one (bad ones moved aside)
    if ckpt is not None:
        step = restore_checkpoint(ckpt, model=model, ema=ema, optimizer=opt, config_hash=h, repae=parts.repae,
                                  also_accept=[config_hash(cfg)])  # checkpoints written before run_hash
        _keep_implementation(opt, fused)
        log.info("resumed %s from step %d (%s)", run_dir, step, ckpt.name)
    if info.is_main:  # the log lines past the step we start from (none: a dead attempt's whole log) go
        truncate_log(run_dir / "log.jsonl", step)
    n_params = sum(p.numel() for p in model.sit.parameters())
    log.info("SiT %s: %.2fM params, grid %s, %s, world %d, device %s", cfg.model.size, n_params / 1e6,
             model.sit.grid, cfg.method.name, info.world_size, device)

    def wrap(m: nn.Module) -> nn.Module:
        if not info.distributed:
            return m
        return nn.parallel.DistributedDataParallel(
            m, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True,
            broadcast_buffers=_changes_buffers(m), bucket_cap_mb=ddp_bucket_mb(sum(p.numel() for p in m.parameters())))

    ddp = wrap(model)
    fwd = torch.compile(ddp) if cfg.compile else ddp
    stepper = TrainingStep(cfg, fwd, encoders, parts.codec, num_classes)
    model.train()
    e2e, ddp_parts = None, [ddp]
    if parts.repae is not None:  # REPA-E's VAE pass and discriminator get their own DDP wrappers
        vae_fwd, disc_fwd = parts.repae.wrap(wrap)
        e2e = parts.repae.stepper(lam=cfg.method.lam, path=cfg.flow.path, num_classes=num_classes, model=fwd,
                                  denoiser=model, vae_pass=vae_fwd, disc=disc_fwd)
        ddp_parts = [m for m in (ddp, vae_fwd, disc_fwd) if m is not None]
        parts.repae.train()
    return Run(cfg=cfg, run_dir=run_dir, codec=parts.codec, repae=parts.repae, x_shape=parts.x_shape,
               latent=parts.latent, model=model, ema=ema, opt=opt, meta=meta, hash=h, stepper=stepper,
               autocast=autocast_for(cfg, device), ddp_parts=ddp_parts, e2e=e2e, step=step, fused=fused,
               draws=DrawSpec.of(parts.x_shape, stepper.objective, cfg.model.class_dropout, parts.latent))
