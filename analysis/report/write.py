"""The report directory's files from a computed :class:`~analysis.report.compute.Report`: the CSV tables, the
figures (:mod:`analysis.figures`), ``summary.json``, ``correlations.md`` and ``report.html``
(:mod:`analysis.report.render`)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import figures
from analysis.report.compute import Report
from analysis.report.render import Figure, render_html, to_markdown
from results import ENCODER_METRICS, FID
from results.provenance import now_iso, provenance

__all__ = ["write_report"]

_log = logging.getLogger("repa_study.analysis.report")


def write_report(report: Report, out_dir: str | Path, *, title: str) -> Path:
    """Write every file of ``report`` under ``out_dir`` (created) and return it."""
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    _write_tables(report, out)
    shown = _study_figures(report, fig_dir) + _paper_figures(report, fig_dir)
    summary = _summary(report)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "report.html").write_text(render_html(report, shown, summary, title=title), encoding="utf-8")
    _log.info("report written to %s", out / "report.html")
    return out


def _write_tables(report: Report, out: Path) -> None:
    study = report.study
    if study is not None:
        study.comparisons.to_csv(out / "comparisons.csv", index=False)
        study.spread.to_csv(out / "seeds.csv", index=False)
        if not study.direction.empty:
            study.direction.to_csv(out / "clsmix_direction.csv", index=False)
        study.points.to_csv(out / "points.csv", index=False)
        study.excluded.to_csv(out / "excluded.csv", index=False)
        if not study.mixing.empty:
            study.mixing.to_csv(out / "clsmix.csv", index=False)
        if not study.gain.empty:
            study.gain.to_csv(out / "methods.csv", index=False)
        if not study.design.empty:
            study.design.to_csv(out / "design.csv", index=False)
    report.correlations.to_csv(out / "correlations.csv", index=False)
    (out / "correlations.md").write_text(to_markdown(report.correlations))


def _summary(report: Report) -> dict[str, Any]:
    paper, study = report.paper, report.study
    summary: dict[str, Any] = {"created_at": now_iso(), "provenance": provenance(),
                               "reference": paper.data.name if paper is not None else None}
    if study is not None:
        summary.update(quality=study.quality, chosen={k: _jsonable(v) for k, v in study.selection.chosen.items()},
                       n_rows=len(study.selection.rows), n_excluded=len(study.excluded), smoke=study.smoke)
    comparisons = study.comparisons if study is not None else pd.DataFrame()
    summary.update(
        correlations=json.loads(report.correlations.to_json(orient="records")), notes=report.notes,
        comparisons=json.loads(comparisons.to_json(orient="records")) if len(comparisons) else [],
        findings=study.findings if study is not None else [],
        noise_sd=study.noise if study is not None else {"sd": None, "df": 0})
    return summary


def _study_figures(report: Report, fig_dir: Path) -> list[Figure]:
    study = report.study
    if study is None:
        return []
    q, points, out = study.quality, study.points, []
    overlay = report.paper.data.points if report.paper is not None and q == FID else None
    for method_name, part in study.scored.groupby("method", sort=True):
        if not any(part[m].notna().any() for m in ENCODER_METRICS):
            continue
        path = figures.correlation_panel(
            part, ENCODER_METRICS, q, fig_dir / f"correlation_{_slug(method_name)}.png",
            title=f"{_label(q)} vs encoder metrics, {method_name} (this study, one point per encoder)",
            hue="model", overlay=overlay, overlay_label="paper SiT-XL/2")
        out.append(Figure(path, f"Quality against LP accuracy and the spatial metrics, {method_name} runs; one point "
                                f"per encoder and model size, least-squares line and Pearson r"
                                + ("; grey squares: the paper's 27 points" if overlay is not None else "")))
    if points["method"].nunique() > 1:
        path = figures.method_comparison(points, q, fig_dir / "methods.png",
                                         title=f"{_label(q)} per encoder and method (this study)")
        out.append(Figure(path, "Each encoder's quality under each training method, per model size (lower is "
                                "better)"))
    for base, improved in study.pairs if len(study.pairs) > 1 else []:
        part = points[points["method"].isin([base, improved])]
        path = figures.method_comparison(part, q, fig_dir / f"methods_{_slug(base)}.png",
                                         title=f"{_label(q)}: {base} vs {improved} per encoder (this study)")
        out.append(Figure(path, f"REPA vs iREPA within one recipe: {base} and {improved} per encoder and model "
                                f"size (lower is better)"))
    if not study.mixing.empty:
        path = figures.against_alpha(study.mixing, [q, *ENCODER_METRICS], fig_dir / "clsmix.png",
                                     title=f"{_label(q)}, LP accuracy and spatial metrics against CLS mixing "
                                           f"(this study)")
        out.append(Figure(path, "The CLS-mixing experiment (the paper's Fig. 3c): each encoder variant "
                                "NAME@clsmix=alpha mixes the CLS token into every patch token; quality, linear-probe "
                                "accuracy and the spatial metrics against alpha"))
    if not study.curves.empty:
        path = figures.convergence(study.curves, q, fig_dir / "convergence.png",
                                   title=f"{_label(q)} against training step (this study)")
        out.append(Figure(path, "Quality against training step per encoder (line style: method), mean over seeds"))
    return out


def _paper_figures(report: Report, fig_dir: Path) -> list[Figure]:
    paper = report.paper
    if paper is None:
        return []
    out = [Figure(figures.correlation_panel(paper.points, ENCODER_METRICS, FID, fig_dir / "paper_correlation.png",
                                            title="The paper's Fig. 4 regenerated: SiT-XL/2 + REPA, 100K steps, "
                                                  "27 encoders (digitised)"),
                  "The paper's correlation panel regenerated from the shipped reference data (no compute): 27 "
                  "encoders, gFID-50K of SiT-XL/2 + REPA at 100K steps; unlabelled points carry no name"),
           Figure(figures.method_comparison(paper.methods, FID, fig_dir / "paper_methods.png",
                                            title="The paper: REPA vs iREPA (Tables 4, 5, 6; no CFG)"),
                  "The paper's REPA and iREPA gFID-50K per encoder: SiT-XL/2 at 100K (Table 4), SiT-B/2 and "
                  "SiT-L/2 at 400K (Tables 5, 6)")]
    for recipe, rows, tables in paper.recipes:
        path = figures.method_comparison(rows, FID, fig_dir / f"paper_methods_{_slug(recipe)}.png",
                                         title=f"The paper: REPA vs iREPA with {recipe} (Table {tables}; no CFG)")
        out.append(Figure(path, f"The paper's REPA and iREPA gFID per encoder in the {recipe} recipe "
                                f"(Table {tables}, cfg 1.0)"))
    return out


def _label(col: str) -> str:
    return figures.AXIS_LABELS.get(col, col)


def _slug(s: Any) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(s))


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
