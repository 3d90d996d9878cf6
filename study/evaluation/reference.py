"""Reference statistics for generation metrics: from an ADM reference batch, or computed from an image dataset.

``load_reference(ref, extractor)`` accepts

* an ``.npz`` file in ADM's layout (e.g. ``VIRTUAL_imagenet256_labeled.npz``): its precomputed Inception
  ``mu/sigma`` (FID) and ``mu_s/sigma_s`` (sFID) are used as they are; its ``arr_0`` images (10K) are run through
  the extractor for precision/recall, as ADM does. With another extractor than Inception, everything is computed
  from ``arr_0``.
* a dataset spec for ``study.data.open_dataset`` (``synthetic:...`` or an ImageNet-style folder): features of the
  split's images (all, or the first ``n``) give the statistics; the first ``pr_n`` (10K) are kept for P/R.

Computed references are cached under ``cache_dir("reference")/<key>`` (key = source + extractor id + n + split),
with a ``meta.json`` recording provenance; ``meta.json`` is written last, so a half-written cache is recomputed.

``check_reference(ref, extractor)`` finds, before any job runs and without computing anything, what would stop an
evaluation: a missing or unreadable reference, statistics that are not finite or not of the extractor's width,
images of the wrong layout, a dataset that does not open, Inception weights not on disk.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from study.common import cache_dir, get_logger
from study.config import config_hash
from study.evaluation.extractor import FeatureExtractor, extract_features, iter_features
from study.evaluation.fid import FeatureStats, StreamingStats, iter_npz_images, npz_image_count, read_adm_npz

__all__ = ["Reference", "load_reference", "check_reference", "PR_REFERENCE_SIZE", "INCEPTION_DIMS"]

_log = get_logger(__name__)
PR_REFERENCE_SIZE = 10_000  # ADM's reference batches hold 10K images for precision/recall
#: The widths of the Inception statistics an ADM reference batch holds: pool_3 (mu/sigma) and spatial (mu_s/sigma_s).
INCEPTION_DIMS = {"mu": 2048, "mu_s": 2023}


@dataclass
class Reference:
    """What samples are compared against: ``stats[output]`` (``pool``, and ``spatial`` for Inception) and the
    ``pr_features`` (pool) of up to 10K reference images for precision/recall."""

    id: str
    extractor_id: str
    stats: dict[str, FeatureStats]
    pr_features: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.stats["pool"].n) if "pool" in self.stats else 0


def _key(*parts: Any) -> str:
    return config_hash({"parts": parts}, length=16)


def _load_cached(folder: Path, rid: str, extractor: FeatureExtractor) -> Reference | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    stats = {name: FeatureStats.load(folder / f"{name}.npz") for name in meta["outputs"]}
    pr = np.load(folder / "pr_features.npy") if (folder / "pr_features.npy").is_file() else None
    return Reference(rid, extractor.id, stats, pr, meta)


def _save(folder: Path, ref: Reference, replace: bool = False) -> None:
    """Write into a private temporary folder, then rename it into place: concurrent evaluation jobs computing the
    same reference never see (or leave) a half-written cache; the first to finish wins."""
    import os

    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, st in ref.stats.items():
        st.save(tmp / f"{name}.npz", reference=ref.id)
    if ref.pr_features is not None:
        np.save(tmp / "pr_features.npy", ref.pr_features)
    (tmp / "meta.json").write_text(json.dumps({**ref.meta, "outputs": sorted(ref.stats)}, indent=1, default=str))
    if folder.exists() and (replace or not (folder / "meta.json").is_file()):
        shutil.rmtree(folder, ignore_errors=True)  # asked to recompute, or an incomplete cache
    try:
        os.replace(tmp, folder) if not folder.exists() else shutil.rmtree(tmp)
    except OSError:  # another job renamed its copy into place first
        shutil.rmtree(tmp, ignore_errors=True)


def _stats_outputs(extractor: FeatureExtractor) -> tuple[str, ...]:
    return tuple(k for k in extractor.outputs if k in ("pool", "spatial"))


def _features_to_reference(batches: Iterator[Any], total: int, extractor: FeatureExtractor, rid: str,
                           pr_n: int, meta: dict[str, Any], desc: str) -> Reference:
    """Stream features into float64 statistics; keep only the first ``pr_n`` pool vectors."""
    acc = {k: StreamingStats(f"{extractor.stats_prefix}/{k}") for k in _stats_outputs(extractor)}
    kept: list[np.ndarray] = []
    n_kept = 0
    for feats in iter_features(extractor, batches, total=total, desc=desc):
        for k, a in acc.items():
            a.update(feats[k])
        if n_kept < pr_n:
            kept.append(feats["pool"][:pr_n - n_kept])
            n_kept += len(kept[-1])
    stats = {k: a.result() for k, a in acc.items()}
    return Reference(rid, extractor.id, stats, np.concatenate(kept) if kept else None, meta)


def _dataset_batches(dataset: Any, n: int, batch_size: int, num_workers: int) -> Iterator[torch.Tensor]:
    subset = torch.utils.data.Subset(dataset, range(n))
    yield from torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=num_workers,
                                           collate_fn=_stack_images)


def _stack_images(items: list[dict[str, Any]]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(it["image"]) for it in items])


def load_reference(ref: str | Path, extractor: FeatureExtractor, *, n: int | None = None, split: str = "train",
                   pr_n: int = PR_REFERENCE_SIZE, batch_size: int = 64, num_workers: int = 0,
                   recompute: bool = False) -> Reference:
    """Reference statistics for ``extractor`` from an ADM npz or a dataset spec (cached; see module docstring)."""
    from results.provenance import now_iso, provenance

    path = Path(str(ref)).expanduser()
    base_meta = {"source": str(ref), "extractor_id": extractor.id, "created_at": now_iso(), **provenance()}
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"reference batch not found: {path} (ADM's ImageNet-256 reference is "
                                    "VIRTUAL_imagenet256_labeled.npz from the guided-diffusion evaluations page)")
        stat = path.stat()
        rid = f"adm:{path.stem}"
        folder = cache_dir("reference") / _key(str(path.resolve()), stat.st_size, int(stat.st_mtime), extractor.id,
                                               n, pr_n)
        if not recompute and (cached := _load_cached(folder, rid, extractor)) is not None:
            return cached
        batch = read_adm_npz(path, load_images=False)
        total = npz_image_count(path) if "arr_0.npy" in _members(path) else 0
        use_adm_stats = extractor.name == "inception" and batch.mu is not None
        if total == 0 and not use_adm_stats:
            raise ValueError(f"{path} holds no images (arr_0), so statistics for the {extractor.name!r} extractor "
                             "cannot be computed from it")
        limit = min(total, n) if n else total
        images = _limit(iter_npz_images(path, batch_size), limit)
        if use_adm_stats:
            # ADM's precomputed (whole-ImageNet) statistics; arr_0 is only for precision/recall.
            feats = extract_features(extractor, _limit(images, min(limit, pr_n)), total=min(limit, pr_n),
                                     desc="reference P/R") if limit else {"pool": None}
            stats = {"pool": batch.pool_stats}
            if batch.spatial_stats is not None and "spatial" in extractor.outputs:
                stats["spatial"] = batch.spatial_stats
            out = Reference(rid, extractor.id, stats, feats["pool"],
                            {**base_meta, "stats_from": "npz mu/sigma", "pr_images": min(limit, pr_n)})
        else:
            out = _features_to_reference(images, limit, extractor, rid, pr_n,
                                         {**base_meta, "stats_from": f"{limit} npz images"}, "reference")
        _save(folder, out, replace=recompute)
        return out

    from study.data import open_dataset

    dataset = open_dataset(str(ref), split)
    total = len(dataset) if not n else min(n, len(dataset))
    if n and n > len(dataset):
        _log.warning("reference %s has only %d images (asked for %d)", dataset.id, len(dataset), n)
    rid = f"{dataset.id}" + (f":n={total}" if n else "")
    folder = cache_dir("reference") / _key(str(dataset.id), extractor.id, total, pr_n)
    if not recompute and (cached := _load_cached(folder, rid, extractor)) is not None:
        return cached
    _log.info("computing reference statistics of %s (%d images) with %s", dataset.id, total, extractor.id)
    out = _features_to_reference(_dataset_batches(dataset, total, batch_size, num_workers), total, extractor, rid,
                                 pr_n, {**base_meta, "dataset": str(dataset.id), "split": split,
                                        "stats_from": f"{total} dataset images"}, "reference")
    _save(folder, out, replace=recompute)
    return out


def _members(path: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def _limit(batches: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    left = n
    for b in batches:
        if left <= 0:
            return
        yield b[:left]
        left -= len(b[:left])


def _check_npz(path: Path, extractor: str) -> list[str]:
    from study.evaluation.fid import AdmNpzError, _npy_header

    try:
        batch = read_adm_npz(path, load_images=False)
        members = _members(path)
    except (AdmNpzError, OSError, ValueError, zipfile.BadZipFile) as exc:
        return [f"FID reference {path} is not a readable ADM reference batch: {exc}"]
    problems = []
    for mu, sigma, name in ((batch.mu, batch.sigma, "mu"), (batch.mu_s, batch.sigma_s, "mu_s")):
        if mu is None:
            continue
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            problems.append(f"FID reference {path}: {name}/{name.replace('mu', 'sigma')} hold NaN or inf")
        if extractor == "inception" and mu.shape[0] != INCEPTION_DIMS[name]:
            problems.append(f"FID reference {path}: {name} has {mu.shape[0]} dimensions, Inception's have "
                            f"{INCEPTION_DIMS[name]} (statistics of another network?)")
    if "arr_0.npy" in members:
        with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as fp:
            shape, _, dtype = _npy_header(fp)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            problems.append(f"FID reference {path}: arr_0 must be uint8 images [N, H, W, 3], not {dtype} {shape}")
    elif extractor != "inception" or batch.mu is None:
        problems.append(f"FID reference {path} holds no images (arr_0), so the {extractor!r} extractor has nothing "
                        f"to compute statistics from")
    return problems


def check_reference(ref: str | Path, extractor: str, split: str = "train") -> list[str]:
    """What would stop an evaluation against ``ref`` (an ADM ``.npz`` or a dataset spec) with ``extractor``, found
    without computing anything (see the module docstring); [] when nothing."""
    problems = []
    if extractor == "inception":
        from study.evaluation.inception import InceptionWeightsMissing, resolve_weights

        try:
            resolve_weights(download=False)
        except InceptionWeightsMissing as exc:
            problems.append(" ".join(str(exc).split()))
    path = Path(str(ref)).expanduser()
    if path.suffix == ".npz":
        if not path.is_file():
            return problems + [f"FID reference {path} not found (ADM's ImageNet-256 reference is "
                               f"VIRTUAL_imagenet256_labeled.npz from the guided-diffusion evaluations page)"]
        return problems + _check_npz(path, extractor)
    from study.data import DatasetError, check_dataset

    try:
        check_dataset(str(ref), split)
    except (DatasetError, ValueError, OSError) as exc:
        problems.append(f"FID reference {ref}: {exc}")
    return problems
