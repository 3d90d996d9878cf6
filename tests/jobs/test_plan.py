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
    """The paper's study as it ran it: the 27 x 3 sizes x 2 methods to 100K, 400K only for Tables 4-9's subsets
    (counted ungrouped: as shipped, REPA and iREPA of a (model, encoder, seed, target) are one job, below)."""
    spec = load_spec("paper", ["executor.group_methods=false"])
    jobs = plan(spec)
    trains = [j for j in jobs if j.stage == "train"]
    study = [j for j in trains if j.encoder in spec.encoders]
    assert len(study) == 27 * 3 * 2 and len(trains) == 27 * 3 * 2 + 2  # + SAM2-S of Table 9 (not one of the 27)
    assert {j.model for j in trains} == {"SiT-B/2", "SiT-L/2", "SiT-XL/2"}
    assert {j.method for j in trains} == {"repa", "irepa"}
    long = {(j.model, j.encoder) for j in trains if j.steps == 400_000}
    assert all(j.steps in (100_000, 400_000) for j in trains)
    per_model = {m: {e for mm, e in long if mm == m} for m in ("SiT-B/2", "SiT-L/2", "SiT-XL/2")}
    assert len(per_model["SiT-B/2"]) == 16 and len(per_model["SiT-L/2"]) == 8  # Tables 5 and 6
    assert per_model["SiT-XL/2"] == {"dinov2-vit-b", "dinov3-vit-b16", "webssl-vit-dino1b", "pe-vit-g", "clip-vit-l",
                                     "sam2-vit-s"}  # Tables 4, 8 and 9
    assert sum(j.steps == 400_000 for j in trains) == 2 * (16 + 8 + 6)
    evals = [j for j in jobs if j.stage == "eval"]
    assert sum(j.steps == 100_000 for j in evals) == len(trains)  # every run at 100K ...
    assert sum(j.steps == 400_000 for j in evals) == 2 * (16 + 8 + 6)  # ... and 400K where the paper has it
    assert sum(j.stage == "score" for j in jobs) == 37 and sum(j.stage == "analyze" for j in jobs) == 1
    # as shipped: one job per REPA/iREPA pair, whose members are the runs above; evaluations keep their ids
    grouped = plan(load_spec("paper"))
    groups = [j for j in grouped if j.stage == "train"]
    assert len(groups) == len(trains) // 2 and all(len(g.params.runs) == 2 for g in groups)
    assert {m for g in groups for m in g.params.runs} == {j.job_id for j in trains}
    assert {j.job_id for j in grouped if j.stage != "train"} == {j.job_id for j in jobs if j.stage != "train"}


def _run_ids(jobs) -> set[str]:
    """The training runs of a plan: its train jobs' ids, a group's member ids for a grouped job."""
    return {m for j in jobs if j.stage == "train" for m in (getattr(j.params, "runs", None) or [j.job_id])}


@pytest.mark.parametrize("name, counts", [
    ("depth", {"train": 6, "eval": 6, "analyze": 1}),
    ("ablation", {"train": 16, "eval": 16, "analyze": 1}),
    ("clsmix", {"train": 6, "eval": 6, "score": 6, "analyze": 1}),
])
def test_experiment_specs_plan(name, counts):
    from collections import Counter

    spec = load_spec(name)
    jobs = plan(spec)
    assert Counter(j.stage for j in jobs) == counts
    assert spec.fid.protocol_name == "adm-50k-sde250"
    assert {j.steps for j in jobs if j.stage in ("train", "eval")} == {100_000}


def test_experiment_specs_share_the_papers_runs():
    """Runs with the same identity are the same jobs: Table 2's REPA/iREPA runs and the alpha = 0 CLS-mix run are
    the paper's SiT-XL/2 runs, so a shared results root trains them once."""
    paper = _run_ids(plan(load_spec("paper")))
    ablation = [j for j in plan(load_spec("ablation")) if j.stage == "train"]
    assert {j.method for j in ablation if j.job_id in paper} == {"repa", "irepa"}
    assert sum(j.job_id in paper for j in ablation) == 8
    clsmix = [j for j in plan(load_spec("clsmix")) if j.stage == "train" and j.job_id in paper]
    assert [j.encoder for j in clsmix] == ["dinov2-vit-b"]
    sit = {j.model: j.params.config() for j in plan(load_spec("depth")) if j.stage == "train" and j.method == "irepa"}
    assert {m: (c.model.size, c.method.depth, c.method.projector) for m, c in sit.items()} == {
        f"SiT-B/2-depth{k}": ("SiT-B/2", k, "conv") for k in (4, 6, 8)}


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
    # a value that shapes the trajectory does: every train, eval and the analysis get new ids; scoring keeps its ids
    d = {j.job_id for j in plan(load_spec("smoke", ["train_overrides=[batch_size=8]"]))}
    changed = set(a) - d
    stages = {j.stage for j in plan(load_spec("smoke")) if j.job_id in changed}
    assert stages == {"train", "eval", "analyze"}


def test_a_runs_length_is_not_its_identity():
    """Raising steps keeps every train id (the run resumes), keeps the ids of the evaluations both plans share, and
    only adds evaluations (and so a new analysis); each train job carries its target and kept steps."""
    short = plan(load_spec("smoke", ["steps=100", "eval_steps=[100]"]))
    long = plan(load_spec("smoke", ["steps=200", "eval_steps=[100, 200]"]))
    trains = lambda jobs: {(j.encoder, j.method): j for j in jobs if j.stage == "train"}  # noqa: E731
    assert {k: j.job_id for k, j in trains(short).items()} == {k: j.job_id for k, j in trains(long).items()}
    assert {j.steps for j in trains(short).values()} == {100} and {j.steps for j in trains(long).values()} == {200}
    assert all(j.params.ckpt_keep == [100, 200] for j in trains(long).values())
    ev = lambda jobs, s: {j.job_id for j in jobs if j.stage == "eval" and j.steps == s}  # noqa: E731
    assert ev(short, 100) == ev(long, 100) and len(ev(long, 200)) == 8 and not ev(short, 200)
    analyze = lambda jobs: [j.job_id for j in jobs if j.stage == "analyze"]  # noqa: E731
    assert analyze(short) != analyze(long)


def test_extend_raises_targets_of_selected_runs_only(tmp_path):
    data = _smoke_dict()
    data.update(steps=100, eval_steps=[100], extend=[
        {"note": "longer", "encoders": ["mae-vit-l"], "methods": ["irepa"], "steps": 300, "eval_steps": [300]},
        {"encoders": ["mae-vit-l"], "steps": 200, "eval_steps": [200]},
        {"note": "adds runs", "encoders": ["pe-vit-b"], "methods": ["repa"], "steps": 200, "eval_steps": [200]},
    ])
    jobs = plan(load_spec(_write(tmp_path, data)))
    trains = {(j.encoder, j.method): j for j in jobs if j.stage == "train"}
    assert len(trains) == 4 * 2 + 1  # one job per run, whatever the number of entries selecting it
    assert trains[("mae-vit-l", "irepa")].steps == 300 and trains[("mae-vit-l", "repa")].steps == 200
    assert trains[("pe-vit-b", "repa")].steps == 200 and trains[("dinov2-vit-b", "irepa")].steps == 100
    evals = {}
    for j in jobs:
        if j.stage == "eval":
            evals.setdefault((j.encoder, j.method), []).append(j.steps)
    assert evals[("mae-vit-l", "irepa")] == [100, 200, 300] == trains[("mae-vit-l", "irepa")].params.ckpt_keep
    assert evals[("pe-vit-b", "repa")] == [100, 200] and evals[("clip-vit-l", "repa")] == [100]
    # the same runs without the entries keep their ids: extending a study never restarts its runs
    base = {j.job_id for j in plan(load_spec("smoke", ["steps=100", "eval_steps=[100]"])) if j.stage != "analyze"}
    assert base <= {j.job_id for j in jobs}


def test_fid_protocol_names_settings_without_changing_ids(tmp_path):
    from study.evaluation import PROTOCOLS

    data = yaml.safe_load((SWEEPS_DIR / "paper.yaml").read_text())
    explicit = dict(data, fid={**PROTOCOLS["adm-50k-sde250"], "seed": 0, "batch_size": 256,
                               "reference": data["fid"]["reference"]})
    named, spelled = load_spec("paper"), load_spec(_write(tmp_path, explicit))
    assert named.fid.protocol == "adm-50k-sde250" and spelled.fid.protocol is None
    assert named.fid.protocol_name == spelled.fid.protocol_name == "adm-50k-sde250"
    assert [j.job_id for j in plan(named)] == [j.job_id for j in plan(spelled)]
    screen = load_spec("paper", ["fid.protocol=screen-10k-sde50"])
    assert (screen.fid.n_samples, screen.fid.num_steps, screen.fid.protocol_name) == (10_000, 50, "screen-10k-sde50")
    assert not {j.job_id for j in plan(screen) if j.stage == "eval"} & {j.job_id for j in plan(named)}
    assert load_spec("smoke").fid.protocol_name == "synthetic-256-sde20"  # unnamed settings: a derived name
    with pytest.raises(SpecError, match="contradicts num_steps=100"):
        load_spec("paper", ["fid.num_steps=100"])
    with pytest.raises(SpecError, match="unknown FID protocol 'adm-5k'"):
        load_spec("paper", ["fid.protocol=adm-5k"])


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


def test_score_jobs_pass_masks_and_the_minimum_mask_fraction():
    """The paper sweep scores SRSS on ImageNet-S masks with the authors' 0.25; at their defaults the two settings
    are left out of a score job's id (a sweep that sets neither keeps its ids)."""
    scores = [j for j in plan(load_spec("paper")) if j.stage == "score"]
    assert len(scores) == 37
    assert {(j.params.masks, j.params.srss_min_fraction) for j in scores} == {
        ("/data/imagenet-s/ImageNetS919/validation-segmentation", 0.25)}
    smoke = [j for j in plan(load_spec("smoke")) if j.stage == "score"]
    assert smoke and all(j.params.masks is None and j.params.srss_min_fraction == 0.0 for j in smoke)
    assert not {"masks", "srss_min_fraction"} & set(smoke[0].params.model_dump())
    set_ = plan(load_spec("smoke", ["scoring.min_mask_fraction=0.25"]))
    assert {j.job_id for j in set_ if j.stage == "score"}.isdisjoint(j.job_id for j in smoke)
    from jobs.plan import Job
    again = Job.model_validate(json.loads(scores[0].model_dump_json()))
    assert again.params == scores[0].params and again.job_id == scores[0].job_id


def test_scoring_mask_check_for_the_preflight(tmp_path):
    from data_support import write_fake_imagenet

    from jobs.spec import scoring_mask_check

    assert scoring_mask_check(load_spec("smoke")).ok  # synthetic data: exact masks
    assert scoring_mask_check(load_spec("smoke", ["scoring.enabled=false"])) is None
    away = scoring_mask_check(load_spec("paper"), count=False)  # /data/imagenet is not on this machine
    assert away.ok and away.n_images is None
    bare = write_fake_imagenet(tmp_path / "imagenet", per_class=(1, 1), masks=False)
    check = scoring_mask_check(load_spec("smoke", [f"dataset={bare}", "fid.extractor=synthetic"]))
    assert not check.ok and "SRSS will be empty" in check.problem


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
    (lambda d: d.update(methods=["tiny"]), "'tiny' is not a method preset (irepa, irepa-conv-only, irepa-e, "),
    (lambda d: d["fid"].update(extractor="inception"), "fid.reference is required"),
    (lambda d: d.update(extend=[{"steps": 100}]), "extend[0].steps=100 is below steps (200)"),
    (lambda d: d.update(extend=[{"models": ["SiT-B/2"], "steps": 400}]), "are not keys of models"),
    (lambda d: d.update(extend=[{"encoders": ["nope-vit"], "steps": 400}]), "extend[0].encoders: unknown encoder"),
    (lambda d: d.update(extend=[{"methods": ["nonsense"], "steps": 400}]), "'nonsense' is not a method preset"),
    (lambda d: d.update(extend=[{"steps": 400, "eval_steps": [500]}]), "outside 1..steps (400)"),
    (lambda d: d["scoring"].update(masks="/data/masks"), "synthetic data carries its own masks"),
    (lambda d: d["scoring"].update(min_mask_fraction=0.6), "less than or equal to 0.5"),
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
