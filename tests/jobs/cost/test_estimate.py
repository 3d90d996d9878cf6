"""The cost model: FLOP counts vs analytic ones, the estimate's sums and scaling, calibration, the submit budget."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from jobs.cost import (EstimateSettings, FlopTable, encoder_flops, estimate_jobs, estimate_spec, flop_table,
                       load_calibration, sit_flops, train_work)
from jobs.plan import plan
from jobs.spec import load_spec
from study.config import SIZES

SMOKE = ["encoders=[dinov2-vit-b, mae-vit-l]"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sit_analytic(size: str, input_size: int, in_channels: int, patch: int = 2) -> float:
    """2 FLOPs per multiply-add of every matmul, convolution and attention product of one SiT forward."""
    dims = SIZES[size]
    d, n = dims.hidden, (input_size // patch) ** 2
    block = 2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * 4 * d + 2 * 2 * n * n * d + 2 * d * 6 * d
    embed = 2 * n * (patch * patch * in_channels) * d + 2 * (256 * d + d * d)  # patches, timestep MLP
    final = 2 * n * d * patch * patch * in_channels + 2 * d * 2 * d
    return dims.depth * block + embed + final


@pytest.mark.parametrize("size", ["B", "XL"])
def test_sit_flops_match_the_analytic_count(size):
    counted = sit_flops(f"SiT-{size}/2", input_size=32, in_channels=4, num_classes=1000)
    assert counted == pytest.approx(_sit_analytic(size, 32, 4), rel=0.02)
    if size == "XL":  # DiT's table: DiT-XL/2 at 256 px is 118.6 GMACs
        assert counted / 2 / 1e9 == pytest.approx(118.6, rel=0.01)


def test_shipped_table_agrees_with_a_fresh_count():
    fresh = encoder_flops("dinov2-vit-b")
    shipped = FlopTable().encoder("dinov2-vit-b")
    assert shipped == fresh
    assert fresh["tokens"] == 256 and fresh["embed_dim"] == 768 and fresh["has_cls"]
    # a ViT-B forward is about 2 x params x tokens (86 M parameters, 257 tokens) plus attention
    assert fresh["flops"] == pytest.approx(2 * 85.7e6 * 257, rel=0.1)
    assert FlopTable().sit("SiT-XL/2", input_size=32, in_channels=4, num_classes=1000) == pytest.approx(
        _sit_analytic("XL", 32, 4), rel=0.02)


def test_each_small_data_extractor_is_costed_as_itself():
    from jobs.cost.work import extractor_flops

    table = FlopTable()
    small, layout = extractor_flops(table, "synthetic", 10), extractor_flops(table, "layout", 10)
    # the layout CNN's second 3x3 conv alone (32 -> 32 channels at 32 x 32 px) is 2 x 9 x 32 x 32 x 1024 FLOPs
    assert layout > 2 * small > 0 and layout > 2 * 9 * 32 * 32 * 1024


def test_train_work_is_three_times_the_trained_forward_plus_the_encoder():
    table = flop_table()
    common = dict(size="SiT-B/2", input_size=32, in_channels=4, num_classes=1000, patch_size=None, qk_norm=False,
                  projector="mlp", hidden_dim=2048, kernel_size=3, sit_precision="bf16", encoder_precision="tf32")
    work = train_work(table, encoders=[("dinov2-vit-b", "pretrained")], align=True, **common)
    sit = table.sit("SiT-B/2", input_size=32, in_channels=4, num_classes=1000)
    proj = table.projector("mlp", 768, 768, grid=(16, 16), hidden_dim=2048, kernel_size=3)
    assert work[("train", "bf16")] == 3 * (sit + proj)
    assert work[("target", "tf32")] == table.encoder("dinov2-vit-b")["flops"]
    plain = train_work(table, encoders=[("dinov2-vit-b", "pretrained")], align=False, **common)
    assert plain == {("train", "bf16"): 3 * sit}


@pytest.fixture(scope="module")
def smoke_est():
    return estimate_spec(load_spec("smoke", SMOKE), EstimateSettings(use_calibration=False))


def test_estimate_has_the_keys_and_its_parts_sum_to_the_total(smoke_est):
    est = smoke_est
    for key in ("total_gpu_hours", "by_stage", "by_model", "assumptions", "throughput", "by_encoder"):
        assert key in est
    assert est["total_gpu_hours"] > 0
    assert sum(est["by_stage"].values()) == pytest.approx(est["total_gpu_hours"], rel=1e-12)
    per_model = sum(m["total"] for m in est["by_model"].values())
    assert per_model + est["by_stage"]["score"] == pytest.approx(est["total_gpu_hours"], rel=1e-12)
    assert sum(e["total"] for e in est["by_encoder"].values()) == pytest.approx(est["total_gpu_hours"], rel=1e-12)
    assert est["by_stage"]["analyze"] == 0 and est["jobs"] == {"train": 4, "eval": 8, "score": 2, "analyze": 1}
    assert all(t["mfu"] == 0.35 and "default" in t["source"] for t in est["throughput"].values())
    json.dumps(est)  # JSON-able


def test_doubling_steps_doubles_train_hours(smoke_est):
    doubled = estimate_spec(load_spec("smoke", SMOKE + ["steps=400"]), EstimateSettings(use_calibration=False))
    assert doubled["by_stage"]["train"] == pytest.approx(2 * smoke_est["by_stage"]["train"], rel=1e-9)
    assert doubled["by_stage"]["eval"] == pytest.approx(smoke_est["by_stage"]["eval"], rel=1e-9)
    again = estimate_spec(load_spec("smoke", SMOKE), EstimateSettings(use_calibration=False, all_steps=400))
    assert again["by_stage"]["train"] == pytest.approx(doubled["by_stage"]["train"], rel=1e-9)
    # evaluations at 100 and 200 kept, one at 400 added per run
    assert again["jobs"]["eval"] == smoke_est["jobs"]["eval"] + 4


def test_a_continuation_costs_only_its_extra_steps(smoke_est):
    jobs = plan(load_spec("smoke", SMOKE))
    first = next(j for j in jobs if j.stage == "train")
    longer = first.model_copy(update={"job_id": "train-continued", "steps": 2 * first.steps,
                                      "params": first.params.model_copy(update={"steps": 2 * first.steps})})
    est = estimate_jobs(jobs + [longer], EstimateSettings(use_calibration=False))
    assert est["runs"] == smoke_est["runs"]  # the same run with a higher target, not a second run
    base_run = estimate_jobs([first], EstimateSettings(use_calibration=False))["by_stage"]["train"]
    assert base_run > 0
    # target 2S instead of S: the run costs one more S, not 2S more (which a second run would)
    assert est["by_stage"]["train"] - smoke_est["by_stage"]["train"] == pytest.approx(base_run, rel=1e-9)


def _calibration(tmp_path, *, mfu: float, gpu: str = "h100", dry_run: bool = False):
    """A gpu_check-format file whose training record sustains ``mfu`` of the H100's bf16 peak."""
    flops = 1e12  # bf16 FLOPs per image
    rate = mfu * 989.4e12 / flops
    data = {"schema": "repa-study/gpu_check/1", "gpu": gpu, "device_name": "NVIDIA H100 80GB HBM3",
            "dry_run": dry_run,
            "train": [{"model": "smoke", "method": "repa", "encoder": "dinov2-vit-b", "compile": False,
                       "precision": "bf16", "images_per_s": rate, "work": {"bf16": flops}}]}
    path = tmp_path / f"{gpu}.json"
    path.write_text(json.dumps(data))
    return path


def test_calibration_replaces_the_default_mfu(tmp_path, smoke_est):
    path = _calibration(tmp_path, mfu=0.7)
    est = estimate_spec(load_spec("smoke", SMOKE), EstimateSettings(calibration=path))
    train = {k: v for k, v in est["throughput"].items() if v["kind"] == "train"}
    assert train and all(v["mfu"] == pytest.approx(0.7) and str(path) in v["source"] for v in train.values())
    assert est["calibration"] == str(path)
    fixed = smoke_est["fixed"]["train_gpu_hours"]  # memory-bound per-step costs: no MFU in them
    assert fixed > 0 and est["fixed"]["train_gpu_hours"] == pytest.approx(fixed)
    ratio = (est["by_stage"]["train"] - fixed) / (smoke_est["by_stage"]["train"] - fixed)
    assert ratio == pytest.approx(0.5, rel=1e-6)  # train and target both ran at 0.35, now 0.7
    assert est["by_stage"]["eval"] == pytest.approx(smoke_est["by_stage"]["eval"])  # no sampling records
    explicit = estimate_spec(load_spec("smoke", SMOKE), EstimateSettings(calibration=path, mfu=0.35))
    assert explicit["by_stage"]["train"] == pytest.approx(smoke_est["by_stage"]["train"])  # --mfu wins


def test_calibration_files_are_checked(tmp_path):
    with pytest.raises(ValueError, match="dry-run"):
        load_calibration("h100", _calibration(tmp_path, mfu=0.5, dry_run=True))
    with pytest.raises(ValueError, match="not 'a100'"):
        load_calibration("a100", _calibration(tmp_path, mfu=0.5))
    with pytest.raises(ValueError, match="not found"):
        load_calibration("h100", tmp_path / "missing.json")
    assert load_calibration("h100", _calibration(tmp_path, mfu=0.5)).records["train"][0]["mfu"] == pytest.approx(0.5)


def test_cli_estimate_json_and_errors():
    from jobs.cli import cli

    args = ["sweep", "estimate", "smoke", *sum((["--set", o] for o in SMOKE), []), "--no-calibration"]
    out = CliRunner().invoke(cli, args + ["--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["total_gpu_hours"] > 0
    cmp = json.loads(CliRunner().invoke(cli, args + ["--json", "--compare-all-steps", "400"]).output)
    assert cmp["compare"]["all_steps"] == 400 and 0 < cmp["compare"]["ratio"] < 1
    assert cmp["compare"]["ratio"] == pytest.approx(cmp["total_gpu_hours"] / cmp["compare"]["total_gpu_hours"])
    text = CliRunner().invoke(cli, args + ["--gpu", "a100", "--precision", "sample=bf16"])
    assert text.exit_code == 0 and "A100" in text.output and "sample=bf16" in text.output
    bad = CliRunner().invoke(cli, args + ["--precision", "sample=fp8"])
    assert bad.exit_code != 0 and "KIND=DTYPE" in bad.output


def test_submit_refuses_over_budget_and_submits_nothing(tmp_path, monkeypatch):
    import jobs.submit
    from jobs.cli import cli

    def boom(*a, **k):
        raise AssertionError("submit_sweep must not be called over budget")

    monkeypatch.setattr(jobs.submit, "submit_sweep", boom)
    root = tmp_path / "root"
    result = CliRunner().invoke(cli, ["sweep", "submit", "smoke", *sum((["--set", o] for o in SMOKE), []),
                                      "--root", str(root), "--executor", "local", "--max-gpu-hours", "1e-12"])
    assert result.exit_code != 0
    assert "exceeds --max-gpu-hours" in result.output and "nothing was submitted" in result.output
    assert "GPU-hours" in result.output and not root.exists()


def test_grouped_runs_share_one_encoder_forward(smoke_est):
    spec = load_spec("smoke", SMOKE + ["executor.group_methods=true"])
    grouped = estimate_spec(spec, EstimateSettings(use_calibration=False))
    assert grouped["jobs"]["train"] == 2 and grouped["runs"] == smoke_est["runs"] == 4
    assert grouped["by_stage"]["eval"] == pytest.approx(smoke_est["by_stage"]["eval"], rel=1e-12)
    # each (model, encoder) group pays the frozen encoder once instead of once per method (bf16 in training: the
    # imagenet preset's encoder.bf16, which tiny inherits)
    table = flop_table()
    saved_flops = sum(table.encoder(e, "tiny")["flops"] for e in ("dinov2-vit-b", "mae-vit-l")) * 200 * 16
    saved_hours = saved_flops / (989.4e12 * 0.35) / 3600
    assert smoke_est["by_stage"]["train"] - grouped["by_stage"]["train"] == pytest.approx(saved_hours, rel=1e-9)


def test_stored_latents_follow_the_dataset(tmp_path):
    from data_support import tiny_vae, write_fake_imagenet

    from jobs.cost.work import stored_latents
    from study.data import SDVAECodec, prepare_split

    folder = write_fake_imagenet(tmp_path / "imagenet", per_class=(2, 1), masks=False)
    prepare_split(folder, tmp_path / "images-only", "train", shard_size=4, size=64)
    prepare_split(folder, tmp_path / "latents", "train", shard_size=4, size=64,
                  codec=SDVAECodec("tiny-test", vae=tiny_vae()))
    assert stored_latents("synthetic:n=64,size=32,classes=10,seed=0", "train") is False
    assert stored_latents(str(folder), "train") is False  # an image folder: the codec encodes every image
    assert stored_latents(str(tmp_path / "images-only"), "train") is False
    assert stored_latents(str(tmp_path / "latents"), "train") is True
    assert stored_latents(str(tmp_path / "elsewhere"), "train") is None  # not here: the estimate assumes stored


def test_a_latent_run_without_stored_moments_pays_the_sd_vae_encoder(tmp_path, monkeypatch):
    """`data.codec=sd-vae` (or its alias `sdvae`, once refused) on data without stored moments: each training image
    also costs an SD-VAE encoder forward; with stored moments (or data not found here) it does not."""
    import jobs.cost.estimate

    overrides = "[batch_size=16, ckpt_every=100, log_every=50, sample_every=0, method.hidden_dim=256, data.codec={}]"
    spec = load_spec("smoke", SMOKE + [f"train_overrides={overrides.format('sdvae')}", "scoring.enabled=false"])
    settings = EstimateSettings(use_calibration=False)
    encoded = estimate_spec(spec, settings)  # synthetic data: images only
    assert encoded == estimate_spec(load_spec("smoke", SMOKE + [f"train_overrides={overrides.format('sd-vae')}",
                                                                "scoring.enabled=false"]), settings)
    monkeypatch.setattr(jobs.cost.estimate, "stored_latents", lambda dataset, split: True)
    stored = estimate_spec(spec, settings)
    assert encoded["by_stage"]["eval"] == stored["by_stage"]["eval"]
    assert "vae-encode (tf32)" in encoded["throughput"] and "vae-encode (tf32)" not in stored["throughput"]
    # 4 runs x 200 steps x 16 images, the encoder at 32 px (tf32: the preset's tf32), at 0.35 of the H100's peak
    per_image = flop_table().sd_vae_encode(32)
    extra = 4 * 200 * 16 * per_image / (494.7e12 * 0.35) / 3600
    assert encoded["by_stage"]["train"] - stored["by_stage"]["train"] == pytest.approx(extra, rel=1e-9)
    assert any("no stored SD-VAE moments" in a for a in encoded["assumptions"])
    assert not any("SD-VAE moments" in a for a in stored["assumptions"])
    monkeypatch.setattr(jobs.cost.estimate, "stored_latents", lambda dataset, split: None)
    unseen = estimate_spec(spec, settings)
    assert unseen["by_stage"] == stored["by_stage"] and any("not found here" in a for a in unseen["assumptions"])
