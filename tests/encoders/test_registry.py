"""The encoder catalog: full-size checks on the meta device, tiny stand-ins run for real, malformed entries."""
import json

import pytest
import torch
from click.testing import CliRunner

import encoders
from encoders import CatalogError, UnknownEncoderError, get_encoder, list_encoders, load_catalog, parse_catalog
from encoders.spec import NORMALIZATIONS

STUDY_27 = """dinov2-vit-b dinov2-vit-l dinov2-vit-g dinov3-vit-b16 dinov3-vit-l16 dinov3-vit-h16plus dinov3-vit-7b16
webssl-vit-dino300m webssl-vit-dino1b webssl-vit-dino2b webssl-vit-dino3b pe-vit-b pe-vit-l pe-vit-g langpe-vit-l
langpe-vit-g spatialpe-vit-b spatialpe-vit-l spatialpe-vit-g cradio-vit-b cradio-vit-l dino-vit-b clip-vit-l
mocov3-vit-b mocov3-vit-l jepa-vit-h mae-vit-l""".split()
EXTRA_10 = """sam2-vit-s sam2-vit-b sam2-vit-l siglip-vit-b siglip-vit-l siglip-vit-so400m siglip2-vit-b siglip2-vit-l
siglip2-vit-so400m siglip2-vit-g""".split()
MINI_3 = ["mini-sup", "mini-mim", "mini-random"]  # source: local, the miniature's (tests/test_pretrain.py)
CONTROLLED_6 = ["ctl-lay-c10", "ctl-lay-c5", "ctl-lay-c2", "ctl-lay-c0", "ctl-glob-c10", "ctl-glob-c2"]  # local too


def test_catalog_names_exact():
    assert sorted(list_encoders()) == sorted(STUDY_27 + EXTRA_10 + MINI_3 + CONTROLLED_6)
    study = [name for name, spec in load_catalog().items() if spec.study]
    assert sorted(study) == sorted(STUDY_27)


@pytest.mark.parametrize("name", STUDY_27 + EXTRA_10)
def test_full_size_check_on_meta(name):
    result = encoders.check_encoder(name, meta=True)
    assert result["ok"], result.get("reason")
    spec = load_catalog()[name]
    assert result["grid"] == 16 and result["embed_dim"] == spec.embed_dim
    assert result["prefix_tokens"] == spec.prefix_tokens


# One representative per family (every family's code path), run for real on CPU with random tiny weights.
FAMILIES = {}
for _name, _spec in load_catalog().items():
    FAMILIES.setdefault(_spec.family, _name)


@pytest.mark.parametrize("name", sorted(FAMILIES.values()))
def test_tiny_stand_in_forward(name):
    torch.manual_seed(0)
    enc = get_encoder(name, weights="tiny")
    spec = enc.spec
    images = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)  # non-square: resized to input_res
    out = enc.encode(images)
    patch, cls = out["patch"], out["cls"]
    assert patch.shape == (2, 256, enc.embed_dim) and patch.dtype == torch.float32
    assert torch.isfinite(patch).all()
    assert (cls is None) == (spec.cls_index is None)
    if cls is not None:
        assert cls.shape == (2, enc.embed_dim)
        # the prefix is dropped: no patch token equals the CLS token
        assert not torch.isclose(patch, cls[:, None], atol=1e-6).all(-1).any()
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())
    # (the normalisation constants agree with timm's pretrained_cfg: check_encoder asserts it, tested above)


def test_encode_matches_manual_preprocessing():
    enc = get_encoder("dino-vit-b", weights="tiny")
    images = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    x = images.float() / 255
    mean = torch.tensor(NORMALIZATIONS["imagenet"][0]).view(1, 3, 1, 1)
    std = torch.tensor(NORMALIZATIONS["imagenet"][1]).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = enc.model.forward_features((x - mean) / std)  # input_res is 256: no resize
        normed = feats[:, 1:]  # forward_features applies the final norm, as final_norm: true asks
    assert torch.allclose(enc.encode(images)["patch"], normed, atol=1e-5)


def test_siglip_uses_half_normalisation_and_override():
    spec = load_catalog()["siglip-vit-b"]
    assert spec.normalization == NORMALIZATIONS["half"]
    override = spec.model_copy(update={"normalize_override": "imagenet"})
    assert override.normalization == NORMALIZATIONS["imagenet"]


def test_pe_integer_rope_is_crop_consistent():
    big = get_encoder("pe-vit-l", weights="tiny").model.rope.pos_embed  # 16x16 grid
    assert big.shape[0] == 256
    spec = load_catalog()["pe-vit-l"].model_copy(update={"create_kwargs": {"img_size": 196}})
    small = encoders.build_model(spec, "tiny").rope.pos_embed  # 14x14 grid
    assert torch.equal(big.reshape(16, 16, -1)[:14, :14].reshape(196, -1), small)


def test_clsmix_variants():
    torch.manual_seed(0)
    base = get_encoder("dinov2-vit-b", weights="tiny")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ref = base.encode(images)

    def mixed(suffix):
        enc = get_encoder("dinov2-vit-b" + suffix, weights="tiny")
        enc.model.load_state_dict(base.model.state_dict())
        return enc.encode(images)["patch"]

    assert torch.allclose(mixed("@clsmix=0"), ref["patch"])
    assert torch.allclose(mixed("@clsmix=1"), ref["patch"] + ref["cls"][:, None], atol=1e-6)
    assert torch.allclose(mixed("@clsmixc=1"), ref["cls"][:, None].expand_as(ref["patch"]), atol=1e-6)
    # the two forms point the same way per token with alpha' = alpha / (1 - alpha)
    a = mixed("@clsmixc=0.2")
    b = mixed("@clsmix=0.25")
    assert torch.allclose(torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1),
                          atol=1e-5)
    enc = get_encoder("dinov2-vit-b@clsmix=0.5", weights="tiny")
    assert enc.name == "dinov2-vit-b@clsmix=0.5" and enc.cache_key != base.cache_key


def test_clsmix_rejected_without_cls():
    with pytest.raises(ValueError, match="no CLS token"):
        get_encoder("siglip-vit-b@clsmix=0.5", weights="tiny")
    with pytest.raises(ValueError, match="ALPHA"):
        get_encoder("dinov2-vit-b@clsmix=abc", weights="tiny")


def test_unknown_name_lists_closest():
    with pytest.raises(UnknownEncoderError, match="dinov2-vit-b"):
        get_encoder("dinov2-vit-bb", weights="tiny")


def test_missing_weights_error_names_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("REPA_STUDY_WEIGHTS", str(tmp_path))
    with pytest.raises(encoders.MissingWeightsError) as err:
        get_encoder("mocov3-vit-b", weights="pretrained")
    msg = str(err.value)
    assert "mocov3-vit-b" in msg and str(tmp_path / "vit-b-300ep.pth.tar") in msg and "non-commercial" in msg
    with pytest.raises(encoders.MissingWeightsError, match="timm/vit_base_patch16_224.dino"):
        get_encoder("dino-vit-b", weights="pretrained")


def _moco_checkpoint(model, rcg_bug: bool):
    """A synthetic upstream MoCo v3 checkpoint: prefixed keys, momentum encoder, head, optional RCG key bug."""
    state = {}
    for key, value in model.state_dict().items():
        k = key
        if rcg_bug:
            k = k.replace("blocks.13.norm1", "blocks.13.norm13").replace("blocks.13.mlp.fc1", "blocks.13.mlp.fc13")
            k = k.replace("blocks.14.norm2", "blocks.14.norm14").replace("blocks.14.mlp.fc2", "blocks.14.mlp.fc14")
        state["module.base_encoder." + k] = value.clone()
        state["module.momentum_encoder." + k] = torch.zeros_like(value)
    state["module.base_encoder.head.0.weight"] = torch.zeros(4, 4)
    state["module.predictor.0.weight"] = torch.zeros(4, 4)
    return {"state_dict": state, "epoch": 300}


@pytest.mark.parametrize("rcg_bug", [False, True])
def test_mocov3_adapter_loads_strictly(tmp_path, monkeypatch, rcg_bug):
    import timm

    monkeypatch.setenv("REPA_STUDY_WEIGHTS", str(tmp_path))
    depth = 15 if rcg_bug else 2
    # the upstream checkpoint was trained at 224 px: a 14x14 position table that the loader resamples to 16x16
    upstream = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, embed_dim=32,
                                 depth=depth, num_heads=2)
    torch.save(_moco_checkpoint(upstream, rcg_bug), tmp_path / "vit-b-300ep.pth.tar")
    spec = load_catalog()["mocov3-vit-b"].model_copy(
        update={"create_kwargs": {"img_size": 256, "embed_dim": 32, "depth": depth, "num_heads": 2}})
    model = encoders.build_model(spec, "pretrained")  # load_state_dict(strict=True) inside
    assert model.pos_embed.shape[1] == 1 + 256
    assert torch.equal(model.blocks[1].attn.qkv.weight, upstream.blocks[1].attn.qkv.weight)
    if rcg_bug:
        assert torch.equal(model.blocks[13].norm1.weight, upstream.blocks[13].norm1.weight)


GOOD = """
encoders:
  my-vit:
    {family: dino, model_id: vit_base_patch16_224.dino, create_kwargs: {img_size: 256}, input_res: 256,
     patch_size: 16, embed_dim: 768, prefix_tokens: 1, mean: imagenet, std: imagenet, license: apache-2.0,
     params_m: 85.8}
"""


def test_parse_good_entry():
    spec = parse_catalog(GOOD)["my-vit"]
    assert spec.cls_index == 0 and spec.grid == 16 and spec.mean == NORMALIZATIONS["imagenet"][0]


@pytest.mark.parametrize("edit, message", [
    (("params_m: 85.8}", "params_m: 85.8, colour: red}"), "colour: unknown field"),
    (("input_res: 256", "input_res: 224"), "grid is 16"),
    (("patch_size: 16,", "patch_size: 32, grid: 8,"), "grid must be 16"),
    (("{family: dino,", "{family: dino, source: torchhub,"), "source"),
    (("mean: imagenet", "mean: sepia"), "unknown normalisation"),
    (("{family: dino,", "{family: dino, source: timm+ckpt, checkpoint: x.pth, adapter: nope,"), "unknown adapter"),
    (("params_m: 85.8}", "params_m: 85.8, timm_cfg_overrides: {mean: ' '}}"), "need a reason"),
    (("params_m: 85.8}", "params_m: 85.8, timm_cfg_overrides: {colour: why}}"), "timm_cfg_overrides.colour"),
])
def test_malformed_entries_rejected(edit, message):
    with pytest.raises(CatalogError, match=message) as err:
        parse_catalog(GOOD.replace(*edit))
    assert "my-vit" in str(err.value)


def test_preprocessing_compared_with_timm_pretrained_cfg():
    from encoders.check import timm_cfg_mismatches

    assert timm_cfg_mismatches(parse_catalog(GOOD)["my-vit"]) == []
    bilinear = GOOD.replace("params_m: 85.8}", "params_m: 85.8, resize: {mode: bilinear}}")
    problems = timm_cfg_mismatches(parse_catalog(bilinear)["my-vit"])
    assert len(problems) == 1 and "interpolation bilinear differs" in problems[0] and "bicubic" in problems[0]
    reasoned = bilinear.replace("params_m: 85.8,", "params_m: 85.8, timm_cfg_overrides: {interpolation: why},")
    assert timm_cfg_mismatches(parse_catalog(reasoned)["my-vit"]) == []
    stale = GOOD.replace("params_m: 85.8}", "params_m: 85.8, timm_cfg_overrides: {std: why}}")
    assert "timm_cfg_overrides.std is stale" in timm_cfg_mismatches(parse_catalog(stale)["my-vit"])[0]
    # what is compared is the normalisation actually applied, a named override included
    siglip = load_catalog()["siglip-vit-b"]
    assert timm_cfg_mismatches(siglip) == []
    fields = [p.split()[0] for p in timm_cfg_mismatches(siglip.model_copy(update={"normalize_override": "imagenet"}))]
    assert fields == ["mean", "std"]
    # the catalog's deliberate differences carry their reasons (PE and RADIO resize bilinearly)
    assert set(load_catalog()["pe-vit-l"].timm_cfg_overrides) == {"interpolation"}
    assert set(load_catalog()["mocov3-vit-b"].timm_cfg_overrides) == {"mean", "std"}


def test_timm_cfg_overrides_only_for_timm_entries():
    hf = load_catalog()["webssl-vit-dino300m"].model_dump()
    hf["timm_cfg_overrides"] = {"mean": "why"}
    with pytest.raises(ValueError, match="only apply to timm entries"):
        encoders.EncoderSpec(**hf)


def test_duplicate_name_rejected():
    body = GOOD.split("encoders:\n", 1)[1]
    with pytest.raises(CatalogError, match="duplicate key 'my-vit'"):
        parse_catalog("encoders:\n" + body + body)


def test_cli_list_show_check():
    from jobs.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["encoders", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 46 and sum(r["source"] == "local" for r in rows) == 9
    for key in ("name", "family", "source", "model_id", "input_res", "patch_size", "grid", "embed_dim",
                "prefix_tokens", "final_norm", "mean", "std", "license", "params_m"):
        assert key in rows[0]
    res = runner.invoke(cli, ["encoders", "show", "clip-vit-l"])
    assert res.exit_code == 0 and "quickgelu" in res.output
    res = runner.invoke(cli, ["encoders", "check", "dino-vit-b", "siglip-vit-b@clsmix=0.5", "--meta", "--json"])
    assert res.exit_code == 1
    out = {r["name"]: r for r in json.loads(res.output)}
    assert out["dino-vit-b"]["ok"] and out["dino-vit-b"]["grid"] == 16
    assert not out["siglip-vit-b@clsmix=0.5"]["ok"] and "CLS" in out["siglip-vit-b@clsmix=0.5"]["reason"]


def test_random_init_is_seeded_per_entry_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = get_encoder("dinov2-vit-b", weights="tiny")
    assert torch.equal(torch.rand(1), expected_next)  # global RNG untouched
    b = get_encoder("dinov2-vit-b@clsmix=0.3", weights="tiny")
    c = get_encoder("dinov2-vit-l", weights="tiny")
    wa, wb, wc = (e.model.patch_embed.proj.weight for e in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert encoders.cache_key("dinov2-vit-b@clsmix=0.3", "tiny") == b.cache_key != a.cache_key
    bf16 = get_encoder("dinov2-vit-b", weights="tiny", bf16=True)
    assert bf16.cache_key == encoders.cache_key("dinov2-vit-b", "tiny", bf16=True) != a.cache_key
