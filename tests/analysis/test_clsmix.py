"""The CLS-mixing curves of the report: which points form a curve, and the figure + table `analyze` writes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.clsmix import clsmix_points
from analysis.report import analyze


def _points():
    rows = []
    for enc, lp, lds, fid in [("dinov2-vit-b", 0.707, 0.40, 19.2), ("dinov2-vit-b@clsmix=0.25", 0.74, 0.30, 22.0),
                              ("dinov2-vit-b@clsmix=0.5", 0.785, 0.20, 25.4),
                              ("dinov2-vit-b@clsmixc=0.1", 0.72, 0.35, 20.0), ("pe-vit-b", 0.60, 0.30, 22.5)]:
        rows.append({"model": "SiT-XL/2", "method": "repa", "encoder": enc, "fid": fid, "lp_top1": lp, "lds": lds})
    return pd.DataFrame(rows)


def test_clsmix_points_form_one_curve_per_form_with_the_plain_encoder_at_zero():
    pts = clsmix_points(_points())
    paper = pts[pts["form"] == "clsmix"]
    assert list(paper["alpha"]) == [0.0, 0.25, 0.5] and set(paper["base"]) == {"dinov2-vit-b"}
    assert list(paper["fid"]) == [19.2, 22.0, 25.4]
    convex = pts[pts["form"] == "clsmixc"]
    assert list(convex["alpha"]) == [0.0, 0.1]  # the plain encoder is both curves' alpha = 0
    assert "pe-vit-b" not in set(pts["encoder"])
    assert clsmix_points(_points().iloc[[0, 4]]).empty  # no variant: no curve


def test_analyze_draws_metrics_against_alpha(tmp_path):
    rng = np.random.default_rng(0)
    gen, enc = [], []
    for i, alpha in enumerate([0.0, 0.1, 0.2, 0.3]):
        name = "dinov2-vit-b" if alpha == 0 else f"dinov2-vit-b@clsmix={alpha}"
        enc.append({"encoder": name, "dataset": "d", "lp_top1": 0.70 + alpha / 5, "lds": 0.4 - alpha / 2,
                    "cds": 0.05, "srss": 0.5 - alpha, "rmsc": 0.8 - alpha})
        gen.append({"job_id": f"e{i}", "encoder": name, "model": "SiT-XL/2", "method": "repa", "seed": 0,
                    "step": 100_000, "n_samples": 50_000, "reference": "adm", "extractor": "inception",
                    "sampler_mode": "sde", "sampler_steps": 250, "cfg_scale": 1.0, "protocol": "adm-50k-sde250",
                    "fid": 19.2 + 12 * alpha + rng.normal(scale=0.1)})
    out = analyze(pd.DataFrame(gen), pd.DataFrame(enc), tmp_path / "rep", n_boot=50)
    table = pd.read_csv(out / "clsmix.csv")
    assert list(table["alpha"]) == [0.0, 0.1, 0.2, 0.3]
    assert np.allclose(table["lp_top1"], [0.70, 0.72, 0.74, 0.76])  # tables hold fractions
    assert table["fid"].is_monotonic_increasing
    assert (out / "figures" / "clsmix.png").stat().st_size > 1000
    assert "CLS-mixing experiment" in (out / "report.html").read_text()
