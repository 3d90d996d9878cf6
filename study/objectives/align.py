"""REPA / iREPA alignment: target normalisation, projectors and the alignment loss (the contract checks call these).

- ``spatial_normalize``: iREPA's spatial z-score of the encoder target over the token axis.
- ``build_projector``: ``"mlp"`` (REPA), ``"linear"``, ``"conv"`` (iREPA: a Conv2d on the token grid).
- ``alignment_loss``: minus the mean cosine similarity over batch and tokens.
- ``pool_tokens``: the encoder's token grid average-pooled by an integer factor, for a SiT on a coarser grid
  (``encoder.pool``; the miniature's 8x8 grid). Averaging whole cells is not an interpolation: a pooled token is
  the mean of the tokens its cell covers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from study.config import PROJECTOR_KINDS

__all__ = ["spatial_normalize", "build_projector", "alignment_loss", "Projector", "pool_tokens"]


def spatial_normalize(x: torch.Tensor, gamma: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """``(x - gamma * mean_T x) / (std_T x + eps)`` for ``x [B, T, D]`` (Bessel-corrected std over tokens)."""
    if x.ndim != 3:
        raise ValueError(f"spatial_normalize expects [B, T, D] tokens, got shape {tuple(x.shape)}")
    return (x - gamma * x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + eps)


def pool_tokens(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Tokens ``[B, T, D]`` on a square grid -> ``[B, T / factor**2, D]``, each the mean of a ``factor x factor``
    cell (row-major in, row-major out)."""
    if factor == 1:
        return x
    b, t, d = x.shape
    side = int(round(t ** 0.5))
    if side * side != t or side % factor:
        raise ValueError(f"pool_tokens: {t} tokens are not a square grid divisible by {factor}")
    fmap = x.transpose(1, 2).reshape(b, d, side, side)
    return F.avg_pool2d(fmap, factor).flatten(2).transpose(1, 2)


def alignment_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus the mean (over batch and tokens) cosine similarity between ``pred`` and ``target`` ``[B, T, D]``."""
    if pred.shape != target.shape:
        raise ValueError(f"alignment_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    return -F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()


class Projector(nn.Module):
    """Maps hidden tokens ``[B, T, in_dim]`` on a ``grid = (H, W)`` (row-major, ``H * W = T``) to ``[B, T, out_dim]``."""

    def __init__(self, kind: str, net: nn.Module) -> None:
        super().__init__()
        self.kind = kind
        self.net = net

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, t, c = x.shape
        h, w = grid
        if h * w != t:
            raise ValueError(f"projector: grid {h}x{w} does not hold {t} tokens")
        if self.kind != "conv":
            return self.net(x)
        fmap = x.transpose(1, 2).reshape(b, c, h, w)
        return self.net(fmap).flatten(2).transpose(1, 2)


def build_projector(kind: str, in_dim: int, out_dim: int, *, hidden_dim: int = 2048,
                    kernel_size: int = 3) -> Projector:
    """REPA's 3-layer MLP (xavier init), a single linear layer, or iREPA's same-padded Conv2d (default init)."""
    if kind == "mlp":
        net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                            nn.Linear(hidden_dim, out_dim))
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    elif kind == "linear":
        net = nn.Linear(in_dim, out_dim)
        nn.init.xavier_uniform_(net.weight)
        nn.init.zeros_(net.bias)
    elif kind == "conv":
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"conv projector kernel_size must be odd and >= 1 (same padding), got {kernel_size}")
        net = nn.Conv2d(in_dim, out_dim, kernel_size=kernel_size, padding=kernel_size // 2)
    else:
        raise ValueError(f"unknown projector kind {kind!r}; use one of {', '.join(PROJECTOR_KINDS)}")
    return Projector(kind, net)
