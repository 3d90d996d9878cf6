"""The on-disk feature cache: pooled tokens and per-image spatial metrics, extracted once per encoder and dataset.

One pass over the images stores, per image:

- ``mean``: the mean of the patch tokens (fp16 ``[N, D]``), the linear probe's default input;
- ``cls``: the CLS token (fp16 ``[N, D]``) when the encoder has one;
- ``labels`` (int64 ``[N]``) and ``fg_tokens`` (foreground tokens on the token grid, -1 without a mask);
- ``lds, cds, rmsc`` and, with masks, ``srss`` (float32 ``[N]``), computed from the full ``[B, T, D]`` tokens in the
  same pass (the token maps themselves are never stored: ImageNet-1K at 256 x 1024 fp16 would be ~670 GB).

Layout (``cache_dir("features")/<encoder>/<digest>/``)::

    layout.json              what is being extracted (key fields, N, chunk size); written first
    chunks/000000.npz ...    finished chunks of ``chunk_size`` images, each published atomically (tmp + rename)
    mean.npy cls.npy labels.npy fg_tokens.npy <metric>.npy   the consolidated arrays (memory-mapped on load)
    meta.json                written last: its presence means the cache is complete

The digest covers ``Encoder.cache_key`` (name, variant, weights, catalog-entry fingerprint incl. preprocessing), the
dataset id, split, limit, mask source, metric parameters and ``FORMAT_VERSION``, so a changed entry never reuses stale
features. A killed extraction keeps its finished chunks and resumes from the first missing one; a partial chunk is
never visible.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

import encoders
from study.common import atomic_path, atomic_savez, atomic_write_json, cache_dir, get_logger, progress, resolve_device
from study.config import config_hash
from study.pretrain import load_encoder
from study.scoring.spatial import DEFAULT_DMAX, DEFAULT_FAR, DEFAULT_NEAR, masks_to_grid, resolve_grid, spatial_metrics

__all__ = ["FeatureSet", "extract_encoder_features", "feature_cache_dir", "open_data", "resolve_device",
           "FORMAT_VERSION"]

log = get_logger(__name__)

#: Bump when what is stored (or how it is computed) changes: old caches then stop matching.
FORMAT_VERSION = 1
_ARRAYS = ("mean", "cls", "labels", "fg_tokens", "lds", "cds", "rmsc", "srss")
_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


# ---------------------------------------------------------------------------------------------- data and masks
def open_data(data: Any, split: str, masks: str | os.PathLike | None = None) -> Any:
    """A dataset spec string -> ``study.data.open_dataset(spec, split)``; a dataset object is returned as is; a
    mapping ``{split: spec or dataset}`` picks ``split`` first.

    A dataset must be indexable, have ``len``, give ``{"image": uint8 [3,H,W], "label": int, "mask": bool [H,W] or
    None}`` items and carry a stable ``.id``. ``masks`` (a folder of foreground masks aligned with the images,
    ImageNet-S style) is passed to ``open_dataset``, which aligns and crops them with the images.
    """
    if isinstance(data, Mapping):  # {"train": dataset, "val": dataset}
        if split not in data:
            raise KeyError(f"no {split!r} split among the given datasets {sorted(data)}")
        data = data[split]
    if isinstance(data, (str, os.PathLike)):
        from study.data import open_dataset

        return open_dataset(str(data), split, masks=masks)
    if masks is not None:
        raise ValueError("masks= works with a dataset spec (a folder); a dataset object brings its own masks")
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(f"data must be a dataset spec string or a dataset object, got {type(data).__name__}")
    if not getattr(data, "id", None):
        raise ValueError(f"dataset object {type(data).__name__} has no .id; the feature cache needs a stable id")
    return data


def _mask_source(dataset: Any) -> str:
    return f"dataset:{dataset.id}" if getattr(dataset, "has_masks", False) else "none"


class _Items(torch.utils.data.Dataset):
    """Images, labels and masks (None when unused) of a dataset, as tensors for collation."""

    def __init__(self, dataset: Any, use_masks: bool):
        self.dataset, self.use_masks = dataset, use_masks

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        item = self.dataset[index]
        return torch.as_tensor(item["image"]), int(item["label"]), item.get("mask") if self.use_masks else None


def _collate(batch: list[tuple[torch.Tensor, int, torch.Tensor | None]]):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    return images, labels, [b[2] for b in batch]


# ---------------------------------------------------------------------------------------------- the cache
@dataclass
class FeatureSet:
    """A complete feature cache, memory-mapped: ``mean [N, D]`` fp16, ``cls`` or None, ``labels``, per-image
    ``metrics`` (``lds, cds, rmsc`` and ``srss`` with masks), ``fg_tokens``, and ``meta`` (what and how)."""

    path: Path
    mean: np.ndarray
    cls: np.ndarray | None
    labels: np.ndarray
    fg_tokens: np.ndarray
    metrics: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureSet":
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{path} is not a complete feature cache (no meta.json); run the extraction "
                                    "again to resume it")
        meta = json.loads(meta_file.read_text())
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
        return cls(path=path, mean=arrays["mean"], cls=arrays.get("cls"), labels=arrays["labels"],
                   fg_tokens=arrays["fg_tokens"], metrics={k: arrays[k] for k in ("lds", "cds", "rmsc", "srss")
                                                           if k in arrays}, meta=meta)


def feature_cache_dir(key: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    """The cache folder of an extraction described by ``key`` (a JSON-able dict)."""
    digest = config_hash({**key, "format": FORMAT_VERSION}, length=20)
    base = Path(root) if root is not None else cache_dir("features")
    return base / _SAFE.sub("_", str(key["encoder"]))[:80] / digest


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data, sort_keys=True)


def _save_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Publish one finished chunk atomically (a reader sees the whole chunk or nothing)."""
    atomic_savez(path, **arrays)


def _chunk_path(directory: Path, index: int) -> Path:
    return directory / "chunks" / f"{index:06d}.npz"


def _chunk_done(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with np.load(path) as z:
            z["labels"]  # readable
        return True
    except Exception:  # noqa: BLE001 - a damaged chunk is redone
        log.warning("feature chunk %s is unreadable; recomputing it", path)
        path.unlink(missing_ok=True)
        return False


def _consolidate(directory: Path, n_chunks: int, meta: dict[str, Any]) -> None:
    """Concatenate the chunks into one ``.npy`` per array (each published atomically), then write meta.json."""
    with np.load(_chunk_path(directory, 0)) as first:
        names = [k for k in _ARRAYS if k in first.files]
        shapes = {k: first[k].shape[1:] for k in names}
        dtypes = {k: first[k].dtype for k in names}
    n = meta["n_images"]
    for name in names:
        with atomic_path(directory / f"{name}.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtypes[name], shape=(n, *shapes[name]))
            pos = 0
            for i in range(n_chunks):
                with np.load(_chunk_path(directory, i)) as z:
                    part = z[name]
                out[pos:pos + len(part)] = part
                pos += len(part)
            if pos != n:
                raise RuntimeError(f"feature chunks in {directory} hold {pos} images, expected {n}")
            out.flush()
            del out
    _atomic_json(directory / "meta.json", {**meta, "arrays": names})
    for i in range(n_chunks):
        _chunk_path(directory, i).unlink(missing_ok=True)
    try:
        (directory / "chunks").rmdir()
    except OSError:
        pass


def _select(n_total: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """All indices, or ``limit`` of them drawn without replacement (seeded) and kept in dataset order, so that a
    class-sorted folder still gives every class."""
    if limit is None or limit >= n_total:
        return np.arange(n_total)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=limit, replace=False))


def _batches(indices: np.ndarray, chunks: list[int], chunk_size: int, batch_size: int) -> Iterator[list[int]]:
    """Batches of dataset indices that never straddle a chunk boundary."""
    for c in chunks:
        part = indices[c * chunk_size:(c + 1) * chunk_size]
        for s in range(0, len(part), batch_size):
            yield part[s:s + batch_size].tolist()


def extract_encoder_features(encoder: Any, data: Any, split: str = "train", limit: int | None = None, *,
                             weights: str = "pretrained", device: str | torch.device | None = "auto",
                             batch_size: int = 64, chunk_size: int = 2048, num_workers: int | None = None,
                             masks: str | os.PathLike | None = None, far: int = DEFAULT_FAR,
                             dmax: int = DEFAULT_DMAX, near: int = DEFAULT_NEAR,
                             cache_root: str | os.PathLike | None = None, bf16: bool = False,
                             tf32: bool = True) -> FeatureSet:
    """Extract (or load from the cache, or resume) the features of ``encoder`` on ``data``/``split``.

    ``encoder`` is a name (``NAME`` or ``NAME@clsmix=ALPHA``, built with ``weights`` on ``device``) or an
    ``encoders.Encoder``; ``data`` a dataset spec (``study.data.open_dataset``) or a dataset object. ``limit`` keeps a
    seeded random subset of that many images (in dataset order). ``masks`` is a folder of foreground masks for a
    folder dataset (see :func:`open_data`); otherwise masks come from the dataset when it has them (synthetic data
    does). ``tf32``: on a GPU the encoder's fp32 matmuls and convolutions run in TF32 (the default; the features agree
    with fp32 ones to the tolerance in docs/scoring.md, so caches are shared; ``meta.json`` records which ran).
    Returns the memory-mapped :class:`FeatureSet`.
    """
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    dataset = open_data(data, split, masks)
    mask_source = _mask_source(dataset)
    device = resolve_device(device)
    if isinstance(encoder, str):
        enc, enc_name, cache_key = None, encoder, encoders.cache_key(encoder, weights, bf16=bf16)
        num_tokens = encoders.get_spec(encoder).num_tokens
    else:
        enc, enc_name, cache_key = encoder, encoder.name, encoder.cache_key
        weights, num_tokens = encoder.weights, encoder.spec.num_tokens
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.id} ({split}) has no images")
    indices = _select(len(dataset), limit)
    key = {"encoder": enc_name, "cache_key": cache_key, "dataset": str(dataset.id), "split": split, "limit": limit,
           "n_images": int(len(indices)), "masks": mask_source, "far": far, "dmax": dmax, "near": near}
    directory = feature_cache_dir(key, cache_root)
    if (directory / "meta.json").exists():
        log.info("features of %s on %s/%s: cached at %s", enc_name, dataset.id, split, directory)
        return FeatureSet.load(directory)

    layout_file = directory / "layout.json"
    if layout_file.exists():
        layout = json.loads(layout_file.read_text())
        chunk_size = int(layout["chunk_size"])  # resume with the chunking the first run chose
    else:
        layout = {**key, "chunk_size": chunk_size, "format": FORMAT_VERSION}
        _atomic_json(layout_file, layout)
    n_chunks = max(1, -(-len(indices) // chunk_size))
    pending = [c for c in range(n_chunks) if not _chunk_done(_chunk_path(directory, c))]
    started = time.perf_counter()
    if pending:
        if enc is None:
            enc = load_encoder(enc_name, weights=weights, device=device, bf16=bf16)
        if n_chunks - len(pending):
            log.info("resuming feature extraction of %s: %d of %d chunks already done", enc_name,
                     n_chunks - len(pending), n_chunks)
        with _matmul_precision(device, tf32):
            _extract_chunks(enc, dataset, mask_source != "none", indices, pending, chunk_size, batch_size,
                            num_workers, directory, far, dmax, near)
    meta = {**layout, "n_images": int(len(indices)), "extract_seconds": round(time.perf_counter() - started, 3),
            "matmul": "tf32" if tf32 and device.type == "cuda" and not bf16 else ("bf16" if bf16 else "fp32"),
            "device": str(device), "encoder_weights": weights, "num_tokens": int(num_tokens),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        with np.load(_chunk_path(directory, 0)) as z:
            meta["embed_dim"] = int(z["mean"].shape[1])
            meta["has_cls"] = "cls" in z.files
        _consolidate(directory, n_chunks, meta)
    except FileNotFoundError:
        if not (directory / "meta.json").exists():
            raise
        log.info("another process completed %s first; using its result", directory)  # same inputs, same arrays
    return FeatureSet.load(directory)


@contextlib.contextmanager
def _matmul_precision(device: torch.device, tf32: bool) -> Iterator[None]:
    """TF32 matmuls and cuDNN convolutions on a GPU for the block (``tf32``), else full fp32; restored after."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _extract_chunks(enc: Any, dataset: Any, use_masks: bool, indices: np.ndarray,
                    pending: list[int], chunk_size: int, batch_size: int, num_workers: int | None, directory: Path,
                    far: int, dmax: int, near: int) -> None:
    device = getattr(enc, "device", torch.device("cpu"))
    if num_workers is None:
        num_workers = 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(
        _Items(dataset, use_masks), batch_sampler=list(_batches(indices, pending, chunk_size, batch_size)),
        collate_fn=_collate, num_workers=num_workers, pin_memory=device.type == "cuda",
        persistent_workers=False)
    chunk_len = {c: len(indices[c * chunk_size:(c + 1) * chunk_size]) for c in pending}
    queue = list(pending)
    buffer: dict[str, list[np.ndarray]] = {}
    filled = 0
    bar = progress(total=int(sum(chunk_len.values())), desc=f"features {enc.name}", unit="img")
    try:
        for images, labels, masks in loader:
            out = _encode_batch(enc, images, masks if use_masks else None, far, dmax, near)
            out["labels"] = labels.numpy()
            for k, v in out.items():
                buffer.setdefault(k, []).append(v)
            filled += len(labels)
            bar.update(len(labels))
            if filled == chunk_len[queue[0]]:
                chunk = queue.pop(0)
                _save_chunk(_chunk_path(directory, chunk), {k: np.concatenate(v) for k, v in buffer.items()})
                buffer, filled = {}, 0
    finally:
        bar.close()
    if queue:
        raise RuntimeError(f"feature extraction ended with {len(queue)} chunk(s) unfinished")


def _encode_batch(enc: Any, images: torch.Tensor, masks: list[torch.Tensor | None] | None, far: int, dmax: int,
                  near: int) -> dict[str, np.ndarray]:
    out = enc.encode(images)
    patch, cls = out["patch"], out.get("cls")
    b, t, _ = patch.shape
    grid = resolve_grid(t, None)
    token_masks = None
    fg = np.full(b, -1, dtype=np.int32)
    if masks is not None and any(m is not None for m in masks):
        token_masks = torch.zeros(b, t, dtype=torch.bool)
        have = torch.zeros(b, dtype=torch.bool)
        for i, m in enumerate(masks):
            if m is not None:
                token_masks[i] = masks_to_grid(torch.as_tensor(m)[None].bool(), grid)[0]
                have[i] = True
        fg = np.where(have.numpy(), token_masks.sum(1).numpy(), -1).astype(np.int32)
        token_masks = token_masks.to(patch.device)
    metrics = spatial_metrics(patch, token_masks, grid)
    result = {"mean": patch.float().mean(dim=1).to(torch.float16).cpu().numpy(), "fg_tokens": fg}
    if cls is not None:
        result["cls"] = cls.float().to(torch.float16).cpu().numpy()
    for k, v in metrics.items():
        v = v.cpu().numpy().astype(np.float32)
        if k == "srss":
            v = np.where(fg >= 0, v, np.nan).astype(np.float32)  # images without a mask have no SRSS
        result[k] = v
    if masks is not None and "srss" not in result:
        result["srss"] = np.full(b, np.nan, dtype=np.float32)
    return result
