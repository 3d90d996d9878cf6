"""JiT: the plain pixel-space ViT denoiser of Li & He, "Back to Basics: Let Denoising Generative Models Denoise" (2025).

One readable file, following the released ``model_jit.py``: a bottleneck patch embedding (a patch-size conv down to a
low dimension, no bias, then a 1x1 conv up to the width), fixed 2-D sin-cos positions, 2-D rotary embeddings on
queries and keys, RMSNorm (pre-norm and on q/k), SwiGLU MLPs, adaLN-Zero conditioning on time + class, and
``in_context_len`` class tokens prepended before block ``in_context_start``. The head predicts the clean image
(x-prediction); ``study.objectives.xpred`` turns it into a velocity for the loss and the sampler.

Like ``SiT``: ``forward(x, t, y)`` returns the prediction and ``forward_intermediates(x, t, y, indices)`` also the
image tokens (the in-context tokens removed) after the chosen blocks, which REPA/iREPA align. Sizes are in
``study.config.sizes``. ``t`` uses this project's convention (t = 0 data, t = 1 noise); the released code runs
the other way (``study.objectives.xpred`` documents the mapping).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from study.config import resolve_size
from study.models.sit import (LabelEmbedder, TimestepEmbedder, block_indices, init_conditioning_and_zero_adaln,
                              modulate, sincos_pos_embed_2d, unpatchify, xavier_linear)

__all__ = ["JiT", "build_jit"]


# ---------------------------------------------------------------------------------------------------- rotary
def rope_2d(head_dim: int, grid: int, prefix: int = 0, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of shape ``[prefix + grid * grid, head_dim]`` for 2-D rotary embeddings (EVA/JiT layout).

    The first half of each head rotates with the row index, the second half with the column index; neighbouring
    channel pairs share a frequency. ``prefix`` tokens (the in-context class tokens) get the identity rotation.
    """
    if head_dim % 4:
        raise ValueError(f"head dimension {head_dim} must be divisible by 4 for 2-D rotary embeddings")
    dim = head_dim // 2
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim)
    pos = torch.arange(grid, dtype=torch.float32)
    f = torch.repeat_interleave(pos[:, None] * freqs[None], 2, dim=-1)  # [grid, dim]
    both = torch.cat([f[:, None, :].expand(grid, grid, dim), f[None, :, :].expand(grid, grid, dim)], dim=-1)
    both = both.reshape(grid * grid, head_dim)
    cos, sin = both.cos(), both.sin()
    if prefix:
        cos = torch.cat([torch.ones(prefix, head_dim), cos])
        sin = torch.cat([torch.zeros(prefix, head_dim), sin])
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)``; ``x [B, H, N, D]``."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).reshape(x.shape)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


# ---------------------------------------------------------------------------------------------------- blocks
class BottleneckPatchEmbed(nn.Module):
    """Patchify to a low-dimensional bottleneck (conv, stride = patch, no bias), then a 1x1 conv to the width."""

    def __init__(self, patch: int, in_channels: int, bottleneck: int, hidden: int) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(in_channels, bottleneck, kernel_size=patch, stride=patch, bias=False)
        self.proj2 = nn.Conv2d(bottleneck, hidden, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)


class JiTAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q = apply_rope(self.q_norm(q), *rope)
        k = apply_rope(self.k_norm(k), *rope)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class SwiGLU(nn.Module):
    """``w3(silu(a) * b)`` with ``[a, b] = w12(x)``; the inner width is 2/3 of ``hidden`` (parameter-matched)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = int(hidden * 2 / 3)
        self.w12 = nn.Linear(dim, 2 * inner)
        self.w3 = nn.Linear(inner, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.drop(F.silu(a) * b))


class JiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(hidden, eps=1e-6)
        self.attn = JiTAttention(hidden, heads, dropout)
        self.norm2 = nn.RMSNorm(hidden, eps=1e-6)
        self.mlp = SwiGLU(hidden, int(hidden * mlp_ratio), dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.ada(c).chunk(6, dim=-1)
        x = x + g_a[:, None] * self.attn(modulate(self.norm1(x), sh_a, sc_a), rope)
        return x + g_m[:, None] * self.mlp(modulate(self.norm2(x), sh_m, sc_m))


class JiTFinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(hidden, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


# ---------------------------------------------------------------------------------------------------- model
class JiT(nn.Module):
    """Class-conditional JiT predicting the clean image (x-prediction)."""

    def __init__(self, *, input_size: int = 256, in_channels: int = 3, patch_size: int = 16, depth: int = 12,
                 hidden: int = 768, heads: int = 12, bottleneck: int = 128, in_context_len: int = 32,
                 in_context_start: int = 4, num_classes: int = 1000, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by patch size {patch_size}")
        if in_context_len and not 0 <= in_context_start < depth:
            raise ValueError(f"in_context_start {in_context_start} must be a block index below {depth}")
        self.in_channels = in_channels
        self.input_size = input_size
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.depth = depth
        self.hidden = hidden
        self.in_context_len = in_context_len
        self.in_context_start = in_context_start
        side = input_size // patch_size
        self.grid = (side, side)
        self.x_embed = BottleneckPatchEmbed(patch_size, in_channels, bottleneck, hidden)
        self.t_embed = TimestepEmbedder(hidden)
        self.y_embed = LabelEmbedder(num_classes, hidden)
        self.register_buffer("pos_embed", torch.from_numpy(sincos_pos_embed_2d(hidden, side, side))[None],
                             persistent=False)
        if in_context_len:
            self.in_context_pos = nn.Parameter(torch.zeros(1, in_context_len, hidden))
        head_dim = hidden // heads
        cos, sin = rope_2d(head_dim, side)
        cos_ic, sin_ic = rope_2d(head_dim, side, prefix=in_context_len)
        for name, value in (("rope_cos", cos), ("rope_sin", sin), ("rope_cos_ic", cos_ic), ("rope_sin_ic", sin_ic)):
            self.register_buffer(name, value, persistent=False)
        # the released code applies dropout only to the middle half of the blocks
        self.blocks = nn.ModuleList(
            JiTBlock(hidden, heads, mlp_ratio, dropout if depth // 4 <= i < depth // 4 * 3 else 0.0)
            for i in range(depth))
        self.final = JiTFinalLayer(hidden, patch_size, in_channels)
        self._init_weights()

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def _init_weights(self) -> None:
        """The released initialisation: xavier linears and patch convs, N(0, 0.02) embeddings, zeroed adaLN/head."""
        self.apply(xavier_linear)
        for conv in (self.x_embed.proj1, self.x_embed.proj2):
            nn.init.xavier_uniform_(conv.weight.data.view(conv.weight.shape[0], -1))
        nn.init.zeros_(self.x_embed.proj2.bias)
        init_conditioning_and_zero_adaln(self)
        if self.in_context_len:
            nn.init.normal_(self.in_context_pos, std=0.02)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.patch_size, self.in_channels, self.grid)

    def forward_intermediates(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, indices: int | Sequence[int],
                              intermediates_only: bool = False
                              ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """``x [B, C, S, S]`` (noisy image), ``t [B]``, ``y [B]`` (``num_classes`` = null) -> (x_pred, the image
        tokens ``[B, N, hidden]`` after each block in ``indices``, in block order; see ``block_indices``).
        ``intermediates_only``: the tokens alone, the later blocks not run."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size or x.shape[1] != self.in_channels:
            raise ValueError(f"JiT expects inputs [B, {self.in_channels}, {self.input_size}, {self.input_size}], "
                             f"got {tuple(x.shape)}")
        wanted = set(block_indices(indices, self.depth))
        h = self.x_embed(x) + self.pos_embed.to(x.dtype)
        y_emb = self.y_embed(y)
        c = self.t_embed(t) + y_emb
        rope = (self.rope_cos, self.rope_sin)
        prefix = 0
        hidden = []
        for i, block in enumerate(self.blocks):
            if self.in_context_len and i == self.in_context_start:
                tokens = y_emb[:, None, :] + self.in_context_pos.to(h.dtype)
                h = torch.cat([tokens, h], dim=1)
                rope, prefix = (self.rope_cos_ic, self.rope_sin_ic), self.in_context_len
            h = block(h, c, rope)
            if i in wanted:
                hidden.append(h[:, prefix:])
                if intermediates_only and len(hidden) == len(wanted):
                    return hidden
        return self.unpatchify(self.final(h[:, prefix:], c)), hidden

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The clean-image prediction alone (what samplers call)."""
        return self.forward_intermediates(x, t, y, indices=[])[0]


def build_jit(size: str, *, input_size: int, in_channels: int = 3, num_classes: int = 1000,
              patch_size: int | None = None, dropout: float = 0.0) -> JiT:
    """Build a JiT by size name (``JiT-B/16``, ``JiT-tiny``...); ``patch_size`` overrides the name's ``/P``."""
    resolved = resolve_size(size, patch_size)
    if resolved.family != "jit":
        raise ValueError(f"model.size {size!r} is not a JiT size")
    dims = resolved.dims
    return JiT(input_size=input_size, in_channels=in_channels, patch_size=resolved.patch, depth=dims.depth,
               hidden=dims.hidden, heads=dims.heads, bottleneck=dims.bottleneck, in_context_len=dims.in_context_len,
               in_context_start=dims.in_context_start, num_classes=num_classes, dropout=dropout)
