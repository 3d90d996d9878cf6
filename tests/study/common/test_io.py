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


def test_json_lines_are_appended_whole_and_read_past_a_torn_last_line(tmp_path):
    from study.common import append_jsonl, read_jsonl

    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"step": 1}, {"step": 2}])
    with open(path, "a") as fh:
        fh.write('{"step": 3, "lo')  # torn
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    append_jsonl(path, [{"step": 3}])  # the torn tail is cut first: the new line stands on its own
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):  # damage before the last line is not a torn write
        read_jsonl(path)


def test_temporaries_name_their_writer_and_only_dead_writers_leftovers_go(tmp_path):
    import os
    import subprocess

    from study.common import remove_stale_temporaries, temporary_name

    mine = temporary_name(tmp_path / "step_0000001.pt")
    assert mine.suffix == ".pt" and f"-{os.getpid()}-" in mine.name
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{proc.pid}-")
    for p in (mine, dead):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead] and mine.exists()
