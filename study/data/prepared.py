"""Reading a dataset written by ``repa-study data prepare`` (see :mod:`study.data.prepare` for the writer).

Layout of ``OUT/<split>/``:

- ``manifest.json``: format, source folder, class names, image size, number of images, shard size and count, codec;
- ``shard-00000/`` ...: ``images.npy`` uint8 [M,3,S,S], ``labels.npy`` int64 [M], ``index.npy`` int64 [M] (position
  in the sorted source listing), ``moments.npy`` float32 [M,2C,h,w] (SD-VAE posterior mean and logvar; absent when
  prepared without a VAE). A shard directory appears only complete (written under a temporary name, then renamed);
- ``latent_stats.json``: per-channel ``latents_scale`` / ``latents_bias`` (and mean/std) over the split's latents;
- ``files.txt`` (when prepared by this version): the source listing, ``<class>/<file>`` per image in index order.

Masks (for SRSS): a prepared split points to a folder of ImageNet-S style masks (``<class>/<stem>.png``, the layout
:mod:`study.data.folder` reads): ``masks=`` when opened, else the manifest's ``masks`` (``repa-study data prepare
--masks DIR``). Image ``i``'s mask is found by its source name (``files.txt``, else the listing of the manifest's
``src``, checked against the recorded listing hash) and cropped as the image was.

Arrays are memory-mapped, so random access is cheap and DataLoader workers share the page cache.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from study.common import get_logger

from .codecs import LatentStats
from .dataset import DatasetError, ImageDataset
from .folder import find_masks_dir, list_images, listing_hash, load_mask, mask_files

__all__ = ["PreparedDataset", "is_prepared", "read_manifest", "shard_dir", "PREPARED_FORMAT", "FILES_NAME"]

PREPARED_FORMAT = "repa-study-prepared/1"
#: The source listing of a prepared split, one ``<class>/<file>`` per line in index order.
FILES_NAME = "files.txt"
log = get_logger(__name__)


def shard_dir(split_dir: Path, k: int) -> Path:
    return split_dir / f"shard-{k:05d}"


def read_manifest(split_dir: Path) -> dict[str, Any]:
    path = split_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    if manifest.get("format") != PREPARED_FORMAT:
        raise DatasetError(f"{path} is not a {PREPARED_FORMAT} manifest (format={manifest.get('format')!r})")
    return manifest


def is_prepared(root: Path) -> bool:
    """True when ``root`` looks like the output of ``repa-study data prepare`` (a split with a manifest)."""
    return root.is_dir() and any((d / "manifest.json").is_file() for d in root.iterdir() if d.is_dir())


class PreparedDataset(ImageDataset):
    """One split of a prepared directory. Items: ``image``, ``label``, ``mask`` (None without masks) and, when the
    shards hold them, ``moments`` float32 [2C,h,w] (turn them into normalised latents with
    :func:`study.data.codecs.latents_from_moments` and :attr:`latent_stats`)."""

    MAX_OPEN = 96

    def __init__(self, root: str | Path, split: str = "train", *, size: int | None = None,
                 masks: str | Path | None = None):
        self.root = Path(root).expanduser().resolve()
        self.split = split
        self.split_dir = self.root / split
        if not (self.split_dir / "manifest.json").is_file():
            present = sorted(d.name for d in self.root.iterdir() if (d / "manifest.json").is_file())
            raise DatasetError(f"prepared dataset {self.root} has no split {split!r} (prepared splits: {present}); "
                               f"run `repa-study data prepare --src IMAGENET_DIR --out {self.root} --split {split}`")
        m = read_manifest(self.split_dir)
        self.manifest = m
        if size is not None and int(size) != m["image_size"]:
            raise DatasetError(f"{self.root} holds {m['image_size']} px images, size={size} was asked; prepare "
                               f"again with --size {size} or drop the size")
        missing = [k for k in range(m["num_shards"]) if not shard_dir(self.split_dir, k).is_dir()]
        if missing:
            raise DatasetError(f"prepared dataset {self.split_dir} is incomplete: {len(missing)} of {m['num_shards']} "
                               f"shards missing (first: {missing[:5]}); rerun the prepare command (it resumes)")
        self.image_size = int(m["image_size"])
        self.class_names = list(m["classes"])
        self.num_classes = len(self.class_names)
        self.has_moments = m.get("codec") is not None
        self.shard_size = int(m["shard_size"])
        self._n = int(m["num_images"])
        self.mask_dir: Path | None = None
        self.mask_paths: list[Path | None] = []
        base = masks if masks is not None else m.get("masks")
        if base is not None:
            self.mask_dir = find_masks_dir(base, split)
            names = [name.split("/", 1) for name in self._names()]
            self.mask_paths = mask_files(self.mask_dir, [(cls, Path(file).stem) for cls, file in names])
        self.has_masks = any(p is not None for p in self.mask_paths)
        if base is not None and not self.has_masks:
            raise DatasetError(f"masks directory {self.mask_dir} has no mask matching any image of {self.split_dir} "
                               f"(expected {self.mask_dir}/<class>/<image stem>.png)")
        self.id = (f"prepared:{self.root}:{split}:n={self._n}:files={m['listing']}:size={self.image_size}:"
                   f"codec={m['codec']['id'] if self.has_moments else 'none'}"
                   + (f":masks={self.mask_dir}" if self.has_masks else ""))
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def _names(self) -> list[str]:
        """The source name (``<class>/<file>``) of every image in index order: ``files.txt``, else the listing of the
        manifest's source folder; either must match the listing hash recorded at preparation."""
        m, files = self.manifest, self.split_dir / FILES_NAME
        if files.is_file():
            names, where = files.read_text().splitlines(), str(files)
        else:
            src = Path(m["src"]) / self.split
            if not src.is_dir():
                raise DatasetError(f"masks need each prepared image's source name: {self.split_dir} has no "
                                   f"{FILES_NAME} and its source {src} is not here; prepare again with this version "
                                   f"(it writes {FILES_NAME}) or score the source folder with --masks")
            names = [f"{c}/{p.name}" for c in self.class_names for p in list_images(src / c)]
            where = str(src)
        if len(names) != self._n or listing_hash(names) != m["listing"]:
            raise DatasetError(f"the image names in {where} do not match {self.split_dir} (listing hash "
                               f"{listing_hash(names)} != {m['listing']}, {len(names)} vs {self._n} images): masks "
                               f"cannot be aligned with its images")
        return names

    def mask(self, index: int) -> torch.Tensor | None:
        """Image ``index``'s mask (bool ``[size, size]``, cropped as the image was) or None."""
        path = self.mask_paths[index] if self.mask_paths else None
        return load_mask(path, self.image_size) if path is not None else None

    # memmaps are opened lazily in each process; never pickled into DataLoader workers
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def _array(self, k: int, name: str) -> np.ndarray:
        """A shard's array, memory-mapped; at most ``MAX_OPEN`` stay open (each mmap holds a file descriptor, and
        ImageNet has ~1300 shards per split)."""
        key = (k, name)
        arr = self._arrays.pop(key, None)
        if arr is None:
            arr = np.load(shard_dir(self.split_dir, k) / f"{name}.npy", mmap_mode="r")
            while len(self._arrays) >= self.MAX_OPEN:
                self._arrays.pop(next(iter(self._arrays)))
        self._arrays[key] = arr  # most recently used last
        return arr

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError(f"index {index} out of range for {self._n} images")
        k, j = divmod(index, self.shard_size)
        item = {"image": torch.from_numpy(np.array(self._array(k, "images")[j])),
                "label": int(self._array(k, "labels")[j]), "mask": self.mask(index)}
        if self.has_moments:
            item["moments"] = torch.from_numpy(np.array(self._array(k, "moments")[j], dtype=np.float32))
        return item

    @property
    def labels(self) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([np.asarray(self._array(k, "labels"))
                                                for k in range(self.manifest["num_shards"])]).astype(np.int64))

    @property
    def latent_stats(self) -> LatentStats | None:
        """Statistics of this split, else of the train split (what val/sampling should use); None without latents
        or (with a warning: the codec then falls back to 0.18215) when no statistics were computed."""
        if not self.has_moments:
            return None
        for path in (self.split_dir / "latent_stats.json", self.root / "train" / "latent_stats.json"):
            if path.is_file():
                return LatentStats.load(path)
        log.warning("no latent_stats.json in %s or %s (run `repa-study data prepare --stats --out %s --split %s`); "
                    "latents fall back to the 0.18215 scale", self.split_dir, self.root / "train", self.root,
                    self.split)
        return None
