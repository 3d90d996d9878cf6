"""Fréchet distance, feature statistics and the ADM reference-batch npz format.

Everything here is numpy (float64) and independent of the feature extractor: the same code computes the
ADM-compatible FID/sFID on Inception features and ``fd_synthetic`` on the small-data extractor's features.

Why the symmetric route: ``tr((Σ1 Σ2)^½)`` equals ``Σ_i √λ_i(Σ1^½ Σ2 Σ1^½)``, and that matrix is symmetric PSD,
so two ``eigh`` calls give the trace with no complex leftovers, tiny negative eigenvalues clipped to 0 (never
``abs``-ed), and several times faster than ``scipy.linalg.sqrtm`` of the non-symmetric product (ADM/TTUR's route,
kept here as :func:`frechet_distance_sqrtm` for parity tests and the benchmark).
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from study.common import atomic_savez

__all__ = [
    "StatisticsMismatchError", "AdmNpzError", "FeatureStats", "StreamingStats",
    "frechet_distance", "frechet_distance_sqrtm", "compute_statistics", "fd",
    "AdmBatch", "read_adm_npz", "write_adm_npz", "iter_npz_images", "npz_image_count",
]


class StatisticsMismatchError(ValueError):
    """Two sets of statistics cannot be compared (different dimension or different feature extractor)."""


class AdmNpzError(ValueError):
    """An npz file does not follow the ADM batch layout (``arr_0`` uint8 NxHxWx3; ``mu``/``sigma`` float)."""


# --------------------------------------------------------------------------------------------- Fréchet distance
def _as_stats(mu: Any, sigma: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1:
        raise StatisticsMismatchError(f"mu{which} must be a vector, got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise StatisticsMismatchError(
            f"sigma{which} has shape {sigma.shape} but mu{which} has {mu.shape[0]} dimensions; "
            "a covariance must be (d, d) for a d-dimensional mean")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"statistics {which} contain NaN or inf (were the features finite?)")
    return mu, sigma


def _check_pair(mu1, s1, mu2, s2):
    mu1, s1 = _as_stats(mu1, s1, "1")
    mu2, s2 = _as_stats(mu2, s2, "2")
    if mu1.shape != mu2.shape:
        raise StatisticsMismatchError(
            f"cannot compare statistics of dimension {mu1.shape[0]} with dimension {mu2.shape[0]}: they come from "
            "different feature layers or extractors (e.g. Inception pool 2048 vs spatial 2023 vs a small extractor)")
    return mu1, s1, mu2, s2


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """``‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr((Σ1 Σ2)^½)`` in float64; never negative, 0 for identical statistics.

    Raises :class:`StatisticsMismatchError` when the shapes do not agree.
    """
    mu1, s1, mu2, s2 = _check_pair(mu1, sigma1, mu2, sigma2)
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # PSD square root of Σ1
    m = root1 @ s2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(ev, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def frechet_distance_sqrtm(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """The ADM/TTUR route (``scipy.linalg.sqrtm`` of ``Σ1 Σ2``, real part); for parity checks and benchmarks."""
    from scipy import linalg

    mu1, s1, mu2, s2 = _check_pair(mu1, sigma1, mu2, sigma2)
    covmean = linalg.sqrtm(s1 @ s2)
    if isinstance(covmean, tuple):  # scipy < 1.16 with disp=False semantics
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


# --------------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance (float64, ddof=1) of ``n`` feature vectors from ``extractor`` (e.g.
    ``inception-v3-compat/pool``); ``n`` is 0 when unknown (e.g. read from an ADM npz)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int = 0
    extractor: str = ""

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def save(self, path: str | Path, **meta: Any) -> Path:
        """Write ``mu``, ``sigma`` and a JSON ``meta`` entry (n, extractor, plus ``meta``) atomically."""
        info = {"n": self.n, "extractor": self.extractor, **meta}
        return atomic_savez(path, mu=self.mu, sigma=self.sigma, meta=np.array(json.dumps(info, default=str)))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["meta"])) if "meta" in z.files else {}
            mu, sigma = _as_stats(z["mu"], z["sigma"], f" in {path}")
        return cls(mu, sigma, int(info.get("n", 0)), str(info.get("extractor", "")))


def compute_statistics(features: Any, extractor: str = "") -> FeatureStats:
    """``mu``/``sigma`` of an ``[N, d]`` feature matrix as ADM computes them (float64 ``np.cov``, ddof=1)."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, d], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    x = x.astype(np.float64, copy=False)
    return FeatureStats(x.mean(axis=0), np.cov(x, rowvar=False), int(x.shape[0]), extractor)


class StreamingStats:
    """Accumulate mean/covariance batch by batch in float64 (centred on the first batch's mean, so the one-pass
    formula keeps its precision); equals :func:`compute_statistics` on the concatenation to ~1e-12."""

    def __init__(self, extractor: str = ""):
        self.extractor = extractor
        self.n = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features: Any) -> None:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [B, d], got shape {x.shape}")
        if x.shape[0] == 0:
            return
        if self._shift is None:
            self._shift = x.mean(axis=0)
            d = x.shape[1]
            self._sum = np.zeros(d)
            self._outer = np.zeros((d, d))
        elif x.shape[1] != self._shift.shape[0]:
            raise StatisticsMismatchError(f"batch has {x.shape[1]} features, earlier batches had {self._shift.shape[0]}")
        xc = x - self._shift
        self._sum += xc.sum(axis=0)
        self._outer += xc.T @ xc
        self.n += x.shape[0]

    def result(self) -> FeatureStats:
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.n}")
        mean_c = self._sum / self.n
        sigma = (self._outer - self.n * np.outer(mean_c, mean_c)) / (self.n - 1)
        return FeatureStats(self._shift + mean_c, (sigma + sigma.T) / 2, self.n, self.extractor)


def fd(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two :class:`FeatureStats`, refusing statistics from different extractors."""
    if a.extractor and b.extractor and a.extractor != b.extractor:
        raise StatisticsMismatchError(
            f"statistics come from different feature extractors ({a.extractor!r} vs {b.extractor!r}); recompute the "
            "reference with the same extractor as the samples")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


# --------------------------------------------------------------------------------------------- ADM npz files
@dataclass
class AdmBatch:
    """Contents of an ADM-style npz: images (``arr_0``, uint8 NxHxWx3) and/or precomputed statistics."""

    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def pool_stats(self) -> FeatureStats | None:
        return None if self.mu is None else FeatureStats(self.mu, self.sigma, 0, "inception-v3-compat/pool")

    @property
    def spatial_stats(self) -> FeatureStats | None:
        return None if self.mu_s is None else FeatureStats(self.mu_s, self.sigma_s, 0, "inception-v3-compat/spatial")


def _check_images(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise AdmNpzError(f"{where}: arr_0 must be uint8 of shape [N, H, W, 3] (ADM layout, channels last), "
                          f"got {arr.dtype} {arr.shape}")
    return arr


def _check_float_stats(mu: np.ndarray, sigma: np.ndarray, names: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not (np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)):
        raise AdmNpzError(f"{where}: {names} must be floating point, got {mu.dtype} and {sigma.dtype}")
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise AdmNpzError(f"{where}: {names} must have shapes (d,) and (d, d), got {mu.shape} and {sigma.shape}")
    return mu.astype(np.float64), sigma.astype(np.float64)


def read_adm_npz(path: str | Path, *, load_images: bool = True) -> AdmBatch:
    """Read an ADM batch: reference batches hold ``mu, sigma, mu_s, sigma_s`` (+ 10K images in ``arr_0``),
    sample batches hold ``arr_0`` (and often ``arr_1`` labels). Other keys are kept in ``extra``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    out = AdmBatch()
    where = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise AdmNpzError(f"{where}: not a readable npz file ({exc})") from exc
    with z:
        files = set(z.files)
        if "arr_0" in files and load_images:
            out.images = _check_images(z["arr_0"], where)
        if "labels" in files:
            out.labels = z["labels"]
        elif "arr_1" in files:
            out.labels = z["arr_1"]
        for a, b, attr in (("mu", "sigma", ""), ("mu_s", "sigma_s", "_s")):
            if (a in files) != (b in files):
                raise AdmNpzError(f"{where}: has {a if a in files else b} without {b if a in files else a}")
            if a in files:
                mu, sigma = _check_float_stats(z[a], z[b], f"{a}/{b}", where)
                setattr(out, "mu" + attr, mu)
                setattr(out, "sigma" + attr, sigma)
        known = {"arr_0", "arr_1", "labels", "mu", "sigma", "mu_s", "sigma_s"}
        out.extra = {k: z[k] for k in files - known}
    if out.mu is None and "arr_0" not in files:
        raise AdmNpzError(f"{where}: neither images (arr_0) nor statistics (mu/sigma); not an ADM batch")
    return out


def write_adm_npz(path: str | Path, *, images: np.ndarray | None = None, labels: np.ndarray | None = None,
                  mu: np.ndarray | None = None, sigma: np.ndarray | None = None,
                  mu_s: np.ndarray | None = None, sigma_s: np.ndarray | None = None) -> Path:
    """Write an ADM-layout npz atomically (statistics as float64), readable by ADM's ``evaluator.py``."""
    arrays: dict[str, np.ndarray] = {}
    where = str(path)
    if images is not None:
        arrays["arr_0"] = _check_images(np.asarray(images), where)
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels)
    for a, b, va, vb in (("mu", "sigma", mu, sigma), ("mu_s", "sigma_s", mu_s, sigma_s)):
        if (va is None) != (vb is None):
            raise AdmNpzError(f"{where}: {a} and {b} must be given together")
        if va is not None:
            arrays[a], arrays[b] = _check_float_stats(np.asarray(va), np.asarray(vb), f"{a}/{b}", where)
    if not arrays:
        raise AdmNpzError(f"{where}: nothing to write (give images and/or statistics)")
    return atomic_savez(path, **arrays)


def _npy_header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def npz_image_count(path: str | Path, key: str = "arr_0") -> int:
    """Number of images in an npz's ``arr_0`` without loading it."""
    with zipfile.ZipFile(path) as zf:
        if f"{key}.npy" not in zf.namelist():
            raise AdmNpzError(f"{path}: no {key} array")
        with zf.open(f"{key}.npy") as fp:
            shape, _, _ = _npy_header(fp)
    return int(shape[0])


def iter_npz_images(path: str | Path, batch_size: int = 256, key: str = "arr_0") -> Iterator[np.ndarray]:
    """Yield ``arr_0`` in batches of uint8 NxHxWx3 without holding the whole array (50K x 256² is 9.8 GB)."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        if f"{key}.npy" not in zf.namelist():
            raise AdmNpzError(f"{path}: no {key} array")
        with zf.open(f"{key}.npy") as fp:
            shape, fortran, dtype = _npy_header(fp)
            if fortran or dtype.hasobject or len(shape) != 4:
                arr = np.load(path)[key]
                for i in range(0, len(arr), batch_size):
                    yield _check_images(np.ascontiguousarray(arr[i:i + batch_size]), str(path))
                return
            _check_images(np.empty((0, *shape[1:]), dtype=dtype), str(path))
            per = int(np.prod(shape[1:])) * dtype.itemsize
            left = shape[0]
            while left > 0:
                b = min(batch_size, left)
                buf = io.BytesIO()
                need = b * per
                while need > 0:
                    chunk = fp.read(need)
                    if not chunk:
                        raise AdmNpzError(f"{path}: {key} is truncated")
                    buf.write(chunk)
                    need -= len(chunk)
                yield np.frombuffer(buf.getvalue(), dtype=dtype).reshape(b, *shape[1:])
                left -= b

