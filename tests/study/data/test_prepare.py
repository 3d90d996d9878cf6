"""`data prepare`: shards of images + SD-VAE moments, resumable, partitioned by --shard I/N; the prepared reader."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from data_support import tiny_vae, write_fake_imagenet

from study.data import (DatasetError, LatentStats, SDVAECodec, collate, compute_latent_stats, latents_from_moments,
                        open_dataset, parse_shard, prepare_split, shards_of_task)
from study.data.prepared import shard_dir


@pytest.fixture
def imagenet(tmp_path):
    return write_fake_imagenet(tmp_path / "imagenet", per_class=(5, 2), masks=False)


@pytest.fixture
def codec():
    return SDVAECodec("tiny-test", vae=tiny_vae())


def test_prepare_writes_shards_stats_and_reads_back(imagenet, tmp_path, codec):
    out = tmp_path / "prepared"
    res = prepare_split(imagenet, out, "train", shard_size=4, size=64, batch_size=3, codec=codec)
    assert res["num_shards"] == 4 and res["written"] == [0, 1, 2, 3] and res["stats"] is not None
    ds = open_dataset(str(out), "train")
    src = open_dataset(str(imagenet), "train", size=64)
    assert len(ds) == 15 and ds.num_classes == 3 and ds.image_size == 64 and ds.class_names == src.class_names
    for i in (0, 6, 14):
        item = ds[i]
        assert torch.equal(item["image"], src[i]["image"]) and item["label"] == src[i]["label"]
        assert item["mask"] is None and item["moments"].shape == (8, 8, 8)
        torch.testing.assert_close(item["moments"], codec.moments(src[i]["image"][None])[0])
    batch = collate([ds[0], ds[1]])
    assert batch["moments"].shape == (2, 8, 8, 8)

    stats = ds.latent_stats
    z = torch.cat([latents_from_moments(ds[i]["moments"][None], stats, generator=torch.Generator().manual_seed(i))
                   for i in range(len(ds))])
    # normalised posterior samples are roughly zero-mean, unit-std per channel (exact in expectation)
    assert z.mean((0, 2, 3)).abs().max() < 0.2 and (z.std((0, 2, 3)) - 1).abs().max() < 0.2
    saved = json.loads((out / "train" / "latent_stats.json").read_text())
    assert saved["latents_scale"] == pytest.approx([1 / s for s in saved["latents_std"]])
    assert ds.labels.tolist() == src.labels.tolist()
    assert "prepared:" in ds.id and ds.id != src.id


def test_shard_partition_covers_every_image_once(imagenet, tmp_path, codec):
    out = tmp_path / "prepared"
    results = [prepare_split(imagenet, out, "train", task=i, num_tasks=3, shard_size=2, size=32, codec=None)
               for i in range(3)]
    owned = sorted(k for r in results for k in r["written"])
    assert owned == list(range(8))  # 15 images / 2 per shard
    assert [r["stats"] for r in results] == [None, None, None]  # images only: no latents, no stats
    index = np.concatenate([np.load(shard_dir(out / "train", k) / "index.npy") for k in range(8)])
    assert sorted(index.tolist()) == list(range(15))
    assert shards_of_task(10, 1, 4) == [1, 5, 9]
    ds = open_dataset(str(out), "train")
    assert len(ds) == 15 and not ds.has_moments and "moments" not in ds[3]


def test_resume_skips_done_shards_and_hides_partial_ones(imagenet, tmp_path, codec, monkeypatch):
    out = tmp_path / "prepared"
    calls = {"n": 0}
    real = codec.moments

    def flaky(images):
        calls["n"] += 1
        if calls["n"] == 3:  # die in the middle of the second shard
            raise KeyboardInterrupt("killed")
        return real(images)

    monkeypatch.setattr(codec, "moments", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_split(imagenet, out, "train", shard_size=4, size=32, batch_size=2, codec=codec)
    split_dir = out / "train"
    assert shard_dir(split_dir, 0).is_dir() and not shard_dir(split_dir, 1).exists()
    assert not list(split_dir.glob(".shard-*"))  # the partial shard was removed, never visible
    with pytest.raises(DatasetError, match="incomplete: 3 of 4 shards missing"):
        open_dataset(str(out), "train")

    before = (shard_dir(split_dir, 0) / "images.npy").stat().st_mtime_ns
    monkeypatch.setattr(codec, "moments", real)
    res = prepare_split(imagenet, out, "train", shard_size=4, size=32, batch_size=2, codec=codec)
    assert res["skipped"] == [0] and res["written"] == [1, 2, 3]
    assert (shard_dir(split_dir, 0) / "images.npy").stat().st_mtime_ns == before
    again = prepare_split(imagenet, out, "train", shard_size=4, size=32, batch_size=2, codec=codec)
    assert again["written"] == [] and again["skipped"] == [0, 1, 2, 3]
    assert len(open_dataset(str(out), "train")) == 15


def test_stale_temporary_shard_from_a_hard_kill_is_cleaned(imagenet, tmp_path):
    out = tmp_path / "prepared"
    prepare_split(imagenet, out, "train", task=1, num_tasks=2, shard_size=4, size=32)
    stale = out / "train" / ".shard-00000.tmp-dead"
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"half")
    with pytest.raises(DatasetError, match="incomplete"):
        open_dataset(str(out), "train")
    prepare_split(imagenet, out, "train", task=0, num_tasks=2, shard_size=4, size=32)
    assert not stale.exists() and len(open_dataset(str(out), "train")) == 15


def test_changed_settings_are_refused(imagenet, tmp_path):
    out = tmp_path / "prepared"
    prepare_split(imagenet, out, "train", shard_size=4, size=32)
    with pytest.raises(DatasetError, match="different settings.*shard_size"):
        prepare_split(imagenet, out, "train", shard_size=5, size=32)
    with pytest.raises(DatasetError, match="holds 32 px images"):
        open_dataset(str(out), "train", size=64)
    with pytest.raises(DatasetError, match="no split 'val'"):
        open_dataset(str(out), "val")
    with pytest.raises(DatasetError, match="without a VAE"):
        compute_latent_stats(out, "train")


def test_parse_shard(monkeypatch):
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert parse_shard("slurm") == (2, 4)


def test_cli_prepare_with_a_local_vae_folder(imagenet, tmp_path):
    from jobs.cli import cli

    vae_dir = tmp_path / "vae"
    tiny_vae().save_pretrained(vae_dir)
    out = tmp_path / "prepared"
    runner = CliRunner()
    args = ["data", "prepare", "--src", str(imagenet), "--out", str(out), "--split", "train", "--split", "val",
            "--shard-size", "4", "--size", "32", "--vae", str(vae_dir), "--device", "cpu", "--workers", "0"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "train: task 0/1 wrote 4 shards" in res.output and "val: task 0/1 wrote 2 shards" in res.output
    assert (out / "train" / "latent_stats.json").is_file()
    res = runner.invoke(cli, args)
    assert "wrote 0 shards, skipped 4" in res.output
    (out / "train" / "latent_stats.json").unlink()
    res = runner.invoke(cli, ["data", "prepare", "--out", str(out), "--stats"])
    assert res.exit_code == 0 and (out / "train" / "latent_stats.json").is_file()
    assert isinstance(open_dataset(str(out), "val").latent_stats, LatentStats)
    res = runner.invoke(cli, ["data", "show", str(out), "--split", "val"])
    assert res.exit_code == 0 and '"images": 6' in res.output
    res = runner.invoke(cli, ["data", "prepare", "--src", str(tmp_path / "nope"), "--out", str(out), "--vae", "none"])
    assert res.exit_code != 0 and "does not exist" in res.output


def test_cli_show_synthetic():
    from jobs.cli import cli

    res = CliRunner().invoke(cli, ["data", "show", "synthetic:n=20,size=32,classes=4"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["images"] == 20 and summary["has_masks"] and summary["per_class_min"] == 5


def test_latent_stats_absent_is_none(imagenet, tmp_path, codec):
    out = tmp_path / "prepared"
    prepare_split(imagenet, out, "train", shard_size=8, size=32)
    assert open_dataset(str(out), "train").latent_stats is None  # images only
    prepare_split(imagenet, out, "val", shard_size=8, size=32, codec=codec)
    val = open_dataset(str(out), "val")
    assert isinstance(val.latent_stats, LatentStats)  # val's own (train has none)
    (out / "val" / "latent_stats.json").unlink()
    assert val.latent_stats is None  # warns; codecs then use the 0.18215 default


def test_reader_keeps_few_shards_open(imagenet, tmp_path):
    out = tmp_path / "prepared"
    prepare_split(imagenet, out, "train", shard_size=1, size=32)
    ds = open_dataset(str(out), "train")
    ds.MAX_OPEN = 4
    first = ds[0]["image"]
    for i in range(len(ds)):
        ds[i]
    assert len(ds._arrays) <= 4
    assert torch.equal(ds[0]["image"], first)
    import pickle

    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers get: no open arrays
    assert clone._arrays == {} and torch.equal(clone[0]["image"], first)


def test_a_prepared_split_points_to_masks(tmp_path):
    """`data prepare --masks` (here on a second run) records the masks folder; the prepared images then get the
    masks the source folder's images get, found by name (files.txt, else the source listing), cropped alike."""
    src = write_fake_imagenet(tmp_path / "imagenet", per_class=(2, 2), masks=True)
    out = tmp_path / "prepared"
    prepare_split(src, out, "val", shard_size=4, size=32)
    plain = open_dataset(str(out), "val")
    assert not plain.has_masks and plain[0]["mask"] is None
    assert (out / "val" / "files.txt").read_text().splitlines()[0] == "n01440764/n01440764_val0.JPEG"
    prepare_split(src, out, "val", shard_size=4, size=32, masks=src / "masks")  # nothing to write but the pointer
    assert json.loads((out / "val" / "manifest.json").read_text())["masks"] == str((src / "masks").resolve())
    folder = open_dataset(str(src), "val", size=32)  # its default masks folder, src/masks
    ds = open_dataset(str(out), "val")
    assert ds.has_masks and ds.id == f"{plain.id}:masks={(src / 'masks' / 'val').resolve()}"
    for i in range(len(ds)):
        a, b = ds[i]["mask"], folder[i]["mask"]
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b))
    assert sum(ds[i]["mask"] is not None for i in range(len(ds))) == 3
    (out / "val" / "files.txt").unlink()  # prepared before files.txt existed: the source listing names the images
    assert torch.equal(open_dataset(str(out), "val", masks=src / "masks")[0]["mask"], folder[0]["mask"])
    (src / "val" / "n01440764" / "n01440764_val9.png").write_bytes(b"")  # the source changed since
    with pytest.raises(DatasetError, match="do not match"):
        open_dataset(str(out), "val")
    with pytest.raises(DatasetError, match="masks directory .* does not exist"):
        prepare_split(src, out, "train", size=32, masks=tmp_path / "nowhere")
    prepare_split(src, out, "train", size=32, masks=src / "masks")  # no train masks: not pointed to, no error
    assert "masks" not in json.loads((out / "train" / "manifest.json").read_text())
    assert not open_dataset(str(out), "train").has_masks
