"""The miniature's encoders (`source: local`): deterministic pretraining, better than random init on LP, clear
errors, and the vanilla baseline planned once per model and seed."""
import pytest
import torch
from click.testing import CliRunner

import encoders
import encoders.build
from encoders import CatalogError, MissingWeightsError, get_encoder, parse_catalog
from study.pretrain import needs_pretraining, pretrain_encoder

DATA = "synthetic:n=512,size=32,classes=10,seed=0"


def _load(name: str, path) -> encoders.Encoder:
    from safetensors.torch import load_file

    spec = encoders.get_spec(name)
    model = encoders.build_model(spec, "random")
    model.load_state_dict(load_file(str(path)), strict=True)
    return encoders.Encoder(spec, model, "random")


def _features(enc: encoders.Encoder, split: str):
    from study.data import open_dataset

    data = open_dataset(DATA, split=split)
    return enc.encode(data.images)["patch"].mean(1), data.labels


def _lp(enc: encoders.Encoder) -> float:
    from study.scoring import linear_probe

    xt, yt = _features(enc, "train")
    xv, yv = _features(enc, "val")
    return linear_probe(xt, yt, xv, yv, seed=0, device="cpu").top1


@pytest.mark.parametrize("name", ["mini-sup", "mini-mim"])
def test_pretraining_is_deterministic(name):
    from safetensors.torch import load_file

    first = load_file(str(pretrain_encoder(name, steps=15)))
    again = load_file(str(pretrain_encoder(name, steps=15, force=True)))  # trained a second time, from scratch
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    untrained = encoders.build_model(encoders.get_spec(name), "random").state_dict()
    assert first.keys() == untrained.keys() and not torch.equal(first["blocks.0.attn.qkv.weight"],
                                                                untrained["blocks.0.attn.qkv.weight"])


def test_controlled_student_is_trained_once_for_every_entry_with_its_heads(monkeypatch):
    from safetensors.torch import load_file

    import study.pretrain.local as local

    path = pretrain_encoder("ctl-lay-c5", steps=15)
    assert pretrain_encoder("ctl-glob-c2", steps=15) == path  # the same student: found, not trained again
    state = load_file(str(path))
    untrained = encoders.build_model(encoders.get_spec("ctl-lay-c10"), "random").state_dict()
    assert state.keys() == untrained.keys() and {"class_head.weight", "mask_head.weight"} <= state.keys()
    assert not torch.equal(state["mask_head.weight"], untrained["mask_head.weight"])
    # a sweep's pretraining step trains one student for all the controlled entries it needs
    monkeypatch.setattr(encoders.build, "SHIPPED_LOCAL_WEIGHTS", path.parent / "none-shipped")
    monkeypatch.setenv("REPA_STUDY_WEIGHTS", str(path.parent / "empty"))
    trained = []
    monkeypatch.setattr(local, "pretrain_encoder", trained.append)
    assert local.pretrain_missing(["ctl-lay-c10", "mini-sup", "ctl-glob-c2@clsmix=0.5", "mini-random"]) == \
        ["ctl-lay-c10", "mini-sup"] == trained


def test_supervised_pretraining_beats_random_init_on_lp():
    """Half the catalog recipe's steps (400 of 800) already lift LP well above the random init."""
    trained = _lp(_load("mini-sup", pretrain_encoder("mini-sup", steps=400)))
    untrained = _lp(get_encoder("mini-random", weights="pretrained"))
    assert trained > untrained + 0.10, (trained, untrained)


def test_missing_local_weights_say_which_command_makes_them(monkeypatch, tmp_path):
    monkeypatch.setattr(encoders.build, "SHIPPED_LOCAL_WEIGHTS", tmp_path)  # as for a recipe nothing was shipped for
    assert needs_pretraining("mini-sup") and needs_pretraining("mini-sup@clsmix=0.5")
    assert not needs_pretraining("mini-random") and not needs_pretraining("mini-sup", "tiny")
    with pytest.raises(MissingWeightsError, match="repa-study encoders pretrain mini-sup"):
        get_encoder("mini-sup", weights="pretrained")
    with pytest.raises(ValueError, match="only `source: local` entries"):
        pretrain_encoder("dinov2-vit-b")
    with pytest.raises(ValueError, match="recipe 'none'"):
        pretrain_encoder("mini-random")


def test_the_embedded_study_ships_its_encoders_weights_and_a_trained_file_wins():
    """mini-sup, mini-mim and the controlled entries' student load without pretraining, from the files shipped for
    their exact recipes (pretraining
    is chaotic across CPU instruction sets: see encoders.build.SHIPPED_LOCAL_WEIGHTS); weights trained here win."""
    for name in ("mini-sup", "mini-mim", "ctl-lay-c10", "ctl-glob-c2"):
        spec = encoders.get_spec(name)
        shipped = encoders.build.SHIPPED_LOCAL_WEIGHTS / f"{spec.weights_name}-{spec.weights_fingerprint()}.safetensors"
        assert shipped.is_file(), (f"no shipped weights for {name}'s recipe: run `repa-study encoders pretrain {name}`"
                                   f" and copy the file to {shipped.parent}")
        assert not needs_pretraining(name) and encoders.local_weights_file(spec) == shipped
        assert encoders.uses_shipped_weights(spec)
    enc = get_encoder("mini-sup@clsmix=0.5", weights="pretrained")
    assert enc.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))["patch"].shape == (1, 256, 64)
    spec = encoders.get_spec("mini-sup")
    trained = encoders.local_weights_path(spec)  # as `repa-study encoders pretrain mini-sup --force` leaves it
    trained.parent.mkdir(parents=True)
    trained.write_bytes((encoders.build.SHIPPED_LOCAL_WEIGHTS / trained.name).read_bytes())
    assert encoders.local_weights_file(spec) == trained and not encoders.uses_shipped_weights(spec)


def test_random_control_is_seeded_and_has_a_cls_token():
    a = get_encoder("mini-random", weights="pretrained").model.state_dict()
    b = get_encoder("mini-random", weights="pretrained").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = get_encoder("mini-random@clsmix=0.5", weights="pretrained").encode(
        torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out["patch"].shape == (2, 256, 64) and out["cls"].shape == (2, 64)


@pytest.mark.parametrize("name", ["mini-sup", "mini-mim", "mini-random", "ctl-lay-c10", "ctl-glob-c2@clsmix=1.0"])
def test_local_entries_check_ok(name):
    result = encoders.check_encoder(name, meta=False)
    assert result["ok"], result.get("reason")


LOCAL = """encoders:
  my-mini:
    {family: mini, source: local, model_id: vit_tiny_patch16_224,
     create_kwargs: {img_size: 32, patch_size: 2, embed_dim: 64, depth: 1, num_heads: 2},
     input_res: 32, patch_size: 2, embed_dim: 64, prefix_tokens: 1, mean: half, std: half, license: mit,
     params_m: 0.1, pretrain: {recipe: supervised, steps: 10}}
"""
#: a controlled entry (encoders.controlled): the student's recipe and the composing rule
CONTROLLED = LOCAL.replace("recipe: supervised, steps: 10}",
                           "recipe: controlled, steps: 10}, controlled: {student: my-student, groups: 5}")


@pytest.mark.parametrize("entry, edit, message", [
    (LOCAL, ("pretrain: {recipe: supervised, steps: 10}", "notes: x"), "needs a pretrain recipe"),
    (LOCAL, ("source: local, ", ""), "only local entries have one"),
    (LOCAL, ("recipe: supervised, steps: 10", "recipe: none, steps: 10"), "trains nothing"),
    (LOCAL, ("recipe: supervised, steps: 10", "recipe: supervised"), "need steps >= 1"),
    (LOCAL, ("steps: 10}", "steps: 10, epochs: 3}"), "unknown field"),
    (LOCAL, ("recipe: supervised", "recipe: controlled"), "needs a controlled section"),
    (CONTROLLED, ("recipe: controlled", "recipe: supervised"), "needs pretrain recipe 'controlled'"),
    (CONTROLLED, ("groups: 5", "groups: 11"), "cannot exceed classes"),
    (CONTROLLED, ("groups: 5", "groups: 0"), "greater than or equal to 1"),
    (CONTROLLED, ("student: my-student", "student: My Student"), "pattern"),
    (CONTROLLED, ("groups: 5", "groups: 5, layout: 2"), "unknown field"),
])
def test_malformed_local_entries_rejected(entry, edit, message):
    assert parse_catalog(entry)["my-mini"].pretrain.steps == 10
    with pytest.raises(CatalogError, match=message):
        parse_catalog(entry.replace(*edit))


def test_cli_pretrain_refuses_nothing_and_names_the_file(tmp_path, monkeypatch):
    from jobs.cli import cli

    res = CliRunner().invoke(cli, ["encoders", "pretrain"])
    assert res.exit_code == 2 and "at least one encoder" in res.output
    res = CliRunner().invoke(cli, ["encoders", "pretrain", "mini-random"])
    assert res.exit_code == 0 and "nothing to train" in res.output


def test_vanilla_is_planned_once_per_model_and_seed():
    from jobs.plan import plan
    from jobs.spec import load_spec
    from results import NO_ENCODER
    from study.config import method_aligns

    assert not method_aligns("vanilla") and method_aligns("repa") and method_aligns("irepa")
    spec = load_spec("mini", ["executor.group_methods=false"])
    trains = [j for j in plan(spec) if j.stage == "train"]
    vanilla = [j for j in trains if j.method == "vanilla"]
    assert sorted(j.seed for j in vanilla) == sorted(spec.seeds) and {j.encoder for j in vanilla} == {NO_ENCODER}
    assert sum(j.method == "repa" for j in trains) == 11 * 3 and sum(j.method == "irepa" for j in trains) == 2 * 3
    grouped = [j for j in plan(load_spec("mini")) if j.stage == "train"]
    assert sorted(j.method for j in grouped if j.seed == 0) == ["repa"] * 9 + ["repa+irepa"] * 2 + ["vanilla"]
    cfg = vanilla[0].params.config()
    assert not cfg.method.align and cfg.encoder.name == NO_ENCODER


def test_pretraining_says_what_it_trains_and_its_progress():
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # what reaches the logger, whatever handlers other tests left on its parents
    logger = logging.getLogger("repa_study.study.pretrain.local")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        pretrain_encoder("mini-mim", steps=20, force=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = [r.getMessage() for r in records]
    assert lines[0].startswith("encoder mini-mim: pretraining by its mim recipe, 20 steps of batch 32 on synthetic")
    steps = [line for line in lines if line.startswith("pretrain mini-mim: step ")]
    assert steps[0].startswith("pretrain mini-mim: step 1/20 (5%), loss ") and "s elapsed, about" in steps[0]
    assert [s.split()[3] for s in steps] == [f"{k}/20" for k in (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)]
    assert "s left" in steps[-1]


def test_pretraining_workers_log_at_the_callers_level(monkeypatch):
    """`repa-study run` pretrains in spawned worker processes: they get the caller's log level, so their progress
    lines reach its stderr."""
    import concurrent.futures
    import logging

    from study.common import setup_logging
    from study.pretrain import local

    seen = {}

    class Pool:
        def __init__(self, workers, mp_context, initializer, initargs):
            seen.update(initializer=initializer, initargs=initargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, names):
            return [seen.setdefault("names", []).append(n) for n in names]

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(local, "needs_pretraining", lambda name, weights="pretrained": True)
    trained = local.pretrain_missing(["mini-sup", "mini-mim", "mini-sup@clsmix=0.5"], workers=2)
    assert trained == ["mini-sup", "mini-mim"]
    assert seen["initializer"] is setup_logging and seen["names"] == ["mini-sup", "mini-mim"]
    assert seen["initargs"] == (logging.getLogger("repa_study").getEffectiveLevel(),)
