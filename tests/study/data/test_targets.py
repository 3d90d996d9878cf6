"""The encoder-target cache (study.data.targets, `repa-study data encode`): cached targets equal the online ones to
bf16 precision, shards resume, training reads them instead of running the encoder (CPU, tiny encoder)."""
import json

import pytest
import torch
from click.testing import CliRunner
from train_support import SMOKE_DATA, log_rows, one_thread, smoke_config  # noqa: F401 (autouse fixture)

import encoders
from study.data import TargetCache, TargetCacheError, open_dataset, open_target_caches, targets_dir, write_targets
from study.objectives import TrainingStep

BF16_RTOL = 2**-8  # bf16 keeps 8 significant bits: one rounding is within half of this


def _encoder():
    return encoders.get_encoder("dinov2-vit-b", weights="tiny")


def test_cached_targets_equal_online_ones_and_resume(tmp_path):
    enc = _encoder()
    for task in (0, 1):
        out = write_targets(enc, SMOKE_DATA, task=task, num_tasks=2, shard_size=20, batch_size=8)
    assert out["num_shards"] == 4 and out["written"] == [1, 3]
    directory = targets_dir(SMOKE_DATA, "train", "dinov2-vit-b", "tiny", False)
    assert directory == type(directory)(out["directory"])
    cache = TargetCache(directory)
    ds = open_dataset(SMOKE_DATA)
    idx = [63, 0, 21, 40, 5]
    online = TrainingStep(smoke_config(), None, [enc], None, 4).features(torch.stack([ds[i]["image"] for i in idx]))
    cached = cache.read(idx)
    assert cached.dtype == torch.bfloat16 and cached.shape == online[0].shape
    torch.testing.assert_close(cached.float(), online[0], rtol=BF16_RTOL, atol=1e-6)
    assert float((cached.float() - online[0]).abs().max()) > 0  # really rounded, not the same tensor

    (directory / "shard-00002.npy").unlink()  # a lost shard: the cache refuses, a rerun of its task rewrites it
    with pytest.raises(TargetCacheError, match="incomplete.*data encode"):
        TargetCache(directory)
    again = write_targets(enc, SMOKE_DATA, task=0, num_tasks=2, shard_size=20)
    assert again["written"] == [2] and again["skipped"] == [0]
    assert torch.equal(TargetCache(directory).read(idx), cached)


def test_training_reads_the_cache_instead_of_the_encoder(tmp_path, monkeypatch):
    base = ("steps=3", "log_every=1", "method=irepa", "encoder.weights=tiny")
    cfg = smoke_config(*base, "encoder.targets=cache")
    from study.training import train

    with pytest.raises(TargetCacheError, match=r"repa-study data encode --encoder dinov2-vit-b"):
        train(cfg, tmp_path / "missing")
    res = CliRunner().invoke(__import__("jobs.cli", fromlist=["cli"]).cli, [
        "data", "encode", "--encoder", "dinov2-vit-b", "--data", SMOKE_DATA, "--weights", "tiny", "--bf16",
        "--device", "cpu", "--workers", "0", "--shard-size", "32"])
    assert res.exit_code == 0, res.output
    assert json.loads((targets_dir(SMOKE_DATA, "train", "dinov2-vit-b", "tiny", True) / "manifest.json")
                      .read_text())["num_shards"] == 2

    import study.pretrain as P

    def no_encoder(*a, **k):
        raise AssertionError("the encoder must not be built when its targets are cached")

    online = tmp_path / "online"
    train(smoke_config(*base), online)
    monkeypatch.setattr(P, "load_encoder", no_encoder)
    out = train(cfg, tmp_path / "cached")
    assert out["step"] == 3
    a, b = log_rows(online), log_rows(tmp_path / "cached")
    assert a[0]["loss_v"] == b[0]["loss_v"]  # same model, data and noise; the targets differ by bf16 rounding only
    assert b[0]["loss_align"] == pytest.approx(a[0]["loss_align"], rel=1e-2)
    assert cfg.model_dump()["encoder"]["targets"] == "cache" and "targets" not in smoke_config().model_dump()["encoder"]


def test_a_cache_of_other_images_is_refused(tmp_path):
    write_targets(_encoder(), SMOKE_DATA, shard_size=64)
    d = targets_dir(SMOKE_DATA, "train", "dinov2-vit-b", "tiny", False)
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**manifest, "dataset": "prepared:/elsewhere:train:n=64"}))
    with pytest.raises(TargetCacheError, match="written for prepared:/elsewhere"):
        open_target_caches(SMOKE_DATA, "train", ["dinov2-vit-b"], "tiny", False, dataset=open_dataset(SMOKE_DATA))
    with pytest.raises(TargetCacheError, match="other inputs"):  # and the writer will not mix two caches
        write_targets(_encoder(), SMOKE_DATA, shard_size=64)
