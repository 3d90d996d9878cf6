"""The report's figures (matplotlib Agg backend, seaborn styling); each function writes one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.display import for_display  # noqa: E402

__all__ = ["correlation_panel", "method_comparison", "convergence", "against_alpha", "AXIS_LABELS"]

AXIS_LABELS = {"lp_top1": "Linear-probe top-1 (%)", "lds": "LDS", "cds": "CDS", "srss": "SRSS", "rmsc": "RMSC",
               "fid": "gFID", "fd_synthetic": "FD (synthetic extractor)"}
DPI = 110


def _label(col: str) -> str:
    return AXIS_LABELS.get(col, col)


def _save(fig: plt.Figure, path: Path, title: str = "") -> Path:
    """Title, lay out, write and close a figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _scatter_with_fit(ax: plt.Axes, data: pd.DataFrame, x: str, y: str, *, color, label: str | None,
                      annotate: bool, marker: str = "o", r_pos: tuple[float, float] = (0.97, 0.95)) -> None:
    d = data[[x, y, "encoder"]].dropna(subset=[x, y])
    if d.empty:
        return
    ax.scatter(d[x], d[y], s=36, color=color, edgecolor="white", linewidth=0.6, marker=marker, label=label, zorder=3)
    if len(d) >= 3 and d[x].nunique() > 1 and d[y].nunique() > 1:
        slope, intercept = np.polyfit(d[x], d[y], 1)
        xs = np.linspace(d[x].min(), d[x].max(), 50)
        ax.plot(xs, slope * xs + intercept, color=color, linewidth=1.3, alpha=0.8, zorder=2)
        r = float(np.corrcoef(d[x], d[y])[0, 1])
        ax.text(*r_pos, f"r = {r:+.3f}" + (f" ({label})" if label else ""), transform=ax.transAxes, ha="right",
                va="top", fontsize=9, color=color, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
    if annotate:
        for _, row in d.iterrows():
            name = str(row["encoder"])
            if name.startswith("unlabelled-"):  # the paper's unplaced points: unlabelled, to keep the panel legible
                continue
            ax.annotate(name, (row[x], row[y]), xytext=(3, 3), textcoords="offset points", fontsize=6.5,
                        color="0.25", zorder=4)


def correlation_panel(points: pd.DataFrame, x_cols: Sequence[str], y: str, path: Path, *, title: str = "",
                      hue: str | None = None, overlay: pd.DataFrame | None = None, overlay_label: str = "paper",
                      annotate: bool = True) -> Path:
    """The paper's Figure-1/Fig.-4 style panel: ``y`` against each of ``x_cols``, one point per encoder.

    ``points`` has one row per encoder (``encoder`` column). With ``hue`` (e.g. the model size) each group gets its
    own colour, fit line and r. ``overlay`` (e.g. the paper's points, same ``y``) is drawn in grey beneath.
    """
    points = for_display(points)  # the axes show lp_top1 in percent
    overlay = for_display(overlay) if overlay is not None else None
    x_cols = [c for c in x_cols if c in points.columns and points[c].notna().any()]
    if not x_cols:
        raise ValueError(f"correlation_panel: none of the metric columns has values (columns: {list(points.columns)})")
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(x_cols), figsize=(3.3 * len(x_cols), 3.2), squeeze=False, sharey=True)
    groups = list(points.groupby(hue, sort=True)) if hue and hue in points.columns else [(None, points)]
    palette = sns.color_palette("deep", max(3, len(groups)))
    for ax, x in zip(axes[0], x_cols):
        if overlay is not None and x in overlay.columns:
            _scatter_with_fit(ax, overlay, x, y, color="0.6", label=overlay_label, annotate=False, marker="s",
                              r_pos=(0.97, 0.12))
        for i, (key, part) in enumerate(groups):
            _scatter_with_fit(ax, part, x, y, color=palette[i], label=None if len(groups) == 1 else str(key),
                              annotate=annotate, r_pos=(0.97, 0.95 - 0.09 * i))
        ax.set_xlabel(_label(x))
    axes[0][0].set_ylabel(_label(y))
    return _save(fig, path, title)


def method_comparison(df: pd.DataFrame, y: str, path: Path, *, title: str = "") -> Path:
    """Quality per encoder, REPA next to iREPA (``method`` column, dodged markers), one facet per model size."""
    sns.set_theme(style="whitegrid", context="paper")
    models = sorted(df["model"].astype(str).unique())
    n_enc = max(df.groupby("model")["encoder"].nunique().max(), 1)
    fig, axes = plt.subplots(len(models), 1, figsize=(max(4.5, 0.42 * n_enc + 2.0), 3.0 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        part = df[df["model"].astype(str) == model]
        # points, not bars: FIDs of close encoders differ by little compared with their size, and a bar's
        # zero baseline would hide exactly the differences this figure is for
        order = sorted(part["method"].astype(str).unique(), key=lambda m: ("irepa" in m, m != "repa", m))
        sns.pointplot(data=part, x="encoder", y=y, hue="method", hue_order=order, ax=ax, errorbar=None, palette="deep",
                      dodge=0.3, linestyle="none", markers=["o", "D", "s", "^"][:part["method"].nunique()])
        ax.set_title(str(model), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel(_label(y))
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        for lbl in ax.get_xticklabels():
            lbl.set_horizontalalignment("right")
        ax.legend(title="method", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path, title)


def convergence(df: pd.DataFrame, y: str, path: Path, *, title: str = "") -> Path:
    """Quality against training step, one line per encoder (style: method), one facet per model size."""
    sns.set_theme(style="whitegrid", context="paper")
    models = sorted(df["model"].astype(str).unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.3), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = df[df["model"].astype(str) == model].sort_values("step")
        sns.lineplot(data=part, x="step", y=y, hue="encoder", style="method", markers=True, dashes=True, ax=ax,
                     errorbar=None)
        ax.set_title(str(model), fontsize=9)
        ax.set_ylabel(_label(y))
        ax.set_xlabel("training step")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.legend(fontsize=6.5, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path, title)


def against_alpha(df: pd.DataFrame, ys: Sequence[str], path: Path, *, title: str = "") -> Path:
    """One panel per column of ``ys`` (quality, LP accuracy, spatial metrics) against the CLS-mixing weight
    ``alpha``; one line per (model, method, base encoder, form)."""
    sns.set_theme(style="whitegrid", context="paper")
    df = for_display(df)  # the axes show lp_top1 in percent
    ys = [y for y in ys if y in df.columns and pd.to_numeric(df[y], errors="coerce").notna().any()]
    fig, axes = plt.subplots(1, max(len(ys), 1), figsize=(3.2 * max(len(ys), 1), 3.1), squeeze=False)
    curve = df.assign(curve=[f"{m} {me} {b}@{f}" for m, me, b, f in zip(df["model"], df["method"], df["base"],
                                                                        df["form"])])
    for ax, y in zip(axes[0], ys):
        sns.lineplot(data=curve, x="alpha", y=y, hue="curve", marker="o", ax=ax, errorbar=None)
        ax.set_xlabel("CLS mixing weight alpha")
        ax.set_ylabel(_label(y))
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        legend = ax.get_legend()
        if legend is not None and ax is not axes[0][-1]:
            legend.remove()
    if ys:
        axes[0][-1].legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path, title)
