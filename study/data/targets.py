"""The encoder-target cache: one frozen encoder's patch tokens of every image of a dataset split, written once
(bf16, sharded, resumable) by ``repa-study data encode`` and read by training (``encoder.targets=cache``) instead of
running the encoder on every step.

REPA feeds the frozen encoder the clean, un-flipped images (no augmentation), so an image's target never changes:
a run of 100K steps at batch 256 runs the encoder 25.6M times over 1.28M images, the cache once per image. It pays
for the giant encoders (~1B parameters and more), whose forward costs more than the SiT's step; the price is disk
and read bandwidth (``T x D x 2`` bytes per image: 0.8 MB for a ViT-g, 2 MB for the 7B), which ``sweep estimate``
states.

Layout of a cache directory (:func:`targets_dir`): ``PREPARED/<split>/targets/<name>-<key>/`` for a ``repa-study
data prepare`` directory, else ``$REPA_STUDY_CACHE/targets/<dataset>/<name>-<key>/`` (synthetic data, an image
folder), ``<key>`` a hash of the encoder's cache key (name, weights, catalog fingerprint, bf16):

- ``manifest.json``: format, encoder, cache key, dataset id, images, shard size and count, tokens, width, dtype;
- ``shard-00000.npy`` ...: int16 ``[M, T, D]``, the bf16 bits of the patch tokens of images ``k*M .. (k+1)*M - 1``.

Array task ``I`` of ``N`` writes the shards ``k`` with ``k % N == I`` (as ``data prepare``); each shard appears
only complete (``study.common.atomic_path``), so a rerun after a kill skips the finished ones.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import encoders
from study.common import atomic_path, atomic_write_json, cache_dir, get_logger, progress

from .dataset import DatasetError, collate

__all__ = ["TARGETS_FORMAT", "TargetCache", "targets_dir", "write_targets", "open_target_caches",
           "TargetCacheError"]

TARGETS_FORMAT = "repa-study-targets/1"
_MATCH_KEYS = ("format", "encoder", "cache_key", "dataset", "num_images", "shard_size", "tokens", "dim")
log = get_logger(__name__)


class TargetCacheError(DatasetError):
    """An encoder-target cache is missing, incomplete or was written for other inputs; the message says how to
    (re)write it."""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _key_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _open(spec: str, split: str):
    from . import open_dataset  # the package's entry point (it imports this module)

    return open_dataset(spec, split)


def targets_dir(spec: str, split: str, encoder: str, weights: str = "pretrained", bf16: bool = False,
                *, dataset: Any = None) -> Path:
    """Where the cache of ``encoder`` (with ``weights``, computed under bf16 or not) on ``spec``'s ``split`` lives
    (see the module docstring); ``dataset``: the opened split, if at hand (its id names non-prepared data)."""
    from .prepared import is_prepared

    key = encoders.cache_key(encoder, weights, bf16=bf16)
    leaf = f"{_slug(encoder)}-{_key_hash(key)}"
    root = Path(str(spec)).expanduser()
    if not str(spec).startswith("synthetic") and is_prepared(root):
        return root.resolve() / split / "targets" / leaf
    ident = str((dataset if dataset is not None else _open(spec, split)).id)
    return cache_dir("targets", _key_hash(f"{ident}|{split}")) / leaf


def _shard_path(directory: Path, k: int) -> Path:
    return directory / f"shard-{k:05d}.npy"


class TargetCache:
    """A complete cache, opened for reading: :meth:`read` gives the bf16 patch tokens ``[B, T, D]`` of dataset
    indices. Stands in for the encoder in training (``name``, ``spec``, ``embed_dim``; ``cached`` is True)."""

    cached = True
    MAX_OPEN = 64

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / "manifest.json"
        try:
            self.manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TargetCacheError(f"cannot read {path}: {exc}") from None
        m = self.manifest
        if m.get("format") != TARGETS_FORMAT:
            raise TargetCacheError(f"{path} is not a {TARGETS_FORMAT} manifest (format={m.get('format')!r})")
        missing = [k for k in range(m["num_shards"]) if not _shard_path(self.directory, k).is_file()]
        if missing:
            raise TargetCacheError(f"encoder-target cache {self.directory} is incomplete: {len(missing)} of "
                                   f"{m['num_shards']} shards missing (first: {missing[:5]}); rerun its `repa-study "
                                   f"data encode --encoder {m['encoder']} ...` tasks (they resume)")
        self.name = str(m["encoder"])
        self.spec = encoders.get_spec(self.name)
        self.embed_dim = int(m["dim"])
        self.num_images = int(m["num_images"])
        self.shard_size = int(m["shard_size"])
        self._arrays: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:  # memory maps are opened in each process (DataLoader workers)
        return {**self.__dict__, "_arrays": {}}

    def _shard(self, k: int) -> np.ndarray:
        arr = self._arrays.pop(k, None)
        if arr is None:
            arr = np.load(_shard_path(self.directory, k), mmap_mode="r")
            while len(self._arrays) >= self.MAX_OPEN:
                self._arrays.pop(next(iter(self._arrays)))
        self._arrays[k] = arr
        return arr

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """bf16 ``[len(indices), T, D]``: the cached patch tokens of these dataset indices, in this order."""
        rows = np.empty((len(indices), int(self.manifest["tokens"]), self.embed_dim), dtype=np.int16)
        for j, i in enumerate(indices):
            if not 0 <= i < self.num_images:
                raise IndexError(f"index {i} out of range for the {self.num_images} images of {self.directory}")
            k, r = divmod(int(i), self.shard_size)
            rows[j] = self._shard(k)[r]
        return torch.from_numpy(rows).view(torch.bfloat16)

    def __repr__(self) -> str:
        return f"TargetCache({self.name!r}, {self.directory})"


def _manifest(directory: Path, fields: dict[str, Any]) -> None:
    path = directory / "manifest.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in _MATCH_KEYS if old.get(k) != fields.get(k)]
        if diff:
            raise TargetCacheError(f"{directory} holds a cache written for other inputs ({', '.join(diff)} differ); "
                                   f"delete it to write this one")
        return
    atomic_write_json(path, fields, indent=2)


def write_targets(encoder: Any, spec: str, split: str = "train", *, weights: str | None = None,
                  bf16: bool | None = None, task: int = 0, num_tasks: int = 1, shard_size: int | None = None,
                  batch_size: int = 64, workers: int = 0) -> dict[str, Any]:
    """Write this task's missing shards of ``encoder``'s cache on ``spec``/``split``; returns ``{"directory",
    "written", "skipped", "num_shards"}``.

    ``encoder``: an ``encoders.Encoder`` (what training would run). ``weights``/``bf16`` name the cache (default: the
    encoder's; ``bf16`` is what ``encoder.bf16`` of the trainings that read it says, whether or not this device
    computes in bf16). ``shard_size``: images per shard (default: a prepared dataset's, else 1000)."""
    from torch.utils.data import DataLoader, Subset

    weights = weights or encoder.weights
    bf16 = encoder.bf16 if bf16 is None else bf16
    ds = _open(spec, split)
    directory = targets_dir(spec, split, encoder.name, weights, bf16, dataset=ds)
    directory.mkdir(parents=True, exist_ok=True)
    n = len(ds)
    shard_size = int(shard_size or getattr(ds, "shard_size", 1000))
    num_shards = -(-n // shard_size)
    key = encoders.cache_key(encoder.name, weights, bf16=bf16)
    probe = encoder.encode(ds[0]["image"][None])["patch"]
    _manifest(directory, {
        "format": TARGETS_FORMAT, "encoder": encoder.name, "cache_key": key, "weights": weights, "bf16": bf16,
        "bf16_computed": bool(getattr(encoder, "bf16", False)), "dataset": str(ds.id), "split": split,
        "num_images": n, "shard_size": shard_size, "num_shards": num_shards, "tokens": int(probe.shape[1]),
        "dim": int(probe.shape[2]), "dtype": "bfloat16 bits as int16", "spec": str(spec)})
    mine = list(range(task, num_shards, num_tasks))
    todo = [k for k in mine if not _shard_path(directory, k).is_file()]
    for stale in directory.glob(".shard-*.tmp*"):  # left by a killed task (atomic_path's temporary names)
        if int(stale.name[7:12]) in todo:
            stale.unlink(missing_ok=True)
    log.info("targets of %s on %s/%s: %d images, %d shards; task %d/%d owns %d, %d already done", encoder.name,
             spec, split, n, num_shards, task, num_tasks, len(mine), len(mine) - len(todo))
    total = sum(min(shard_size, n - k * shard_size) for k in todo)
    with progress(total=total, desc=f"encode {encoder.name}", unit="img") as bar:
        for k in todo:
            idx = list(range(k * shard_size, min(n, (k + 1) * shard_size)))
            loader = DataLoader(Subset(ds, idx), batch_size=batch_size, num_workers=workers, collate_fn=collate)
            parts = []
            for batch in loader:
                parts.append(encoder.encode(batch["image"])["patch"].to(torch.bfloat16).cpu())
                bar.update(len(batch["label"]))
            arr = torch.cat(parts).view(torch.int16).numpy()
            with atomic_path(_shard_path(directory, k)) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
    return {"directory": str(directory), "written": todo, "skipped": sorted(set(mine) - set(todo)),
            "num_shards": num_shards}


def open_target_caches(spec: str, split: str, names: Sequence[str], weights: str, bf16: bool, *,
                       dataset: Any = None) -> list[TargetCache]:
    """The complete caches of ``names`` on ``spec``/``split`` for training with ``encoder.targets=cache``; a clear
    error naming the command that writes a missing one, or when a cache was written for other images."""
    out = []
    for name in names:
        directory = targets_dir(spec, split, name, weights, bf16, dataset=dataset)
        command = (f"repa-study data encode --encoder {name} --data {spec} --split {split} --weights {weights} "
                   f"{'--bf16' if bf16 else '--no-bf16'} [--shard I/N]")
        if not (directory / "manifest.json").is_file():
            raise TargetCacheError(f"encoder.targets=cache but {name} has no target cache on {spec} ({split}) at "
                                   f"{directory}: write it first with `{command}`, or train with "
                                   "encoder.targets=online")
        cache = TargetCache(directory)
        if dataset is not None and (cache.manifest["dataset"] != str(dataset.id)
                                    or cache.num_images != len(dataset)):
            raise TargetCacheError(f"{directory} was written for {cache.manifest['dataset']}, not {dataset.id}: "
                                   f"delete it and rerun `{command}`")
        out.append(cache)
    return out
