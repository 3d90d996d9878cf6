"""The cost model follows the code (issue 18): fixed per-step costs per GPU, encoder-target caches costed both ways,
the sampler's precision from the FID settings, and grouping the model sizes too."""
from __future__ import annotations

import pytest

from jobs.cost import EstimateSettings, estimate_spec, flop_table
from jobs.cost.fixed import BYTES_PER_PARAM, HBM_EFFICIENCY, FixedStep, trained_params
from jobs.cost.gpus import GPUS
from jobs.plan import plan
from jobs.spec import SpecError, load_spec
from study.config import build_train_config

SMOKE = ["encoders=[dinov2-vit-b, mae-vit-l]"]
NO_CAL = EstimateSettings(use_calibration=False)


def test_fixed_costs_are_bytes_per_parameter_over_bandwidth():
    cfg = build_train_config("irepa", "SiT-XL/2", "dinov2-vit-b", steps=1, seed=0, data="/data/in")
    geo = {"input_size": 32, "in_channels": 4, "num_classes": 1000}
    params, ema = trained_params(cfg, geo, [768])
    assert 674e6 < ema < 676e6 and params - ema == 1152 * 768 * 9 + 768  # SiT-XL/2 + the 3x3 conv projector
    fixed = FixedStep(GPUS["h100"])
    one = fixed.parts(params, ema, 1, 1)
    bw = 3.35e12 * HBM_EFFICIENCY
    assert one["optimizer"] == pytest.approx(36 * params / bw) and one["ema"] == pytest.approx(12 * ema / bw)
    assert sum(BYTES_PER_PARAM.values()) == 54 and "all-reduce (last bucket)" not in one
    eight = fixed.parts(params, ema, 2, 8)  # a micro-batch more casts, and the exposed last bucket
    assert eight["casts"] == pytest.approx(2 * one["casts"]) and eight["all-reduce (last bucket)"] > 0
    assert 10e-3 < fixed.seconds(params, ema, 1, 8) < 20e-3  # SiT-XL/2: ~14 ms per GPU and step on an H100


def test_cached_targets_drop_the_encoder_forward_for_one_pass():
    online = estimate_spec(load_spec("smoke", SMOKE), NO_CAL)
    spec = load_spec("smoke", SMOKE + ["cached_targets=[mae-vit-l]"])
    cached = estimate_spec(spec, NO_CAL)
    t = cached["targets"]
    assert t["mae-vit-l"]["mode"] == "cache" and t["dinov2-vit-b"]["mode"] == "online"
    assert t["mae-vit-l"]["online_gpu_hours"] == pytest.approx(online["targets"]["mae-vit-l"]["online_gpu_hours"])
    enc = flop_table().encoder("mae-vit-l", "tiny")
    pass_hours = 512 * enc["flops"] / (989.4e12 * 0.35) / 3600  # the synthetic train split once, bf16
    assert t["mae-vit-l"]["cache_gpu_hours"] == pytest.approx(pass_hours)
    assert cached["by_model"]["target caches (data encode)"]["train"] == pytest.approx(pass_hours)
    assert t["mae-vit-l"]["cache_tb"] == pytest.approx(512 * enc["tokens"] * enc["embed_dim"] * 2 / 1e12)
    saved = online["by_stage"]["train"] - cached["by_stage"]["train"]
    assert saved == pytest.approx(t["mae-vit-l"]["online_gpu_hours"] - pass_hours, rel=1e-9)
    # only the cached encoder's trainings are other runs (other ids); the rest of the plan is unchanged
    a = {j.job_id for j in plan(load_spec("smoke", SMOKE))}
    b = plan(spec)
    changed = {j.encoder for j in b if j.job_id not in a and j.stage != "analyze"}
    assert changed == {"mae-vit-l"} and all(j.params.config().encoder.targets == "cache" for j in b
                                           if j.stage == "train" and j.encoder == "mae-vit-l")
    with pytest.raises(SpecError, match="cached_targets"):
        load_spec("smoke", SMOKE + ["cached_targets=[dinov2-vit-g]"])


def test_the_sampler_precision_comes_from_the_fid_settings():
    tf32 = estimate_spec(load_spec("paper"), NO_CAL)
    bf16 = estimate_spec(load_spec("paper", ["fid.protocol=adm-50k-sde250-bf16"]), NO_CAL)
    assert any(k.startswith("sample") and k.endswith("(bf16)") for k in bf16["throughput"])
    assert bf16["by_stage"]["eval"] < 0.7 * tf32["by_stage"]["eval"]
    assert bf16["by_stage"]["train"] == tf32["by_stage"]["train"]


def test_grouping_the_model_sizes_too():
    spec = load_spec("paper", ["executor.group_sizes=true"])
    trains = [j for j in plan(spec) if j.stage == "train"]
    xl = next(j for j in trains if j.encoder == "mae-vit-l")  # 100K in every size (no extend entry)
    members = {m.model for m in xl.params.runs.values()}
    assert members == {"SiT-B/2", "SiT-L/2", "SiT-XL/2"} and len(xl.params.runs) == 6
    assert xl.resources.gpus == 8  # the largest member's
    grouped = estimate_spec(spec, NO_CAL)
    assert grouped["by_stage"]["train"] < estimate_spec(load_spec("paper"), NO_CAL)["by_stage"]["train"]
    assert set(grouped["by_model"]) == {"SiT-B/2", "SiT-L/2", "SiT-XL/2"}  # members booked to their own size
