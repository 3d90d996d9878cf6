"""The SiT of MeanFlow: the same transformer with a second time input, predicting the average velocity u(z_t, r, t).

As in the MeanFlow reference codes the network is conditioned on ``(t, t - r)``: a second timestep embedder takes the
interval ``h = t - r`` and its embedding is added to the time and class embeddings. Called without ``r`` it gives the
instantaneous velocity ``u(z_t, t, t) = v(z_t, t)``, so the flow-matching samplers of ``study.sampling.sample`` work on it too.

A plain subclass: ``SiT`` and its checkpoints are unchanged; a MeanFlow checkpoint holds ``h_embed.*`` in addition.
"""
from __future__ import annotations

import torch
from torch import nn

from study.models.sit import SiT, TimestepEmbedder, _sit_size

__all__ = ["MeanFlowSiT", "build_meanflow_sit"]


class MeanFlowSiT(SiT):
    """``forward(x, t, y, r=None) -> u``; ``r=None`` means ``r = t`` (the instantaneous velocity). The SiT's own
    ``forward``/``forward_intermediates`` pass ``r`` on to :meth:`condition`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.h_embed = TimestepEmbedder(self.hidden)
        nn.init.normal_(self.h_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.h_embed.mlp[2].weight, std=0.02)
        for layer in (self.h_embed.mlp[0], self.h_embed.mlp[2]):
            nn.init.zeros_(layer.bias)

    def condition(self, t: torch.Tensor, y: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        """The SiT's conditioning plus the embedding of the interval ``h = t - r`` (``r [B] <= t``; None: r = t)."""
        interval = torch.zeros_like(t) if r is None else t - r
        return self.t_embed(t) + self.h_embed(interval) + self.y_embed(y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                r: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, t, y, r=r)


def build_meanflow_sit(size: str, *, input_size: int, in_channels: int, num_classes: int,
                       patch_size: int | None = None, qk_norm: bool = False) -> MeanFlowSiT:
    """``build_sit``'s size names and arguments, with the MeanFlow class."""
    size = _sit_size(size, patch_size)
    return MeanFlowSiT(input_size=input_size, in_channels=in_channels, patch_size=size.patch, depth=size.dims.depth,
                       hidden=size.dims.hidden, heads=size.dims.heads, num_classes=num_classes, qk_norm=qk_norm)
