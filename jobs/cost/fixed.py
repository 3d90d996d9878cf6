"""The fixed costs of a training step: what every GPU does once per step whatever its batch, which FLOPs miss.

Each rank updates the whole model every step (data parallel, no sharding), and that work is bound by memory
bandwidth, not by FLOPs, so the estimate counts it apart from the FLOP model: bytes moved per trained parameter,
over the GPU's memory bandwidth x :data:`HBM_EFFICIENCY`, per GPU of the job, per step. What the code does since
issue 18 (``study.training``), per fp32 parameter:

- fused AdamW: read parameter, gradient and both moments, write parameter, moments and the unscaled gradient (the
  clip is its ``grad_scale``): 32 bytes;
- the gradient norm (one multi-tensor norm): 4 bytes;
- the EMA (one multi-tensor lerp over the SiT's parameters): 12 bytes;
- bf16 autocast's weight casts (read fp32, write bf16) once per micro-batch forward: 6 bytes each;
- the DDP all-reduce: overlapped with the backward except its last bucket (``study.training.ddp_bucket_mb``), sent
  at the node's all-reduce bandwidth.

Not counted: the host (the DataLoader makes each step's batch, draws and cached targets ahead, and nothing waits for
the GPU between checks: benchmarks/host_overhead.py measures what remains on the host, under 2 ms a step), checks
every ``log_every`` steps, checkpoints and preview sheets.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from jobs.cost.gpus import GpuSpec

__all__ = ["BYTES_PER_PARAM", "HBM_EFFICIENCY", "FixedStep", "trained_params", "REPAE_PARAMS"]

#: Bytes moved per trained fp32 parameter per step (the casts: per micro-batch).
BYTES_PER_PARAM = {"fused AdamW (clip as grad_scale)": 32, "gradient norm": 4, "EMA (foreach lerp)": 12,
                   "bf16 weight casts per micro-batch": 6}
#: Sustained fraction of the datasheet memory bandwidth for these streaming kernels (an assumption).
HBM_EFFICIENCY = 0.8
#: REPA-E also updates the SD-VAE (83.7M parameters) and the PatchGAN (2.8M) with AdamW every step.
REPAE_PARAMS = 86_500_000


@functools.lru_cache(maxsize=None)
def _network_params(size: str, input_size: int, in_channels: int, num_classes: int, patch_size: int | None,
                    qk_norm: bool, meanflow: bool) -> int:
    from study.models import build_network

    with torch.device("meta"):
        net = build_network(size, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                            patch_size=patch_size, qk_norm=qk_norm, meanflow=meanflow)
    return sum(p.numel() for p in net.parameters())


@functools.lru_cache(maxsize=None)
def _projector_params(kind: str, in_dim: int, out_dim: int, hidden_dim: int, kernel_size: int) -> int:
    from study.objectives import build_projector

    with torch.device("meta"):
        proj = build_projector(kind, in_dim, out_dim, hidden_dim=hidden_dim, kernel_size=kernel_size)
    return sum(p.numel() for p in proj.parameters())


def trained_params(cfg: Any, geo: dict[str, Any], encoder_dims: list[int]) -> tuple[int, int]:
    """``(trained parameters, of which the EMA'd network's)``: the SiT (or JiT, MeanFlow SiT), its projectors and
    REPA-E's parts, counted on the meta device."""
    from study.config import resolve_size

    net = _network_params(cfg.model.size, geo["input_size"], geo["in_channels"], geo["num_classes"],
                          cfg.model.patch_size, cfg.model.qk_norm, cfg.meanflow is not None)
    hidden = resolve_size(cfg.model.size, cfg.model.patch_size).dims.hidden
    m = cfg.method
    proj = sum(_projector_params(m.projector, hidden, d, m.hidden_dim, m.kernel_size) for d in encoder_dims) \
        if m.align else 0
    return net + proj + (REPAE_PARAMS if m.repae is not None else 0), net


class FixedStep:
    """Seconds per step per GPU on ``gpu`` (:meth:`seconds`), and the parts (:meth:`parts`) for the assumptions."""

    def __init__(self, gpu: GpuSpec) -> None:
        self.gpu = gpu

    def parts(self, params: int, ema_params: int, grad_accum: int, gpus: int) -> dict[str, float]:
        bw = self.gpu.hbm_tbps * 1e12 * HBM_EFFICIENCY
        out = {"optimizer": (BYTES_PER_PARAM["fused AdamW (clip as grad_scale)"]
                             + BYTES_PER_PARAM["gradient norm"]) * params / bw,
               "ema": BYTES_PER_PARAM["EMA (foreach lerp)"] * ema_params / bw,
               "casts": BYTES_PER_PARAM["bf16 weight casts per micro-batch"] * grad_accum * params / bw}
        if gpus > 1:
            from study.training import ddp_bucket_mb

            last = min(ddp_bucket_mb(params) * 2**20, 4 * params)
            out["all-reduce (last bucket)"] = 2 * (gpus - 1) / gpus * last / (self.gpu.allreduce_gbps * 1e9)
        return out

    def seconds(self, params: int, ema_params: int, grad_accum: int, gpus: int) -> float:
        return sum(self.parts(params, ema_params, grad_accum, gpus).values())
