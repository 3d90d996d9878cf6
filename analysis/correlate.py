"""Correlation of generation quality with encoder properties, with a seeded bootstrap interval over encoders."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["correlate", "METHODS", "COLUMNS"]

METHODS = ("pearson", "spearman", "kendall")
COLUMNS = ["x", "y", "method", "n", "r", "p_value", "ci_low", "ci_high"]


def _r(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "pearson":
            res = stats.pearsonr(x, y)
        elif method == "spearman":
            res = stats.spearmanr(x, y)
        else:
            res = stats.kendalltau(x, y)
    return float(res.statistic), float(res.pvalue)


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _bootstrap(x: np.ndarray, y: np.ndarray, method: str, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile interval of r over ``n_boot`` resamples of the points (encoders) with replacement."""
    n = len(x)
    if n < 3 or n_boot <= 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    xs, ys = x[idx], y[idx]
    if method == "pearson":
        rs = _rowwise_pearson(xs, ys)
    elif method == "spearman":
        rs = _rowwise_pearson(stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1))
    else:
        rs = np.array([_r(a, b, "kendall")[0] for a, b in zip(xs, ys)])
    rs = rs[np.isfinite(rs)]  # resamples that drew one distinct value have no r
    if len(rs) < max(10, n_boot // 10):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(rs, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def correlate(df: pd.DataFrame, x: str | Sequence[str], y: str = "fid", by: str | Sequence[str] | None = None,
              method: str = "pearson", *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Correlation of ``y`` with ``x`` (one column or several), per group of ``by`` (e.g. ``"model"``) or pooled.

    One row per (group, x) with the ``by`` columns first, then ``x, y, method, n, r, p_value, ci_low, ci_high``.
    Rows where ``x`` or ``y`` is missing are dropped (``n`` counts the rest); each row of ``df`` is one point
    (one encoder), so the ``level`` interval is a percentile bootstrap over encoders with a fixed ``seed``.
    ``r`` is NaN with fewer than 3 points or a constant column.
    """
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; use one of {', '.join(METHODS)}")
    xs = [x] if isinstance(x, str) else list(x)
    by_cols = [] if by is None else ([by] if isinstance(by, str) else list(by))
    missing = [c for c in [*xs, y, *by_cols] if c not in df.columns]
    if missing:
        raise KeyError(f"correlate: column(s) {missing} not in the table (columns: {list(df.columns)})")
    groups = df.groupby(by_cols, sort=True, dropna=False) if by_cols else [((), df)]
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        for col in xs:
            pair = part[[col, y]].apply(pd.to_numeric, errors="coerce").dropna()
            a, b = pair[col].to_numpy(float), pair[y].to_numpy(float)
            r, p = _r(a, b, method)
            lo, hi = _bootstrap(a, b, method, n_boot, seed, level) if np.isfinite(r) else (np.nan, np.nan)
            rows.append({**dict(zip(by_cols, key)), "x": col, "y": y, "method": method, "n": len(a),
                         "r": r, "p_value": p, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=[*by_cols, *COLUMNS])
