"""Provenance recorded with every row and run: git commit, package versions, host, times."""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("repa-study", "torch", "torchvision", "timm", "transformers", "open_clip_torch", "diffusers",
            "numpy", "pandas", "pyarrow", "scipy", "submitit", "torch-fidelity")


@functools.lru_cache(maxsize=None)
def git_commit(path: str | None = None) -> str:
    """The commit of the checkout holding this package (``+dirty`` when it has local changes), else 'unknown'."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return os.environ.get("REPA_STUDY_GIT_COMMIT", "unknown")
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("REPA_STUDY_GIT_COMMIT", "unknown")


@functools.lru_cache(maxsize=None)
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def provenance() -> dict[str, object]:
    """A flat dict to attach to rows: ``git_commit, host, python, versions`` (a compact 'pkg=ver;...' string)."""
    return {
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "versions": ";".join(f"{k}={v}" for k, v in package_versions().items()),
    }
