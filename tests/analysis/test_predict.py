"""analysis.predict: least squares, prediction interval, rank, leave-one-out error, the choice of the fit set."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.comparable import IncomparableRowsError
from analysis.predict import PAPER_FIT_SET, choose_fit_set, fit_fid_regression, predict_fid
from analysis.paper import load_paper_data


def _known(n=12, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    lds = rng.uniform(0.05, 0.45, n)
    return pd.DataFrame({"encoder": [f"e{i}" for i in range(n)], "model": "XL", "lds": lds,
                         "fid": 40 - 50 * lds + noise * rng.normal(size=n)})


def test_fit_matches_scipy_linregress():
    known = _known()
    fit = fit_fid_regression(known, "lds")
    lr = stats.linregress(known["lds"], known["fid"])
    assert fit.coef[0] == pytest.approx(lr.intercept) and fit.coef[1] == pytest.approx(lr.slope)
    assert fit.r == pytest.approx(lr.rvalue)


def test_loo_matches_hat_matrix_shortcut():
    known = _known()
    fit = fit_fid_regression(known, "lds")
    A = np.column_stack([np.ones(fit.n), fit.X])
    H = A @ np.linalg.inv(A.T @ A) @ A.T
    resid = fit.Y - H @ fit.Y
    loo_resid = resid / (1 - np.diag(H))  # PRESS residuals
    assert fit.loo_predictions() == pytest.approx(fit.Y - loo_resid)
    assert fit.loo_errors()["loo_rmse"] == pytest.approx(np.sqrt(np.mean(loo_resid ** 2)))


def test_prediction_interval_formula_and_coverage():
    known = _known(n=15)
    fit = fit_fid_regression(known, "lds")
    x0 = 0.3
    pred, lo, hi = fit.predict({"lds": x0})
    x = known["lds"].to_numpy()
    se = fit.residual_std * np.sqrt(1 + 1 / len(x) + (x0 - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
    t = stats.t.ppf(0.975, len(x) - 2)
    assert pred == pytest.approx(fit.coef[0] + fit.coef[1] * x0)
    assert (lo, hi) == pytest.approx((pred - t * se, pred + t * se))
    # coverage: new points from the same model fall inside the 95% interval about 95% of the time
    hits = 0
    for s in range(200):
        k = _known(n=15, seed=s)
        f = fit_fid_regression(k, "lds")
        y_new = 40 - 50 * x0 + 0.5 * np.random.default_rng(10_000 + s).normal()
        _, a, b = f.predict([x0])
        hits += a <= y_new <= b
    assert 0.88 <= hits / 200 <= 0.99


def test_rank_and_per_model_rows():
    known = pd.concat([_known().assign(model="XL"), _known(seed=1).assign(model="B", fid=lambda d: d.fid + 20)])
    out = predict_fid({"lds": 0.45}, known, x="lds", encoder="mine")
    assert list(out["model"]) == ["B", "XL"]
    assert (out["rank"] <= 2).all()  # highest LDS -> among the best
    low = predict_fid({"lds": 0.0}, known, x="lds")
    assert (low["rank"] == 13).all()  # lowest LDS -> worst of 12 known + 1
    assert {"predicted", "pi_low", "pi_high", "loo_rmse", "loo_mae", "n_known"} <= set(out.columns)


def test_paper_prediction_for_a_dinov2_like_encoder():
    points = load_paper_data("paper").points
    out = predict_fid({"lds": 0.415}, points, x="lds").iloc[0]
    assert out["n_known"] == 27 and out["r"] == pytest.approx(-0.852, abs=5e-4)
    assert out["pi_low"] < 19.34 < out["pi_high"]
    assert 2 < out["loo_rmse"] < 5


def test_errors():
    with pytest.raises(ValueError, match="need at least"):
        fit_fid_regression(_known(n=3), "lds")
    with pytest.raises(KeyError, match="missing"):
        fit_fid_regression(_known(), "rmsc")
    fit = fit_fid_regression(_known(), "lds")
    with pytest.raises(ValueError, match="missing values"):
        fit.predict({"lds": float("nan")})


def _study_rows(encoders):
    gen = pd.DataFrame([{"job_id": f"{e}-{m}", "encoder": e, "model": "B", "method": m, "seed": 0, "step": 100,
                         "n_samples": 64, "fd_synthetic": 10.0 + i} for i, e in enumerate(encoders)
                        for m in ("repa", "irepa")])
    enc = pd.DataFrame([{"encoder": e, "lds": 0.1 * i, "lp_top1": 0.5} for i, e in enumerate(encoders)])
    return gen, enc


def test_fit_set_choice():
    few, many = _study_rows(["a", "b", "c"]), _study_rows(["a", "b", "c", "d", "e"])
    # auto: the study's rows once every model size has 4 scored encoders (the predicted one left out)
    fit = choose_fit_set("auto", *many, exclude="e", results_source="my store")
    assert fit.source == "my store" and fit.quality == "fd_synthetic" and not fit.from_paper
    assert sorted(fit.known["encoder"]) == ["a", "b", "c", "d"] and set(fit.known["method"]) == {"repa"}
    assert set(choose_fit_set("auto", *many, method="irepa").known["method"]) == {"irepa"}
    # too few encoders, or no rows: the paper's 27 points, less the predicted encoder
    for rows in (few, (None, None), many[:1] + (pd.DataFrame(),)):
        fit = choose_fit_set("auto", *rows, exclude="dinov2-vit-b")
        assert fit.from_paper and fit.source == PAPER_FIT_SET and fit.quality == "fid" and len(fit.known) == 26
    # results: the rows however few; none at all is an error that says what to do
    assert len(choose_fit_set("results", *few).known) == 3
    with pytest.raises(IncomparableRowsError, match="--fit-on paper"):
        choose_fit_set("results", None, None)
    assert choose_fit_set("paper", *many).from_paper
    with pytest.raises(ValueError, match="unknown fit set"):
        choose_fit_set("both", None, None)


def test_mismatched_scoring_setup_warns_one_line_each(tmp_path):
    paper = choose_fit_set("paper", None, None)
    ok = {"encoder": "mine", "dataset": "/data/imagenet", "image_size": 256, "weights": "pretrained", "far": 6,
          "dmax": 8, "near": 1, "srss_min_fraction": 0.0}
    assert paper.mismatches(ok) == []  # srss_min_fraction only matters for an SRSS predictor
    assert "minimum mask fraction 0.0" in paper.mismatches(ok, ["srss"])[0]
    lines = paper.mismatches({**ok, "dataset": "synthetic:n=16", "weights": "tiny"})
    assert len(lines) == 2 and all("only exercises the pipeline" in line for line in lines)
    assert lines[0].startswith("mine was scored with dataset synthetic:n=16, the encoders the fit knows with ImageNet")

    gen, enc = _study_rows(list("abcd"))
    here = tmp_path / "imagenet"
    here.mkdir()
    enc = enc.assign(dataset=str(here), weights="pretrained", far=6, dataset_id=f"folder:{here}:val:size=256")
    fit = choose_fit_set("results", gen, enc)
    assert fit.setup == {"dataset": [str(here)], "image_size": [256], "weights": ["pretrained"], "far": [6]}
    same = {"encoder": "new", "dataset": str(tmp_path / "." / "imagenet"), "image_size": 256, "weights": "pretrained",
            "far": 6}
    assert fit.mismatches(same) == []  # the same folder spelled another way
    other = fit.mismatches({**same, "dataset": "/elsewhere", "image_size": 224, "weights": "tiny", "far": 4})
    assert [line.split(" was scored with ")[1].split(",")[0] for line in other] == [
        "dataset /elsewhere", "resolution (px) 224", "weights tiny", "far (LDS/SRSS) 4"]
    assert all("on another scale than the fit's" in line and "pipeline" not in line for line in other)
    # rows written before image_size existed: the size comes from the dataset id
    assert fit.mismatches({**same, "image_size": None, "dataset_id": "synthetic-v1:n=8,size=32,classes=3:val"})


def test_extrapolation_is_flagged():
    known = _known()  # lds in [0.05, 0.45]
    fit = fit_fid_regression(known, "lds")
    lo, hi = known["lds"].min(), known["lds"].max()
    assert fit.extrapolation({"lds": (lo + hi) / 2}) == []
    assert fit.extrapolation({"lds": 0.9}) == [f"lds 0.9 outside [{lo:.4g}, {hi:.4g}]"]
    out = predict_fid({"lds": 0.9}, known, x="lds")
    assert out["extrapolated"].iloc[0].startswith("lds 0.9 outside")
    assert predict_fid({"lds": 0.3}, known, x="lds")["extrapolated"].iloc[0] == ""
