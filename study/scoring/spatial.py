"""Spatial-structure metrics of patch tokens (iREPA section 3 / App. B): LDS, CDS, SRSS, RMSC.

Features are patch tokens ``feats [B, T, D]`` on an ``H x W`` token grid (``T = H * W``, row-major). ``K(t, t')`` is
the cosine similarity of two tokens of one image and distances are Manhattan distances on the grid.

- **LDS**: mean K over 4-neighbour pairs (d = 1) minus mean K over pairs at d >= ``far`` (default 6).
- **CDS**: minus the least-squares slope of ``g(d) = mean K at distance exactly d`` against d = 1..``dmax``
  (default 8; distances the grid cannot hold are left out of the fit).
- **SRSS**: needs a foreground mask ``masks [B, T]``; per foreground anchor, mean K to foreground tokens at
  distance 1..``near`` minus mean K to background tokens at d >= ``far``, averaged over anchors that have both.
  NaN for an image with fewer than two foreground tokens, no background token, or no such anchor.
- **RMSC**: sqrt of the mean squared norm of the L2-normalised tokens minus their mean token.

These follow the authors' code (``metric_lds(far_dist=6)``, ``dmax=8``, ``metric_srss(d_pos=1, d_neg=6)``,
``rmsc(sqrt=True)``); see docs/scoring.md. All four come from one Gram matrix per image, computed for a chunk of the
batch at a time (memory bounded by ``max_bytes``); sums over pairs accumulate in float64.
"""
from __future__ import annotations

import functools
import math
from typing import Mapping

import torch
import torch.nn.functional as F

from results import SPATIAL_METRICS

__all__ = ["lds", "cds", "srss", "rmsc", "spatial_metrics", "masks_to_grid", "resolve_grid",
           "DEFAULT_FAR", "DEFAULT_DMAX", "DEFAULT_NEAR"]

DEFAULT_FAR = 6
DEFAULT_DMAX = 8
DEFAULT_NEAR = 1
_MAX_BYTES = 512 * 2**20  # working-memory budget for one chunk of Gram matrices and their temporaries
_EPS = 1e-12


def resolve_grid(num_tokens: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """``(H, W)`` of the token grid: ``grid`` when given (checked against T), else the square root of T."""
    if grid is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"{num_tokens} tokens do not form a square grid; pass grid=(H, W) with H * W = "
                             f"{num_tokens}")
        return side, side
    h, w = (int(g) for g in grid)
    if h < 1 or w < 1 or h * w != num_tokens:
        raise ValueError(f"grid {tuple(grid)} holds {h * w} tokens but the features have {num_tokens}")
    return h, w


@functools.lru_cache(maxsize=16)
def _distances(h: int, w: int) -> torch.Tensor:
    """Manhattan distances between all token positions of an ``h x w`` grid, ``[T, T]`` int64 (CPU)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :]).abs() + (xs[:, None] - xs[None, :]).abs()


def _check_feats(feats: torch.Tensor) -> torch.Tensor:
    if not isinstance(feats, torch.Tensor) or feats.ndim != 3:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"feats must be a tensor [B, T, D] of patch tokens, got {shape}")
    if feats.shape[1] < 2:
        raise ValueError(f"spatial metrics need at least 2 tokens per image, got T={feats.shape[1]}")
    return feats


def _check_masks(masks: torch.Tensor, batch: int, num_tokens: int, hw: tuple[int, int]) -> torch.Tensor:
    if masks.ndim == 3 and tuple(masks.shape[1:]) == hw:
        masks = masks.reshape(masks.shape[0], -1)
    if masks.ndim != 2 or masks.shape[0] != batch or masks.shape[1] != num_tokens:
        raise ValueError(f"masks must be bool [B, T] = [{batch}, {num_tokens}] (or [B, H, W] on the token grid "
                         f"{hw}); got {tuple(masks.shape)}. Downsample pixel masks with masks_to_grid(masks, grid)")
    return masks.bool()


def masks_to_grid(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Pixel masks ``[B, h, w]`` -> token masks ``[B, H * W]``: a token is foreground when any pixel of its cell is
    (max-pooling, as the authors' ``load_and_filter_masks``); sizes need not divide evenly."""
    if masks.ndim != 3:
        raise ValueError(f"pixel masks must be [B, h, w], got {tuple(masks.shape)}")
    pooled = F.adaptive_max_pool2d(masks.float()[:, None], tuple(grid))[:, 0]
    return pooled.reshape(masks.shape[0], -1) > 0.5


def _chunk_size(hw: tuple[int, int], dim: int, with_masks: bool, max_bytes: int) -> int:
    """Images per chunk so that one chunk's float32 working set fits in ``max_bytes``: the Gram, two masked copies of
    it for SRSS, the per-row distance histogram, the tokens and their normalised copy."""
    t, nbins = hw[0] * hw[1], hw[0] + hw[1] - 1
    per_image = 4 * (t * t * (3 if with_masks else 1) + t * nbins + 2 * t * dim)
    return max(1, int(max_bytes // per_image))


def _fit_cds(means: torch.Tensor, ds: torch.Tensor) -> torch.Tensor:
    """Minus the least-squares slope of ``means [b, n]`` against ``ds [n]`` (NaN with fewer than 2 points)."""
    if ds.numel() < 2:
        return torch.full(means.shape[:1], float("nan"), dtype=means.dtype, device=means.device)
    x = ds.to(means.dtype) - ds.to(means.dtype).mean()
    y = means - means.mean(dim=1, keepdim=True)
    return -(y * x).sum(dim=1) / (x * x).sum()


def _rmsc(xn: torch.Tensor) -> torch.Tensor:
    """RMSC of normalised tokens ``[b, T, D]`` via (1/T) sum_t |x̂_t - x̄|^2 = mean_t |x̂_t|^2 - |x̄|^2 (two
    reductions, no centred copy). That difference cancels when the tokens are nearly equal, so images with a small
    value are recomputed from the centred tokens (absolute error stays ~1e-6 either way)."""
    sq = torch.linalg.vector_norm(xn, dim=-1).pow(2).mean(dim=1) - xn.mean(dim=1).pow(2).sum(dim=-1)
    small = sq < 1e-2
    if small.any():
        sub = xn[small]
        sq = sq.clone()
        sq[small] = (sub - sub.mean(dim=1, keepdim=True)).pow(2).sum(dim=-1).mean(dim=1)
    return sq.clamp_min(0.0).sqrt()


def _chunk_metrics(x: torch.Tensor, masks: torch.Tensor | None, dist: torch.Tensor, want: set[str],
                   far: int, dmax: int, near: int) -> dict[str, torch.Tensor]:
    """All wanted metrics of one chunk ``x [b, T, D]`` (float32 or float64) from its Gram matrices."""
    b, t, _ = x.shape
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    needs_gram = bool(want & {"lds", "cds"}) or ("srss" in want and masks is not None)
    gram = torch.bmm(xn, xn.transpose(1, 2)) if needs_gram else None  # [b, T, T] cosine similarities
    out: dict[str, torch.Tensor] = {}
    acc = torch.float64
    if want & {"lds", "cds"}:
        # sums of K per distance bin, all bins at once: per anchor row in float32 (at most T terms each), then
        # over rows in float64 (10x faster than converting the whole Gram to float64)
        nbins = int(dist.max()) + 1
        rows = torch.zeros(b, t, nbins, dtype=gram.dtype, device=x.device)
        rows.scatter_add_(2, dist.expand(b, t, t), gram)
        sums = rows.sum(dim=1, dtype=acc)
        counts = torch.bincount(dist.reshape(-1), minlength=nbins).to(acc)
        if "lds" in want:
            if nbins <= far:
                out["lds"] = torch.full((b,), float("nan"), dtype=acc, device=x.device)
            else:
                local = sums[:, 1] / counts[1]
                distant = sums[:, far:].sum(dim=1) / counts[far:].sum()
                out["lds"] = local - distant
        if "cds" in want:
            top = min(dmax, nbins - 1)
            ds = torch.arange(1, top + 1, device=x.device)
            out["cds"] = _fit_cds(sums[:, 1:top + 1] / counts[1:top + 1], ds)
    if "rmsc" in want:
        out["rmsc"] = _rmsc(xn).to(acc)
    if "srss" in want and masks is not None:
        fg = masks.to(gram.dtype)
        bg = 1.0 - fg
        pos_pairs = ((dist >= 1) & (dist <= near)).to(gram.dtype)
        neg_pairs = (dist >= far).to(gram.dtype)
        # per anchor: sums of K over FG tokens near it and over BG tokens far from it (float32 matvecs over T terms)
        pos_sum = torch.bmm(gram * pos_pairs, fg[:, :, None])[..., 0].to(acc)
        neg_sum = torch.bmm(gram * neg_pairs, bg[:, :, None])[..., 0].to(acc)
        pos_cnt = (fg @ pos_pairs).to(acc)  # the pair masks are symmetric: [b, T] counts per anchor
        neg_cnt = (bg @ neg_pairs).to(acc)
        valid = (fg > 0) & (pos_cnt > 0) & (neg_cnt > 0)
        diff = pos_sum / pos_cnt.clamp_min(1) - neg_sum / neg_cnt.clamp_min(1)
        n_valid = valid.sum(dim=1)
        score = torch.where(valid, diff, torch.zeros_like(diff)).sum(dim=1) / n_valid.clamp_min(1)
        ok = (fg.sum(dim=1) >= 2) & (bg.sum(dim=1) >= 1) & (n_valid > 0)
        out["srss"] = torch.where(ok, score, torch.full_like(score, float("nan")))
    return out


def _compute(feats: torch.Tensor, masks: torch.Tensor | None, grid: tuple[int, int] | None, want: set[str],
             far: int, dmax: int, near: int, max_bytes: int | None, chunk_size: int | None) -> dict[str, torch.Tensor]:
    feats = _check_feats(feats)
    b, t, d = feats.shape
    hw = resolve_grid(t, grid)
    if far < 1 or dmax < 2 or near < 1:
        raise ValueError(f"need far >= 1, dmax >= 2 and near >= 1; got far={far}, dmax={dmax}, near={near}")
    if masks is not None:
        masks = _check_masks(torch.as_tensor(masks, device=feats.device), b, t, hw)
    dist = _distances(*hw).to(feats.device)
    work = torch.float64 if feats.dtype == torch.float64 else torch.float32
    step = chunk_size or _chunk_size(hw, d, masks is not None, max_bytes or _MAX_BYTES)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, b, step):
        x = feats[start:start + step].to(work)
        m = masks[start:start + step] if masks is not None else None
        for key, value in _chunk_metrics(x, m, dist, want, far, dmax, near).items():
            parts.setdefault(key, []).append(value)
    empty = torch.empty(0, dtype=torch.float32, device=feats.device)
    return {k: torch.cat(parts[k]).to(torch.float32) if parts.get(k) else empty for k in SPATIAL_METRICS if k in want}


def lds(feats: torch.Tensor, grid: tuple[int, int] | None = None, far: int = DEFAULT_FAR) -> torch.Tensor:
    """Local vs distant similarity per image ``[B]``: mean K at d = 1 minus mean K at d >= ``far``."""
    return _compute(feats, None, grid, {"lds"}, far, DEFAULT_DMAX, DEFAULT_NEAR, None, None)["lds"]


def cds(feats: torch.Tensor, grid: tuple[int, int] | None = None, dmax: int = DEFAULT_DMAX) -> torch.Tensor:
    """Correlation-decay slope per image ``[B]``: minus the LS slope of mean K at distance d, d = 1..``dmax``."""
    return _compute(feats, None, grid, {"cds"}, DEFAULT_FAR, dmax, DEFAULT_NEAR, None, None)["cds"]


def srss(feats: torch.Tensor, masks: torch.Tensor, grid: tuple[int, int] | None = None, near: int = DEFAULT_NEAR,
         far: int = DEFAULT_FAR) -> torch.Tensor:
    """Semantic-region self-similarity per image ``[B]`` (NaN where undefined; see the module docstring)."""
    if masks is None:
        raise ValueError("srss needs foreground masks [B, T]")
    return _compute(feats, masks, grid, {"srss"}, far, DEFAULT_DMAX, near, None, None)["srss"]


def rmsc(feats: torch.Tensor) -> torch.Tensor:
    """RMS spatial contrast per image ``[B]``: sqrt(mean_t |x̂_t - mean_t x̂_t|^2) of L2-normalised tokens."""
    feats = _check_feats(feats)
    return _compute(feats, None, (1, feats.shape[1]), {"rmsc"}, DEFAULT_FAR, DEFAULT_DMAX, DEFAULT_NEAR, None,
                    None)["rmsc"]


def spatial_metrics(feats: torch.Tensor, masks: torch.Tensor | None = None, grid: tuple[int, int] | None = None, *,
                    far: int = DEFAULT_FAR, dmax: int = DEFAULT_DMAX, near: int = DEFAULT_NEAR,
                    max_bytes: int | None = None, chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """All metrics per image from one Gram matrix per image: ``{"lds", "cds", "rmsc"[, "srss"]}`` -> float32 ``[B]``.

    ``srss`` is present only when ``masks`` (bool ``[B, T]`` or ``[B, H, W]`` on the token grid) are given. The batch
    is processed ``chunk_size`` images at a time (default: as many as fit in ``max_bytes``, 512 MiB), so a 32x32 grid
    at D = 4096 fits; the result does not depend on the chunking.
    """
    want = {"lds", "cds", "rmsc"} | ({"srss"} if masks is not None else set())
    return _compute(feats, masks, grid, want, far, dmax, near, max_bytes, chunk_size)


def summarize(per_image: Mapping[str, torch.Tensor | object]) -> dict[str, float | int]:
    """Dataset-level scores: the mean over images of each metric (nanmean for SRSS) and the image counts."""
    import numpy as np

    out: dict[str, float | int] = {}
    for key in SPATIAL_METRICS:
        if key not in per_image:
            continue
        values = np.asarray(per_image[key], dtype=np.float64)
        finite = np.isfinite(values)
        out[key] = float(values[finite].mean()) if finite.any() else float("nan")
        out[f"n_{key}"] = int(finite.sum())
    return out
