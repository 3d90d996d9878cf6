"""The results store: atomic per-write files, union on read, latest-wins dedupe, versioning, corruption."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from results import JOB_HASH, RUN_HASH, CorruptResultError, ResultStore, StoreError
from results import store as store_mod


def test_default_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("REPA_STUDY_ROOT", str(tmp_path / "r"))
    assert ResultStore().root == tmp_path / "r"
    monkeypatch.delenv("REPA_STUDY_ROOT")
    assert ResultStore().root == Path("runs")


def test_write_read_roundtrip_with_provenance(tmp_path):
    store = ResultStore(tmp_path)
    path = store.write("generation", [{"job_id": "j1", "encoder": "e", "step": 10, "fid": 3.5},
                                      {"job_id": "j1", "encoder": "e", "step": 20, "fid": 2.5}])
    assert path.exists() and path.parent == tmp_path / "tables" / "generation" and path.name.startswith("j1-")
    df = store.read("generation")
    assert sorted(df["step"]) == [10, 20]
    assert set(df["fid"]) == {3.5, 2.5}
    for col in ("git_commit", "host", "python", "versions", "schema_version", "written_at", "source_file"):
        assert col in df.columns, col
    assert (df["schema_version"] == store_mod.SCHEMA_VERSION).all()
    # a DataFrame is accepted too, and an empty table reads as an empty frame
    store.write("encoders", pd.DataFrame({"job_id": ["s"], "encoder": ["x"], "dataset": ["d"], "lds": [0.1]}))
    assert store.read("encoders")["lds"].tolist() == [0.1]
    assert store.read("runs").empty
    assert store.tables() == ["encoders", "generation"]


def test_rerun_replaces_rows_latest_wins(tmp_path):
    store = ResultStore(tmp_path)
    store.write("generation", [{"job_id": "j1", "step": 10, "fid": 9.0}, {"job_id": "j2", "step": 10, "fid": 8.0}])
    store.write("generation", [{"job_id": "j1", "step": 10, "fid": 7.0}])
    df = store.read("generation")
    assert len(df) == 2
    assert df.set_index("job_id").loc["j1", "fid"] == 7.0
    assert len(store.read("generation", dedupe=False)) == 3


def test_bad_input_is_rejected_and_writes_nothing(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(StoreError, match="invalid table name"):
        store.write("../evil", [{"a": 1}])
    with pytest.raises(StoreError, match="empty"):
        store.write("runs", [])
    with pytest.raises(StoreError, match="list of dicts"):
        store.write("runs", [1, 2])
    assert not (tmp_path / "tables" / "runs").exists() or store.files("runs") == []


def _writer(root: str, worker: int, n: int) -> None:
    store = ResultStore(root)
    for i in range(n):
        store.write("runs", [{"job_id": f"w{worker}-r{i}", "worker": worker, "i": i}])


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 50)) for w in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = ResultStore(tmp_path).read("runs", dedupe=False)
    assert len(df) == 16 * 50
    assert df["job_id"].is_unique
    assert set(zip(df["worker"], df["i"])) == {(w, i) for w in range(16) for i in range(50)}
    assert not [p for p in (tmp_path / "tables" / "runs").iterdir() if p.name.startswith(".")]


def test_writer_killed_mid_write_leaves_no_visible_file(tmp_path):
    flag = tmp_path / "writing"
    script = textwrap.dedent(f"""
        import time, pathlib
        import pyarrow.parquet as pq
        from results import ResultStore
        real = pq.write_table
        def slow(table, where, **kw):
            where.write(b"PAR1 partial bytes")
            where.flush()
            pathlib.Path({str(flag)!r}).touch()
            time.sleep(60)
        pq.write_table = slow
        ResultStore({str(tmp_path)!r}).write("runs", [{{"job_id": "killed", "x": 1}}])
    """)
    store = ResultStore(tmp_path)
    store.write("runs", [{"job_id": "kept", "x": 0}])
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.time() + 60
        while not flag.exists():
            assert proc.poll() is None, "writer exited before writing"
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    hidden = [p for p in (tmp_path / "tables" / "runs").iterdir() if p.name.startswith(".")]
    assert hidden, "the partial file should exist under a hidden temporary name"
    assert [p.name.split("-")[0] for p in store.files("runs")] == ["kept"]
    assert store.read("runs")["job_id"].tolist() == ["kept"]


def test_corrupted_file_is_named_and_others_still_readable(tmp_path, caplog):
    store = ResultStore(tmp_path)
    store.write("generation", [{"job_id": "good", "step": 1, "fid": 1.0}])
    bad = tmp_path / "tables" / "generation" / "broken-job.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(CorruptResultError) as info:
        store.read("generation")
    msg = str(info.value)
    assert str(bad) in msg and "1 readable" in msg and "strict=False" in msg
    assert info.value.files == [bad]
    with caplog.at_level("WARNING"):
        df = store.read("generation", strict=False)
    assert df["job_id"].tolist() == ["good"]
    assert "broken-job.parquet" in caplog.text


def test_schema_versions_upgrade_old_files_and_refuse_newer(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    version = store_mod.SCHEMA_VERSION
    store.write("runs", [{"job_id": "old", "state": "done"}])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", version + 1)
    monkeypatch.setitem(store_mod.UPGRADES, "runs", {version: lambda df: df.rename(columns={"state": "status"})})
    store.write("runs", [{"job_id": "new", "status": "failed"}])
    df = store.read("runs").set_index("job_id")
    assert df.loc["old", "status"] == "done" and df.loc["new", "status"] == "failed"
    assert set(df["schema_version"]) == {version + 1}
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", version)
    with pytest.raises(StoreError, match="newer"):
        store.read("runs")


def test_version_1_tables_load_with_one_name_per_hash(tmp_path, monkeypatch):
    """Version 1 spelled two hashes ``config_hash``: the evaluated run's in generation rows, the writing job's own
    in the others. Its files load with each hash under its own name, next to the rows of this version."""
    store = ResultStore(tmp_path)
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 1)  # the writer of version 1
    store.write("generation", [{"job_id": "eval-e1", "step": 100, "config_hash": "run1", "fid": 20.0}])
    store.write("encoders", [{"job_id": "score-s1", "encoder": "a", "dataset": "d", "config_hash": "s1"}])
    store.write("runs", [{"job_id": "train-t1", "status": "done", "config_hash": "t1"}])
    monkeypatch.undo()
    store.write("generation", [{"job_id": "eval-e2", "step": 100, RUN_HASH: "run2", JOB_HASH: "e2", "fid": 19.0}])
    store.write("runs", [{"job_id": "train-t2", "status": "done", JOB_HASH: "t2", RUN_HASH: "run2"}])

    gen = store.read("generation").set_index("job_id")
    assert "config_hash" not in gen.columns and set(gen["schema_version"]) == {store_mod.SCHEMA_VERSION}
    assert gen[RUN_HASH].to_dict() == {"eval-e1": "run1", "eval-e2": "run2"}
    assert store.read("encoders")[JOB_HASH].tolist() == ["s1"]
    runs = store.read("runs").set_index("job_id")
    assert "config_hash" not in runs.columns and runs[JOB_HASH].to_dict() == {"train-t1": "t1", "train-t2": "t2"}
    assert store.compact("runs") and "config_hash" not in pd.read_parquet(tmp_path / "collected" / "runs.parquet")


def test_compact_writes_one_deduplicated_file(tmp_path):
    store = ResultStore(tmp_path)
    store.write("runs", [{"job_id": "a", "status": "running"}])
    store.write("runs", [{"job_id": "a", "status": "done"}, {"job_id": "b", "status": "done"}])
    out = store.compact("runs")
    df = pd.read_parquet(out)
    assert out == tmp_path / "collected" / "runs.parquet"
    assert sorted(df["job_id"]) == ["a", "b"] and set(df["status"]) == {"done"}
    assert len(store.files("runs")) == 2
    assert store.compact("encoders") is None


def test_results_show_cli(tmp_path):
    from click.testing import CliRunner

    from jobs.cli import cli

    store = ResultStore(tmp_path)
    store.write("generation", [{"job_id": "j1", "encoder": "enc-a", "step": 5, "fid": 12.5}])
    run = CliRunner().invoke
    listing = run(cli, ["results", "show", "--root", str(tmp_path)])
    assert listing.exit_code == 0 and "generation" in listing.output
    table = run(cli, ["results", "show", "--root", str(tmp_path), "--table", "generation", "--json"])
    assert table.exit_code == 0
    import json

    assert json.loads(table.output)[0]["fid"] == 12.5
    (tmp_path / "tables" / "generation" / "bad.parquet").write_bytes(b"junk")
    failed = run(cli, ["results", "show", "--root", str(tmp_path), "--table", "generation"])
    assert failed.exit_code != 0 and "bad.parquet" in failed.output
    lenient = run(cli, ["results", "show", "--root", str(tmp_path), "--table", "generation", "--no-strict",
                        "--columns", "encoder,fid"])
    assert lenient.exit_code == 0 and "enc-a" in lenient.output and "12.5" in lenient.output
    missing = run(cli, ["results", "show", "--root", str(tmp_path), "--table", "generation", "--no-strict",
                        "--columns", "nope"])
    assert missing.exit_code != 0 and "no column(s) ['nope']" in missing.output


def test_generation_rows_of_other_sample_counts_or_extractors_are_kept(tmp_path):
    from results import ResultStore

    store = ResultStore(tmp_path)
    base = {"job_id": "train-1", "step": 100, "extractor": "inception", "reference": "adm", "sampler_mode": "sde",
            "sampler_steps": 250, "cfg_scale": 1.0, "sample_seed": 0}
    store.write("generation", [{**base, "n_samples": 10000, "fid": 20.0}])
    store.write("generation", [{**base, "n_samples": 50000, "fid": 19.0}])
    store.write("generation", [{**base, "n_samples": 50000, "fid": 18.5}])  # a re-run replaces its twin
    df = store.read("generation").sort_values("n_samples")
    assert df["fid"].tolist() == [20.0, 18.5]
