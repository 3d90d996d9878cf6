"""SiT: the DiT transformer trained with a flow-matching (stochastic interpolant) loss.

One readable file, following the DiT/SiT design: patch embedding, fixed 2-D sin-cos positions, timestep and class
embeddings (with a null class for classifier-free guidance), adaLN-Zero blocks, and a linear head that predicts the
velocity. Like timm's models, ``forward(x, t, y)`` returns the prediction and ``forward_intermediates(x, t, y,
indices)`` also returns the hidden tokens after chosen blocks. Which block the REPA/iREPA alignment reads is the
method's choice (``study.run.build``), not the architecture's, so the EMA copy used for sampling knows nothing of it.
Sizes (S/B/L/XL/tiny/smoke) are in ``study.config.sizes``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from study.config import resolve_size

__all__ = ["SiT", "build_sit", "block_indices", "unpatchify",
           "init_conditioning_and_zero_adaln", "xavier_linear"]


# ---------------------------------------------------------------------------------------------------- embeddings
def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2-D sin-cos positions ``[grid_h * grid_w, dim]`` (row-major), as in MAE/DiT."""
    if dim % 4:
        raise ValueError(f"hidden size {dim} must be divisible by 4 for 2-D sin-cos positions")

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    return np.concatenate([one_axis(dim // 2, gw), one_axis(dim // 2, gh)], axis=1).astype(np.float32)


class TimestepEmbedder(nn.Module):
    """Scalar t -> sinusoidal features -> MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; index ``num_classes`` is the null class used for classifier-free guidance.

    Label dropout is decided by the caller (the training loop draws it from its seeded per-step generator), so the
    model itself is deterministic.
    """

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y)


# ---------------------------------------------------------------------------------------------------- blocks
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class SiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning (shift, scale, gate for attention and MLP)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads, qk_norm)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.ada(c).chunk(6, dim=-1)
        x = x + g_a[:, None] * self.attn(modulate(self.norm1(x), sh_a, sc_a))
        return x + g_m[:, None] * self.mlp(modulate(self.norm2(x), sh_m, sc_m))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


# ---------------------------------------------------------------------------------------------------- model
def unpatchify(x: torch.Tensor, patch: int, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """Tokens ``[B, H*W, p*p*C]`` (row-major grid) -> images ``[B, C, H*p, W*p]``."""
    h, w = grid
    x = x.reshape(x.shape[0], h, w, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], channels, h * patch, w * patch)


def xavier_linear(m: nn.Module) -> None:
    """DiT's init of a linear layer (``model.apply(xavier_linear)``): xavier-uniform weight, zero bias."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_conditioning_and_zero_adaln(model: nn.Module) -> None:
    """DiT's initialisation of the conditioning: N(0, 0.02) label table and timestep MLP, and every adaLN modulation
    and the output layer at zero (adaLN-Zero: each block starts as the identity, the prediction at 0). For any model
    with ``y_embed``, ``t_embed``, ``blocks[i].ada`` and ``final.ada``/``final.linear`` (the SiT, JiT)."""
    nn.init.normal_(model.y_embed.table.weight, std=0.02)
    nn.init.normal_(model.t_embed.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embed.mlp[2].weight, std=0.02)
    for block in model.blocks:
        nn.init.zeros_(block.ada[-1].weight)
        nn.init.zeros_(block.ada[-1].bias)
    for layer in (model.final.ada[-1], model.final.linear):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def block_indices(indices: int | Sequence[int], depth: int) -> list[int]:
    """timm's convention: an int ``n`` selects the last ``n`` blocks, a sequence selects those 0-based block indices
    (negative ones count from the end). Returns sorted, unique, non-negative indices."""
    if isinstance(indices, int):
        if not 1 <= indices <= depth:
            raise ValueError(f"indices={indices}: ask for between 1 and {depth} (the number of blocks) last blocks")
        return list(range(depth - indices, depth))
    out = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f"block index {i} is out of range for {depth} blocks")
        out.append(j)
    return sorted(set(out))


class SiT(nn.Module):
    """Class-conditional SiT predicting the velocity (or, for other objectives, whatever its head is trained on)."""

    def __init__(self, *, input_size: int, in_channels: int, patch_size: int = 2, depth: int = 28,
                 hidden: int = 1152, heads: int = 16, num_classes: int = 1000, mlp_ratio: float = 4.0,
                 qk_norm: bool = False) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by patch size {patch_size}")
        self.in_channels = in_channels
        self.input_size = input_size
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.depth = depth
        self.hidden = hidden
        self.grid = (input_size // patch_size, input_size // patch_size)
        self.x_embed = nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size)
        self.t_embed = TimestepEmbedder(hidden)
        self.y_embed = LabelEmbedder(num_classes, hidden)
        pos = torch.from_numpy(sincos_pos_embed_2d(hidden, *self.grid))[None]
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.ModuleList(SiTBlock(hidden, heads, mlp_ratio, qk_norm) for _ in range(depth))
        self.final = FinalLayer(hidden, patch_size, in_channels)
        self._init_weights()

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def _init_weights(self) -> None:
        """DiT's initialisation: xavier linears, zeroed adaLN modulations and output layer (adaLN-Zero)."""
        self.apply(xavier_linear)
        w = self.x_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embed.bias)
        init_conditioning_and_zero_adaln(self)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.patch_size, self.in_channels, self.grid)

    def condition(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adaLN conditioning vector of times ``t`` and labels ``y`` (subclasses add inputs, e.g. MeanFlow's r)."""
        return self.t_embed(t) + self.y_embed(y)

    def forward_intermediates(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, indices: int | Sequence[int],
                              intermediates_only: bool = False, **cond: torch.Tensor | None
                              ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """``x [B, C, S, S]``, ``t [B]`` in [0, 1], ``y [B]`` (``num_classes`` = null) -> (prediction, the hidden
        tokens ``[B, N, hidden]`` after each block in ``indices``, in block order; see :func:`block_indices`).
        ``intermediates_only`` (timm's): the hidden tokens alone, the blocks after the last one asked for not run.
        ``cond``: extra conditioning inputs of a subclass's :meth:`condition`."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size or x.shape[1] != self.in_channels:
            raise ValueError(f"SiT expects inputs [B, {self.in_channels}, {self.input_size}, {self.input_size}], "
                             f"got {tuple(x.shape)}")
        wanted = set(block_indices(indices, self.depth))
        h = self.x_embed(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)
        c = self.condition(t, y, **cond)
        hidden = []
        for i, block in enumerate(self.blocks):
            h = block(h, c)
            if i in wanted:
                hidden.append(h)
                if intermediates_only and len(hidden) == len(wanted):
                    return hidden
        return self.unpatchify(self.final(h, c)), hidden

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **cond: torch.Tensor | None) -> torch.Tensor:
        """The prediction alone (what samplers call)."""
        return self.forward_intermediates(x, t, y, indices=[], **cond)[0]


def build_sit(size: str, *, input_size: int, in_channels: int, num_classes: int, patch_size: int | None = None,
              qk_norm: bool = False) -> SiT:
    """Build a SiT by size name (``SiT-XL/2``, ``tiny``, ...); ``patch_size`` overrides the name's ``/P``."""
    size = _sit_size(size, patch_size)
    return SiT(input_size=input_size, in_channels=in_channels, patch_size=size.patch, depth=size.dims.depth,
               hidden=size.dims.hidden, heads=size.dims.heads, num_classes=num_classes, qk_norm=qk_norm)


def _sit_size(size: str, patch_size: int | None):
    resolved = resolve_size(size, patch_size)
    if resolved.family != "sit":
        raise ValueError(f"model.size {size!r} is not a SiT size")
    return resolved
