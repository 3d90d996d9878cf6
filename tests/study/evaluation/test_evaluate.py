"""evaluate_run / evaluate_samples / reference statistics / `repa-study eval fid`, on tiny self-made shards."""
import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from fid_toy import ToyDataset, add_noise, toy_images

import study.common.paths
import study.data
import study.sampling
from study.config import SamplerSettings
from study.evaluation import (ExtractorConfig, FeatureStats, StatisticsMismatchError, SyntheticExtractor, evaluate_run,
                              evaluate_samples, find_samples, iter_sample_images, load_reference, sample_shards,
                              train_small_cnn, write_adm_npz)

SETTINGS = SamplerSettings().manifest()  # what study.sampling.sample.sample_run records for the default sampler


@pytest.fixture(scope="module")
def extractor():
    images, labels = toy_images(512, seed=0)
    return SyntheticExtractor(train_small_cnn(images, labels, 4, ExtractorConfig(n_train=512, epochs=4)), "t")


@pytest.fixture(autouse=True)
def toy_data(monkeypatch):
    """study.data.open_dataset -> a small in-memory dataset, whatever the spec; a quicker extractor recipe."""
    monkeypatch.setattr(study.data, "open_dataset", lambda spec, split="train", **kw: ToyDataset(300, seed=7))
    monkeypatch.setattr("study.evaluation.extractor.ExtractorConfig", lambda: ExtractorConfig(n_train=256, epochs=3))


def write_samples(folder, images, step=100, shard=64, **settings):
    """Shards + manifest in the layout of study.sampling.sample.sample_run."""
    folder.mkdir(parents=True, exist_ok=True)
    nhwc = images.permute(0, 2, 3, 1).numpy()
    names = []
    for s in range(0, len(nhwc), shard):
        name = f"samples_{s:07d}_{min(s + shard, len(nhwc)):07d}.npz"
        np.savez(folder / name, arr_0=nhwc[s:s + shard], labels=np.zeros(len(nhwc[s:s + shard]), np.int64))
        names.append(name)
    manifest = {"step": step, "n": len(nhwc), **SETTINGS, **settings, "shards": names, "config_hash": "abc123"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def make_run(tmp_path, name="job-1"):
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"spec": "synthetic:n=300", "split": "train"}}))
    return run


# ------------------------------------------------------------------ shards and manifests
def test_find_samples_matches_step_settings_and_count(tmp_path):
    run = make_run(tmp_path)
    images, _ = toy_images(100, seed=1)
    good = write_samples(run / "samples" / "a", images, step=100)
    write_samples(run / "samples" / "b", images, step=100, cfg_scale=1.5)
    assert find_samples(run, 100, 100, SETTINGS) == good
    assert find_samples(run, 100, 101, SETTINGS) is None  # too few
    assert find_samples(run, 200, 50, SETTINGS) is None  # other step
    assert find_samples(run, 100, 50, {**SETTINGS, "cfg_scale": 1.5}) == run / "samples" / "b"
    assert find_samples(run, 100, 50, {**SETTINGS, "num_steps": 50}) is None
    assert find_samples(run, 100, 50, {**SETTINGS, "unknown_key": 1}) is None  # a key the manifest lacks
    old = run / "samples" / "old"  # drawn before rounding was recorded (rounded, not floored): never reused
    write_samples(old, images, step=100, cfg_scale=2.0)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["rounding"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert find_samples(run, 100, 50, {**SETTINGS, "cfg_scale": 2.0}) is None


def test_sample_shards_follow_the_manifest_and_skip_temporaries(tmp_path):
    images, _ = toy_images(100, seed=1)
    folder = write_samples(tmp_path / "s", images, shard=64)
    np.savez(folder / "samples_0000064_0000128.npz", arr_0=np.zeros((64, 32, 32, 3), np.uint8))  # other chunking
    assert [p.name for p in sample_shards(folder)] == ["samples_0000000_0000064.npz", "samples_0000064_0000100.npz"]
    (folder / "manifest.json").unlink()
    np.savez(folder / "samples_0000000_0000010.tmp.npz", arr_0=np.zeros((10, 32, 32, 3), np.uint8))
    assert all(".tmp" not in p.name for p in sample_shards(folder))
    got = np.concatenate(list(iter_sample_images(write_samples(tmp_path / "t", images), 70, batch_size=32)))
    np.testing.assert_array_equal(got, images[:70].permute(0, 2, 3, 1).numpy())
    with pytest.raises(ValueError, match="holds 100 images but n=101"):
        list(iter_sample_images(tmp_path / "t", 101))


# ------------------------------------------------------------------ references
def test_reference_from_dataset_is_cached_with_provenance(extractor):
    ref = load_reference("synthetic:n=300", extractor)
    assert ref.id == "toy:n=300,size=32,seed=7" and ref.n == 300
    assert ref.stats["pool"].extractor == f"{extractor.id}/pool"
    assert ref.pr_features.shape == (300, 64)
    again = load_reference("synthetic:n=300", extractor)
    np.testing.assert_array_equal(again.stats["pool"].sigma, ref.stats["pool"].sigma)
    assert again.meta["created_at"] == ref.meta["created_at"] and "git_commit" in again.meta  # read from cache
    sub = load_reference("synthetic:n=300", extractor, n=120, pr_n=50)
    assert sub.n == 120 and sub.id.endswith(":n=120") and sub.pr_features.shape == (50, 64)
    folders = [p for p in study.common.paths.cache_dir("reference").iterdir()]
    assert len(folders) == 2 and all((p / "meta.json").is_file() for p in folders)  # no temporaries left
    # tamper with the cached statistics: a plain load reads them, recompute=True replaces them for good
    cached = next(p for p in folders if json.loads((p / "meta.json").read_text())["stats_from"] == "300 dataset images")
    FeatureStats(np.zeros(64), np.eye(64), 300, ref.stats["pool"].extractor).save(cached / "pool.npz")
    assert not load_reference("synthetic:n=300", extractor).stats["pool"].mu.any()
    fresh = load_reference("synthetic:n=300", extractor, recompute=True)
    np.testing.assert_allclose(fresh.stats["pool"].mu, ref.stats["pool"].mu)
    np.testing.assert_allclose(load_reference("synthetic:n=300", extractor).stats["pool"].mu, ref.stats["pool"].mu)


def test_reference_from_adm_npz_images(tmp_path, extractor):
    images, _ = toy_images(150, seed=3)
    path = write_adm_npz(tmp_path / "ref.npz", images=images.permute(0, 2, 3, 1).numpy())
    ref = load_reference(path, extractor, batch_size=40)
    assert ref.id == "adm:ref" and ref.n == 150 and ref.pr_features.shape == (150, 64)


class FakeInception:
    """An 'inception' extractor with tiny outputs, to test the ADM-statistics route without a 299-px network."""

    name, id, stats_prefix, outputs = "inception", "inception-v3-compat-fake", "inception-v3-compat", \
        ("pool", "spatial", "logits")

    def __call__(self, x):
        f = x.float().mean(dim=(2, 3))
        return {"pool": torch.cat([f, f ** 2 / 255], 1), "spatial": f[:, :2], "logits": f}


def test_adm_reference_uses_precomputed_statistics_and_images_for_pr(tmp_path):
    images, _ = toy_images(40, seed=4)
    mu, sigma = np.arange(6.0), np.eye(6) * 2
    path = write_adm_npz(tmp_path / "VIRTUAL_toy.npz", images=images.permute(0, 2, 3, 1).numpy(), mu=mu,
                         sigma=sigma, mu_s=np.zeros(2), sigma_s=np.eye(2))
    ref = load_reference(path, FakeInception(), pr_n=25)
    np.testing.assert_array_equal(ref.stats["pool"].mu, mu)
    assert ref.stats["spatial"].dim == 2 and ref.pr_features.shape == (25, 6)
    assert ref.meta["stats_from"] == "npz mu/sigma"
    # ADM statistics are Inception statistics: another extractor computes its own from arr_0
    assert load_reference(path, SyntheticExtractor(train_small_cnn(images, torch.zeros(40), 1,
                                                                   ExtractorConfig(epochs=1)), "x")).n == 40


# ------------------------------------------------------------------ evaluate
def test_evaluate_samples_reports_all_inception_metrics(tmp_path):
    images, _ = toy_images(60, seed=5)
    ref_path = write_adm_npz(tmp_path / "ref.npz", images=toy_images(80, seed=6)[0].permute(0, 2, 3, 1).numpy())
    ex = FakeInception()
    ref = load_reference(ref_path, ex)
    out = evaluate_samples(write_samples(tmp_path / "s", images), ex, ref, n=60)
    assert set(out) >= {"fid", "sfid", "inception_score", "precision", "recall", "n_samples"}
    assert out["n_samples"] == 60 and out["fid"] > 0 and out["inception_score"] >= 1.0


def test_evaluate_run_reuses_samples_and_writes_a_complete_row(tmp_path, extractor, monkeypatch):
    run = make_run(tmp_path)
    write_samples(run / "samples" / "x", toy_images(200, seed=8)[0], step=100)
    monkeypatch.setattr(study.sampling, "sample_run", lambda *a, **k: pytest.fail("should reuse the samples"))
    row = evaluate_run(run, 100, n=200, extractor=extractor)
    assert "fid" not in row and row["fd_metric"] == "fd_synthetic" and row["fd_synthetic"] > 0
    assert row["n_samples"] == 200 and row["reference"] == "toy:n=300,size=32,seed=7" and row["reference_n"] == 300
    assert (row["extractor"], row["extractor_id"]) == ("synthetic", extractor.id)
    assert (row["sampler_mode"], row["sampler_steps"], row["cfg_scale"], row["sample_seed"]) == ("sde", 250, 1.0, 0)
    assert row["job_id"] == "job-1" and row["step"] == 100 and row["run_hash"] == "abc123"
    assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    assert "git_commit" in row and row["time_total_s"] >= 0
    noisy_dir = write_samples(tmp_path / "noisy", add_noise(toy_images(200, seed=8)[0], 60), step=100)
    noisy = evaluate_run(run, 100, n=200, extractor=extractor, samples=noisy_dir)
    assert noisy["fd_synthetic"] > 2 * row["fd_synthetic"]  # clean FD here is mostly sampling noise (n=200)


def test_evaluate_run_samples_when_nothing_matches(tmp_path, extractor, monkeypatch):
    run = make_run(tmp_path)
    calls = []

    def fake_sample_run(run_dir, step, n, sampler, **kw):
        calls.append((step, n, sampler))
        return write_samples(run_dir / "samples" / "made", toy_images(n, seed=9)[0], step=step, mode=sampler.mode,
                             num_steps=sampler.num_steps, cfg_scale=sampler.cfg_scale, seed=sampler.seed)

    monkeypatch.setattr(study.sampling, "sample_run", fake_sample_run)
    ode = SamplerSettings(mode="ode", num_steps=50, cfg_scale=1.5)
    row = evaluate_run(run, 5, n=64, extractor=extractor, sampler=ode)
    assert calls == [(5, 64, ode)]
    assert (row["sampler_mode"], row["sampler_steps"], row["cfg_scale"]) == ("ode", 50, 1.5)
    evaluate_run(run, 5, n=64, extractor=extractor, sampler=ode)
    assert len(calls) == 1  # second time: reused


def test_evaluate_run_errors(tmp_path, extractor):
    run = make_run(tmp_path)
    samples = write_samples(tmp_path / "s", toy_images(30, seed=1)[0], step=7)
    row = evaluate_run(run, 7, n=30, extractor=FakeInception(), samples=samples)  # no ref: the run's dataset
    assert row["reference"] == "toy:n=300,size=32,seed=7" and row["fid"] > 0 and row["sfid"] > 0
    with pytest.raises(ValueError, match="samples of step 7, not step 8"):
        evaluate_run(run, 8, n=30, extractor=extractor, samples=samples)
    with pytest.raises(ValueError, match="holds 30 images but n=31"):
        evaluate_run(run, 7, n=31, extractor=extractor, samples=samples)
    ref = load_reference("synthetic", extractor)
    with pytest.raises(ValueError, match="was computed with"):
        evaluate_samples(samples, FakeInception(), ref, n=30)
    ref.stats["pool"] = type(ref.stats["pool"])(np.zeros(64), np.eye(64), 10, "other/pool")
    with pytest.raises(StatisticsMismatchError, match="different feature extractors"):
        evaluate_samples(samples, extractor, ref, n=30)


def test_cli_eval_fid_writes_a_generation_row(tmp_path, monkeypatch):
    from jobs.cli import cli
    from results import ResultStore

    run = make_run(tmp_path, "job-cli")
    samples = write_samples(run / "samples" / "x", toy_images(80, seed=2)[0], step=3)
    result = CliRunner().invoke(cli, ["eval", "fid", str(run), "--step", "3", "--n", "80", "--extractor", "synthetic",
                                      "--root", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert '"fd_synthetic"' in result.output and f"reusing samples in {samples}" in result.output
    df = ResultStore(tmp_path / "results").read("generation")
    assert len(df) == 1 and df.loc[0, "job_id"] == "job-cli" and df.loc[0, "n_samples"] == 80
    assert df.loc[0, "fd_synthetic"] > 0 and "fid" not in df.columns
    assert df.loc[0, "protocol"].startswith("synthetic-80-")  # the FID protocol, as sweep evaluations record it
    # 81 > the 80 shards hold: the sampler is asked, and a run without checkpoints is a clear error, not a row
    bad = CliRunner().invoke(cli, ["eval", "fid", str(run), "--step", "3", "--n", "81", "--extractor", "synthetic",
                                   "--root", str(tmp_path / "results")])
    assert bad.exit_code == 1 and "Error: no checkpoint for step 3" in bad.output, bad.output
    assert len(ResultStore(tmp_path / "results").read("generation")) == 1


# ------------------------------------------------------------------ end to end with the real trainer and sampler
def test_end_to_end_smoke_run_synthetic_extractor(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real study.data.open_dataset and extractor recipe
    from study.config import load_train_config
    from study.training import train

    data = "synthetic:n=64,size=32,classes=4,seed=0"
    cfg = load_train_config("smoke", [f"data.spec={data}", "device=cpu", "steps=4", "ckpt_every=4"])
    run = tmp_path / "smoke-run"
    train(cfg, run)
    row = evaluate_run(run, 4, n=24, extractor="synthetic", sampler=SamplerSettings(mode="ode", num_steps=2),
                       batch_size=12)
    assert row["fd_synthetic"] > 0 and row["n_samples"] == 24 and "fid" not in row
    assert row["reference"].startswith("synthetic") and row["reference_n"] == 64
    assert (row["sampler_mode"], row["sampler_steps"]) == ("ode", 2) and row["time_sampling_s"] > 0
    assert row["run_hash"]
    again = evaluate_run(run, 4, n=24, extractor="synthetic", sampler=SamplerSettings(mode="ode", num_steps=2),
                         batch_size=12)
    assert again["time_sampling_s"] == 0 and again["fd_synthetic"] == pytest.approx(row["fd_synthetic"])


def test_cli_eval_reference_and_samples(tmp_path):
    from jobs.cli import cli

    ref = CliRunner().invoke(cli, ["eval", "reference", "synthetic:n=300", "--extractor", "synthetic", "--n", "200"])
    assert ref.exit_code == 0, ref.output
    info = json.loads(ref.output[ref.output.index("{"):])
    assert info["n"] == 200 and info["dims"] == {"pool": 64} and info["pr_images"] == 200
    samples = write_samples(tmp_path / "s", toy_images(50, seed=3)[0])
    out = CliRunner().invoke(cli, ["eval", "samples", str(samples), "--ref", "synthetic:n=300", "--extractor",
                                   "synthetic", "--dataset", "synthetic:n=300", "--n", "40"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.output[out.output.index("{"):])
    assert metrics["n_samples"] == 40 and metrics["fd_synthetic"] > 0 and metrics["reference"].startswith("toy")
    missing = CliRunner().invoke(cli, ["eval", "samples", str(samples), "--ref", str(tmp_path / "none.npz"),
                                       "--extractor", "synthetic"])
    assert missing.exit_code == 1 and "reference batch not found" in missing.output
