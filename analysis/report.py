"""``analyze``: from the results tables (and optionally the paper's reference data) to a report directory.

Writes ``correlations.csv`` / ``correlations.md`` (quality against LP accuracy and each spatial metric, per model
size and pooled, training methods kept separate), ``points.csv`` (one row per model, method and encoder),
``excluded.csv`` (rows left out and why), ``clsmix.csv`` (CLS-mixing curves, when encoders are ``@clsmix=``
variants), ``comparisons.csv`` (differences against seed noise, :mod:`analysis.comparisons`), ``seeds.csv`` (the
per-seed values), ``figures/*.png``, ``summary.json`` and a self-contained ``report.html``. Rows of runs that align
to no encoder (``encoder == results.NO_ENCODER``, the vanilla baseline) are compared with, never correlated.
"""
from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis import figures
from analysis.clsmix import clsmix_points
from analysis.comparable import IncomparableRowsError, Selection, parse_select, select_comparable
from analysis.comparisons import (baseline_methods, clsmix_direction, compare, findings, noise_sd, seed_spread,
                                  variant_pairs)
from analysis.correlate import correlate
from analysis.display import check_fractions, for_display
from analysis.reference import METRICS, ReferenceData, load_reference_data
from results import NO_ENCODER
from results.provenance import now_iso, provenance

__all__ = ["analyze", "encoder_table", "study_points", "correlation_table", "method_gain", "smoke_reason", "METRICS",
           "ENCODER_KEYS", "variant_pairs"]

#: Columns of the encoders table that must agree between the encoder rows analysed together.
ENCODER_KEYS = ("dataset", "split", "limit", "weights", "far", "dmax", "near", "srss_min_fraction")
_log = logging.getLogger("repa_study.analysis.report")


# ---------------------------------------------------------------------------------------------- tables
def encoder_table(enc: pd.DataFrame, select: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per encoder with its metrics (``lp_top1`` a fraction, as stored). Returns the table and notes.

    ``select`` keys ``encoders.<column>`` pick values of the encoders table (e.g. ``encoders.dataset``).
    """
    notes: list[str] = []
    if enc is None or enc.empty:
        return pd.DataFrame(columns=["encoder", *METRICS]), ["no encoder scores: metrics columns are empty"]
    if "encoder" not in enc.columns:
        raise IncomparableRowsError("the encoders table has no 'encoder' column")
    df = enc.copy()
    for key, value in (select or {}).items():
        if key.startswith("encoders."):
            col = key.split(".", 1)[1]
            if col not in df.columns:
                raise IncomparableRowsError(f"select {key}: the encoders table has no column {col!r}")
            df = df[df[col].astype(str) == str(value)]
            notes.append(f"encoder rows with {col} = {value!r} (selected)")
    for key in ENCODER_KEYS:
        if key in df.columns and df[key].astype(str).nunique() > 1 and f"encoders.{key}" not in (select or {}):
            values = ", ".join(f"{v!r}" for v in sorted(df[key].astype(str).unique()))
            raise IncomparableRowsError(f"the encoder scores were computed on different {key}s ({values}); spatial "
                                        f"metrics from different data are not comparable. Choose one with "
                                        f"--select encoders.{key}=VALUE")
    order = "written_at" if "written_at" in df.columns else None
    if order:
        df = df.sort_values(order, kind="stable")
    dupes = df["encoder"].duplicated(keep="last")
    if dupes.any():
        notes.append(f"{int(dupes.sum())} older encoder row(s) superseded by the latest score of the same encoder")
    df = df[~dupes]
    for m in METRICS:
        if m not in df.columns:
            df[m] = np.nan
        df[m] = pd.to_numeric(df[m], errors="coerce")
    check_fractions(df, what="encoders table")
    return df[["encoder", *METRICS]].reset_index(drop=True), notes


def study_points(rows: pd.DataFrame, quality: str, encoders: pd.DataFrame) -> pd.DataFrame:
    """Mean quality per (model, method, encoder) over seeds, joined with the encoder metrics."""
    need = [c for c in ("encoder", "model", "method") if c not in rows.columns]
    if need:
        raise IncomparableRowsError(f"the generation rows lack column(s) {need}; they cannot be joined with the "
                                    f"encoder scores")
    g = rows.assign(**{quality: pd.to_numeric(rows[quality], errors="coerce")})
    agg = g.groupby(["model", "method", "encoder"], sort=True)[quality].agg(["mean", "std", "count"]).reset_index()
    agg = agg.rename(columns={"mean": quality, "std": f"{quality}_std", "count": "n_seeds"})
    return agg.merge(encoders, on="encoder", how="left")


def correlation_table(points: pd.DataFrame, quality: str, *, study: str, methods: Sequence[str] = ("pearson",),
                      n_boot: int = 2000, seed: int = 0, published: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Correlations of ``quality`` with each metric per training method, per model size and pooled ("all")."""
    xs = [m for m in METRICS if m in points.columns and points[m].notna().sum() >= 1]
    pts = points.rename(columns={"method": "train_method"})  # "method" names the correlation method below
    frames = []
    for corr in methods:
        frames.append(correlate(pts, xs, quality, by=["train_method", "model"], method=corr, n_boot=n_boot, seed=seed))
        if pts["model"].nunique() > 1:
            pooled = correlate(pts, xs, quality, by=["train_method"], method=corr, n_boot=n_boot, seed=seed)
            frames.append(pooled.assign(model="all")[frames[0].columns])
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "study", study)
    if published is not None:
        out["published_r"] = [published.get(x) if m == "pearson" else None for x, m in zip(out["x"], out["method"])]
    return out


def method_gain(points: pd.DataFrame, quality: str) -> pd.DataFrame:
    """Per (model, encoder): quality under each aligned training method and the change from REPA (or the first
    method); a baseline that aligns to no encoder (vanilla) is a column of its model's value, with each aligned
    method's change from it (``<method>_vs_<baseline>_%``)."""
    none = points["encoder"].astype(str) == NO_ENCODER
    aligned, baseline = points[~none], points[none]
    if aligned.empty or aligned["method"].nunique() + baseline["method"].nunique() < 2:
        return pd.DataFrame()
    wide = aligned.pivot_table(index=["model", "encoder"], columns="method", values=quality).reset_index()
    methods = [m for m in sorted(aligned["method"].unique()) if m in wide.columns]
    base = "repa" if "repa" in methods else methods[0]
    for m in methods:
        if m != base:
            wide[f"{m}_change_%"] = 100.0 * (wide[m] - wide[base]) / wide[base]
    for b, part in baseline.groupby("method", sort=True):
        wide[b] = wide["model"].map(part.groupby("model")[quality].mean())
        for m in methods:
            wide[f"{m}_vs_{b}_%"] = 100.0 * (wide[m] - wide[b]) / wide[b]
    wide.columns.name = None
    return wide


def smoke_reason(rows: pd.DataFrame, quality: str) -> str | None:
    """Why these rows are a smoke-scale study rather than the paper's setting (None if nothing says so)."""
    reasons = []
    if quality != "fid":
        reasons.append(f"the quality measure is {quality} (a Fréchet distance on a small extractor's features), "
                       f"not FID against ImageNet")
    for col in ("smoke", "synthetic"):
        if col in rows.columns and rows[col].fillna(False).astype(bool).any():
            reasons.append(f"rows are flagged {col}")
    for col in ("dataset", "data", "data_spec"):
        if col in rows.columns and rows[col].astype(str).str.contains("synthetic").any():
            reasons.append(f"the {col} is synthetic")
    if "model" in rows.columns and rows["model"].astype(str).str.contains("smoke|tiny", case=False).any():
        reasons.append("the model size is a smoke-test size")
    for col in ("encoder_weights", "weights"):
        if col in rows.columns and rows[col].astype(str).isin(["tiny", "random"]).any():
            reasons.append("encoders are random-init stand-ins (weights: tiny/random)")
    return "; ".join(dict.fromkeys(reasons)) or None


# ---------------------------------------------------------------------------------------------- output helpers
def _fmt(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _html_table(df: pd.DataFrame, max_rows: int = 200) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    shown = df.head(max_rows)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    more = f"<p><em>{len(df) - max_rows} more rows in the CSV file</em></p>" if len(df) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f0f0f0}.banner{padding:.8em 1em;border-radius:6px;margin:1em 0}
.smoke{background:#fff3cd;border:1px solid #e0c060}.paper{background:#e8f1fb;border:1px solid #8ab}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:12px;color:#555}code{background:#f5f5f5}"""


# ---------------------------------------------------------------------------------------------- analyze
def analyze(generation_df: pd.DataFrame | None, encoders_df: pd.DataFrame | None, out_dir: str | Path, *,
            reference: str | ReferenceData | None = None, select: Mapping[str, Any] | Sequence[str] | None = None,
            quality: str | None = None, methods: Sequence[str] = ("pearson",), n_boot: int = 2000, seed: int = 0,
            title: str = "repa-study analysis") -> Path:
    """Analyse the study's rows (and/or the paper's reference data) and write a report directory; returns it.

    ``select``: column -> value for the generation rows (``{"step": 100000}``, ``"n_samples": "*"`` to mix on
    purpose; ``encoders.<col>`` for the encoder rows) or the CLI form ``["step=100000"]``. ``reference="paper"``
    adds the paper's 27 points, its r values and its REPA/iREPA tables; with no rows of one's own, the report is the
    paper's alone (no compute). Raises :class:`IncomparableRowsError` with what to choose when rows cannot be mixed.
    """
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    sel_map = parse_select(select)
    ref = load_reference_data(reference) if isinstance(reference, str) else reference
    gen = generation_df if generation_df is not None else pd.DataFrame()
    if gen.empty and ref is None:
        raise IncomparableRowsError("nothing to analyze: the generation table is empty and no reference was given "
                                    "(run the study first, or pass reference='paper' / --reference paper)")
    sections: list[str] = []
    summary: dict[str, Any] = {"created_at": now_iso(), "provenance": provenance(), "reference": ref and ref.name}
    corr_frames: list[pd.DataFrame] = []
    excluded = pd.DataFrame()
    notes: list[str] = []
    smoke = None
    user_points = pd.DataFrame()
    comparisons = pd.DataFrame()
    spread = pd.DataFrame()
    found: list[str] = []
    noise: dict[str, Any] = {"sd": None, "df": 0}
    figure_files: list[tuple[Path, str]] = []

    if not gen.empty:
        gen_select = {k: v for k, v in sel_map.items() if not k.startswith("encoders.")}
        selection: Selection = select_comparable(gen, gen_select, quality=quality)
        q = selection.quality
        excluded = selection.excluded
        enc_tab, enc_notes = encoder_table(encoders_df if encoders_df is not None else pd.DataFrame(), sel_map)
        notes += selection.notes + enc_notes
        user_points = study_points(selection.rows, q, enc_tab)
        # runs aligned to no encoder (vanilla) are baselines to compare with, not points of an encoder correlation
        scored = user_points[user_points["encoder"].astype(str) != NO_ENCODER]
        unscored = sorted(set(scored.loc[scored[list(METRICS)].isna().all(axis=1), "encoder"].astype(str)))
        if unscored:
            notes.append(f"no encoder scores for {', '.join(unscored)}: their points are missing from the "
                         f"correlations (score them with `repa-study encoders score`)")
            _log.warning("%s", notes[-1])
        smoke = smoke_reason(pd.concat([selection.rows, encoders_df if encoders_df is not None else pd.DataFrame()],
                                       ignore_index=True, sort=False), q)
        corr = correlation_table(scored, q, study="this study", methods=methods, n_boot=n_boot, seed=seed)
        corr_frames.append(corr)
        comparisons = compare(selection.rows, q)
        spread = seed_spread(selection.rows, q)
        sd, ndf = noise_sd(selection.rows, q)
        noise = {"sd": sd if np.isfinite(sd) else None, "df": ndf}
        direction = clsmix_direction(scored, q)
        found = findings(comparisons, corr, direction, q)
        comparisons.to_csv(out / "comparisons.csv", index=False)
        spread.to_csv(out / "seeds.csv", index=False)
        if not direction.empty:
            direction.to_csv(out / "clsmix_direction.csv", index=False)
        baselines = baseline_methods(selection.rows)
        if baselines:
            notes.append(f"baseline method(s) without an encoder ({', '.join(baselines)}): compared with in the "
                         f"comparisons, left out of the correlations")
        summary.update(quality=q, chosen={k: _jsonable(v) for k, v in selection.chosen.items()},
                       n_rows=len(selection.rows), n_excluded=len(excluded), smoke=smoke)
        user_points.to_csv(out / "points.csv", index=False)
        excluded.to_csv(out / "excluded.csv", index=False)

        overlay = None
        if ref is not None and q == "fid":
            overlay = ref.points
        for method_name, part in scored.groupby("method", sort=True):
            if not any(part[m].notna().any() for m in METRICS):
                continue
            path = figures.correlation_panel(
                part, METRICS, q, fig_dir / f"correlation_{_slug(method_name)}.png",
                title=f"{_label(q)} vs encoder metrics, {method_name} (this study, one point per encoder)",
                hue="model", overlay=overlay, overlay_label="paper SiT-XL/2")
            figure_files.append((path, f"Quality against LP accuracy and the spatial metrics, {method_name} runs; "
                                       f"one point per encoder and model size, least-squares line and Pearson r"
                                       + ("; grey squares: the paper's 27 points" if overlay is not None else "")))
        if user_points["method"].nunique() > 1:
            path = figures.method_comparison(user_points, q, fig_dir / "methods.png",
                                             title=f"{_label(q)} per encoder and method (this study)")
            figure_files.append((path, "Each encoder's quality under each training method, per model size "
                                       "(lower is better)"))
        pairs = variant_pairs(user_points["method"].unique())
        for base, improved in pairs if len(pairs) > 1 else []:
            part = user_points[user_points["method"].isin([base, improved])]
            path = figures.method_comparison(part, q, fig_dir / f"methods_{_slug(base)}.png",
                                             title=f"{_label(q)}: {base} vs {improved} per encoder (this study)")
            figure_files.append((path, f"REPA vs iREPA within one recipe: {base} and {improved} per encoder and "
                                       f"model size (lower is better)"))
        mixing = clsmix_points(scored)
        if not mixing.empty:
            mixing.to_csv(out / "clsmix.csv", index=False)
            path = figures.against_alpha(mixing, [q, *METRICS], fig_dir / "clsmix.png",
                                         title=f"{_label(q)}, LP accuracy and spatial metrics against CLS mixing "
                                               f"(this study)")
            figure_files.append((path, "The CLS-mixing experiment (the paper's Fig. 3c): each encoder variant "
                                       "NAME@clsmix=alpha mixes the CLS token into every patch token; quality, "
                                       "linear-probe accuracy and the spatial metrics against alpha"))
        curves = select_comparable(gen, {**gen_select, "step": "*"}, quality=q).rows
        if curves["step"].nunique() > 1:
            curve_points = curves.groupby(["model", "method", "encoder", "step"], as_index=False)[q].mean()
            path = figures.convergence(curve_points, q, fig_dir / "convergence.png",
                                       title=f"{_label(q)} against training step (this study)")
            figure_files.append((path, "Quality against training step per encoder (line style: method), "
                                       "mean over seeds"))

    if ref is not None:
        published = ref.published_r("SiT-XL/2")
        rp = ref.points.assign(method="repa")
        corr_frames.append(correlation_table(rp, "fid", study=f"{ref.name} (Fig. 4)", methods=methods,
                                             n_boot=n_boot, seed=seed, published=published))
        path = figures.correlation_panel(rp, METRICS, "fid", fig_dir / "paper_correlation.png",
                                         title="The paper's Fig. 4 regenerated: SiT-XL/2 + REPA, 100K steps, "
                                               "27 encoders (digitised)")
        figure_files.append((path, "The paper's correlation panel regenerated from the shipped reference data "
                                   "(no compute): 27 encoders, gFID-50K of SiT-XL/2 + REPA at 100K steps; "
                                   "unlabelled points carry no name"))
        comp = _paper_method_rows(ref)
        path = figures.method_comparison(comp, "fid", fig_dir / "paper_methods.png",
                                         title="The paper: REPA vs iREPA (Tables 4, 5, 6; no CFG)")
        figure_files.append((path, "The paper's REPA and iREPA gFID-50K per encoder: SiT-XL/2 at 100K (Table 4), "
                                   "SiT-B/2 and SiT-L/2 at 400K (Tables 5, 6)"))
        for recipe, rows, tables in _paper_variant_rows(ref):
            path = figures.method_comparison(rows, "fid", fig_dir / f"paper_methods_{_slug(recipe)}.png",
                                             title=f"The paper: REPA vs iREPA with {recipe} (Table {tables}; no CFG)")
            figure_files.append((path, f"The paper's REPA and iREPA gFID per encoder in the {recipe} recipe "
                                       f"(Table {tables}, cfg 1.0)"))

    table = pd.concat(corr_frames, ignore_index=True) if corr_frames else pd.DataFrame()
    table.to_csv(out / "correlations.csv", index=False)
    (out / "correlations.md").write_text(to_markdown(table))
    summary["correlations"] = json.loads(table.to_json(orient="records"))
    summary["notes"] = notes
    summary["comparisons"] = json.loads(comparisons.to_json(orient="records")) if len(comparisons) else []
    summary["findings"] = found
    summary["noise_sd"] = noise
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    # ------------------------------------------------------------------ HTML
    if smoke:
        sections.append(f'<div class="banner smoke"><strong>Smoke-scale study.</strong> These numbers come from a '
                        f"tiny study ({html.escape(smoke)}). They exercise the pipeline and show how encoders and "
                        f"methods differ at this scale; they are not the paper's results and must not be compared "
                        f"with its FIDs.</div>")
    if ref is not None:
        sections.append(f'<div class="banner paper"><strong>Reference data:</strong> {html.escape(ref.citation)} '
                        f"The 27 per-encoder points were digitised from the paper's Fig. 4 (about ±1 px: ±0.025 FID, "
                        f"±0.03 LP points, ±0.0004 LDS); eight occluded cells repeat the occluding marker's value. "
                        f"See docs/analysis.md and analysis/reference/README.md for every value's source.</div>")
    if found:
        sections.append("<h2>Findings at this scale</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in found)
                        + "</ul>")
    if not gen.empty:
        chosen = ", ".join(f"{k} = {_fmt(v)}" for k, v in summary["chosen"].items())
        sections.append(f"<h2>Rows analysed</h2><p>{summary['n_rows']} generation rows at {html.escape(chosen)}; "
                        f"quality column <code>{html.escape(summary['quality'])}</code>; "
                        f"{summary['n_excluded']} rows excluded.</p>")
        if len(excluded):
            reasons = excluded["reason"].value_counts().rename_axis("reason").reset_index(name="rows")
            sections.append("<h3>Excluded rows</h3>" + _html_table(reasons))
        if notes:
            sections.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
        sections.append(_comparisons_section(comparisons, summary["quality"], noise))
    sections.append("<h2>Correlations</h2><p>Correlation of generation quality (lower is better) with each encoder "
                    "metric; 95% interval: percentile bootstrap over encoders (seed "
                    f"{seed}, {n_boot} resamples). Negative r: a higher metric goes with better generation."
                    + (" With fewer than 10 encoders, r is very uncertain: read the interval, not the point."
                       if len(table) and (table["n"] < 10).any() else "") + "</p>"
                    + _html_table(table))
    sections.append("<h2>Figures</h2>" + "".join(_img(p, c) for p, c in figure_files))
    if not user_points.empty:
        gain = method_gain(user_points, summary["quality"])
        if not gain.empty:
            gain.to_csv(out / "methods.csv", index=False)
            sections.append("<h2>Training methods per encoder (this study)</h2><p>Quality per method; "
                            "<code>change_%</code>: relative change from REPA (or the first method) to each other "
                            "one; <code>_vs_vanilla_%</code>: from the run without alignment (negative = lower = "
                            "better).</p>" + _html_table(gain))
        sections.append("<h2>Per-seed spread</h2><p>Each (model, method, encoder) cell's quality per seed "
                        "(<code>per_seed</code>), mean, std, min and max over seeds.</p>" + _html_table(spread))
        sections.append("<h2>Per-encoder points (this study)</h2><p>lp_top1 in percent.</p>"
                        + _html_table(for_display(user_points)))
    if ref is not None:
        cols = ["point", "encoder", "label_status", "fid", "lp_top1", "lds", "cds", "srss", "rmsc",
                "lds_source", "cds_source", "srss_source", "rmsc_source"]
        sections.append("<h2>The paper's 27 points (digitised from Fig. 4)</h2><p>Source tags: <code>fig4</code> "
                        "visible marker; <code>fig4-paired</code> paired within a near-tied FID pair by a 1-2 px "
                        "difference; <code>fig4-group</code> one of a tied-FID group, member unknown; "
                        "<code>fig4-occluded:K</code> hidden under point K, value repeated from K. lp_top1 in "
                        "percent.</p>" + _html_table(for_display(ref.points[cols])))
    prov = summary["provenance"]
    sections.append(f"<h2>Provenance</h2><p>Generated {html.escape(summary['created_at'])} by repa-study, git "
                    f"{html.escape(str(prov.get('git_commit')))} on {html.escape(str(prov.get('host')))}.</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")
    _log.info("report written to %s", out / "report.html")
    return out


def _comparisons_section(comp: pd.DataFrame, quality: str, noise: Mapping[str, Any]) -> str:
    head = "<h2>Comparisons (difference vs seed noise)</h2>"
    if comp.empty:
        return head + ("<p><em>No comparisons: the rows hold no vanilla baseline, REPA/iREPA pair or CLS-mixing "
                       "variant next to its base encoder.</em></p>")
    if noise.get("sd") is None:
        text = ("<p>Only one seed per cell: there is no seed-noise estimate, so the differences are shown without "
                "intervals and none is called distinguishable.</p>")
    else:
        text = (f"<p><code>diff</code> = mean(a) - mean(b) of {html.escape(quality)} over seeds (negative: a is "
                f"lower = better). Interval: diff ± t·sd·√(1/n_a + 1/n_b), with sd = {noise['sd']:.3g} the "
                f"seed-to-seed standard deviation pooled over all cells with 2+ seeds ({noise['df']} degrees of "
                f"freedom; for a mean over k encoders, the plain ones without CLS-mixing variants, the variance of "
                f"that mean). <code>distinguishable</code>: the interval excludes 0. It covers seed noise only: "
                f"encoders and methods are fixed, not sampled.</p>")
    cols = ["question", "model", "a", "b", "diff", "ci_low", "ci_high", "distinguishable", "n_a", "n_b"]
    if comp["note"].astype(str).str.len().gt(0).any():
        cols.append("note")
    return head + text + _html_table(comp[cols])


def _paper_method_rows(ref: ReferenceData) -> pd.DataFrame:
    t = ref.tables
    t = t[(t["cfg_scale"] == 1.0) & (t["variant"].fillna("") == "") & t["method"].isin(["repa", "irepa"])]
    parts = [t[(t["table"] == "4") & (t["step"] == 100_000)], t[t["table"] == "5"], t[t["table"] == "6"]]
    rows = pd.concat(parts, ignore_index=True)
    rows["model"] = rows["model"] + " @ " + (rows["step"] // 1000).astype(str) + "K"
    return rows[["model", "method", "encoder", "fid"]]


def _paper_variant_rows(ref: ReferenceData) -> list[tuple[str, pd.DataFrame, str]]:
    """Per recipe other than plain REPA (REPA-E, MeanFlow, ...): its REPA/iREPA rows without CFG, one facet per
    model, step and (where a recipe has several) sampler."""
    t = ref.tables
    t = t[(t["cfg_scale"] == 1.0) & (t["variant"].fillna("") == "") & (t["recipe"] != "repa") & t["encoder"].notna()]
    out = []
    for recipe, part in t.groupby("recipe", sort=True):
        pairs = variant_pairs(part["method"].unique())
        if not pairs:
            continue
        part = part[part["method"].isin([m for pair in pairs for m in pair])].copy()
        label = part["model"] + " @ " + (part["step"] // 1000).astype(str) + "K"
        if part["sampler"].nunique() > 1:
            label = label + ", " + part["sampler"]
        part["model"] = label
        tables = ", ".join(sorted(part["table"].astype(str).unique()))
        out.append((str(recipe), part[["model", "method", "encoder", "fid"]], tables))
    return out


def _label(col: str) -> str:
    return figures.AXIS_LABELS.get(col, col)


def _slug(s: Any) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(s))


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
