"""``analyze``: from the results tables (and optionally the paper's published data) to a report directory.

Writes ``correlations.csv`` / ``correlations.md`` (quality against LP accuracy and each spatial metric, per model
size and pooled, training methods kept separate), ``points.csv`` (one row per model, method and encoder),
``excluded.csv`` (rows left out and why), ``clsmix.csv`` (CLS-mixing curves, when encoders are ``@clsmix=``
variants), ``comparisons.csv`` (differences against seed noise, :mod:`analysis.comparisons`), ``seeds.csv`` (the
per-seed values), ``figures/*.png``, ``summary.json`` and a self-contained ``report.html``. Rows of runs that align
to no encoder (``encoder == results.NO_ENCODER``, the vanilla baseline) are compared with, never correlated.

Three steps, one module each: ``compute`` (data in, data out: a :class:`Report`), ``write`` (the files) and
``render`` (the HTML, from ``templates/report.html.j2``, and the markdown).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis.paper import PaperData
from analysis.report.compute import (ENCODER_KEYS, Report, compute_report, correlation_table, encoder_table,
                                     method_gain, paper_method_rows, paper_recipe_rows, smoke_reason, study_points)
from analysis.report.write import write_report

__all__ = ["analyze", "compute_report", "write_report", "Report", "encoder_table", "study_points",
           "correlation_table", "method_gain", "smoke_reason", "paper_method_rows", "paper_recipe_rows",
           "ENCODER_KEYS"]


def analyze(generation_df: pd.DataFrame | None, encoders_df: pd.DataFrame | None, out_dir: str | Path, *,
            reference: str | PaperData | None = None, select: Mapping[str, Any] | Sequence[str] | None = None,
            quality: str | None = None, methods: Sequence[str] = ("pearson",), n_boot: int = 2000, seed: int = 0,
            title: str = "repa-study analysis") -> Path:
    """Analyse the study's rows (and/or the paper's published data) and write a report directory; returns it.

    ``select``: column -> value for the generation rows (``{"step": 100000}``, ``"n_samples": "*"`` to mix on
    purpose; ``encoders.<col>`` for the encoder rows) or the CLI form ``["step=100000"]``. ``reference="paper"``
    (a name of :data:`analysis.paper.PAPERS`, or a loaded :class:`~analysis.paper.PaperData`) adds the paper's 27
    points, its r values and its REPA/iREPA tables; with no rows of one's own, the report is the paper's alone (no
    compute). Raises :class:`IncomparableRowsError` with what to choose when rows cannot be mixed.
    """
    report = compute_report(generation_df, encoders_df, reference=reference, select=select, quality=quality,
                            methods=methods, n_boot=n_boot, seed=seed)
    return write_report(report, out_dir, title=title)
