"""Synthetic shapes: a labelled, masked image dataset generated from a seed (the embedded study and the tests).

Each image holds one foreground object on a textured background:

- the **class** fixes the shape (10 kinds, :data:`SHAPES`); with more than 10 classes, class ``k`` is shape
  ``k % 10`` drawn in hue band ``k // 10`` (so shape *and* colour must be read from the image);
- position, scale, rotation, colours, fill shading, and the background (colour, a sinusoidal grating, smooth
  low-frequency noise) vary per image;
- the **mask** is exactly the set of pixels the object covers (hard edges, no anti-aliasing), so SRSS and other
  mask-based metrics have a ground truth.

Determinism: every image is rendered from one row of parameters drawn with NumPy's PCG64 from the seed, so the
same ``(n, size, num_classes, seed)`` gives the same bytes on every machine, the first ``m`` images of an ``n``-image
set equal the ``m``-image set, and the same seed at two sizes draws the same scenes. Rendering is vectorised torch
(chunks of images at once) and results are cached in ``cache_dir("synthetic")`` keyed by all parameters.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from study.common import atomic_savez, cache_dir, get_logger

__all__ = ["SHAPES", "GENERATOR_VERSION", "NUM_PARAMS", "make_synthetic", "render_synthetic", "split_seed"]

log = get_logger(__name__)

SHAPES = ("disc", "square", "triangle", "ring", "cross", "ellipse", "frame", "half-disc", "stripes", "checker")
# Bump when the rendering changes: it is part of the cache key and of every synthetic dataset id.
GENERATOR_VERSION = 1
_NOISE = 6  # the background's smooth noise is a _NOISE x _NOISE x 3 grid, upsampled bicubically
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Columns of the per-image parameter matrix (all uniform in [0, 1) before mapping).
_COLS = ["radius", "cx", "cy", "angle", "fg_hue", "fg_sat", "fg_val", "shade_dir", "shade_amp", "pattern_freq",
         "bg_hue", "bg_sat", "bg_val", "grating_freq", "grating_dir", "grating_phase", "grating_amp"]
_C = {name: i for i, name in enumerate(_COLS)}
NUM_PARAMS = len(_COLS) + _NOISE * _NOISE * 3


def split_seed(seed: int, split: str) -> int:
    """The generator seed of a split: train, val and test are disjoint draws derived from one base seed."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; synthetic data has splits {sorted(_SPLIT_CODES)}")
    return int(np.random.SeedSequence([int(seed), _SPLIT_CODES[split]]).generate_state(1)[0])


def _labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    """Balanced labels: each consecutive block of ``num_classes`` images is a random permutation of the classes."""
    rng = np.random.default_rng([int(seed), 7])
    blocks = -(-n // num_classes)
    order = np.argsort(rng.random((blocks, num_classes)), axis=1)
    return order.reshape(-1)[:n].astype(np.int64)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV -> RGB for tensors of equal shape; returns ``[..., 3]`` in [0, 1]."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=-1)
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test of one shape kind in the object's local frame (the object's radius is 1)."""
    name = SHAPES[shape]
    if name in ("disc", "stripes"):                                            # stripes: a striped disc
        return u * u + v * v <= 1.0
    if name in ("square", "checker"):                                          # checker: a checkered square
        return torch.maximum(u.abs(), v.abs()) <= 0.8
    if name == "triangle":
        sq3 = math.sqrt(3.0)
        return (v >= -0.5) & (sq3 * u + v <= 1.0) & (-sq3 * u + v <= 1.0)
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55 ** 2)
    if name == "cross":
        au, av = u.abs(), v.abs()
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if name == "ellipse":
        return (u * u + (v / 0.45) ** 2) <= 1.0
    if name == "frame":
        box = torch.maximum(u.abs(), v.abs())
        return (box <= 0.85) & (box >= 0.5)
    if name == "half-disc":
        return (u * u + v * v <= 1.0) & (v >= 0.0)
    raise AssertionError(name)


def _shape_masks(shape_ids: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Masks ``[B, S, S]`` for local coordinates ``u, v`` ``[B, S, S]``; each kind is tested on its images only."""
    mask = torch.zeros(u.shape, dtype=torch.bool)
    for shape in shape_ids.unique().tolist():
        sel = shape_ids == shape
        mask[sel] = _inside(shape, u[sel], v[sel])
    return mask


def render_synthetic(params: np.ndarray, labels: np.ndarray, size: int, num_classes: int,
                     *, return_background: bool = False):
    """Render images from parameter rows; returns ``(images uint8 [B,3,S,S], masks bool [B,S,S])``.

    With ``return_background`` also the background alone (uint8, same shape), so tests can check that the mask is
    exactly where the object was drawn.
    """
    p = torch.from_numpy(np.asarray(params, dtype=np.float64)).float()
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    b = p.shape[0]
    col = lambda name: p[:, _C[name]].view(b, 1, 1)  # noqa: E731

    # Pixel centres in [0, 1].
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    xx, yy = xx.expand(b, size, size), yy.expand(b, size, size)

    # Object geometry: radius 0.24..0.42 of the side, centre kept so the object stays inside the image.
    radius = 0.24 + 0.18 * col("radius")
    cx = radius + (1 - 2 * radius) * col("cx")
    cy = radius + (1 - 2 * radius) * col("cy")
    angle = 2 * math.pi * col("angle")
    dx, dy = (xx - cx) / radius, (yy - cy) / radius
    cos, sin = torch.cos(angle), torch.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    shape_ids = y % len(SHAPES)
    mask = _shape_masks(shape_ids, u, v)

    # Foreground colour: bright and saturated; the hue band encodes y // 10 when there are more than 10 classes.
    bands = max(1, -(-num_classes // len(SHAPES)))
    band = (y // len(SHAPES)).float().view(b, 1, 1)
    fg_hue = (band + 0.1 + 0.8 * col("fg_hue")) / bands if bands > 1 else col("fg_hue")
    fg_sat = 0.65 + 0.35 * col("fg_sat")
    fg_val = 0.80 + 0.20 * col("fg_val")
    fg = _hsv_to_rgb(fg_hue, fg_sat, fg_val)                                   # [B,1,1,3]
    fg_alt = _hsv_to_rgb(fg_hue, 0.25 * fg_sat, torch.ones_like(fg_val))      # pastel second colour, same hue
    freq = 2.5 + 2.0 * col("pattern_freq")
    stripes = torch.sin(math.pi * freq * u) > 0
    checker = (torch.floor(freq * (u + 2)) + torch.floor(freq * (v + 2))) % 2 == 0
    use_alt = ((shape_ids.view(b, 1, 1) == SHAPES.index("stripes")) & stripes) | \
              ((shape_ids.view(b, 1, 1) == SHAPES.index("checker")) & checker)
    shade_dir = 2 * math.pi * col("shade_dir")
    shade = 1 - 0.15 * col("shade_amp") * (1 + torch.cos(shade_dir) * u + torch.sin(shade_dir) * v) / 2
    fg_img = torch.where(use_alt[..., None], fg_alt.expand(b, size, size, 3), fg.expand(b, size, size, 3))
    fg_img = fg_img * shade.clamp(0.7, 1)[..., None]

    # Background: dark, desaturated colour + an oriented grating + smooth low-frequency colour noise.
    bg = _hsv_to_rgb(col("bg_hue"), 0.45 * col("bg_sat"), 0.15 + 0.35 * col("bg_val"))
    g_dir = math.pi * col("grating_dir")
    g_freq = 2 + 10 * col("grating_freq")
    grating = torch.sin(2 * math.pi * (g_freq * (torch.cos(g_dir) * xx + torch.sin(g_dir) * yy)
                                       + col("grating_phase")))
    noise = p[:, len(_COLS):].view(b, 3, _NOISE, _NOISE) - 0.5
    noise = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    bg_img = bg + (0.04 + 0.08 * col("grating_amp"))[..., None] * grating[..., None] + 0.2 * noise
    bg_img = bg_img.clamp(0, 1)

    to_uint8 = lambda x: (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 3, 1, 2).contiguous()  # noqa
    image = torch.where(mask[..., None], fg_img, bg_img)
    if return_background:
        return to_uint8(image), mask, to_uint8(bg_img)
    return to_uint8(image), mask


def _generate(n: int, size: int, num_classes: int, seed: int, chunk: int = 256):
    params = np.random.default_rng(int(seed)).random((n, NUM_PARAMS))
    labels = _labels(n, num_classes, seed)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    masks = torch.empty((n, size, size), dtype=torch.bool)
    step = max(1, min(chunk, (1 << 22) // (size * size)))  # bound the float working set (~0.5 GB at most)
    for start in range(0, n, step):
        stop = min(n, start + step)
        images[start:stop], masks[start:stop] = render_synthetic(params[start:stop], labels[start:stop],
                                                                 size, num_classes)
    return images, torch.from_numpy(labels), masks


def _check(n: int, size: int, num_classes: int) -> None:
    if n < 1:
        raise ValueError(f"synthetic data needs n >= 1 images, got n={n}")
    if not 8 <= size <= 1024:
        raise ValueError(f"synthetic image size must be within 8..1024 px (32..256 is the tested range), got {size}")
    if num_classes < 1:
        raise ValueError(f"synthetic data needs at least 1 class, got classes={num_classes}")


def make_synthetic(n: int, size: int = 64, num_classes: int = 10, seed: int = 0, *, cache: bool = True):
    """``n`` synthetic images: ``(images uint8 [N,3,S,S], labels int64 [N], masks bool [N,S,S])``.

    Deterministic in ``(n, size, num_classes, seed)`` and cached under ``cache_dir("synthetic")`` (atomic write).
    Labels are balanced (exactly when ``n`` is a multiple of ``num_classes``).
    """
    n, size, num_classes, seed = int(n), int(size), int(num_classes), int(seed)
    _check(n, size, num_classes)
    path = None
    if cache:
        path = cache_dir("synthetic") / f"shapes-v{GENERATOR_VERSION}-n{n}-s{size}-c{num_classes}-seed{seed}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    return (torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]),
                            torch.from_numpy(np.unpackbits(z["masks"], axis=-1, count=size).astype(bool)))
            except Exception as exc:  # a corrupt cache file is regenerated, never trusted
                log.warning("synthetic cache %s unreadable (%s); regenerating", path, exc)
    images, labels, masks = _generate(n, size, num_classes, seed)
    if path is not None:
        atomic_savez(path, images=images.numpy(), labels=labels.numpy(),
                     masks=np.packbits(masks.numpy(), axis=-1))
        log.debug("cached %d synthetic images at %s", n, path)
    return images, labels, masks
