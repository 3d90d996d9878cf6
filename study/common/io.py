"""Atomic file writes: a reader (or a job killed mid-write) never sees a partial file.

Every writer goes to a unique temporary file beside the target (so concurrent writers never share one), which is
flushed to disk and renamed onto the target only once complete; on any error the temporary file is removed.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_savez", "atomic_torch_save"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically (same suffix, so libraries
    that infer the format from the name, e.g. PIL, still work)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 1, sort_keys: bool = False) -> Path:
    """JSON (values it cannot encode natively, such as paths and timestamps, are written as strings)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=str))


def atomic_savez(path: str | Path, **arrays: Any) -> Path:
    """``numpy.savez`` (uncompressed, memory-mappable members) written atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: numpy appends no '.npz'
        np.savez(fh, **arrays)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
