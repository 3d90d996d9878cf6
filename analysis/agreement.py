"""Does a cheap FID protocol rank runs as the expensive one does? Rank agreement on the runs evaluated under both.

A screen (e.g. 10K samples, 50 sampler steps) gives FIDs that are not the paper's numbers, but it is useful if it
orders the encoders, and REPA vs iREPA, the same way. :func:`protocol_agreement` pairs the generation rows of two
protocols (the ``protocol`` column every evaluation records) on the runs evaluated under both, at the same step,
and reports, per model size, training method and step:

- ``encoders``: Spearman and Kendall correlation of the encoders' quality under A with their quality under B
  (seeds averaged), each with its Fisher-z interval over encoders (``n`` of them; :mod:`analysis.correlate`: none
  below ``MIN_ENCODERS``, ``ci_note`` says so); ``model = all`` pools every (model, method, encoder) point;
- ``methods``: for each training method against the baseline (``repa`` when present), the fraction of encoders
  whose ordering (which method is better) is the same under both protocols, with an exact (Clopper-Pearson)
  binomial interval over encoders, and the Spearman and Kendall correlation of the quality change between the protocols.

Rows of each protocol must be comparable among themselves (same reference, extractor, ...: :mod:`analysis.comparable`);
the two protocols are never mixed into one quality column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.comparable import ANY, IncomparableRowsError, select_comparable
from analysis.correlate import correlate

__all__ = ["Agreement", "protocol_agreement", "RUN_KEYS"]

#: What identifies one evaluated checkpoint of one run (seeds are averaged after pairing).
RUN_KEYS = ("model", "method", "encoder", "seed", "step")
_CORR = ("spearman", "kendall")


@dataclass
class Agreement:
    protocols: tuple[str, str]
    quality: tuple[str, str]
    points: pd.DataFrame          # one row per (model, method, encoder, step): quality under A and under B
    encoders: pd.DataFrame        # rank agreement of encoders per (model, method, step) and pooled
    methods: pd.DataFrame         # agreement of the method orderings per (model, step, method vs baseline)
    notes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> tuple[str, str]:
        """The names of the two quality columns in :attr:`points`."""
        return (f"{self.quality[0]}@{self.protocols[0]}", f"{self.quality[1]}@{self.protocols[1]}")


def _protocol_rows(gen: pd.DataFrame, protocol: str, select: Mapping[str, Any], quality: str | None):
    rows = gen[gen["protocol"].astype(str) == protocol]
    if rows.empty:
        counts = ", ".join(f"{p!r} ({n} rows)" for p, n in gen["protocol"].astype(str).value_counts().items())
        raise IncomparableRowsError(f"no generation rows under protocol {protocol!r}; the store holds {counts or 'none'}")
    try:
        sel = select_comparable(rows, {"step": ANY, **select}, quality=quality)
    except IncomparableRowsError as exc:
        raise IncomparableRowsError(f"protocol {protocol!r}: {exc}") from None
    return sel


def _mean_quality(rows: pd.DataFrame, quality: str, name: str) -> pd.DataFrame:
    keys = [k for k in RUN_KEYS if k in rows.columns]
    missing = [k for k in ("model", "method", "encoder", "step") if k not in keys]
    if missing:
        raise IncomparableRowsError(f"the generation rows lack {missing}: runs cannot be paired across protocols")
    df = rows.assign(**{name: pd.to_numeric(rows[quality], errors="coerce")})
    return df.groupby(keys, dropna=False, sort=True)[name].mean().reset_index()


def _fraction_interval(hits: np.ndarray, level: float) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of the share of hits: valid at any count, and never a
    zero-width "[1.00, 1.00]" when every encoder agrees."""
    if len(hits) < 2:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(hits.sum()), len(hits)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def _tidy_encoders(points: pd.DataFrame, qa: str, qb: str) -> pd.DataFrame:
    pts = points.rename(columns={"method": "train_method"})
    rows = []
    for corr in _CORR:
        per = correlate(pts, qa, qb, by=["model", "train_method", "step"], method=corr)
        rows.append(per)
        if pts.groupby(["model", "train_method", "step"]).ngroups > 1:
            pooled = correlate(pts, qa, qb, method=corr)
            rows.append(pooled.assign(model="all", train_method="all", step="all")[per.columns])
    out = pd.concat(rows, ignore_index=True).rename(columns={"method": "statistic"})
    return out[["model", "train_method", "step", "statistic", "n", "r", "ci_low", "ci_high", "ci_note", "p_value"]]


def _method_agreement(points: pd.DataFrame, qa: str, qb: str, level: float = 0.95) -> pd.DataFrame:
    methods = sorted(points["method"].unique())
    if len(methods) < 2:
        return pd.DataFrame(columns=["model", "step", "baseline", "train_method", "n_encoders", "same_order",
                                     "same_order_ci_low", "same_order_ci_high", "spearman", "kendall"])
    base = "repa" if "repa" in methods else methods[0]
    rows = []
    for (model, step), part in points.groupby(["model", "step"], sort=True):
        wide = part.pivot_table(index="encoder", columns="method", values=[qa, qb])
        for m in methods:
            if m == base or (qa, m) not in wide.columns or (qa, base) not in wide.columns:
                continue
            d = pd.DataFrame({"a": wide[(qa, m)] - wide[(qa, base)], "b": wide[(qb, m)] - wide[(qb, base)]}).dropna()
            hits = (np.sign(d["a"].to_numpy()) == np.sign(d["b"].to_numpy())).astype(float)
            lo, hi = _fraction_interval(hits, level)
            row = {"model": model, "step": step, "baseline": base, "train_method": m, "n_encoders": len(d),
                   "same_order": float(hits.mean()) if len(hits) else float("nan"),
                   "same_order_ci_low": lo, "same_order_ci_high": hi}
            for corr in _CORR:
                c = correlate(d, "a", "b", method=corr).iloc[0]
                row.update({corr: c["r"], f"{corr}_ci_low": c["ci_low"], f"{corr}_ci_high": c["ci_high"]})
            rows.append(row)
    return pd.DataFrame(rows)


def protocol_agreement(gen: pd.DataFrame, a: str, b: str, *, select: Mapping[str, Any] | None = None,
                       quality: Sequence[str | None] = (None, None)) -> Agreement:
    """Rank agreement between protocols ``a`` and ``b`` on the runs evaluated under both (see the module doc).

    ``select`` keeps rows (``{"model": "SiT-B/2"}``) before pairing; ``quality`` names each protocol's quality
    column when a protocol's rows hold several.
    """
    if a == b:
        raise ValueError(f"--agreement needs two different protocols (got {a!r} twice)")
    if gen is None or gen.empty:
        raise IncomparableRowsError("no generation rows: evaluate runs under both protocols first")
    if "protocol" not in gen.columns:
        raise IncomparableRowsError("the generation rows have no 'protocol' column (written before FID protocols "
                                    "were recorded); re-evaluate the runs with this version")
    select = {k: v for k, v in dict(select or {}).items() if k != "protocol"}
    sel_a = _protocol_rows(gen, a, select, quality[0])
    sel_b = _protocol_rows(gen, b, select, quality[1])
    qa, qb = f"{sel_a.quality}@{a}", f"{sel_b.quality}@{b}"
    ma, mb = _mean_quality(sel_a.rows, sel_a.quality, qa), _mean_quality(sel_b.rows, sel_b.quality, qb)
    keys = [k for k in RUN_KEYS if k in ma.columns and k in mb.columns]
    paired = ma.merge(mb, on=keys, how="inner").dropna(subset=[qa, qb])
    notes = [f"{len(ma)} run checkpoint(s) under {a!r}, {len(mb)} under {b!r}, {len(paired)} under both"]
    if paired.empty:
        raise IncomparableRowsError(f"no run was evaluated under both {a!r} and {b!r} at the same step: evaluate a "
                                    f"subset under both (e.g. `--set fid.protocol={b}` on the same spec)")
    group = ["model", "method", "encoder", "step"]
    points = paired.groupby(group, sort=True)[[qa, qb]].mean().reset_index()
    points["n_seeds"] = paired.groupby(group, sort=True).size().to_numpy()
    encoders = _tidy_encoders(points, qa, qb)
    methods = _method_agreement(points, qa, qb)
    if (encoders["n"] < 3).all():
        notes.append("fewer than 3 encoders per group: no rank correlation (evaluate more runs under both)")
    return Agreement((a, b), (sel_a.quality, sel_b.quality), points, encoders, methods, notes)
