"""The paper's published numbers, shipped as small CSV tables (see README.md in this folder for every source).

``repa-study analyze --reference paper`` (``analyze(..., reference="paper")``) adds them to a report.

>>> paper = load_paper_data("paper")
>>> len(paper.points)
27
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from results import ENCODER_METRICS

__all__ = ["PaperData", "load_paper_data", "PAPERS", "CITATION", "SOURCE_TAGS"]

_HERE = Path(__file__).resolve().parent
#: The published studies shipped here, by the name ``--reference`` takes.
PAPERS = ("paper",)
CITATION = ("Singh, Leng, Wu, Zheng, Zhang, Shechtman, Xie. What matters for Representation Alignment: Global "
            "Information or Spatial Structure? arXiv 2512.10794 (ICLR 2026).")
#: Allowed per-value source tags of the Fig. 4 points (``fig4-occluded:K`` names the occluding point K).
SOURCE_TAGS = ("fig4", "fig4-paired", "fig4-group", "fig4-occluded")


@dataclass(frozen=True)
class PaperData:
    """A published study: its per-encoder points, its REPA/iREPA tables and its published correlations.

    ``generation`` and ``encoders`` have the columns of the results tables (``encoder, model, method, step,
    n_samples, fid`` / ``encoder, lds, cds, srss, rmsc, lp_top1``) so that they go through the same analysis as a
    user's rows. ``lp_top1`` is a fraction in [0, 1], as everywhere (the paper prints percent).
    """

    name: str
    citation: str
    points: pd.DataFrame
    tables: pd.DataFrame
    correlations: pd.DataFrame

    @property
    def generation(self) -> pd.DataFrame:
        p = self.points
        return pd.DataFrame({
            "job_id": [f"{self.name}:fig4:{int(i)}" for i in p["point"]], "encoder": p["encoder"],
            "model": p["model"], "method": p["method"], "seed": 0, "step": p["step"], "n_samples": p["n_samples"],
            "sampler": p["sampler"], "reference": "adm-imagenet256", "extractor": "inception", "fid": p["fid"],
            "source": self.name})

    @property
    def encoders(self) -> pd.DataFrame:
        cols = ["encoder", *ENCODER_METRICS]
        out = self.points[cols].copy()
        out["dataset"] = "imagenet-val (paper)"
        out["source"] = self.name
        return out

    def published_r(self, model: str = "SiT-XL/2") -> dict[str, float]:
        """The exact published Pearson r of each metric with gFID for ``model`` (bounds are left out)."""
        c = self.correlations
        c = c[(c["model"] == model) & (c["relation"] == "exact") & (c["statistic"] == "pearson") & (c["y"] == "fid")]
        return {str(x): float(v) for x, v in zip(c["x"], c["value"])}


@lru_cache(maxsize=None)
def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(_HERE / name, keep_default_na=False, na_values=[""])


def load_paper_data(name: str = "paper") -> PaperData:
    """Load a shipped published study by name (only ``"paper"`` so far); copies, so callers may modify them."""
    if name not in PAPERS:
        raise ValueError(f"unknown reference {name!r}; available: {', '.join(PAPERS)}")
    return PaperData(name=name, citation=CITATION,
                         points=_read("fig4_sit_xl2_repa_100k.csv").copy(),
                         tables=_read("repa_vs_irepa.csv").copy(),
                         correlations=_read("correlations.csv").copy())
