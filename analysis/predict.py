"""Predict an encoder's REPA FID from its spatial metrics: least squares on known encoders, with a prediction
interval, the encoder's rank among the known ones, and the fit's leave-one-out error. :func:`choose_fit_set`
decides which known encoders the fit uses (this study's rows or the paper's 27 points).

Two warnings guard a prediction: :meth:`FitSet.mismatches` (the new encoder was scored on another dataset,
resolution, weights or metric setting than the known encoders: its metrics are on another scale) and the
``extrapolated`` column of :func:`predict_fid` (a predictor outside the range the fit has seen).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.comparable import IncomparableRowsError, parse_select, select_comparable
from analysis.paper import load_paper_data
from results import FID

__all__ = ["FidRegression", "fit_fid_regression", "predict_fid", "DEFAULT_PREDICTORS", "FitSet", "choose_fit_set",
           "FIT_SETS", "MIN_KNOWN_ENCODERS", "PAPER_FIT_SET", "SETUP_KEYS", "PAPER_SETUP"]

#: LDS: the paper's headline spatial metric, needs no masks and is fully visible in the paper's Fig. 4.
DEFAULT_PREDICTORS = ("lds",)
#: Where the known encoders come from: the study's rows, the paper's points, or the rows when they suffice.
FIT_SETS = ("auto", "results", "paper")
#: ``auto`` fits on the study's rows only when every model size has at least this many scored encoders.
MIN_KNOWN_ENCODERS = 4
PAPER_FIT_SET = "the paper's 27 encoders (SiT-XL/2, REPA, 100K)"
#: How an encoder was scored (columns of the ``encoders`` table): a new encoder's metrics are comparable with the
#: known encoders' only when these agree (``srss_min_fraction`` only matters for an SRSS predictor).
SETUP_KEYS = ("dataset", "image_size", "weights", "far", "dmax", "near", "srss_min_fraction")
_SETUP_WORDS = {"dataset": "dataset", "image_size": "resolution (px)", "weights": "weights", "far": "far (LDS/SRSS)",
                "dmax": "dmax (CDS)", "near": "near (SRSS)", "srss_min_fraction": "minimum mask fraction"}
#: The paper's scoring setup: pretrained encoders on ImageNet at 256 px, the authors' metric settings.
PAPER_SETUP = {"dataset": "ImageNet", "image_size": 256, "weights": "pretrained", "far": 6, "dmax": 8, "near": 1,
               "srss_min_fraction": 0.25}


def _image_size(row: Mapping[str, Any]) -> Any:
    """The scored images' side: the ``image_size`` column, else the ``size=`` of the dataset id (rows written
    before the column existed)."""
    size = row.get("image_size")
    if size is not None and not (isinstance(size, float) and math.isnan(size)):
        return int(size)
    found = re.search(r"size=(\d+)", str(row.get("dataset_id") or ""))
    return int(found.group(1)) if found else None


def _same(a: Any, b: Any) -> bool:
    """Two setup values agree: numbers by value, dataset specs by resolved path where they are paths here."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        pass
    norm = [os.path.realpath(os.path.expanduser(str(v))) if os.path.exists(os.path.expanduser(str(v))) else str(v)
            for v in (a, b)]
    return norm[0] == norm[1]


@dataclass(frozen=True)
class FitSet:
    """The known encoders of a fit: one row per (model, encoder) with the metrics and ``quality`` (and, from a
    results store, the :data:`SETUP_KEYS` columns: how each was scored)."""

    known: pd.DataFrame
    quality: str
    source: str

    @property
    def from_paper(self) -> bool:
        return self.source == PAPER_FIT_SET

    @property
    def setup(self) -> dict[str, list[Any]]:
        """The distinct values of each :data:`SETUP_KEYS` entry among the known encoders (those recorded)."""
        if self.from_paper:
            return {k: [v] for k, v in PAPER_SETUP.items()}
        rows = self.known.to_dict(orient="records")
        out: dict[str, list[Any]] = {}
        for key in SETUP_KEYS:
            values = [_image_size(r) if key == "image_size" else r.get(key) for r in rows]
            values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
            if values:
                out[key] = sorted(set(values), key=str)
        return out

    def mismatches(self, row: Mapping[str, Any], predictors: Sequence[str] = DEFAULT_PREDICTORS) -> list[str]:
        """One line per way ``row`` (the new encoder's ``encoders`` row) was scored unlike the known encoders:
        dataset, resolution, weights, metric settings. Its metrics are then on another scale than the fit's."""
        out = []
        name = row.get("encoder", "the encoder")
        for key, known in self.setup.items():
            if key == "srss_min_fraction" and "srss" not in predictors:
                continue
            value = _image_size(row) if key == "image_size" else row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if key == "dataset" and self.from_paper:
                if not str(value).startswith("synthetic"):
                    continue  # any folder may be ImageNet: only synthetic data is surely not the paper's
            elif any(_same(value, k) for k in known):
                continue
            theirs = ", ".join(str(k) for k in known)
            out.append(f"{name} was scored with {_SETUP_WORDS[key]} {value}, the encoders the fit knows with "
                       f"{theirs}: its metrics are on another scale than the fit's"
                       + (", so this prediction only exercises the pipeline" if self.from_paper else ""))
        return out


def choose_fit_set(fit_on: str, generation: pd.DataFrame | None, encoders: pd.DataFrame | None, *,
                   method: str = "repa", select: Mapping[str, Any] | Sequence[str] | None = None,
                   exclude: str | None = None, results_source: str = "the results") -> FitSet:
    """The known encoders to fit on (``fit_on`` one of :data:`FIT_SETS`), ``exclude`` (the encoder being
    predicted) left out.

    ``results``/``auto``: the comparable ``method`` rows of ``generation`` (``select`` as in ``analyze``) joined
    with the ``encoders`` scores; ``auto`` falls back to the paper's points unless every model size has
    :data:`MIN_KNOWN_ENCODERS` scored encoders. ``results_source`` describes where the rows come from.
    """
    from analysis.report import encoder_table, study_points  # (imports matplotlib: only when needed)

    if fit_on not in FIT_SETS:
        raise ValueError(f"unknown fit set {fit_on!r}; use one of {', '.join(FIT_SETS)}")
    if fit_on != "paper":
        gen = generation if generation is not None else pd.DataFrame()
        enc = encoders if encoders is not None else pd.DataFrame()
        if not gen.empty and not enc.empty and "method" in gen.columns:
            sel_map = parse_select(select)
            gen = gen[gen["method"] == method]
            if not gen.empty:
                selection = select_comparable(gen, {k: v for k, v in sel_map.items()
                                                    if not k.startswith("encoders.")})
                table, _ = encoder_table(enc, sel_map, keep=(*SETUP_KEYS, "dataset_id"))
                points = study_points(selection.rows, selection.quality, table)
                points = points[points["encoder"] != exclude]
                if fit_on == "results" or points.groupby("model")["encoder"].nunique().min() >= MIN_KNOWN_ENCODERS:
                    return FitSet(points, selection.quality, results_source)
        if fit_on == "results":
            raise IncomparableRowsError(f"no {method} generation rows with encoder scores in {results_source}; "
                                        f"run the study first or use --fit-on paper")
    paper = load_paper_data("paper")
    return FitSet(paper.points[paper.points["encoder"] != exclude], FID, PAPER_FIT_SET)


@dataclass(frozen=True)
class FidRegression:
    """An ordinary least-squares fit ``y ~ 1 + x_1 + ... + x_k`` over known encoders."""

    x: tuple[str, ...]
    y: str
    encoders: tuple[str, ...]
    X: np.ndarray          # [n, k] predictors of the known encoders
    Y: np.ndarray          # [n] their quality values
    coef: np.ndarray       # [k + 1] intercept first

    @property
    def n(self) -> int:
        return len(self.Y)

    @property
    def dof(self) -> int:
        return self.n - len(self.coef)

    def _design(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(X)), X])

    @property
    def residual_std(self) -> float:
        resid = self.Y - self._design(self.X) @ self.coef
        return float(np.sqrt(resid @ resid / self.dof))

    @property
    def r(self) -> float:
        """Correlation between fitted and observed values (Pearson r with sign of the slope for one predictor)."""
        fitted = self._design(self.X) @ self.coef
        r = float(np.corrcoef(fitted, self.Y)[0, 1])
        return r * np.sign(self.coef[1]) if len(self.x) == 1 else r

    def predict(self, values: Mapping[str, float] | Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
        """Prediction and its ``level`` prediction interval (for a new encoder, so residual noise included)."""
        x0 = np.array([values[c] for c in self.x] if isinstance(values, Mapping) else values, dtype=float)
        if not np.all(np.isfinite(x0)):
            raise ValueError(f"cannot predict: the encoder's {dict(zip(self.x, x0))} has missing values")
        d = np.concatenate([[1.0], x0])
        A = self._design(self.X)
        pred = float(d @ self.coef)
        se = self.residual_std * float(np.sqrt(1.0 + d @ np.linalg.pinv(A.T @ A) @ d))
        t = float(stats.t.ppf(0.5 + level / 2.0, self.dof))
        return pred, pred - t * se, pred + t * se

    def loo_predictions(self) -> np.ndarray:
        """Each known encoder's value predicted by the fit on all the others (explicit refits)."""
        out = np.empty(self.n)
        for i in range(self.n):
            keep = np.arange(self.n) != i
            coef, *_ = np.linalg.lstsq(self._design(self.X[keep]), self.Y[keep], rcond=None)
            out[i] = self._design(self.X[i:i + 1])[0] @ coef
        return out

    def loo_errors(self) -> dict[str, float]:
        err = self.loo_predictions() - self.Y
        return {"loo_rmse": float(np.sqrt(np.mean(err ** 2))), "loo_mae": float(np.mean(np.abs(err))),
                "loo_max": float(np.max(np.abs(err)))}

    def rank(self, predicted: float) -> int:
        """1-based rank of ``predicted`` among the known encoders' values (1 = lowest FID = best)."""
        return int(1 + np.sum(self.Y < predicted))

    def extrapolation(self, values: Mapping[str, float] | Sequence[float]) -> list[str]:
        """The predictors whose value lies outside the range of the known encoders', as ``"lds 0.52 outside
        [0.33, 0.44]"``: there the fit has seen no encoder, and the line is an assumption, not data."""
        x0 = [values[c] for c in self.x] if isinstance(values, Mapping) else list(values)
        out = []
        for j, (name, v) in enumerate(zip(self.x, x0)):
            lo, hi = float(self.X[:, j].min()), float(self.X[:, j].max())
            if not lo <= float(v) <= hi:
                out.append(f"{name} {float(v):.4g} outside [{lo:.4g}, {hi:.4g}]")
        return out


def fit_fid_regression(known: pd.DataFrame, x: str | Sequence[str] = DEFAULT_PREDICTORS, y: str = FID,
                       ) -> FidRegression:
    """Fit ``y`` on ``x`` over the rows of ``known`` (one per encoder; rows with a missing value are dropped)."""
    xs = (x,) if isinstance(x, str) else tuple(x)
    missing = [c for c in (*xs, y) if c not in known.columns]
    if missing:
        raise KeyError(f"cannot fit: column(s) {missing} missing from the known encoders' table")
    data = known[["encoder", *xs, y]].copy()
    for c in (*xs, y):
        data[c] = pd.to_numeric(data[c], errors="coerce")
    data = data.dropna()
    if len(data) < len(xs) + 3:
        raise ValueError(f"cannot fit {y} on {list(xs)}: {len(data)} encoder(s) with values; need at least "
                         f"{len(xs) + 3} (run more encoders, or fit on the paper's points)")
    X, Y = data[list(xs)].to_numpy(float), data[y].to_numpy(float)
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(X)), X]), Y, rcond=None)
    return FidRegression(x=xs, y=y, encoders=tuple(data["encoder"].astype(str)), X=X, Y=Y, coef=coef)


def predict_fid(scores: Mapping[str, float], known: pd.DataFrame, *, x: str | Sequence[str] = DEFAULT_PREDICTORS,
                y: str = FID, by: str | None = "model", level: float = 0.95, encoder: str = "new") -> pd.DataFrame:
    """Predict ``y`` for an encoder with metric values ``scores``, one row per group of ``by`` (model size).

    ``known`` holds one row per (model, encoder) with the metrics and ``y`` (REPA rows of one comparable study).
    Columns: ``model, encoder, x, y, n_known, predicted, pi_low, pi_high, level, rank, r, loo_rmse, loo_mae,
    loo_max, extrapolated``; ``rank`` is among the known encoders plus this one (1 = best); ``extrapolated`` names
    the predictors outside the known encoders' range (:meth:`FidRegression.extrapolation`; empty when none).
    """
    groups = known.groupby(by, sort=True) if by and by in known.columns else [(None, known)]
    rows = []
    for key, part in groups:
        fit = fit_fid_regression(part, x, y)
        pred, lo, hi = fit.predict(scores, level)
        rows.append({"model": key, "encoder": encoder, "x": "+".join(fit.x), "y": y, "n_known": fit.n,
                     "predicted": pred, "pi_low": lo, "pi_high": hi, "level": level, "rank": fit.rank(pred),
                     "r": fit.r, **fit.loo_errors(), "extrapolated": "; ".join(fit.extrapolation(scores))})
    return pd.DataFrame(rows)
