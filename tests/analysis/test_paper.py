"""The paper's published tables: integrity, recorded sources, and the published r values they reproduce."""
import re

import numpy as np
import pandas as pd
import pytest

from analysis import correlate
from analysis.paper import SOURCE_TAGS, load_paper_data
from results import ENCODER_METRICS as METRICS

PUBLISHED = {"lp_top1": -0.260, "lds": -0.852, "cds": -0.847, "srss": -0.885, "rmsc": -0.888}


@pytest.fixture(scope="module")
def paper():
    return load_paper_data("paper")


def test_27_points_with_every_value(paper):
    p = paper.points
    assert len(p) == 27 and list(p["point"]) == list(range(1, 28))
    assert p["encoder"].is_unique
    for col in ("fid", *METRICS):
        assert p[col].notna().all(), col
    assert (p["model"] == "SiT-XL/2").all() and (p["method"] == "repa").all() and (p["step"] == 100_000).all()
    # ranges stated for the extracted points (LP top-1 as a fraction, as in the results tables)
    assert p["lp_top1"].min() == pytest.approx(0.518) and p["lp_top1"].max() == pytest.approx(0.852)
    assert p["fid"].min() == pytest.approx(19.34) and p["fid"].max() == pytest.approx(41.51)
    assert p["lp_top1"].mean() == pytest.approx(0.708, abs=0.0005)


def test_every_value_has_a_known_source_tag(paper):
    p = paper.points
    pattern = re.compile(r"^(%s)(:\d+)?$" % "|".join(map(re.escape, SOURCE_TAGS)))
    for col in ("fid", *METRICS):
        tags = p[f"{col}_source"]
        assert tags.map(lambda t: bool(pattern.match(str(t)))).all(), (col, set(tags))
    occluded = p.melt(id_vars="point", value_vars=[f"{m}_source" for m in METRICS])
    occluded = occluded[occluded["value"].str.startswith("fig4-occluded")]
    assert len(occluded) == 8
    # an occluded cell repeats the occluding point's value
    for _, row in occluded.iterrows():
        metric = row["variable"].removesuffix("_source")
        k = int(row["value"].split(":")[1])
        assert p.loc[p.point == row["point"], metric].item() == p.loc[p.point == k, metric].item()


def test_labels_stated_and_unlabelled(paper):
    p = paper.points.set_index("point")
    assert p.loc[1, "encoder"] == "dinov2-vit-b" and p.loc[25, "encoder"] == "pe-vit-g"
    assert p.loc[25, "lp_top1"] == 0.828 and p.loc[10, "lp_top1"] == 0.531 and p.loc[21, "lp_top1"] == 0.76
    assert set(p["label_status"]) == {"stated", "probable", "pair", "unknown"}
    unknown = p[p["label_status"] == "unknown"]
    assert all(e == f"unlabelled-{i}" for i, e in unknown["encoder"].items())
    assert (p["label_status"] == "stated").sum() == 5


def test_reproduces_published_r_to_three_decimals(paper):
    table = correlate(paper.points, list(PUBLISHED), "fid", n_boot=0).set_index("x")
    for metric, r in PUBLISHED.items():
        assert table.loc[metric, "r"] == pytest.approx(r, abs=5e-4), metric
        assert table.loc[metric, "n"] == 27
    assert paper.published_r()["lds"] == -0.852


def test_visible_markers_alone_are_within_0_005(paper):
    p = paper.points
    for metric in ("lds", "cds", "srss", "rmsc"):
        visible = p[~p[f"{metric}_source"].str.startswith("fig4-occluded")]
        r = np.corrcoef(visible["fid"], visible[metric])[0, 1]
        assert abs(r - PUBLISHED[metric]) < 0.005, (metric, r)
        assert len(visible) in (24, 26)


def test_without_outliers_lp_correlation_turns_positive(paper):
    # App. M.3: without MoCov3-L and MAE-L (points 26, 27), LP r is positive and |r| < 0.38, spatial |r| > 0.85
    p = paper.points[~paper.points["point"].isin([26, 27])]
    t = correlate(p, ["lp_top1", "lds"], n_boot=0).set_index("x")
    assert 0 < t.loc["lp_top1", "r"] < 0.38
    assert t.loc["lds", "r"] < -0.85


def test_repa_vs_irepa_tables(paper):
    t = paper.tables
    assert set(t["table"]) == {"1a", "1b", "1c", "2", "3a", "3b", "4", "5", "6", "7", "8", "9", "10"}
    assert t["source"].str.startswith("paper Table").all()
    assert (t["fid"].notna() | t["cmmd"].notna()).all()

    def cell(table, enc, method, step=100_000, cfg=1.0, ablation=None, model="SiT-XL/2"):
        sel = t[(t.table == table) & (t.encoder == enc) & (t.method == method) & (t.step == step)
                & (t.cfg_scale == cfg) & (t.model == model)]
        if ablation is not None:
            sel = sel[sel.ablation.fillna("") == ablation]
        assert len(sel) == 1, (table, enc, method)
        return sel.iloc[0]

    assert cell("2", "pe-vit-g", "irepa", ablation="")["fid"] == 18.19
    assert cell("2", "pe-vit-g", "repa")["fid"] == 32.35
    assert cell("1b", "dinov2-vit-b", "irepa")["fid"] == 16.96
    assert cell("5", "webssl-vit-dino1b", "irepa", step=400_000, model="SiT-B/2")["fid"] == 19.74
    assert cell("6", "pe-vit-g", "repa", step=400_000, model="SiT-L/2")["fid"] == 12.6
    assert cell("7", "dinov3-vit-b16", "irepa", step=400_000, cfg=2.0)["is"] == 272.41
    # iREPA beats REPA in every paired REPA-recipe cell of Tables 1, 4-7 and 9 (DINO-B at SiT-B 400K too)
    t = t.assign(ablation=t["ablation"].fillna(""))
    pairs = t[t.table.isin(["1a", "1b", "1c", "4", "5", "6", "7", "9"])].pivot_table(
        index=["table", "model", "encoder", "step", "cfg_scale", "ablation"], columns="method", values="fid",
        dropna=False).dropna()
    assert len(pairs) > 40
    assert (pairs["irepa"] < pairs["repa"]).all()


def test_unknown_paper_is_a_clear_error():
    with pytest.raises(ValueError, match="available: paper"):
        load_paper_data("nope")


def test_paper_as_results_tables(paper):
    gen, enc = paper.generation, paper.encoders
    assert len(gen) == len(enc) == 27
    merged = pd.merge(gen, enc, on="encoder")
    assert len(merged) == 27 and merged["fid"].notna().all()
