"""Atomic writes: complete files or nothing, no temporary left behind."""
import numpy as np
import pytest

from study.common import atomic_path, atomic_savez, atomic_write_json


def test_atomic_writes_publish_complete_files(tmp_path):
    target = tmp_path / "sub" / "a.npz"
    atomic_savez(target, x=np.arange(3))
    assert np.load(target)["x"].tolist() == [0, 1, 2]
    atomic_write_json(tmp_path / "m.json", {"p": tmp_path})
    assert (tmp_path / "m.json").read_text().strip().startswith("{")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.npz", "m.json", "sub"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_temporary_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "grid.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
