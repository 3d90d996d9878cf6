"""Differences the paper asks about (alignment vs vanilla, iREPA vs REPA, CLS mixing), measured against seed noise.

With two seeds per (model, method, encoder) cell a per-cell standard deviation says little, but the seed-to-seed
variation pooled over all cells (one common noise level assumed) is a usable yardstick: :func:`compare` puts a
t interval with the pooled sd and its degrees of freedom around each difference of means. Encoders and methods are
fixed, not sampled: the interval covers only seed noise, which is what "distinguishable" means here.

:func:`findings` words each result so that it holds across reruns: a difference or correlation whose interval
holds 0 is "not distinguishable", never a direction, and one the comparison could detect only by luck is
"underpowered" (:data:`REL_MDD`, :data:`MIN_NOISE_DF`; ``analysis.correlate.STRONG_R`` for correlations).
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats

from analysis.clsmix import clsmix_points, parse_variant
from analysis.correlate import MIN_ENCODERS, POWER, STRONG_R, detectable_r
from analysis.design import design_sentence
from analysis.display import display_value
from results import FID, LP_TOP1, NO_ENCODER, SPATIAL_METRICS

__all__ = ["seed_spread", "noise_sd", "compare", "clsmix_direction", "findings", "repa_irepa_pairs",
           "baseline_methods", "COMPARE_COLUMNS", "REL_MDD", "MIN_NOISE_DF"]

CELL = ["model", "method", "encoder"]
COMPARE_COLUMNS = ["question", "model", "a", "b", "diff", "ci_low", "ci_high", "distinguishable", "underpowered",
                   "mdd", "n_a", "n_b", "se", "noise_sd", "df", "level", "note"]
#: ``mdd``, the minimum detectable difference, is the true difference a comparison finds distinguishable with
#: probability ``analysis.correlate.POWER`` (0.8): ``(t_level + t_power) * se``.
#: A comparison is underpowered when its ``mdd`` exceeds both the observed difference (a rerun would confirm it less
#: than 80% of the time) and this fraction of b's value (a 10% change could go unseen) ...
REL_MDD = 0.10
#: ... or when the pooled noise estimate has fewer degrees of freedom than this (the sd itself is then uncertain by
#: more than about +-25%).
MIN_NOISE_DF = 10
DIRECTION_COLUMNS = ["model", "method", "base", "form", "y", "n", "alpha_min", "alpha_max", "at_min", "at_max",
                     "slope", "spearman", "direction"]
NO_NOISE = "one seed per cell: no seed-noise estimate, no interval"
_NAMES = {"lp_top1": "LP accuracy", "lds": "LDS", "cds": "CDS", "srss": "SRSS", "rmsc": "RMSC"}


def repa_irepa_pairs(methods: Iterable[Any]) -> list[tuple[str, str]]:
    """The (REPA side, iREPA side) method pairs among ``methods``: an iREPA method is named as its REPA
    counterpart with ``repa`` -> ``irepa`` (``repa``/``irepa``, ``repa-e``/``irepa-e``, ...)."""
    names = {str(m) for m in methods}
    return sorted((m.replace("irepa", "repa", 1), m) for m in names
                  if "irepa" in m and m.replace("irepa", "repa", 1) in names)


def baseline_methods(rows: pd.DataFrame) -> list[str]:
    """Methods all of whose rows align to no encoder (``encoder == NO_ENCODER``): the vanilla baselines."""
    if rows.empty or not {"method", "encoder"} <= set(rows.columns):
        return []
    none = (rows["encoder"].astype(str) == NO_ENCODER).groupby(rows["method"].astype(str)).all()
    return sorted(none.index[none])


def _per_seed(rows: pd.DataFrame, quality: str) -> pd.DataFrame:
    """One value per (model, method, encoder, seed): the mean of that seed's rows (a row per replicate without a
    ``seed`` column)."""
    missing = [c for c in [*CELL, quality] if c not in rows.columns]
    if missing:
        raise KeyError(f"the generation rows lack column(s) {missing}")
    df = rows.assign(**{quality: pd.to_numeric(rows[quality], errors="coerce")}).dropna(subset=[quality])
    df = df.assign(**{c: df[c].astype(str) for c in CELL})
    if "seed" not in df.columns:
        df = df.assign(seed=df.groupby(CELL).cumcount())
    return df.groupby([*CELL, "seed"], as_index=False, sort=True, dropna=False)[quality].mean()


def _seed_label(seed: Any) -> str:
    if isinstance(seed, (float, np.floating)) and np.isfinite(seed) and float(seed).is_integer():
        return str(int(seed))
    return str(seed)


def seed_spread(rows: pd.DataFrame, quality: str) -> pd.DataFrame:
    """One row per (model, method, encoder): ``mean, std, min, max, n_seeds`` of ``quality`` over seeds and
    ``per_seed`` (``"s0=12.3, s1=14.1"``)."""
    per = _per_seed(rows, quality)
    cols = [*CELL, "mean", "std", "min", "max", "n_seeds", "per_seed"]
    if per.empty:
        return pd.DataFrame(columns=cols)
    out = (per.groupby(CELL, sort=True)[quality].agg(["mean", "std", "min", "max", "count"])
           .rename(columns={"count": "n_seeds"}).reset_index())
    text = {key: ", ".join(f"s{_seed_label(s)}={v:.4g}" for s, v in zip(part["seed"], part[quality]))
            for key, part in per.groupby(CELL, sort=True)}
    out["per_seed"] = [text[tuple(k)] for k in out[CELL].itertuples(index=False)]
    return out[cols]


def noise_sd(rows: pd.DataFrame, quality: str) -> tuple[float, int]:
    """Pooled within-cell seed-to-seed sd of ``quality`` over the (model, method, encoder) cells with >= 2 seeds,
    and its degrees of freedom (sum of n_i - 1); ``(nan, 0)`` when no cell has two seeds."""
    per = _per_seed(rows, quality)
    g = per.groupby(CELL)[quality]
    n, var = g.count(), g.var(ddof=1)
    keep = n >= 2
    df = int((n[keep] - 1).sum())
    if df == 0:
        return float("nan"), 0
    return float(np.sqrt(((n[keep] - 1) * var[keep]).sum() / df)), df


def _plain(encoders: Iterable[str]) -> list[str]:
    """The encoders that are no CLS-mixing variant (all of them when every one is a variant)."""
    encoders = list(encoders)
    plain = [e for e in encoders if parse_variant(e) is None]
    return plain or encoders


def compare(rows: pd.DataFrame, quality: str, *, level: float = 0.95) -> pd.DataFrame:
    """The paper's comparisons at this scale, one row each (:data:`COMPARE_COLUMNS`).

    ``diff`` = mean(a) - mean(b) over seeds (negative: a lower). Interval: ``diff +- t * sd * sqrt(v)`` with the
    pooled :func:`noise_sd`, the t quantile at its df, and ``v = 1/n_a + 1/n_b`` (for an average over k encoders
    the variance of the average, ``sum(1/n_e) / k**2``). ``distinguishable``: the interval excludes 0 (NA with
    one seed per cell). ``mdd``: the difference detected with probability :data:`POWER`; ``underpowered``:
    ``df < MIN_NOISE_DF`` or ``mdd > max(|diff|, REL_MDD * |mean(b)|)`` (NA with one seed per cell). Questions: ``alignment vs vanilla`` (each aligned method and encoder, and the method's mean
    over its plain encoders, vs each baseline of :func:`baseline_methods`), ``iREPA vs REPA`` (per encoder and
    mean, for each :func:`repa_irepa_pairs` pair) and ``CLS mixing`` (each ``BASE@clsmix=ALPHA`` vs ``BASE``).
    """
    cells = seed_spread(rows, quality)
    sd, df = noise_sd(rows, quality)
    t = float(stats.t.ppf(0.5 + level / 2.0, df)) if df > 0 else float("nan")
    t_power = float(stats.t.ppf(POWER, df)) if df > 0 else float("nan")
    out: list[dict[str, Any]] = []

    def add(question: str, model: str, a: str, b: str, diff: float, v: float, n_a: int, n_b: int,
            ref: float) -> None:
        se = sd * float(np.sqrt(v)) if df > 0 else float("nan")
        lo, hi = diff - t * se, diff + t * se
        mdd = (t + t_power) * se
        dist = bool(lo > 0 or hi < 0) if np.isfinite(se) else pd.NA
        weak = bool(df < MIN_NOISE_DF or mdd > max(abs(diff), REL_MDD * abs(ref))) if np.isfinite(se) else pd.NA
        out.append({"question": question, "model": model, "a": a, "b": b, "diff": diff, "ci_low": lo, "ci_high": hi,
                    "distinguishable": dist, "underpowered": weak, "mdd": mdd, "n_a": int(n_a), "n_b": int(n_b),
                    "se": se, "noise_sd": sd, "df": df, "level": level, "note": "" if np.isfinite(se) else NO_NOISE})

    baselines = set(baseline_methods(rows))
    for model, mc in cells.groupby("model", sort=True):
        aligned = mc[~mc["method"].isin(baselines) & (mc["encoder"] != NO_ENCODER)]
        cell = {(m, e): (mean, n) for m, e, mean, n in aligned[["method", "encoder", "mean", "n_seeds"]].itertuples(
            index=False)}
        methods = sorted(aligned["method"].unique(), key=lambda m: ("irepa" in m, m))  # REPA sides first
        encs = {m: sorted(aligned.loc[aligned["method"] == m, "encoder"]) for m in methods}
        for base in sorted(baselines & set(mc["method"])):
            b = mc[mc["method"] == base].iloc[0]
            for m in methods:
                plain = _plain(encs[m])
                if len(plain) > 1:
                    k = len(plain)
                    mean = float(np.mean([cell[(m, e)][0] for e in plain]))
                    ns = [cell[(m, e)][1] for e in plain]
                    add("alignment vs vanilla", model, f"{m} / mean over {k} encoders", base, mean - b["mean"],
                        sum(1 / n for n in ns) / k ** 2 + 1 / b["n_seeds"], sum(ns), b["n_seeds"], b["mean"])
                for e in encs[m]:
                    mean, n = cell[(m, e)]
                    add("alignment vs vanilla", model, f"{m} / {e}", base, mean - b["mean"], 1 / n + 1 / b["n_seeds"],
                        n, b["n_seeds"], b["mean"])
        for rep, irep in repa_irepa_pairs(methods):
            common = [e for e in encs[irep] if e in set(encs[rep])]
            plain = _plain(common)
            if len(plain) > 1:
                k = len(plain)
                diff = float(np.mean([cell[(irep, e)][0] - cell[(rep, e)][0] for e in plain]))
                v = sum(1 / cell[(irep, e)][1] + 1 / cell[(rep, e)][1] for e in plain) / k ** 2
                add("iREPA vs REPA", model, f"{irep} / mean over {k} encoders", f"{rep} / same encoders", diff, v,
                    sum(cell[(irep, e)][1] for e in plain), sum(cell[(rep, e)][1] for e in plain),
                    float(np.mean([cell[(rep, e)][0] for e in plain])))
            for e in common:
                (mi, ni), (mr, nr) = cell[(irep, e)], cell[(rep, e)]
                add("iREPA vs REPA", model, f"{irep} / {e}", f"{rep} / {e}", mi - mr, 1 / ni + 1 / nr, ni, nr, mr)
        for m in methods:
            for e in encs[m]:
                parsed = parse_variant(e)
                if parsed is None or (m, parsed[0]) not in cell:
                    continue
                (mv, nv), (mb, nb) = cell[(m, e)], cell[(m, parsed[0])]
                add("CLS mixing", model, f"{m} / {e}", f"{m} / {parsed[0]}", mv - mb, 1 / nv + 1 / nb, nv, nb, mb)
    res = pd.DataFrame(out, columns=COMPARE_COLUMNS)
    res["distinguishable"] = res["distinguishable"].astype("boolean")
    res["underpowered"] = res["underpowered"].astype("boolean")
    return res


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


def clsmix_direction(points: pd.DataFrame, quality: str) -> pd.DataFrame:
    """Per CLS-mixing curve (model, method, base, form) and quantity (``lp_top1``, the spatial metrics,
    ``quality``): least-squares ``slope`` and ``spearman`` rho against alpha, the values at the smallest and largest
    alpha, and ``direction`` (up/down/flat; empty with fewer than two alphas)."""
    pts = points[points["encoder"].astype(str) != NO_ENCODER] if "encoder" in points.columns else points
    mix = clsmix_points(pts)
    if mix.empty:
        return pd.DataFrame(columns=DIRECTION_COLUMNS)
    keys = [c for c in ("model", "method", "base", "form") if c in mix.columns]
    ys = [c for c in (LP_TOP1, *SPATIAL_METRICS, quality) if c in mix.columns]
    out = []
    for key, curve in mix.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for y in ys:
            d = curve[["alpha", y]].apply(pd.to_numeric, errors="coerce").dropna().sort_values("alpha", kind="stable")
            a, v = d["alpha"].to_numpy(float), d[y].to_numpy(float)
            slope = float(np.polyfit(a, v, 1)[0]) if len(d) >= 2 and np.ptp(a) > 0 else float("nan")
            if np.isfinite(slope) and np.ptp(v) <= 1e-9 * max(1.0, float(np.abs(v).max())):
                slope = 0.0  # equal values (e.g. one probe accuracy): the fit's rounding is no direction
            direction = "" if not np.isfinite(slope) else "up" if slope > 0 else "down" if slope < 0 else "flat"
            out.append({**dict(zip(keys, key)), "y": y, "n": len(d),
                        "alpha_min": a[0] if len(a) else np.nan, "alpha_max": a[-1] if len(a) else np.nan,
                        "at_min": v[0] if len(v) else np.nan, "at_max": v[-1] if len(v) else np.nan,
                        "slope": slope, "spearman": _spearman(a, v), "direction": direction})
    return pd.DataFrame(out).reindex(columns=DIRECTION_COLUMNS)


# ---------------------------------------------------------------------------------------------- findings
def _g(v: float) -> str:
    return f"{v:.3g}"


def _say(label: str) -> str:
    """``"repa / mini-sup"`` -> ``"repa with mini-sup"``; ``"repa / mean over 3 encoders"`` -> ``"repa, mean ..."``."""
    method, _, rest = str(label).partition(" / ")
    if not rest:
        return method
    return f"{method}, {rest}" if rest.startswith(("mean over", "same encoders")) else f"{method} with {rest}"


def _comparison_sentence(row: Any, quality: str, where: str) -> str:
    """One comparison, worded to hold across reruns: a direction only when the interval excludes 0."""
    diff = float(row.diff)
    head = f"{_say(row.a)} vs {_say(row.b)}{where}"
    if pd.isna(row.distinguishable):
        return f"{head}: difference {diff:+.3g} (one seed per cell: no interval, so no finding)."
    ci = f"{100 * float(row.level):g}% CI [{_g(row.ci_low)}, {_g(row.ci_high)}]"
    weak = bool(row.underpowered) if not pd.isna(row.underpowered) else False
    detect = (f"only a difference of about {_g(row.mdd)} is detected {100 * POWER:g}% of the time"
              + (f", and the noise estimate has {int(row.df)} degrees of freedom" if int(row.df) < MIN_NOISE_DF else ""))
    if not bool(row.distinguishable):
        tail = f"; underpowered: {detect}." if weak else "."
        return f"{head}: not distinguishable from seed noise (difference {diff:+.3g}, {ci}){tail}"
    size = f"{quality} {_g(abs(diff))} {'lower' if diff < 0 else 'higher'}"
    tail = f", but underpowered ({detect}): a rerun may not confirm it." if weak else "."
    return f"{head}: {size} ({ci}); distinguishable from seed noise{tail}"


def _value(y: str, v: float) -> str:
    return f"{display_value(y, v):.3g}%" if y == "lp_top1" else _g(v)


def _correlation_sentence(row: Any, label: str, kind: str, quality: str) -> str:
    """One correlation, worded to hold across reruns: a sign only when the interval excludes 0."""
    n = int(row.n)
    head = f"{label}: {kind} r of {quality} with"
    name = _NAMES.get(row.x, row.x)
    if not np.isfinite(row.r):
        return f"{head} {name} undefined (n = {n} encoders)."
    lo, hi = (getattr(row, "ci_low", np.nan), getattr(row, "ci_high", np.nan))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        why = getattr(row, "ci_note", "") or f"n = {n} encoders"
        return f"{head} {name} {row.r:+.2f} ({why}): underpowered, not a finding."
    ci = f"95% CI [{lo:+.2f}, {hi:+.2f}], n = {n} encoders"
    mdr = getattr(row, "mdr", np.nan)
    mdr = detectable_r(n, str(getattr(row, "method", "pearson"))) if pd.isna(mdr) else float(mdr)
    weak = bool(row.underpowered) if not pd.isna(getattr(row, "underpowered", np.nan)) \
        else mdr > max(abs(row.r), STRONG_R)
    detect = f"with {n} encoders only |r| >= {mdr:.2f} is detected {100 * POWER:g}% of the time"
    if lo <= 0 <= hi:
        tail = f"; underpowered: {detect}." if weak else "."
        return f"{head} {name}: not distinguishable from no correlation (r {row.r:+.2f}, {ci}){tail}"
    sign = "negative" if hi < 0 else "positive"
    tail = f"; underpowered ({detect}): a rerun may not confirm it." if weak else "."
    return f"{head} {name} {sign}: r {row.r:+.2f} ({ci}){tail}"


def _mixing_noise(comp: pd.DataFrame, info: dict[str, Any]) -> str | None:
    """Whether the CLS-mixing comparisons of one curve (method, base, model) tell the quality change from seed
    noise: ``"distinguishable"``, ``"not distinguishable"``, ``"no noise"`` or None (no comparison)."""
    if comp is None or comp.empty:
        return None
    rows = comp[(comp["question"] == "CLS mixing")
                & comp["a"].astype(str).str.startswith(f"{info.get('method', '')} / {info.get('base', '')}@")]
    if "model" in info:
        rows = rows[rows["model"] == info["model"]]
    if rows.empty:
        return None
    if rows["distinguishable"].isna().all():
        return "no noise"
    return "distinguishable" if rows["distinguishable"].fillna(False).astype(bool).any() else "not distinguishable"


def _correlation_findings(corr: pd.DataFrame, quality: str) -> list[str]:
    if "study" in corr.columns and (corr["study"] == "this study").any():
        corr = corr[corr["study"] == "this study"]
    if "method" in corr.columns:
        kind = "pearson" if (corr["method"] == "pearson").any() else corr["method"].iloc[0]
        corr = corr[corr["method"] == kind]
    if "model" in corr.columns and (corr["model"] == "all").any():
        corr = corr[corr["model"] == "all"]
    kind = str(corr["method"].iloc[0]).capitalize() if "method" in corr.columns else "Pearson"
    out = []
    for tm in sorted(corr["train_method"].astype(str).unique(), key=lambda m: ("irepa" in m, m)):
        part = corr[corr["train_method"].astype(str) == tm]
        for x in (LP_TOP1, *SPATIAL_METRICS):
            for row in part[part["x"] == x].itertuples(index=False):
                model = f", {row.model}" if "model" in part.columns and part["model"].nunique() > 1 else ""
                out.append(_correlation_sentence(row, f"{tm} runs{model}", kind, quality))
    if out:
        out.append(f"Negative r: a higher metric goes with a lower (better) {quality}. Intervals are on r across "
                   f"encoders (Fisher z); none is given below {MIN_ENCODERS} encoders, and a sign is stated only when "
                   f"the interval excludes 0.")
    return out


def findings(compare_df: pd.DataFrame, corr_df: pd.DataFrame, clsmix_df: pd.DataFrame, quality: str,
             design: pd.DataFrame | None = None) -> list[str]:
    """Short plain-English sentences: what the study is (always first), how independently its encoders vary LP
    and the spatial metrics (``design``), the noise yardstick, each comparison with its interval and verdict, the
    correlations per training method, and the CLS-mixing directions. Each is worded to hold across reruns: a
    direction only where the interval excludes 0, "underpowered" where the comparison could not reliably detect
    it."""
    lower = f"lower {quality} is better"
    if quality == FID:
        out = [f"These are this study's own runs, not the paper's results ({lower})."]
    else:
        out = [f"This is a synthetic miniature (tiny encoders and SiT, quality {quality}), not the paper: it shows "
               f"how the pipeline's comparisons come out at this scale, not whether the paper's claims hold "
               f"({lower})."]
    sentence = design_sentence(design)
    if sentence:
        out.append(sentence)
    comp = compare_df if compare_df is not None else pd.DataFrame()
    if len(comp):
        sd, df = float(comp["noise_sd"].iloc[0]), int(comp["df"].iloc[0])
        if np.isfinite(sd):
            out.append(f"Seed noise: pooled seed-to-seed sd of {quality} {_g(sd)} ({df} degrees of freedom, over all "
                       f"cells with 2+ seeds); a difference whose interval excludes 0 is distinguishable from it. "
                       f"Each interval holds at {100 * float(comp['level'].iloc[0]):g}% on its own: among "
                       f"{len(comp)} comparisons, if no difference were real, about "
                       f"{(1 - float(comp['level'].iloc[0])) * len(comp):.2g} would look distinguishable by chance. "
                       "Seed noise is not all the variation: another machine (its CPU kernels round differently) "
                       "can shift every run (docs/analysis.md).")
        else:
            out.append("Only one seed per cell: there is no seed-noise estimate, so no difference below is tested "
                       "against noise.")
        multi = comp["model"].nunique() > 1
        for row in comp.itertuples(index=False):
            out.append(_comparison_sentence(row, quality, f" ({row.model})" if multi else ""))
    corr = corr_df if corr_df is not None else pd.DataFrame()
    if len(corr) and {"train_method", "x", "r", "n"} <= set(corr.columns):
        out += _correlation_findings(corr, quality)
    mix = clsmix_df if clsmix_df is not None else pd.DataFrame()
    if len(mix):
        keys = [c for c in ("model", "method", "base", "form") if c in mix.columns]
        for key, curve in mix.groupby(keys, sort=True):
            info = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
            curve = curve[curve["direction"] != ""]
            if curve.empty:
                continue
            noise = _mixing_noise(comp, info)
            parts, pattern = [], []
            for row in curve.itertuples(index=False):
                change = f"{_value(row.y, row.at_min)} to {_value(row.y, row.at_max)}"
                if row.y == quality:
                    if noise in ("not distinguishable", "no noise"):
                        why = "not distinguishable from seed noise" if noise != "no noise" else "no seed-noise estimate"
                        parts.append(f"{quality} {change} ({why})")
                        pattern.append(False)
                        continue
                    word = {"up": "higher (worse)", "down": "lower (better)", "flat": "unchanged"}[row.direction]
                    parts.append(f"{quality} {word} ({change})")
                    pattern.append(row.direction == "up")
                else:
                    parts.append(f"{_NAMES.get(row.y, row.y)} {row.direction} ({change})")
                    pattern.append(row.direction == ("up" if row.y == "lp_top1" else "down"))
            first = curve.iloc[0]
            verdict = ("the paper's pattern (LP up, spatial metrics down, generation worse)" if all(pattern)
                       else "not the paper's pattern in full (LP up, spatial metrics down, generation worse)")
            model = f" ({info['model']})" if "model" in info and mix["model"].nunique() > 1 else ""
            out.append(f"CLS mixing, {info.get('method', '')} with {info.get('base', '')}{model}, alpha "
                       f"{first['alpha_min']:g} to {first['alpha_max']:g}: {'; '.join(parts)}: {verdict}.")
    return out
