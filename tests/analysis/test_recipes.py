"""REPA vs iREPA per training recipe (REPA-E, MeanFlow, ...): method pairing and the per-recipe figures."""
import re

import pandas as pd

from analysis.comparisons import repa_irepa_pairs
from analysis.paper import load_paper_data
from analysis.report import analyze, paper_recipe_rows


def test_repa_irepa_pairs_match_irepa_methods_to_their_repa_counterpart():
    assert repa_irepa_pairs(["repa", "irepa", "repa-e", "irepa-e", "irepa-released", "jit"]) == [
        ("repa", "irepa"), ("repa-e", "irepa-e")]
    assert repa_irepa_pairs(["repa-e"]) == [] and repa_irepa_pairs([]) == []


def test_paper_recipes_are_repa_e_and_meanflow():
    rows = {recipe: (df, tables) for recipe, df, tables in paper_recipe_rows(load_paper_data("paper"))}
    assert set(rows) == {"repa-e", "meanflow"}
    repae, tables = rows["repa-e"]
    assert tables == "3a" and set(repae["method"]) == {"repa-e", "irepa-e"} and len(repae) == 8
    assert set(repae["model"]) == {"SiT-XL/2 @ 100K"}
    assert (repae.pivot_table(index="encoder", columns="method", values="fid").eval("`irepa-e` < `repa-e`")).all()
    assert rows["meanflow"][0]["model"].str.contains("meanflow-1nfe").any()  # one facet per sampler


def test_study_rows_get_one_figure_per_recipe(tmp_path):
    gen = []
    for i, enc in enumerate(["tiny-a", "tiny-b", "tiny-c"]):
        for j, method in enumerate(["repa", "irepa", "repa-e", "irepa-e"]):
            gen.append({"job_id": f"{enc}-{method}", "encoder": enc, "model": "smoke", "method": method, "seed": 0,
                        "step": 100, "n_samples": 64, "reference": "r", "extractor": "synthetic",
                        "sampler_mode": "sde", "sampler_steps": 20, "cfg_scale": 1.0, "fd_synthetic": 30.0 - i - j})
    enc = pd.DataFrame([{"job_id": f"s-{e}", "encoder": e, "dataset": "synthetic", "lds": 0.1 * k}
                        for k, e in enumerate(["tiny-a", "tiny-b", "tiny-c"])])
    out = analyze(pd.DataFrame(gen), enc, tmp_path / "rep", n_boot=0)
    assert (out / "figures" / "methods_repa.png").is_file() and (out / "figures" / "methods_repa-e.png").is_file()
    page = (out / "report.html").read_text()
    assert "repa-e and irepa-e per encoder" in page
    assert len(re.findall(r"data:image/png;base64,", page)) == 4 + 3  # 4 correlation panels, methods, 2 recipes
