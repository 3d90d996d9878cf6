"""The CLS-mixing experiment's curves: quality, LP accuracy and the spatial metrics against the mixing weight alpha.

Encoders named ``BASE@clsmix=ALPHA`` (the paper's ``p + alpha * c``) or ``BASE@clsmixc=ALPHA`` (the authors' code,
``(1 - alpha) p + alpha c``) are the points of one curve per (model, method, base, form); the plain ``BASE``, when
it ran too, is the curve's alpha = 0 point (both forms leave the tokens unchanged at 0).
"""
from __future__ import annotations

import re

import pandas as pd

__all__ = ["clsmix_points", "parse_variant"]

_VARIANT = re.compile(r"^(?P<base>[^@]+)@(?P<form>clsmixc?)=(?P<alpha>[0-9]*\.?[0-9]+)$")


def parse_variant(name: str) -> tuple[str, str, float] | None:
    """``"BASE@clsmix=0.5"`` -> ``("BASE", "clsmix", 0.5)``; None for an encoder that is no CLS-mixing variant."""
    m = _VARIANT.match(str(name))
    return (m["base"], m["form"], float(m["alpha"])) if m else None


def clsmix_points(points: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``points`` (one per model, method, encoder) that belong to a CLS-mixing curve, with ``base``,
    ``form`` and ``alpha`` columns, sorted by alpha; empty when no encoder is a CLS-mixing variant."""
    if points.empty or "encoder" not in points.columns:
        return pd.DataFrame()
    parsed = points["encoder"].astype(str).str.extract(_VARIANT)
    variants = points[parsed["base"].notna()].assign(base=parsed["base"].dropna(), form=parsed["form"].dropna(),
                                                     alpha=pd.to_numeric(parsed["alpha"].dropna()))
    if variants.empty:
        return pd.DataFrame()
    frames = [variants]
    for form, part in variants.groupby("form"):
        plain = points[points["encoder"].astype(str).isin(set(part["base"]))]
        frames.append(plain.assign(base=plain["encoder"].astype(str), form=form, alpha=0.0))
    out = pd.concat(frames, ignore_index=True)
    keys = [c for c in ("model", "method", "base", "form", "alpha") if c in out.columns]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)
