"""ImageNet-style folders: ``ROOT/<split>/<class>/<image>``, with optional aligned foreground masks.

Class index = position of the class folder in sorted order (the ImageNet wnid order for ImageNet). Images are
center-cropped and resized ADM-style (:func:`center_crop`, what REPA and iREPA use) to ``size`` px, uint8.

Masks (for SRSS) follow the ImageNet-S layout: ``MASKS/<split>/<class>/<stem>.png`` or ``MASKS/<class>/<stem>.png``,
where MASKS is ``ROOT/masks`` by default or a given directory. A mask PNG is either a binary/greyscale image
(foreground = non-zero) or an ImageNet-S RGB segmentation (class id = R + 256 * G; 0 is background and 1000 is
"ignore", both count as background). Masks go through the same crop as their image (nearest-neighbour resampling).
Images without a mask file get ``mask=None``.

Before a long job reads a folder: :func:`check_folder` checks its layout without listing every image (seconds on a
shared file system, where listing ImageNet takes minutes), and :func:`verify_images` decodes every image (all
unreadable ones reported at once, so a corrupt file is not found only when a training first draws it).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image

from .dataset import DatasetError, ImageDataset

__all__ = ["FolderDataset", "center_crop", "load_image", "load_mask", "list_images", "find_masks_dir",
           "mask_files", "listing_hash", "IMAGE_EXTENSIONS", "check_folder", "verify_images"]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".webp", ".bmp", ".ppm", ".tif", ".tiff")
_IGNORE_ID = 1000  # ImageNet-S "ignore" label


def _layout_hint(root: Path) -> str:
    return (f"put ImageNet at {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG (the val images sorted into "
            f"the same class folders), or use the spec 'synthetic' for generated data")


def center_crop(img: Image.Image, size: int, resample: int = Image.BICUBIC) -> Image.Image:
    """ADM's ``center_crop_arr``: halve with BOX while the short side is >= 2*size, resize the short side to
    ``size`` (bicubic for images), then crop the centre ``size x size``."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX if resample != Image.NEAREST
                         else Image.NEAREST)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=resample)
    left = (img.size[0] - size) // 2
    top = (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(path: Path, size: int) -> torch.Tensor:
    """An image file as uint8 ``[3, size, size]`` (RGB, ADM center crop)."""
    with Image.open(path) as img:
        arr = np.asarray(center_crop(img.convert("RGB"), size))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def load_mask(path: Path, size: int) -> torch.Tensor:
    """A mask PNG as bool ``[size, size]`` (see the module docstring for the accepted encodings)."""
    with Image.open(path) as img:
        if img.mode in ("RGB", "RGBA"):
            arr = np.asarray(img.convert("RGB")).astype(np.int64)
            ids = arr[..., 0] + 256 * arr[..., 1]
        else:
            ids = np.asarray(img.convert("I")).astype(np.int64)
    fg = ((ids > 0) & (ids != _IGNORE_ID)).astype(np.uint8) * 255
    cropped = center_crop(Image.fromarray(fg, mode="L"), size, resample=Image.NEAREST)
    return torch.from_numpy(np.asarray(cropped) > 127)


def list_images(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def listing_hash(names: list[str]) -> str:
    """The short hash of a split's sorted image listing (``<class>/<file>`` per image): a dataset's ``files=``."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_masks_dir(base: str | Path, split: str) -> Path:
    """The folder holding ``<class>/<stem>.png`` masks of ``split`` under an ImageNet-S style masks directory:
    ``BASE/<split>`` when it exists, else ``BASE``; raises :class:`DatasetError` when ``base`` is no directory."""
    base = Path(base).expanduser().resolve()
    if not base.is_dir():
        raise DatasetError(f"masks directory {base} does not exist (expected <masks>/{split}/<class>/<stem>.png "
                           f"or <masks>/<class>/<stem>.png, ImageNet-S style)")
    return base / split if (base / split).is_dir() else base


def mask_files(mask_dir: Path, images: list[tuple[str, str]]) -> list[Path | None]:
    """For each image ``(class folder, file stem)``, its mask ``MASK_DIR/<class>/<stem>.png`` or None. Each class
    folder is listed once (ImageNet-S holds masks for about 12K of the 50K val images)."""
    found: dict[str, set[str]] = {}
    out: list[Path | None] = []
    for cls, stem in images:
        if cls not in found:
            folder = mask_dir / cls
            found[cls] = ({p.stem for p in folder.iterdir() if p.suffix == ".png"} if folder.is_dir() else set())
        out.append(mask_dir / cls / f"{stem}.png" if stem in found[cls] else None)
    return out


def _split_classes(root: str | Path, split: str) -> tuple[Path, Path, list[Path]]:
    """``(root, root/split, its class folders)``, or a :class:`DatasetError` saying which part is missing."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; {_layout_hint(root)}")
    split_dir = root / split
    if not split_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(f"{root} has no split folder {split!r} (found {present}); {_layout_hint(root)}")
    classes = _class_dirs(split_dir)
    if not classes:
        raise DatasetError(f"{split_dir} has no class folders; {_layout_hint(root)}")
    return root, split_dir, classes


def check_folder(root: str | Path, split: str) -> bool:
    """Raise :class:`DatasetError` unless ``ROOT/<split>`` holds class folders, the first and last of which hold an
    image (the images are not listed); returns whether masks are there (``ROOT/masks``)."""
    root, _, classes = _split_classes(root, split)
    for class_dir in {classes[0], classes[-1]}:
        with os.scandir(class_dir) as it:
            if not any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS for e in it):
                raise DatasetError(f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return (root / "masks").is_dir()


def _decode(path: Path) -> str | None:
    try:
        with Image.open(path) as img:
            img.convert("RGB").load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


def verify_images(paths: Iterable[Path], workers: int = 8) -> list[tuple[Path, str]]:
    """Decode every image; returns ``(path, why)`` for each that does not decode (all of them, not the first)."""
    paths = list(paths)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        errors = list(pool.map(_decode, paths, chunksize=64))
    return [(p, e) for p, e in zip(paths, errors) if e is not None]


class FolderDataset(ImageDataset):
    """One split of an ImageNet-style folder; images decoded and cropped on access (use DataLoader workers)."""

    def __init__(self, root: str | Path, split: str = "train", *, size: int = 256,
                 masks: str | Path | None = None):
        root, split_dir, classes = _split_classes(root, split)
        self._check_same_classes(root, split, classes)
        if size < 1:
            raise DatasetError(f"image size must be positive, got {size}")
        self.root, self.split, self.image_size = root, split, int(size)
        self.class_names = [c.name for c in classes]
        self.num_classes = len(classes)
        self.samples: list[tuple[Path, int]] = []
        for label, class_dir in enumerate(classes):
            files = list_images(class_dir)
            if not files:
                raise DatasetError(f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                   f"remove it or fill it; {_layout_hint(root)}")
            self.samples.extend((f, label) for f in files)
        self.mask_dir = self._find_masks(root, split, masks)
        self.mask_paths: list[Path | None] = (
            mask_files(self.mask_dir, [(self.class_names[label], p.stem) for p, label in self.samples])
            if self.mask_dir is not None else [None] * len(self.samples))
        self.has_masks = any(m is not None for m in self.mask_paths)
        if masks is not None and not self.has_masks:
            raise DatasetError(f"masks directory {self.mask_dir} has no mask matching any image of {split_dir} "
                               f"(expected {self.mask_dir}/<class>/<image stem>.png)")
        mask_src = f"masks={self.mask_dir}" if self.has_masks else "masks=none"
        self.listing_hash = listing_hash([f"{p.relative_to(split_dir)}" for p, _ in self.samples])
        self.id = (f"folder:{root}:{split}:n={len(self.samples)}:files={self.listing_hash}:"
                   f"size={self.image_size}:crop=adm:{mask_src}")

    @staticmethod
    def _check_same_classes(root: Path, split: str, classes: list[Path]) -> None:
        for other in ("train", "val"):
            other_dir = root / other
            if other == split or not other_dir.is_dir():
                continue
            names, other_names = [c.name for c in classes], [c.name for c in _class_dirs(other_dir)]
            if other_names and names != other_names:
                extra = sorted(set(names) ^ set(other_names))[:5]
                raise DatasetError(f"{root}/{split} and {root}/{other} have different class folders (e.g. {extra});"
                                   f" class indices would not agree. Use the same class folders in both splits")

    @staticmethod
    def _find_masks(root: Path, split: str, masks: str | Path | None) -> Path | None:
        if masks is not None:
            return find_masks_dir(masks, split)
        return find_masks_dir(root / "masks", split) if (root / "masks").is_dir() else None

    def mask(self, index: int) -> torch.Tensor | None:
        """Image ``index``'s mask (bool ``[size, size]``) or None, without decoding the image."""
        path = self.mask_paths[index]
        return load_mask(path, self.image_size) if path is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        try:
            image = load_image(path, self.image_size)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read image {path}: {exc}") from exc
        return {"image": image, "label": label, "mask": self.mask(index)}

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)
