"""Score one encoder: spatial-structure metrics on ``split`` and a linear probe (train -> ``split``), as one row.

The row is what the ``encoders`` results table holds (see :func:`score_encoder`); ``write_rows`` sends rows to the
results store or to a parquet file of the user's choosing.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from results import SPATIAL_METRICS
from study.common import atomic_path, get_logger
from study.scoring.feature_cache import FeatureSet, extract_encoder_features, open_data, resolve_device
from study.scoring.masks import srss_kept
from study.scoring.spatial import DEFAULT_DMAX, DEFAULT_FAR, DEFAULT_NEAR, summarize

__all__ = ["score_encoder", "spatial_summary", "write_rows"]

log = get_logger(__name__)


def spatial_summary(fs: FeatureSet, srss_min_fraction: float = 0.0) -> dict[str, float | int]:
    """Dataset-level metrics of a feature set: means over images (nanmean for SRSS) and image counts.

    ``srss_min_fraction`` keeps, for SRSS, only images whose mask covers at least that fraction of the tokens and
    leaves at least that fraction as background (the authors' filter is 64 of 256 tokens: 0.25).
    """
    per_image = {k: np.asarray(v, dtype=np.float64) for k, v in fs.metrics.items()}
    if "srss" in per_image and srss_min_fraction > 0:
        tokens = int(fs.meta.get("num_tokens") or 0) or None
        if tokens is None:
            raise ValueError("this feature cache does not record the token count; re-extract it")
        keep = srss_kept(fs.fg_tokens, tokens, srss_min_fraction)
        per_image["srss"] = np.where(keep, per_image["srss"], np.nan)
    return summarize(per_image)


def score_encoder(name: str, data: Any, *, split: str = "val", limit: int | None = None,
                  masks: str | os.PathLike | None = None, probe: bool = True, weights: str = "pretrained",
                  train_split: str = "train", train_limit: int | None = None, device: str | None = "auto",
                  batch_size: int = 64, num_workers: int | None = None, seed: int = 0,
                  srss_min_fraction: float = 0.0, far: int = DEFAULT_FAR, dmax: int = DEFAULT_DMAX,
                  near: int = DEFAULT_NEAR, cache_root: str | os.PathLike | None = None,
                  job_id: str | None = None, bf16: bool = False, tf32: bool = True) -> dict[str, Any]:
    """One ``encoders``-table row for encoder ``name`` (``NAME`` or ``NAME@clsmix=ALPHA``) on ``data``.

    Spatial metrics come from ``split`` (``limit`` images, default all); the probe trains on ``train_split``
    (``train_limit`` images, default ``limit``) and reports top-1 on ``split``, on mean-pooled patch tokens
    (``lp_top1``, the study's protocol) and on the CLS token when the encoder has one (``lp_top1_cls``).
    Features are cached (:func:`study.scoring.feature_cache.extract_encoder_features`), so a second call costs only the probe.
    On a GPU the encoder's matmuls run in TF32 unless ``tf32=False`` (tolerance against fp32: docs/scoring.md).
    """
    from results.provenance import provenance

    started = time.perf_counter()
    dev = resolve_device(device)
    common = dict(weights=weights, device=dev, batch_size=batch_size, num_workers=num_workers, far=far, dmax=dmax,
                  near=near, cache_root=cache_root, bf16=bf16, tf32=tf32)
    dataset = open_data(data, split, masks)
    t0 = time.perf_counter()
    evalset = extract_encoder_features(name, dataset, split, limit, **common)
    t_eval = time.perf_counter() - t0
    row: dict[str, Any] = {
        "encoder": evalset.meta["encoder"], "encoder_key": evalset.meta["cache_key"], "weights": weights,
        "dataset": str(data) if isinstance(data, (str, os.PathLike)) else str(dataset.id),
        "dataset_id": str(dataset.id), "split": split, "limit": limit, "n_images": evalset.n,
        "image_size": int(getattr(dataset, "image_size", 0)) or None,
        "embed_dim": evalset.meta["embed_dim"], "has_cls": bool(evalset.meta["has_cls"]),
        "mask_source": evalset.meta["masks"], "srss_min_fraction": srss_min_fraction,
        "far": far, "dmax": dmax, "near": near,
    }
    summary = spatial_summary(evalset, srss_min_fraction)
    for key in SPATIAL_METRICS:
        row[key] = summary.get(key, float("nan"))
    row["n_srss"] = summary.get("n_srss", 0)
    if not row["n_srss"]:
        why = ("the data has no masks (pass masks=: ImageNet-S, <masks>/<class>/<stem>.png)"
               if evalset.meta["masks"] == "none" else
               f"no masked image has a defined SRSS with srss_min_fraction={srss_min_fraction:g}")
        log.warning("SRSS of %s on %s (%s) is empty: %s", row["encoder"], row["dataset"], split, why)
    row.update({"lp_top1": np.nan, "lp_top1_cls": np.nan, "lp_l2": np.nan, "lp_l2_cls": np.nan, "lp_n_train": 0,
                "lp_train_split": train_split if probe else None, "lp_holdout": None, "lp_seed": seed})
    t_train = t_probe = 0.0
    if probe:
        t0 = time.perf_counter()
        if not isinstance(data, (str, os.PathLike, Mapping)):
            raise ValueError("the probe needs a train split: pass a dataset spec or {split: dataset}, or probe=False")
        trainset = extract_encoder_features(name, data, train_split,
                                            train_limit if train_limit is not None else limit, **common)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        row.update(_probe_row(trainset, evalset, seed, dev))
        t_probe = time.perf_counter() - t0
    row.update({
        "features_val_seconds": round(t_eval, 3), "features_train_seconds": round(t_train, 3),
        "probe_seconds": round(t_probe, 3), "total_seconds": round(time.perf_counter() - started, 3),
        "device": str(dev), "feature_cache": str(evalset.path), "job_id": job_id,
    })
    row.update(provenance())
    return row


def _probe_row(trainset: FeatureSet, evalset: FeatureSet, seed: int, device) -> dict[str, Any]:
    from study.scoring.probe import linear_probe

    out: dict[str, Any] = {"lp_n_train": trainset.n}
    mean = linear_probe(trainset.mean, trainset.labels, evalset.mean, evalset.labels, seed=seed, device=device)
    out.update({"lp_top1": mean.top1, "lp_l2": mean.l2,
                "lp_holdout": json.dumps({f"{k:g}": v for k, v in mean.holdout_top1.items()})})
    if trainset.cls is not None and evalset.cls is not None:
        cls = linear_probe(trainset.cls, trainset.labels, evalset.cls, evalset.labels, seed=seed, device=device)
        out.update({"lp_top1_cls": cls.top1, "lp_l2_cls": cls.l2})
    return out


def write_rows(rows: Iterable[Mapping[str, Any]], out: str | os.PathLike | None = None) -> Path:
    """Rows -> the results store's ``encoders`` table, or to the parquet file ``out`` (written atomically)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if out is None:
        from results import ResultStore

        return ResultStore().write("encoders", frame)
    path = Path(out)
    if path.suffix != ".parquet":
        raise ValueError(f"--out must name a .parquet file, got {path}")
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path
