"""Evaluate a trained run's samples: FID/sFID/IS/precision/recall (ADM protocol) or ``fd_synthetic`` on small data.

``evaluate_run(run_dir, step, n=...)`` finds sample shards of that checkpoint made with the requested sampler
settings (a ``manifest.json`` next to ``*.npz`` shards, written by ``study.sampling.sample.sample_run``), or samples them,
extracts features in batches, compares with the reference and returns one row for the ``generation`` table. The
row names everything that makes two numbers comparable: ``n_samples``, ``reference``, ``extractor``/
``extractor_id`` and the sampler settings, so an FID-10K is never silently compared with an FID-50K.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from study.common import get_logger, init_distributed
from study.config import SamplerSettings
from study.evaluation.extractor import FeatureExtractor, extract_features, get_extractor, metric_name
from study.evaluation.fid import AdmNpzError, compute_statistics, fd, iter_npz_images, npz_image_count
from study.evaluation.prdc import inception_score, precision_recall
from study.evaluation.reference import Reference, load_reference
from study.run import read_config, run_hash

__all__ = ["evaluate_run", "evaluate_samples", "find_samples", "sample_shards", "iter_sample_images"]

_log = get_logger(__name__)


# ----------------------------------------------------------------------------------------- sample shards
def sample_shards(samples: str | Path) -> list[Path]:
    """The npz shards of a sample directory, in order: those its ``manifest.json`` lists (a re-run with another
    ``n`` leaves shards of other chunkings behind), else every ``*.npz`` except temporaries; or ``[samples]`` for
    a single npz file."""
    path = Path(samples)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"sample directory not found: {path}")
    manifest = path / "manifest.json"
    if manifest.is_file():
        listed = json.loads(manifest.read_text()).get("shards")
        if listed:
            missing = [name for name in listed if not (path / name).is_file()]
            if missing:
                raise FileNotFoundError(f"{path}: shards listed in manifest.json are missing: {missing[:3]}")
            return [path / name for name in listed]
    shards = sorted(p for p in path.glob("*.npz") if not p.name.startswith(".") and ".tmp" not in p.name)
    if not shards:
        raise FileNotFoundError(f"no *.npz sample shards in {path}")
    return shards


def iter_sample_images(samples: str | Path, n: int, batch_size: int = 64) -> Iterator[np.ndarray]:
    """Yield exactly ``n`` images (uint8 NHWC batches) from the shards, in order; error if there are fewer."""
    shards = sample_shards(samples)
    available = sum(npz_image_count(p) for p in shards)
    if available < n:
        raise ValueError(f"{samples} holds {available} images but n={n} were requested; sample more "
                         "(evaluate_run does this) or lower n")
    left = n
    for shard in shards:
        for batch in iter_npz_images(shard, batch_size):
            if left <= 0:
                return
            batch = batch[:left]
            left -= len(batch)
            yield batch


def _flatten(d: Mapping[str, Any], out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    for k, v in d.items():
        if isinstance(v, Mapping):
            _flatten(v, out)
        else:
            out.setdefault(k, v)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def find_samples(run_dir: str | Path, step: int, n: int, settings: Mapping[str, Any]) -> Path | None:
    """A sample directory under ``run_dir`` whose manifest has this ``step``, every key of ``settings`` equal and
    at least ``n`` images; ``None`` if there is none (a manifest lacking a key never matches)."""
    for manifest in sorted(Path(run_dir).rglob("manifest.json")):
        try:
            info = _flatten(json.loads(manifest.read_text()))
        except (OSError, ValueError):
            continue
        wanted = {"step": step, **settings}
        if not all(k in info and _same(info[k], v) for k, v in wanted.items()):
            continue
        if info.get("precision", "tf32") != settings.get("precision", "tf32"):  # (recorded when not tf32)
            continue
        try:
            count = sum(npz_image_count(p) for p in sample_shards(manifest.parent))
        except (FileNotFoundError, AdmNpzError, OSError, ValueError):
            continue
        if count >= n:
            return manifest.parent
    return None


# ----------------------------------------------------------------------------------------- metrics
def evaluate_samples(samples: str | Path, extractor: FeatureExtractor, reference: Reference, *, n: int,
                     batch_size: int = 64, device: str | None = None) -> dict[str, Any]:
    """Metrics of the first ``n`` images of ``samples`` against ``reference`` (same extractor)."""
    if reference.extractor_id != extractor.id:
        raise ValueError(f"reference {reference.id} was computed with {reference.extractor_id}, not {extractor.id}")
    t0 = time.perf_counter()
    feats = extract_features(extractor, iter_sample_images(samples, n, batch_size), total=n, desc="sample features")
    t1 = time.perf_counter()
    out: dict[str, Any] = {"n_samples": int(len(feats["pool"]))}
    pool = compute_statistics(feats["pool"], f"{extractor.stats_prefix}/pool")
    out[metric_name(extractor.name)] = fd(pool, reference.stats["pool"])
    if "spatial" in feats and "spatial" in reference.stats:
        out["sfid"] = fd(compute_statistics(feats["spatial"], f"{extractor.stats_prefix}/spatial"),
                         reference.stats["spatial"])
    if "logits" in feats:
        out["inception_score"] = inception_score(feats["logits"])
    if reference.pr_features is not None:
        import torch

        pr_device = device or ("cuda" if torch.cuda.is_available() else None)  # 50K x 50K distances: GPU if any
        out["precision"], out["recall"] = precision_recall(reference.pr_features, feats["pool"], device=pr_device)
    t2 = time.perf_counter()
    out.update(time_features_s=round(t1 - t0, 3), time_metrics_s=round(t2 - t1, 3),
               features_per_s=round(n / max(t1 - t0, 1e-9), 2))
    return out


def evaluate_run(run_dir: str | Path, step: int, *, n: int, extractor: str | FeatureExtractor = "inception",
                 ref: str | Path | None = None, sampler: SamplerSettings = SamplerSettings(), batch_size: int = 64,
                 device: str | None = None, samples: str | Path | None = None,
                 inception_weights: str | Path | None = None, ref_n: int | None = None,
                 job_id: str | None = None) -> dict[str, Any]:
    """Evaluate checkpoint ``step`` of ``run_dir`` on ``n`` samples; returns one ``generation`` row.

    ``extractor``: ``"inception"`` (ADM protocol: fid, sfid, inception_score, precision, recall) or
    ``"synthetic"`` (small CNN for offline small data: fd_synthetic, precision, recall). ``ref``: an ADM reference
    npz or a dataset spec; it defaults to the run's training dataset (``data.spec``/``data.split`` of its config).
    ``sampler``: how the samples are (or were) drawn. ``samples`` evaluates a given sample directory/npz instead of
    finding or making the run's.
    """
    from results import RUN_HASH
    from results.provenance import now_iso, provenance

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if n < 2:
        raise ValueError(f"n must be at least 2 (got {n})")
    dataset_spec = cfg.data.spec
    if isinstance(extractor, str):
        # the process group first: each rank builds the extractor on its own device (cuda:LOCAL_RANK), not all on
        # the default one
        device = str(init_distributed(device or "auto").device)
        extractor = get_extractor(extractor, dataset=dataset_spec, weights_path=inception_weights, device=device)
    if ref is None:
        ref = dataset_spec
        if extractor.name == "inception":
            _log.warning("no --ref: computing Inception reference statistics from the training data %s; numbers "
                         "comparable with the literature need ADM's VIRTUAL_imagenet256_labeled.npz", ref)
    reference = load_reference(ref, extractor, n=ref_n, split=cfg.data.split, batch_size=batch_size)

    settings = sampler.manifest()
    t_sampling = 0.0
    if samples is None:
        samples = find_samples(run_dir, step, n, settings)
        if samples is None:
            from study.sampling import sample_run

            _log.info("no matching samples for step %d in %s: sampling %d (%s)", step, run_dir, n, settings)
            t0 = time.perf_counter()
            samples = sample_run(run_dir, step, n, sampler, batch_size=batch_size, device=device)
            t_sampling = time.perf_counter() - t0
        else:
            _log.info("reusing samples in %s", samples)
    manifest_path = Path(samples) / "manifest.json" if Path(samples).is_dir() else None
    manifest = _flatten(json.loads(manifest_path.read_text())) if manifest_path and manifest_path.is_file() else {}
    if "step" in manifest and int(manifest["step"]) != int(step):
        raise ValueError(f"{samples} holds samples of step {manifest['step']}, not step {step}")
    sampled = SamplerSettings(**{k: manifest.get(k, v) for k, v in settings.items()},  # what was really sampled
                              precision=manifest.get("precision", "tf32") if manifest else sampler.precision)

    metrics = evaluate_samples(samples, extractor, reference, n=n, batch_size=batch_size, device=device)
    row: dict[str, Any] = {
        "job_id": job_id or os.environ.get("REPA_STUDY_JOB_ID") or run_dir.name,
        "run_dir": str(run_dir),
        "step": int(step),
        RUN_HASH: manifest.get("config_hash") or run_hash(cfg),
        "fid": None, "sfid": None, "inception_score": None, "precision": None, "recall": None,
        **metrics,
        "fd_metric": metric_name(extractor.name),
        "extractor": extractor.name,
        "extractor_id": extractor.id,
        "reference": reference.id,
        "reference_n": reference.n,
        **sampled.row(),
        "sample_dir": str(samples),
        "time_sampling_s": round(t_sampling, 3),
        "time_total_s": round(time.perf_counter() - t_start, 3),
        "evaluated_at": now_iso(),
        **provenance(),
    }
    if extractor.name != "inception":
        row.pop("fid")
        row.pop("sfid")
        row.pop("inception_score")
    return row
