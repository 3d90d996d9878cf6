"""The report's data: pure functions from the results tables (and the paper's data) to tables, and
:func:`compute_report`, which runs them all for ``analyze`` and returns a :class:`Report`; nothing here writes."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.clsmix import clsmix_points
from analysis.comparable import IncomparableRowsError, Selection, parse_select, select_comparable
from analysis.comparisons import (baseline_methods, clsmix_direction, compare, findings, noise_sd, repa_irepa_pairs,
                                  seed_spread)
from analysis.correlate import correlate
from analysis.design import design_table
from analysis.display import check_fractions
from analysis.paper import PaperData, load_paper_data
from results import ENCODER_METRICS, FID, NO_ENCODER

__all__ = ["encoder_table", "study_points", "correlation_table", "method_gain", "smoke_reason", "paper_method_rows",
           "paper_recipe_rows", "compute_report", "Report", "StudyAnalysis", "PaperAnalysis", "ENCODER_KEYS"]

#: Columns of the encoders table that must agree between the encoder rows analysed together.
ENCODER_KEYS = ("dataset", "split", "limit", "weights", "far", "dmax", "near", "srss_min_fraction")
_log = logging.getLogger("repa_study.analysis.report")


# ---------------------------------------------------------------------------------------------- tables
def encoder_table(enc: pd.DataFrame, select: Mapping[str, Any] | None = None,
                  keep: Sequence[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """One row per encoder with its metrics (``lp_top1`` a fraction, as stored) and the ``keep`` columns the table
    has (e.g. how the encoder was scored). Returns the table and notes.

    ``select`` keys ``encoders.<column>`` pick values of the encoders table (e.g. ``encoders.dataset``).
    """
    notes: list[str] = []
    if enc is None or enc.empty:
        return pd.DataFrame(columns=["encoder", *ENCODER_METRICS]), ["no encoder scores: metrics columns are empty"]
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
    for m in ENCODER_METRICS:
        if m not in df.columns:
            df[m] = np.nan
        df[m] = pd.to_numeric(df[m], errors="coerce")
    check_fractions(df, what="encoders table")
    extra = [c for c in keep if c in df.columns and c not in ("encoder", *ENCODER_METRICS)]
    return df[["encoder", *ENCODER_METRICS, *extra]].reset_index(drop=True), notes


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
    xs = [m for m in ENCODER_METRICS if m in points.columns and points[m].notna().sum() >= 1]
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
    if quality != FID:
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


# ---------------------------------------------------------------------------------------------- the paper's rows
def paper_method_rows(paper: PaperData) -> pd.DataFrame:
    """The paper's REPA and iREPA gFID per encoder without CFG: SiT-XL/2 at 100K (Table 4), SiT-B/2 and SiT-L/2 at
    400K (Tables 5, 6), one facet (``model``) per model and step."""
    t = paper.tables
    t = t[(t["cfg_scale"] == 1.0) & (t["ablation"].fillna("") == "") & t["method"].isin(["repa", "irepa"])]
    parts = [t[(t["table"] == "4") & (t["step"] == 100_000)], t[t["table"] == "5"], t[t["table"] == "6"]]
    rows = pd.concat(parts, ignore_index=True)
    rows["model"] = rows["model"] + " @ " + (rows["step"] // 1000).astype(str) + "K"
    return rows[["model", "method", "encoder", FID]]


def paper_recipe_rows(paper: PaperData) -> list[tuple[str, pd.DataFrame, str]]:
    """Per training recipe other than plain REPA (REPA-E, MeanFlow, ...): ``(recipe, rows, tables)``, its REPA/iREPA
    rows without CFG, one facet per model, step and (where a recipe has several) sampler."""
    t = paper.tables
    t = t[(t["cfg_scale"] == 1.0) & (t["ablation"].fillna("") == "") & (t["recipe"] != "repa") & t["encoder"].notna()]
    out = []
    for recipe, part in t.groupby("recipe", sort=True):
        pairs = repa_irepa_pairs(part["method"].unique())
        if not pairs:
            continue
        part = part[part["method"].isin([m for pair in pairs for m in pair])].copy()
        label = part["model"] + " @ " + (part["step"] // 1000).astype(str) + "K"
        if part["sampler"].nunique() > 1:
            label = label + ", " + part["sampler"]
        part["model"] = label
        tables = ", ".join(sorted(part["table"].astype(str).unique()))
        out.append((str(recipe), part[["model", "method", "encoder", FID]], tables))
    return out


# ---------------------------------------------------------------------------------------------- the whole report
@dataclass
class StudyAnalysis:
    """This study's generation rows, analysed: what the report shows of them."""

    selection: Selection
    points: pd.DataFrame        # one row per (model, method, encoder): mean quality over seeds, encoder metrics
    scored: pd.DataFrame        # the points of runs aligned to an encoder (vanilla baselines left out)
    correlations: pd.DataFrame
    design: pd.DataFrame        # r(LP, each spatial metric) across the encoders (design_table)
    comparisons: pd.DataFrame
    spread: pd.DataFrame        # per-seed values of each (model, method, encoder) cell
    noise: dict[str, Any]       # the pooled seed-to-seed sd and its degrees of freedom
    direction: pd.DataFrame     # the CLS-mixing curves' directions
    mixing: pd.DataFrame        # the CLS-mixing curves' points
    curves: pd.DataFrame        # mean quality per (model, method, encoder, step); empty with a single step
    gain: pd.DataFrame          # quality per training method side by side (method_gain)
    pairs: list[tuple[str, str]]
    findings: list[str]
    notes: list[str]
    smoke: str | None

    @property
    def quality(self) -> str:
        return self.selection.quality

    @property
    def excluded(self) -> pd.DataFrame:
        return self.selection.excluded


@dataclass
class PaperAnalysis:
    """The paper's data as the report shows it: its points as REPA rows, their correlations, its tables' rows."""

    data: PaperData
    points: pd.DataFrame
    correlations: pd.DataFrame
    methods: pd.DataFrame
    recipes: list[tuple[str, pd.DataFrame, str]]


@dataclass
class Report:
    """Everything ``analyze`` writes, computed: this study's part, the paper's part (either may be None)."""

    study: StudyAnalysis | None
    paper: PaperAnalysis | None
    n_boot: int
    seed: int
    correlations: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        frames = [p.correlations for p in (self.study, self.paper) if p is not None]
        self.correlations = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def notes(self) -> list[str]:
        return self.study.notes if self.study is not None else []


def _study_analysis(gen: pd.DataFrame, encoders_df: pd.DataFrame | None, sel_map: Mapping[str, Any],
                    quality: str | None, methods: Sequence[str], n_boot: int, seed: int) -> StudyAnalysis:
    gen_select = {k: v for k, v in sel_map.items() if not k.startswith("encoders.")}
    selection = select_comparable(gen, gen_select, quality=quality)
    q = selection.quality
    enc = encoders_df if encoders_df is not None else pd.DataFrame()
    enc_tab, enc_notes = encoder_table(enc, sel_map)
    notes = selection.notes + enc_notes
    points = study_points(selection.rows, q, enc_tab)
    # runs aligned to no encoder (vanilla) are baselines to compare with, not points of an encoder correlation
    scored = points[points["encoder"].astype(str) != NO_ENCODER]
    unscored = sorted(set(scored.loc[scored[list(ENCODER_METRICS)].isna().all(axis=1), "encoder"].astype(str)))
    if unscored:
        notes.append(f"no encoder scores for {', '.join(unscored)}: their points are missing from the "
                     f"correlations (score them with `repa-study encoders score`)")
        _log.warning("%s", notes[-1])
    smoke = smoke_reason(pd.concat([selection.rows, enc], ignore_index=True, sort=False), q)
    corr = correlation_table(scored, q, study="this study", methods=methods, n_boot=n_boot, seed=seed)
    design = design_table(scored)
    comparisons = compare(selection.rows, q)
    sd, ndf = noise_sd(selection.rows, q)
    direction = clsmix_direction(scored, q)
    baselines = baseline_methods(selection.rows)
    if baselines:
        notes.append(f"baseline method(s) without an encoder ({', '.join(baselines)}): compared with in the "
                     f"comparisons, left out of the correlations")
    every_step = select_comparable(gen, {**gen_select, "step": "*"}, quality=q).rows
    curves = (every_step.groupby(["model", "method", "encoder", "step"], as_index=False)[q].mean()
              if every_step["step"].nunique() > 1 else pd.DataFrame())
    return StudyAnalysis(
        selection=selection, points=points, scored=scored, correlations=corr, design=design,
        comparisons=comparisons,
        spread=seed_spread(selection.rows, q), noise={"sd": sd if np.isfinite(sd) else None, "df": ndf},
        direction=direction, mixing=clsmix_points(scored), curves=curves,
        gain=method_gain(points, q) if not points.empty else pd.DataFrame(),
        pairs=repa_irepa_pairs(points["method"].unique()), findings=findings(comparisons, corr, direction, q, design),
        notes=notes, smoke=smoke)


def _paper_analysis(paper: PaperData, methods: Sequence[str], n_boot: int, seed: int) -> PaperAnalysis:
    points = paper.points.assign(method="repa")
    corr = correlation_table(points, FID, study=f"{paper.name} (Fig. 4)", methods=methods, n_boot=n_boot, seed=seed,
                             published=paper.published_r("SiT-XL/2"))
    return PaperAnalysis(data=paper, points=points, correlations=corr, methods=paper_method_rows(paper),
                         recipes=paper_recipe_rows(paper))


def compute_report(generation_df: pd.DataFrame | None, encoders_df: pd.DataFrame | None, *,
                   reference: str | PaperData | None = None,
                   select: Mapping[str, Any] | Sequence[str] | None = None, quality: str | None = None,
                   methods: Sequence[str] = ("pearson",), n_boot: int = 2000, seed: int = 0) -> Report:
    """The analysis ``analyze`` reports (same arguments); raises :class:`IncomparableRowsError` as it does."""
    sel_map = parse_select(select)
    paper = load_paper_data(reference) if isinstance(reference, str) else reference
    gen = generation_df if generation_df is not None else pd.DataFrame()
    if gen.empty and paper is None:
        raise IncomparableRowsError("nothing to analyze: the generation table is empty and no reference was given "
                                    "(run the study first, or pass reference='paper' / --reference paper)")
    study = None if gen.empty else _study_analysis(gen, encoders_df, sel_map, quality, methods, n_boot, seed)
    return Report(study=study, paper=None if paper is None else _paper_analysis(paper, methods, n_boot, seed),
                  n_boot=n_boot, seed=seed)
