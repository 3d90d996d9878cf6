"""The report as text: ``report.html`` from the jinja2 template ``templates/report.html.j2`` (self-contained: the
figures are embedded as base64 PNGs) and the markdown of ``correlations.md``. Values are formatted here, once
(:func:`format_value`), and escaped by the template."""
from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
import numpy as np
import pandas as pd

from analysis.comparisons import COMPARE_COLUMNS
from analysis.correlate import MIN_ENCODERS
from analysis.display import for_display
from analysis.report.compute import Report
from results import ENCODER_METRICS, FID, SPATIAL_METRICS

__all__ = ["render_html", "to_markdown", "format_value", "Figure"]

#: Tables longer than this show their first rows and point to the CSV file.
MAX_ROWS = 200
#: Columns of the comparisons table the page leaves to comparisons.csv (``note`` is shown when a row has one).
_COMPARISON_DETAIL = ("se", "noise_sd", "df", "level")
_PAPER_COLUMNS = ["point", "encoder", "label_status", FID, *ENCODER_METRICS, *(f"{m}_source" for m in SPATIAL_METRICS)]


@dataclass(frozen=True)
class Figure:
    """A PNG the page embeds, with its caption."""

    path: Path
    caption: str


def format_value(v: Any) -> str:
    """A table cell: empty for missing values, 3 decimals for floats (4 significant digits below 1e-3)."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(format_value(v).replace("|", "\\|") for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Table:
    columns: list[str]
    rows: list[list[str]]   # formatted cells of the first MAX_ROWS rows; empty: the template says "(none)"
    more: int               # rows left out


def _table(df: pd.DataFrame) -> _Table:
    if df.empty:
        return _Table([], [], 0)
    shown = df.head(MAX_ROWS)
    return _Table([str(c) for c in shown.columns],
                  [[format_value(v) for v in row] for row in shown.itertuples(index=False)],
                  max(len(df) - MAX_ROWS, 0))


@functools.lru_cache(maxsize=None)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("analysis.report", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2")


def _png(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _study_context(report: Report, summary: Mapping[str, Any]) -> dict[str, Any] | None:
    study = report.study
    if study is None:
        return None
    excluded = study.excluded
    reasons = excluded["reason"].value_counts().rename_axis("reason").reset_index(name="rows") if len(excluded) \
        else None
    comp = study.comparisons
    if not comp.empty:
        noted = comp["note"].astype(str).str.len().gt(0).any()
        comp = comp[[c for c in COMPARE_COLUMNS if c not in _COMPARISON_DETAIL and (c != "note" or noted)]]
    return {
        "n_rows": summary["n_rows"], "n_excluded": summary["n_excluded"], "quality": study.quality,
        "chosen": ", ".join(f"{k} = {format_value(v)}" for k, v in summary["chosen"].items()),
        "excluded": _table(reasons) if reasons is not None else None, "notes": study.notes,
        "comparisons": _table(comp),
        "noise_sd": None if study.noise.get("sd") is None else f"{study.noise['sd']:.3g}",
        "noise_df": study.noise["df"],
        "points": _table(for_display(study.points)) if not study.points.empty else None,
        "gain": _table(study.gain) if not study.gain.empty else None,
        "design": _table(study.design) if not study.design.empty else None,
        "spread": _table(study.spread),
    }


def render_html(report: Report, figures: Sequence[Figure], summary: Mapping[str, Any], *, title: str) -> str:
    """The report page: banners, findings, rows analysed, comparisons, correlations, figures and tables."""
    paper, study, corr = report.paper, report.study, report.correlations
    prov = summary["provenance"]
    return _template().render(
        title=title, smoke=study.smoke if study is not None else None,
        paper=None if paper is None else {"citation": paper.data.citation,
                                          "points": _table(for_display(paper.data.points[_PAPER_COLUMNS]))},
        findings=study.findings if study is not None else [], study=_study_context(report, summary),
        correlations=_table(corr), few_encoders=bool(len(corr) and (corr["n"] < 10).any()), seed=report.seed,
        n_boot=report.n_boot, min_encoders=MIN_ENCODERS,
        figures=[{"caption": f.caption, "data": _png(f.path)} for f in figures],
        created_at=summary["created_at"], git_commit=str(prov.get("git_commit")), host=str(prov.get("host")))
