"""Display units, owned here: the tables hold linear-probe accuracies as fractions in [0, 1]; reports, figures and
the CLI show them in percent, converted by :func:`for_display` / :func:`display_value` and nowhere else."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["PERCENT_COLUMNS", "UnitError", "for_display", "display_value", "check_fractions"]

#: Columns stored as fractions and shown in percent.
PERCENT_COLUMNS = ("lp_top1", "lp_top1_cls")


class UnitError(ValueError):
    """A column holds values in another unit than the one it is stored in."""


def display_value(column: str, value: float) -> float:
    """``value`` of ``column`` in its display unit (percent for :data:`PERCENT_COLUMNS`)."""
    return value * 100.0 if column in PERCENT_COLUMNS else value


def for_display(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with the :data:`PERCENT_COLUMNS` it has in percent."""
    out = df.copy()
    for col in PERCENT_COLUMNS:
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce") * 100.0
    return out


def check_fractions(df: pd.DataFrame, columns: Iterable[str] = PERCENT_COLUMNS, *, what: str = "table") -> None:
    """Raise :class:`UnitError` when a fraction column holds values outside [0, 1] (e.g. percent)."""
    for col in columns:
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        bad = values[np.isfinite(values) & ((values < 0) | (values > 1))]
        if len(bad):
            raise UnitError(f"the {what}'s {col} holds {len(bad)} value(s) outside [0, 1] (e.g. {bad[0]:g}): it is "
                             f"a fraction; divide percentages by 100")
