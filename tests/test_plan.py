"""Sweep specs and plans: expansion counts, stable ids, rejection of bad specs before anything runs."""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from jobs.plan import plan, plan_table
from jobs.spec import SWEEPS_DIR, SpecError, load_spec


def _smoke_dict() -> dict:
    return yaml.safe_load((SWEEPS_DIR / "smoke.yaml").read_text())


def _write(tmp_path, data: dict, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_paper_plan_counts():
    spec = load_spec("paper")
    jobs = plan(spec)
    stages = [j.stage for j in jobs]
    assert stages.count("train") == 27 * 3 * 2
    assert stages.count("eval") == 27 * 3 * 2 * len(spec.eval_steps)
    assert stages.count("score") == 37
    assert stages.count("analyze") == 1
    assert {j.model for j in jobs if j.stage == "train"} == {"SiT-B/2", "SiT-L/2", "SiT-XL/2"}
    assert {j.method for j in jobs if j.stage == "train"} == {"repa", "irepa"}
    assert {j.steps for j in jobs if j.stage == "eval"} == {100_000, 400_000}


def test_smoke_plan_counts_and_dependencies():
    jobs = plan(load_spec("smoke"))
    by_id = {j.job_id: j for j in jobs}
    trains = [j for j in jobs if j.stage == "train"]
    evals = [j for j in jobs if j.stage == "eval"]
    assert len(trains) == 4 * 2 and len(evals) == 4 * 2 * 2
    assert all(by_id[e.depends_on[0]].stage == "train" for e in evals)
    assert all(by_id[e.depends_on[0]].encoder == e.encoder for e in evals)
    analyze = [j for j in jobs if j.stage == "analyze"]
    assert len(analyze) == 1 and set(analyze[0].depends_on) == {j.job_id for j in jobs if j.stage in ("eval", "score")}


def test_ids_are_stable_and_change_with_values_that_matter(tmp_path):
    a = [j.job_id for j in plan(load_spec("smoke"))]
    b = [j.job_id for j in plan(load_spec(_write(tmp_path, _smoke_dict())))]
    assert a == b and len(set(a)) == len(a)
    # resources do not change what a job computes: same ids
    c = [j.job_id for j in plan(load_spec("smoke", ["models.smoke.train.time_min=99"]))]
    assert c == a
    # training steps do: every train, eval and the analysis get new ids; scoring keeps its ids
    d = {j.job_id for j in plan(load_spec("smoke", ["steps=300"]))}
    changed = set(a) - d
    stages = {j.stage for j in plan(load_spec("smoke")) if j.job_id in changed}
    assert stages == {"train", "eval", "analyze"}


def test_plan_json_cli(tmp_path):
    from jobs.cli import cli

    result = CliRunner().invoke(cli, ["sweep", "plan", "smoke", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 8 + 16 + 4 + 1
    for row in rows:
        assert {"job_id", "stage", "encoder", "model", "method", "seed", "steps"} <= set(row)
        assert row["stage"] in ("train", "eval", "score", "analyze")
    assert rows == plan_table(plan(load_spec("smoke")))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["encoders"].append("dinov2-vit-bb"), "unknown encoder 'dinov2-vit-bb'"),
    (lambda d: d["encoders"].append("dinov2-vit-b@clsmix=1.5"), "within [0, 1]"),
    (lambda d: d["encoders"].append("dinov2-vit-b@blur=2"), "unknown variant"),
    (lambda d: d.update(learning_rate=1e-4), "learning_rate: unknown key"),
    (lambda d: d["models"]["smoke"]["train"].update(cpus=64), "cpus=64 exceeds"),
    (lambda d: d["models"]["smoke"]["eval"].update(gpus=32), "gpus=32 exceeds"),
    (lambda d: d["models"]["smoke"]["train"].update(nodes=2), "nodes=2 is impossible"),
    (lambda d: d["models"]["smoke"]["train"].update(mem_gb=-1), "greater than 0"),
    (lambda d: d.update(eval_steps=[100, 5000]), "outside 1..steps"),
    (lambda d: d.update(methods=["repa", "repa"]), "duplicate"),
    (lambda d: d.update(methods=["repa", "nonsense"]), "'nonsense' is not a method preset"),
    (lambda d: d.update(methods=["tiny"]), "'tiny' is not a method preset (irepa, irepa-e, irepa-released, "),
    (lambda d: d["fid"].update(extractor="inception"), "fid.reference is required"),
])
def test_bad_specs_are_rejected(tmp_path, mutate, message):
    data = _smoke_dict()
    mutate(data)
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, data))
    assert message in str(info.value)


def test_bad_spec_is_rejected_by_submit_before_anything_runs(tmp_path):
    from jobs.cli import cli

    data = _smoke_dict()
    data["encoders"].append("no-such-encoder")
    root = tmp_path / "root"
    result = CliRunner().invoke(cli, ["sweep", "submit", str(_write(tmp_path, data)), "--root", str(root)])
    assert result.exit_code != 0
    assert "unknown encoder 'no-such-encoder'" in result.output
    assert not root.exists()


def test_unknown_spec_name_lists_shipped_sweeps():
    with pytest.raises(SpecError, match="smoke"):
        load_spec("no-such-sweep")


def test_encoder_names_resolve_as_the_registry_does():
    """Both CLS-mix forms are accepted; CLS mixing on an entry without a CLS token is rejected before submitting."""
    spec = load_spec("smoke", ["encoders=[dinov2-vit-b, dinov2-vit-b@clsmix=0.25, dinov2-vit-b@clsmixc=0.2]"])
    assert spec.encoders[2] == "dinov2-vit-b@clsmixc=0.2"
    with pytest.raises(SpecError, match="siglip-vit-b has no CLS token"):
        load_spec("smoke", ["encoders=[siglip-vit-b@clsmix=0.5]"])


def test_slurm_spec_checks_node_limits():
    with pytest.raises(SpecError, match=r"models.SiT-XL/2.train: gpus=16 exceeds what one node offers \(8\)"):
        load_spec("paper", ["models.SiT-XL/2.train.gpus=16"])
