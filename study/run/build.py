"""What a training run builds from its config: the codec, the SiT, and the trained module (SiT + projectors).

The network follows the config (``study.models.build_network``): a SiT; a MeanFlow SiT (two time inputs) when
``meanflow`` is set; a JiT for a ``JiT-*`` size. What it predicts and how it is sampled is the config's objective
(``study.objectives.objective_for``), not the network's.

One place for these calls, so training and sampling build the same model. The alignment depth is the method's
(``method.depth``, else REPA's default for the size), read through ``SiT.forward_intermediates``: the EMA SiT that
sampling loads is a plain SiT.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from study.config import TrainConfig, resolve_size
from study.data import get_codec
from study.models import SiT, build_network
from study.objectives import build_projector

__all__ = ["Denoiser", "build_codec", "build_sit_for", "build_denoiser", "align_depth", "patch_size"]


def build_codec(name: str, device: torch.device | str = "cpu", *, stats: Any = None):
    """The codec named by ``data.codec``: ``identity`` (pixel space) or ``sd-vae`` (with latent stats)."""
    if name in ("identity", "pixel"):
        return get_codec(name)
    return get_codec(name, device=device, stats=stats)


def patch_size(cfg: TrainConfig) -> int:
    """The patch: ``model.patch_size``, else the size name's ``/P``, else 2 (SiT) or 16 (JiT)."""
    return resolve_size(cfg.model.size, cfg.model.patch_size).patch


def align_depth(cfg: TrainConfig) -> int:
    """The block after which the hidden tokens are aligned (1-based): ``method.depth`` or the size's default."""
    dims = resolve_size(cfg.model.size, cfg.model.patch_size).dims
    depth = cfg.method.depth or dims.align_depth
    if not 1 <= depth <= dims.depth:
        raise ValueError(f"method.depth {depth} must be between 1 and the number of blocks of {cfg.model.size} "
                         f"({dims.depth})")
    return depth


def build_sit_for(cfg: TrainConfig, *, image_size: int, num_classes: int, codec) -> nn.Module:
    """The run's network (SiT, MeanFlow SiT or JiT) for images of ``image_size`` px through ``codec``."""
    net = build_network(cfg.model.size, input_size=image_size // codec.downsample, in_channels=codec.channels,
                        num_classes=num_classes, patch_size=cfg.model.patch_size, qk_norm=cfg.model.qk_norm,
                        meanflow=cfg.meanflow is not None)
    return net


class Denoiser(nn.Module):
    """The trained module: the SiT plus one projector per encoder (what DDP wraps and the optimizer updates)."""

    def __init__(self, sit: SiT, projectors: list[nn.Module], depth: int) -> None:
        super().__init__()
        self.sit = sit
        self.projectors = nn.ModuleList(projectors)
        self.depth = depth

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, projections_only: bool = False,
                **cond: torch.Tensor) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """(prediction, each projector's output on the hidden tokens after block ``depth``). ``projections_only``:
        (None, the projections), the blocks after ``depth`` not run (REPA-E's alignment pass for the VAE).
        ``cond`` passes extra network inputs (MeanFlow's ``r``)."""
        if not len(self.projectors):
            return self.sit(x_t, t, y, **cond), []
        if projections_only:
            (hidden,) = self.sit.forward_intermediates(x_t, t, y, indices=[self.depth - 1], intermediates_only=True,
                                                       **cond)
            return None, [p(hidden, self.sit.grid) for p in self.projectors]
        v, (hidden,) = self.sit.forward_intermediates(x_t, t, y, indices=[self.depth - 1], **cond)
        return v, [p(hidden, self.sit.grid) for p in self.projectors]


def build_denoiser(cfg: TrainConfig, *, image_size: int, num_classes: int, codec,
                   encoder_dims: list[int] = ()) -> Denoiser:
    """The SiT and, when the method aligns, one projector per encoder width in ``encoder_dims``."""
    sit = build_sit_for(cfg, image_size=image_size, num_classes=num_classes, codec=codec)
    m = cfg.method
    projectors = [build_projector(m.projector, sit.hidden, d, hidden_dim=m.hidden_dim, kernel_size=m.kernel_size)
                  for d in encoder_dims] if m.align else []
    return Denoiser(sit, projectors, align_depth(cfg))
