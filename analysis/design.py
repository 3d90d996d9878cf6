"""How independently a study's encoders vary global information and spatial structure.

The paper's question (does generation quality follow an encoder's global information, LP, or its spatial structure,
LDS/CDS/SRSS/RMSC?) can only be answered by encoders on which the two differ: where LP and the spatial metrics move
together across the encoders, r(quality, LP) and r(quality, spatial) say the same thing. :func:`design_table` gives
r(LP, each spatial metric) across the encoders, :func:`design_sentence` the report's verdict on it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.correlate import correlate
from results import LP_TOP1, NO_ENCODER, SPATIAL_METRICS

__all__ = ["design_table", "design_sentence", "CONFOUNDED_R", "INDEPENDENT_R"]


def design_table(points: pd.DataFrame) -> pd.DataFrame:
    """Pearson r of LP with each spatial metric across the encoders of ``points`` (one point per encoder; Fisher-z
    intervals as for the study's correlations). Empty when there is nothing to correlate."""
    enc = points[points["encoder"].astype(str) != NO_ENCODER].drop_duplicates("encoder")
    xs = [m for m in SPATIAL_METRICS if m in enc.columns and enc[m].notna().any()]
    if LP_TOP1 not in enc.columns or enc[LP_TOP1].notna().sum() < 3 or not xs:
        return pd.DataFrame()
    return correlate(enc, xs, LP_TOP1, method="pearson")


#: |r(LP, spatial)| across the encoders at or above which the two hypotheses are confounded in the design, and
#: below which the encoders vary the two nearly independently. A property of the chosen encoders (fixed, not
#: sampled), so the verdict reads r itself; the interval is printed for scale.
CONFOUNDED_R, INDEPENDENT_R = 0.7, 0.3


def design_sentence(design: pd.DataFrame) -> str | None:
    """Whether the encoders vary global information and spatial structure independently: r(LP, LDS) across them
    (and the largest |r| with another spatial metric). Where they move together, r(quality, LP) and r(quality,
    spatial) cannot be told apart whatever the runs show."""
    if design is None or design.empty or not (design["x"] == "lds").any():
        return None
    row = design[design["x"] == "lds"].iloc[0]
    if not np.isfinite(row["r"]):
        return None
    n = int(row["n"])
    ci = (f"95% CI [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]" if np.isfinite(row["ci_low"])
          else str(row["ci_note"]) or "no interval")
    others = design[(design["x"] != "lds") & np.isfinite(design["r"])]
    worst = (f"; with CDS/SRSS/RMSC at most |r| = {others['r'].abs().max():.2f}" if len(others) else "")
    r_max = max([abs(row["r"]), *others["r"].abs()])
    if r_max >= CONFOUNDED_R:
        verdict = (f"they move together (|r| >= {CONFOUNDED_R:g}), so the study cannot tell whether quality follows "
                   "global information or spatial structure")
    elif r_max >= INDEPENDENT_R:
        verdict = ("they are partly confounded, so a gap between r(quality, LP) and r(quality, spatial) is weaker "
                   "evidence than it looks")
    else:
        verdict = (f"they vary nearly independently (|r| < {INDEPENDENT_R:g}), so r(quality, LP) and r(quality, "
                   "spatial) can disagree")
    return (f"Encoder design: across the {n} encoders, LP and LDS correlate at r {row['r']:+.2f} ({ci}){worst}: "
            f"{verdict}.")


