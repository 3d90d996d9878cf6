"""The dataset interface every stage reads images through, the synthetic dataset, and batching.

An :class:`ImageDataset` item is ``{"image": uint8 [3,H,W], "label": int, "mask": bool [H,W] or None}`` (a prepared
ImageNet dataset adds ``"moments"``); :func:`collate` stacks items into a batch dict.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from .synthetic import GENERATOR_VERSION, make_synthetic, split_seed

__all__ = ["ImageDataset", "SyntheticDataset", "DatasetError", "collate", "parse_synthetic_spec",
           "SYNTHETIC_DEFAULTS"]

SYNTHETIC_DEFAULTS = {"n": 1024, "size": 64, "classes": 10, "seed": 0}


class DatasetError(ValueError):
    """A dataset spec or folder is wrong or incomplete; the message says what to fix."""


class ImageDataset(Dataset):
    """Base class: a map-style torch Dataset of uint8 images with labels and optional foreground masks.

    Attributes: ``num_classes``, ``id`` (stable string naming dataset + split + parameters, for cache keys),
    ``has_masks``, ``image_size`` (side of the square images), ``split``, ``class_names``.
    """

    num_classes: int
    id: str
    has_masks: bool
    image_size: int
    split: str
    class_names: list[str]

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def labels(self) -> torch.Tensor:
        """All labels as int64 ``[N]`` (subclasses override with a cheap version)."""
        return torch.tensor([int(self[i]["label"]) for i in range(len(self))], dtype=torch.int64)

    def mask(self, index: int) -> torch.Tensor | None:
        """Item ``index``'s foreground mask (bool ``[H, W]``) or None (subclasses skip decoding the image)."""
        return self[index].get("mask")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, n={len(self)}, classes={self.num_classes})"


class SyntheticDataset(ImageDataset):
    """The synthetic shapes of :mod:`study.data.synthetic`, held in memory (one split)."""

    def __init__(self, n: int = 1024, size: int = 64, num_classes: int = 10, seed: int = 0, split: str = "train"):
        self.split = split
        self.base_seed = int(seed)
        self.images, self._labels, self.masks = make_synthetic(n, size, num_classes, split_seed(seed, split))
        self.num_classes = int(num_classes)
        self.image_size = int(size)
        self.has_masks = True
        self.class_names = [f"class{k}" for k in range(self.num_classes)]
        self.id = f"synthetic-v{GENERATOR_VERSION}:n={n},size={size},classes={num_classes},seed={seed}:{split}"

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return {"image": self.images[index], "label": int(self._labels[index]), "mask": self.masks[index]}

    @property
    def labels(self) -> torch.Tensor:
        return self._labels


def parse_synthetic_spec(spec: str) -> dict[str, int]:
    """``"synthetic"`` or ``"synthetic:n=512,size=64,classes=10,seed=0"`` -> the full parameter dict."""
    name, _, rest = spec.partition(":")
    if name.strip() != "synthetic":
        raise DatasetError(f"not a synthetic spec: {spec!r}")
    params = dict(SYNTHETIC_DEFAULTS)
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in SYNTHETIC_DEFAULTS:
            raise DatasetError(f"bad synthetic option {item!r} in {spec!r}; use key=value with keys "
                               f"{', '.join(SYNTHETIC_DEFAULTS)} (e.g. synthetic:n=512,size=64,classes=10,seed=0)")
        try:
            params[key] = int(value)
        except ValueError:
            raise DatasetError(f"synthetic option {key} must be an integer, got {value!r} in {spec!r}") from None
    return params


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack dataset items into a batch: ``image`` uint8 [B,3,H,W], ``label`` int64 [B], ``mask`` bool [B,H,W] or None.

    When only some items have a mask, missing ones are all-False and ``mask_valid`` (bool [B]) says which are real.
    Other tensor keys (e.g. ``moments``) are stacked; other values are gathered in lists.
    """
    if not items:
        raise ValueError("collate needs at least one item")
    batch: dict[str, Any] = {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.tensor([int(it["label"]) for it in items], dtype=torch.int64),
    }
    masks = [it.get("mask") for it in items]
    present = [m is not None for m in masks]
    if not any(present):
        batch["mask"] = None
    else:
        shape = next(m for m in masks if m is not None).shape
        batch["mask"] = torch.stack([m if m is not None else torch.zeros(shape, dtype=torch.bool) for m in masks])
        if not all(present):
            batch["mask_valid"] = torch.tensor(present)
    for key in items[0]:
        if key in ("image", "label", "mask"):
            continue
        values = [it[key] for it in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch
