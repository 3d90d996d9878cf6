"""Correlation of generation quality with encoder properties, one point per encoder, with a normal-theory interval
on the Fisher z scale and (optionally) a seeded percentile bootstrap as a secondary check.

The interval is on r across encoders. ``z = atanh(r)`` is close to normal with a standard error that depends only on
``n``: Pearson ``1 / sqrt(n - 3)`` (Fisher 1921); Spearman ``sqrt((1 + r**2 / 2) / (n - 3))`` (Bonett & Wright
2000); Kendall ``sqrt(0.437 / (n - 4))`` (Fieller, Hartley & Pearson 1957). The interval is ``tanh(z -+ q * se)``
with ``q`` the normal quantile. Below :data:`MIN_ENCODERS` points no interval is given (``ci_note`` says why): with
4 encoders the Pearson z interval is +-1.96 wide, so it holds 0 unless |r| > 0.96 and spans nearly [-1, 1].

``mdr`` is the smallest |r| that ``n`` encoders detect (interval excluding 0) with probability :data:`POWER`,
``tanh((q + q_power) * se)`` with the se at r = 0. A correlation is ``underpowered`` when ``mdr`` exceeds both |r|
(a rerun would confirm it less often than that) and :data:`STRONG_R` (a strong correlation could go unseen), or
when there are too few encoders for an interval. A sample |r| of exactly 1 has no Fisher interval either.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["correlate", "fisher_interval", "interval_note", "detectable_r", "METHODS", "COLUMNS", "MIN_ENCODERS",
           "CI_METHODS", "POWER", "STRONG_R"]

METHODS = ("pearson", "spearman", "kendall")
COLUMNS = ["x", "y", "method", "n", "r", "p_value", "ci_low", "ci_high", "ci_method", "ci_note", "mdr",
           "underpowered", "boot_low", "boot_high"]
#: Fewest points (encoders) with which an interval is computed. At n = 5 a Pearson interval can exclude 0 only for
#: |r| > 0.88; at n = 4 only for |r| > 0.96 (z +- 1.96 on one degree of freedom): no information, so no interval.
MIN_ENCODERS = 5
#: How each statistic's interval is computed (the ``ci_method`` column).
CI_METHODS = {"pearson": "fisher-z", "spearman": "fisher-z, Bonett-Wright se", "kendall": "fisher-z, Fieller se"}
#: ``mdr`` is the |r| detected with this probability.
POWER = 0.8
#: A correlation whose ``mdr`` exceeds this (and its own |r|) is underpowered: 0.5 is a strong correlation
#: (Cohen), so such a study could miss one. With Pearson's se, mdr < 0.5 needs n >= 30 encoders.
STRONG_R = 0.5


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


def _min_n(method: str, min_n: int) -> int:
    return max(min_n, 5 if method == "kendall" else 4)  # Fieller's se needs n > 4, Fisher's n > 3


def interval_note(n: int, method: str = "pearson", min_n: int = MIN_ENCODERS) -> str:
    """Why a correlation over ``n`` points has no interval (``""`` when it has one)."""
    need = _min_n(method, min_n)
    return "" if n >= need else f"n = {n} < {need}: no interval"


def fisher_interval(r: float, n: int, method: str = "pearson", *, level: float = 0.95,
                    min_n: int = MIN_ENCODERS) -> tuple[float, float]:
    """The ``level`` interval of a correlation ``r`` over ``n`` points on the Fisher z scale (module docstring);
    ``(nan, nan)`` when ``r`` is undefined or ``n`` is below ``min_n``."""
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; use one of {', '.join(METHODS)}")
    if not np.isfinite(r) or n < _min_n(method, min_n) or abs(r) >= 1.0 - 1e-12:  # |r| = 1: z is infinite
        return float("nan"), float("nan")
    se = _se(r, n, method)
    z = np.arctanh(r)
    q = float(stats.norm.ppf(0.5 + level / 2.0))
    return float(np.tanh(z - q * se)), float(np.tanh(z + q * se))


def _se(r: float, n: int, method: str) -> float:
    """Standard error of atanh(r) (module docstring)."""
    if method == "pearson":
        return float(1.0 / np.sqrt(n - 3))
    if method == "spearman":
        return float(np.sqrt((1.0 + r * r / 2.0) / (n - 3)))
    return float(np.sqrt(0.437 / (n - 4)))


def detectable_r(n: int, method: str = "pearson", *, level: float = 0.95, power: float = POWER,
                 min_n: int = MIN_ENCODERS) -> float:
    """The smallest |r| that ``n`` points detect (``level`` interval excluding 0) with probability ``power``; NaN
    below ``min_n`` points."""
    if n < _min_n(method, min_n):
        return float("nan")
    q = float(stats.norm.ppf(0.5 + level / 2.0)) + float(stats.norm.ppf(power))
    return float(np.tanh(q * _se(0.0, n, method)))


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
              method: str = "pearson", *, level: float = 0.95, min_n: int = MIN_ENCODERS, n_boot: int = 0,
              seed: int = 0) -> pd.DataFrame:
    """Correlation of ``y`` with ``x`` (one column or several), per group of ``by`` (e.g. ``"model"``) or pooled.

    One row per (group, x) with the ``by`` columns first, then :data:`COLUMNS`. Rows where ``x`` or ``y`` is
    missing are dropped (``n`` counts the rest); each row of ``df`` is one point (one encoder). ``ci_low, ci_high``:
    the ``level`` interval on the Fisher z scale (:func:`fisher_interval`, ``ci_method`` says which standard error),
    empty with fewer than ``min_n`` points (``ci_note`` says so). ``boot_low, boot_high``: a percentile bootstrap
    over encoders (``n_boot`` resamples, fixed ``seed``; 0: none), a check on the normal theory, not the headline
    interval. ``mdr``, ``underpowered``: the module docstring. ``r`` is NaN with fewer than 3 points or a constant
    column.
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
            n = len(a)
            r, p = _r(a, b, method)
            lo, hi = fisher_interval(r, n, method, level=level, min_n=min_n)
            note = interval_note(n, method, min_n) or ("r undefined" if not np.isfinite(r) else
                                                        f"r = {r:+.0f}: Fisher's z is infinite, no interval"
                                                        if abs(r) >= 1.0 - 1e-12 else "")
            blo, bhi = (_bootstrap(a, b, method, n_boot, seed, level) if np.isfinite(r) and not note
                        else (np.nan, np.nan))
            mdr = detectable_r(n, method, level=level, min_n=min_n)
            weak = bool(not np.isfinite(r) or not np.isfinite(mdr) or mdr > max(abs(r), STRONG_R))
            rows.append({**dict(zip(by_cols, key)), "x": col, "y": y, "method": method, "n": n, "r": r,
                         "p_value": p, "ci_low": lo, "ci_high": hi, "ci_method": CI_METHODS[method],
                         "ci_note": note, "mdr": mdr, "underpowered": weak, "boot_low": blo, "boot_high": bhi})
    return pd.DataFrame(rows, columns=[*by_cols, *COLUMNS])
