"""Helpers of the fault-injection suite (tests/faults/): planted pickles, damaged files, a full file system."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import torch


class Payload:
    """An object whose unpickling runs code: it writes ``marker`` (what an attacker's planted file would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('the payload ran')",)


def plant_pickle(path: Path, marker: Path) -> Path:
    """A ``torch.save`` file at ``path`` that runs code when loaded with ``weights_only=False``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Payload(marker), "ema": Payload(marker), "state_dict": Payload(marker)}, path)
    return path


def damage(path: Path, *, at: float = 0.5, size: int = 4096, byte: int | None = None) -> None:
    """Overwrite ``size`` bytes at fraction ``at`` of the file: random garbage, or ``byte`` repeated (0xFF makes
    float32 NaNs)."""
    data = os.urandom(size) if byte is None else bytes([byte]) * size
    n = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(max(0, min(n - size, int(n * at))))
        fh.write(data[:n])


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@contextlib.contextmanager
def _mounted_tmpfs(where: Path, size_kib: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=1777", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {out.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of ``directory`` up to ``leave`` free bytes with one file (returned)."""
    filler = directory / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb") as fh:
        free = shutil.disk_usage(directory).free - leave
        chunk = b"\0" * (1 << 16)
        with contextlib.suppress(OSError):
            while free > 0:
                fh.write(chunk[:free])
                fh.flush()
                free -= len(chunk)
    return filler


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A private 4 MiB tmpfs (root only: the test skips otherwise); fill it with :func:`fill`."""
    with _mounted_tmpfs(tmp_path / "disk", 4096) as where:
        yield where


@pytest.fixture
def stub_slurm(tmp_path, monkeypatch) -> Path:
    """Stub ``sbatch`` (appends its arguments to the returned log, answers with a job id) and ``squeue``
    (``SQUEUE_MODE``: fail, empty, or list one job that is nobody's) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\necho 'Submitted batch job 4242'\n")
    (bin_dir / "squeue").write_text('#!/bin/sh\ncase "$SQUEUE_MODE" in\n'
                                    '  fail) echo "slurm_load_jobs error: Socket timed out" >&2; exit 1;;\n'
                                    '  empty) exit 0;;\n  *) echo "999 RUNNING";;\nesac\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log
