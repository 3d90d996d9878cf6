"""Refuse to mix generation rows that are not comparable, unless the caller selects which ones to use.

Two FIDs are comparable only if they were measured the same way: same number of samples, same sampler settings,
same reference statistics, same feature extractor (``fid`` vs ``fd_<extractor>``), and, for a correlation across
encoders, at the same training step. :func:`select_comparable` keeps one value of each such column and says what it
excluded and why; where a column has several values and the caller did not choose, it raises
:class:`IncomparableRowsError` naming the values and how to choose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from results import FD_METRIC, FD_PREFIX, FID

__all__ = ["IncomparableRowsError", "Selection", "select_comparable", "quality_column", "quality_columns",
           "COMPARABILITY_KEYS", "parse_select", "ANY"]

#: Columns that must hold a single value among the rows analysed together (those absent from a table are ignored).
COMPARABILITY_KEYS = ("protocol", "n_samples", "reference", "ref_id", "extractor", "extractor_id", "sampler",
                      "sampler_mode", "sampler_steps", "cfg_scale", "guidance_interval", "sample_rounding")
#: A ``select`` value that allows mixing a column's values on purpose.
ANY = "*"
_GROUP = ("model", "method", "encoder")


class IncomparableRowsError(ValueError):
    """The rows hold several values of a comparability column and nothing says which to use."""


@dataclass
class Selection:
    """Rows kept for the analysis, rows excluded (with a ``reason`` column) and the values chosen per column."""

    rows: pd.DataFrame
    excluded: pd.DataFrame
    quality: str
    chosen: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        chosen = ", ".join(f"{k}={v}" for k, v in self.chosen.items()) or "nothing to choose"
        lines = [f"kept {len(self.rows)} row(s), excluded {len(self.excluded)}; quality column {self.quality!r}; "
                 f"{chosen}"]
        if len(self.excluded):
            for reason, n in self.excluded["reason"].value_counts().items():
                lines.append(f"  excluded {n} row(s): {reason}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def parse_select(items: Mapping[str, Any] | list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["step=1000", "n_samples=*"]`` (CLI form) or a mapping -> ``{"step": 1000, "n_samples": "*"}``."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--select {item!r}: expected COLUMN=VALUE (e.g. step=100000, n_samples=*)")
        key, value = item.split("=", 1)
        out[key.strip()] = _coerce(value.strip())
    return out


def _coerce(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def quality_columns(df: pd.DataFrame) -> list[str]:
    """The generation-quality columns with values: ``fid`` first, then the ``fd_<extractor>`` columns by name."""
    names = [c for c in df.columns if c == FID or (str(c).startswith(FD_PREFIX) and c != FD_METRIC)]
    names.sort(key=lambda c: (c != FID, str(c)))
    return [c for c in names if pd.to_numeric(df[c], errors="coerce").notna().any()]


def quality_column(df: pd.DataFrame, quality: str | None = None) -> str:
    """The generation-quality column to analyse: ``fid`` or ``fd_<extractor>``; must be unambiguous."""
    candidates = quality_columns(df)
    if quality is not None:
        if quality not in df.columns:
            raise IncomparableRowsError(f"quality column {quality!r} is not in the generation table "
                                        f"(columns with values: {candidates or 'none'})")
        return quality
    if not candidates:
        raise IncomparableRowsError("the generation table has no quality column with values (fid or fd_<extractor>); "
                                    "run the evaluation jobs first")
    if len(candidates) > 1:
        raise IncomparableRowsError(f"the generation rows hold several quality measures {candidates}: distances "
                                    f"from different feature extractors are not comparable. Choose one with "
                                    f"quality=... (CLI: --quality {candidates[0]})")
    return candidates[0]


def _matches(series: pd.Series, value: Any) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series) and isinstance(value, (int, float)):
        return pd.to_numeric(series, errors="coerce") == value
    return series.astype(str) == str(value)


def _fmt_counts(series: pd.Series) -> str:
    return ", ".join(f"{v!r} ({n} rows)" for v, n in series.astype(object).value_counts(dropna=False).items())


def select_comparable(gen: pd.DataFrame, select: Mapping[str, Any] | None = None, *,
                      quality: str | None = None) -> Selection:
    """Keep the comparable generation rows.

    ``select`` maps a column to the value to keep (any column: ``model``, ``sweep``, ``step``, ...), or to
    ``"*"`` to allow mixing its values on purpose. Without a choice, each comparability column must hold one value,
    and the training step defaults to the latest step that every (model, method, encoder) run reached.
    """
    select = dict(select or {})
    df = gen.copy()
    q = quality_column(df, quality)
    excluded: list[pd.DataFrame] = []
    chosen: dict[str, Any] = {}
    notes: list[str] = []

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal df
        if mask.any():
            excluded.append(df[mask].assign(reason=reason))
            df = df[~mask]

    drop(pd.to_numeric(df[q], errors="coerce").isna(), f"no value in the quality column {q!r}")
    for key, value in select.items():
        if key not in df.columns:
            raise IncomparableRowsError(f"select {key}={value!r}: no column {key!r} in the generation table "
                                        f"(columns: {', '.join(map(str, df.columns))})")
        if value == ANY:
            notes.append(f"{key}: values mixed on request ({_fmt_counts(df[key])})")
            continue
        keep = _matches(df[key], value)
        drop(~keep, f"{key} != {value!r} (selected)")
        chosen[key] = value
    for key in COMPARABILITY_KEYS:
        if key in select or key not in df.columns:
            continue
        values = df[key].astype(object).where(df[key].notna(), None).unique()
        if len(values) > 1:
            raise IncomparableRowsError(
                f"the generation rows differ in {key!r}: {_fmt_counts(df[key])}. Their {q} values are not "
                f"comparable. Choose one with select={{'{key}': VALUE}} (CLI: --select {key}=VALUE), or allow "
                f"mixing with --select {key}=*")
        if len(values) == 1:
            chosen[key] = values[0]
    if "step" in df.columns and "step" not in select and len(df):
        group = [c for c in _GROUP if c in df.columns]
        steps = [set(s) for _, s in df.groupby(group, dropna=False)["step"]] if group else [set(df["step"])]
        common = set.intersection(*steps)
        if not common:
            per_run = df.groupby(group, dropna=False)["step"].agg(lambda s: sorted(set(s))).to_dict()
            raise IncomparableRowsError(
                f"no training step is common to all runs ({per_run}); FIDs at different steps are not comparable. "
                f"Choose one with select={{'step': N}} (CLI: --select step=N); runs without it are then excluded")
        step = max(common)
        drop(df["step"] != step, f"step != {step} (the latest step every run reached)")
        chosen["step"] = step
    excl = pd.concat(excluded, ignore_index=True) if excluded else gen.iloc[0:0].assign(reason=pd.Series(dtype=str))
    return Selection(rows=df.reset_index(drop=True), excluded=excl, quality=q, chosen=chosen, notes=notes)
