"""The masks SRSS needs: the authors' minimum mask fraction, and a check that a dataset split has masks (and how
many of its images meet that fraction) before any job is submitted.

SRSS needs one foreground mask per image (ImageNet-S masks for ImageNet, exact masks for synthetic data). The
authors' code reduces a mask to the 16 x 16 token grid by max-pooling and keeps an image only when its foreground
and its background each cover at least 64 of the 256 tokens: a minimum fraction of 0.25 (:func:`srss_kept`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["MaskCheck", "check_masks", "srss_kept", "AUTHORS_MIN_FRACTION", "MASK_GRID"]

#: The authors' filter: >= 64 foreground and >= 64 background tokens out of 256.
AUTHORS_MIN_FRACTION = 64 / 256
#: The token grid the check counts on (the authors' 16 x 16; an encoder with another grid differs slightly).
MASK_GRID = (16, 16)


def srss_kept(fg_tokens: np.ndarray, tokens: int, min_fraction: float) -> np.ndarray:
    """Which images SRSS averages over: a mask (``fg_tokens >= 0``) whose foreground and background each cover at
    least ``min_fraction`` of the ``tokens`` (0: every image with a mask)."""
    fg = np.asarray(fg_tokens, dtype=np.float64)
    frac = fg / tokens
    return (fg >= 0) & (frac >= min_fraction) & (1.0 - frac >= min_fraction)


@dataclass(frozen=True)
class MaskCheck:
    """What SRSS will have on a dataset split: ``n_images`` scored (None: the data is not readable here),
    ``n_masked`` of them with a mask, ``n_kept`` of those meeting ``min_fraction`` on :data:`MASK_GRID` (None when
    not counted), and ``problem``: why SRSS would be empty (None when it will not be, or when this machine cannot
    tell)."""

    dataset: str
    split: str
    masks: str | None
    min_fraction: float
    n_images: int | None
    n_masked: int
    n_kept: int | None
    problem: str | None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.n_images is None:
            return f"masks of {self.dataset} ({self.split}) not checked: {self.note}"
        kept = "" if self.n_kept is None else (f", {self.n_kept} meet the minimum mask fraction "
                                               f"{self.min_fraction:g}")
        head = f"{self.dataset} ({self.split}): {self.n_masked} of {self.n_images} scored images have a mask{kept}"
        return f"{head}: {self.problem}" if self.problem else head


def check_masks(data: Any, split: str = "val", masks: str | os.PathLike | None = None, *,
                min_fraction: float = 0.0, limit: int | None = None, count: bool = True) -> MaskCheck:
    """Whether scoring ``data``/``split`` (the ``limit`` images :func:`study.scoring.score_encoder` would score)
    with ``masks`` gives SRSS a value: the sweep preflight calls this before submitting score jobs.

    ``data`` is a dataset spec (``study.data.open_dataset``); a path that does not exist here gives ``n_images =
    None`` and no problem (the check belongs on a machine that sees the data). ``count`` decodes each mask to count
    the images that meet ``min_fraction`` (ImageNet-S val: about 12K PNGs); without it only mask files are counted.
    """
    from study.data import DatasetError, open_dataset
    from study.scoring.feature_cache import _select

    spec = str(data)
    base = dict(dataset=spec, split=split, masks=None if masks is None else str(masks), min_fraction=min_fraction)
    if not spec.startswith("synthetic") and not os.path.exists(os.path.expanduser(spec)):
        return MaskCheck(**base, n_images=None, n_masked=0, n_kept=None, problem=None,
                         note=f"{spec} is not on this machine")
    try:
        dataset = open_dataset(spec, split, masks=masks)
    except DatasetError as exc:
        return MaskCheck(**base, n_images=None, n_masked=0, n_kept=None, problem=f"cannot open the data: {exc}")
    indices = _select(len(dataset), limit)  # the images score_encoder scores
    paths = getattr(dataset, "mask_paths", None)
    if not getattr(dataset, "has_masks", False):
        masked = []
    elif paths:
        masked = [int(i) for i in indices if paths[i] is not None]
    else:
        masked = [int(i) for i in indices]
    n_kept = None
    if count and masked:
        from study.scoring.spatial import masks_to_grid

        tokens = MASK_GRID[0] * MASK_GRID[1]
        fg = np.array([-1 if (m := dataset.mask(i)) is None
                       else int(masks_to_grid(torch.as_tensor(m)[None].bool(), MASK_GRID).sum()) for i in masked])
        n_kept = int(srss_kept(fg, tokens, min_fraction).sum())
    problem = None
    if not masked:
        problem = ("no image has a mask, so SRSS will be empty: give scoring.masks (ImageNet-S: "
                   "<masks>/<class>/<stem>.png), or prepare the data with --masks")
    elif n_kept == 0:
        problem = (f"no masked image meets the minimum mask fraction {min_fraction:g}, so SRSS will be empty: lower "
                   f"scoring.min_mask_fraction")
    return MaskCheck(**base, n_images=len(indices), n_masked=len(masked), n_kept=n_kept, problem=problem)

