"""Faults in files (issue 19, case 11): temporaries a kill left behind, files colleagues cannot read, a corrupt image
found only when first drawn, a config error that poisons an explicit run directory."""
from __future__ import annotations

import os
import socket
import time

import pytest
from fault_support import dead_pid
from train_support import one_thread, smoke_config  # noqa: F401 (autouse fixture)

from results import ResultStore
from study.common import atomic_write_json
from study.config import ConfigError
from study.training import train

HOST = socket.gethostname().split(".")[0]


def _plant(path, size=1 << 16, age_s=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    if age_s:
        os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_temporaries_of_a_killed_checkpoint_write_are_removed_when_the_run_starts_again(tmp_path):
    run = tmp_path / "run"
    train(smoke_config("steps=2", "ckpt_every=2"), run)
    ckpts = run / "checkpoints"
    left = [_plant(ckpts / f".step_0000004.pt.tmp-{HOST}-{dead_pid()}-0a1b2c3d.pt"),   # this host, writer gone
            _plant(ckpts / ".step_0000004.pt.k3j2h1g0.tmp.pt", age_s=7200)]          # an older release's, old
    live = _plant(ckpts / f".step_0000004.pt.tmp-{HOST}-{os.getpid()}-0a1b2c3d.pt")  # a live writer's: kept
    train(smoke_config("steps=4", "ckpt_every=2"), run)
    assert not any(p.exists() for p in left)
    assert live.exists()


def test_temporaries_of_a_killed_store_writer_are_removed_when_the_store_writes(tmp_path):
    table = tmp_path / "tables" / "runs"
    pid = dead_pid()
    left = [_plant(table / f".train-x-20250101T000000-{pid}-0123456789ab.parquet.{HOST}.{pid}.tmp"),
            _plant(table / ".train-x-20250101T000000-99-0123456789ab.parquet.tmp", age_s=7200)]
    ResultStore(tmp_path).write("runs", [{"job_id": "train-y", "status": "done"}])
    assert not any(p.exists() for p in left)


@pytest.fixture
def group_umask():
    old = os.umask(0o002)
    yield 0o002
    os.umask(old)


def test_written_files_follow_the_users_umask(tmp_path, group_umask):
    """Before, atomic writes were mkstemp's 0600: colleagues sharing a results root could not read run inputs."""
    atomic_write_json(tmp_path / "state.json", {"a": 1})
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o664
    run = tmp_path / "run"
    train(smoke_config("steps=2", "ckpt_every=2"), run)
    for name in ("config.yaml", "provenance.json", "checkpoints/step_0000002.pt"):
        assert (run / name).stat().st_mode & 0o777 == 0o664, name


def test_prepared_shards_follow_the_users_umask(tmp_path, group_umask):
    from data_support import write_fake_imagenet

    from study.data import prepare_split

    src = write_fake_imagenet(tmp_path / "imagenet", per_class=(2, 1), masks=False)
    prepare_split(src, tmp_path / "out", "train", shard_size=4, size=32)
    shard = next((tmp_path / "out" / "train").glob("shard-*"))
    assert shard.stat().st_mode & 0o777 == 0o775


def test_data_prepare_reports_every_corrupt_image_at_once(tmp_path):
    """Before, the first corrupt image stopped the pass with only its own name."""
    from data_support import write_fake_imagenet

    from study.data import DatasetError, prepare_split

    src = write_fake_imagenet(tmp_path / "imagenet", per_class=(4, 1), masks=False)
    bad = [sorted((src / "train" / c).iterdir())[i] for c, i in (("n01440764", 1), ("n01484850", 2))]
    bad[0].write_bytes(b"not an image")
    bad[1].write_bytes(bad[1].read_bytes()[:60])  # truncated
    with pytest.raises(DatasetError) as err:
        prepare_split(src, tmp_path / "out", "train", shard_size=4, size=32)
    assert all(p.name in str(err.value) for p in bad), str(err.value)
    assert "2 image(s)" in str(err.value)


def test_a_config_error_after_the_run_header_does_not_poison_an_explicit_run_dir(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="larger than the dataset"):
        train(smoke_config("steps=2", "batch_size=128"), run)  # fails after config.yaml was written
    assert (run / "config.yaml").is_file()
    out = train(smoke_config("steps=2"), run)  # the corrected config trains in the same folder
    assert out["step"] == 2
