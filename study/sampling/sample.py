"""Sampling from a trained run: Euler ODE, Euler-Maruyama SDE, classifier-free guidance with an interval.

``sample_run(run_dir, step, n)`` loads the EMA weights of the step's checkpoint and writes ADM-style ``.npz`` shards
(``arr_0``: uint8 ``[N, H, W, 3]``, ``labels``) plus a ``manifest.json`` into a sample directory. Sample ``i`` uses its
own noise, drawn on the device by a counter-based generator keyed by ``(seed, i)`` (``study.sampling.noise``: one
call per batch and sampler step), and label ``i % num_classes`` (balanced), so results do not depend on the batch
size or the number of ranks; chunks of ``batch_size`` samples are spread over ranks and an existing shard is kept
(a killed sampling job resumes). Sampling runs with the run's TF32 setting, or under bf16 autocast when the sampler
says ``precision: bf16`` (a cheaper FID protocol, never the default).

The integrator is the run's objective's (``study.objectives``): for flow matching Euler ODE or REPA's Euler-Maruyama
SDE (``study.objectives.flow.flow_sample``); ``meanflow`` takes ``num_steps`` average-velocity jumps of a MeanFlow
model (1 or a few NFE); an x-prediction model (JiT) is integrated by JiT's sampler: ``ode`` = Euler, ``heun`` = Heun
with a last Euler step.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from study.common import atomic_path, atomic_savez, atomic_write_json, barrier, get_logger, init_distributed, progress
from study.config import SamplerSettings
from study.objectives import Objective, objective_for
from study.run import load_sampling_model
from study.sampling.noise import NOISE_VERSION, SeededNoise

__all__ = ["sample_images", "sample_latents", "sample_run", "save_image_sheet", "sample_seed"]

log = get_logger(__name__)


def sample_seed(base_seed: int, index: int) -> int:
    """The generator seed of global sample ``index``."""
    return (int(base_seed) * 1_000_003 + int(index) * 7_919 + 1) % (2**63)


@torch.no_grad()
def sample_latents(net: nn.Module, labels: torch.Tensor, noise: SeededNoise, *, objective: Objective,
                   sampler: SamplerSettings) -> torch.Tensor:
    """Integrate from t = 1 (noise) to t = 0 in the model's space with the run's objective's sampler (under bf16
    autocast when ``sampler.precision`` says ``bf16``; otherwise the matmul precision the caller set: TF32)."""
    autocast = (torch.autocast(noise.device.type, dtype=torch.bfloat16) if sampler.precision == "bf16"
                else contextlib.nullcontext())
    with autocast:
        return objective.sample(net, labels.to(noise.device), noise, sampler).float()


def sample_images(sit: nn.Module, labels: torch.Tensor, *, seeds: Sequence[int], codec, objective: Objective,
                  sampler: SamplerSettings, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images ``[B, 3, H, W]`` for the global sample indices ``seeds`` (noise from ``sampler.seed``)."""
    device = torch.device(device)
    shape = (sit.in_channels, sit.input_size, sit.input_size)
    was_training = sit.training
    sit.eval()
    noise = SeededNoise([sample_seed(sampler.seed, i) for i in seeds], shape, device)
    x = sample_latents(sit, labels, noise, objective=objective, sampler=sampler)
    sit.train(was_training)
    return codec.decode(x, rounding=sampler.rounding).cpu()


def save_image_sheet(images: torch.Tensor, path: str | Path) -> Path:
    """Tile uint8 ``[B, 3, H, W]`` images into a near-square PNG."""
    from PIL import Image

    b, c, h, w = images.shape
    cols = int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / cols))
    canvas = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).numpy()
    for i in range(b):
        r, col = divmod(i, cols)
        canvas[r * h:(r + 1) * h, col * w:(col + 1) * w] = arr[i]
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp)
    return path


def sample_run(run_dir: str | Path, step: int, n: int, sampler: SamplerSettings = SamplerSettings(), *,
               batch_size: int = 64, device: str | None = None, out_dir: str | Path | None = None) -> Path:
    """Write ``n`` samples of the step's EMA model as npz shards + ``manifest.json``; returns the sample directory
    (default ``RUN_DIR/samples/<sampler.dir_name(step)>``)."""
    from results.provenance import now_iso, provenance

    run_dir = Path(run_dir)
    info = init_distributed(device or "auto")
    cfg, sit, codec, meta, h = load_sampling_model(run_dir, step, info.device)
    if info.device.type == "cuda":  # the run's tf32 setting, as DiT/SiT/REPA sample (their --tf32 defaults to True)
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    out = Path(out_dir) if out_dir else run_dir / "samples" / sampler.dir_name(step)
    out.mkdir(parents=True, exist_ok=True)
    objective = objective_for(cfg)
    chunks = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    planned = {f"samples_{s:07d}_{e:07d}.npz" for s, e in chunks}
    if info.is_main:  # shards of an earlier call with another n or batch size would double-count images
        for stale in sorted(p for p in out.glob("samples_*.npz") if p.name not in planned):
            log.warning("removing %s: not a shard of this request (n=%d, batch_size=%d)", stale, n, batch_size)
            stale.unlink()
        (out / "manifest.json").unlink(missing_ok=True)  # rewritten once every shard is there
    barrier()
    mine = [c for j, c in enumerate(chunks) if j % info.world_size == info.rank]
    num_classes = meta["num_classes"]
    for start, end in progress(mine, desc=f"sample {run_dir.name}", unit="batch"):
        shard = out / f"samples_{start:07d}_{end:07d}.npz"
        if shard.is_file():
            continue
        idx = list(range(start, end))
        labels = torch.tensor([i % num_classes for i in idx])
        images = sample_images(sit, labels, seeds=idx, codec=codec, objective=objective, sampler=sampler,
                               device=info.device)
        atomic_savez(shard, arr_0=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())
    barrier()
    if info.is_main:
        manifest: dict[str, Any] = {
            "run_dir": str(run_dir), "step": step, "n": n, **sampler.manifest(), "batch_size": batch_size, "labels": "balanced (i % num_classes)", "num_classes": num_classes,
            "path": cfg.flow.path, "weights": "ema", "noise": NOISE_VERSION, "config_hash": h, "world_size": info.world_size,
            "shards": [f"samples_{s:07d}_{e:07d}.npz" for s, e in chunks], "created": now_iso(), **provenance()}
        atomic_write_json(out / "manifest.json", manifest, indent=2)
    barrier()
    return out
