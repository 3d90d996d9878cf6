"""A checkpoint file on disk: tensors and plain containers, a content digest inside, read with ``weights_only=True``.

``write_checkpoint(state, path)`` stores ``state`` plus ``digest``, the SHA-256 of everything else in it (every
tensor's dtype, shape and bytes, every other value's repr, in a fixed order: :func:`content_digest`), in one
atomically published ``torch.save`` file, so the digest can never be missing or stale beside its checkpoint.
``read_checkpoint(path)`` loads with ``weights_only=True`` (no Python object a planted file could make run) and
recomputes the digest: a damaged file, a truncated or empty one, or one whose pickle asks for anything but tensors
is a :class:`CorruptCheckpointError` naming the file, never a silently different model.

Checkpoints written before digests existed carry their RNG states as pickled numpy objects and no digest. They load
only when the user opts in with ``REPA_STUDY_TRUST_OLD_CHECKPOINTS=1`` (one warning per file), and even then only the
numpy array types they hold are allowed (still ``weights_only``); without the opt-in they are an
:class:`UnverifiedCheckpointError` that says so. A file needing any other Python object is never loaded.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from study.common import atomic_torch_save, get_logger

__all__ = ["CorruptCheckpointError", "UnverifiedCheckpointError", "TRUST_OLD_ENV", "write_checkpoint",
           "read_checkpoint", "check_checkpoint", "content_digest", "move_aside"]

log = get_logger(__name__)

#: Set to 1 to load checkpoints written before digests existed.
TRUST_OLD_ENV = "REPA_STUDY_TRUST_OLD_CHECKPOINTS"
#: The Python objects a checkpoint of an older repa-study needs: its numpy RNG state (a uint32 array).
_OLD_GLOBALS = {"numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct", "numpy.dtype",
                "numpy.ndarray"}
_warned_old: set[Path] = set()
#: The last checkpoint read, kept for one more read of the same unchanged file (resume checks, then restores).
_last: dict[str, Any] = {}


class CorruptCheckpointError(RuntimeError):
    """A checkpoint that does not load as tensors, or whose content does not match its digest; ``.path``."""

    def __init__(self, path: Path, why: str):
        self.path = Path(path)
        super().__init__(f"checkpoint {path} is damaged: {why}")


class UnverifiedCheckpointError(RuntimeError):
    """A checkpoint without a digest (written by an older repa-study), and no opt-in to trust it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        super().__init__(
            f"checkpoint {path} carries no digest: it was written by an older repa-study, so damage to it cannot be "
            f"detected. If you trust it, set {TRUST_OLD_ENV}=1 and run again (the run's next checkpoints carry "
            f"digests)")


# ------------------------------------------------------------------------------------------------ the digest
def _feed(sha: "hashlib._Hash", value: Any, where: str) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        sha.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        sha.update(memoryview(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(value, dict):
        sha.update(b"{")
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            sha.update(f"{key!r}=".encode())
            _feed(sha, value[key], f"{where}.{key}")
        sha.update(b"}")
    elif isinstance(value, (list, tuple)):
        sha.update(b"[" if isinstance(value, list) else b"(")
        for i, item in enumerate(value):
            _feed(sha, item, f"{where}[{i}]")
        sha.update(b"]")
    elif value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        sha.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise TypeError(f"checkpoint entry {where} is a {type(value).__name__}: a checkpoint holds tensors and plain "
                        f"values only (it is loaded with weights_only=True)")


def content_digest(state: dict[str, Any]) -> str:
    """The SHA-256 of a checkpoint's content (its ``digest`` entry left out): tensors by dtype, shape and bytes,
    other values by type and repr, dict entries in sorted order. Raises ``TypeError`` on a value that
    ``weights_only`` loading would refuse."""
    sha = hashlib.sha256()
    _feed(sha, {k: v for k, v in state.items() if k != "digest"}, "checkpoint")
    return sha.hexdigest()


# ------------------------------------------------------------------------------------------------ write / read
def write_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with its ``digest`` to ``path``, atomically (a full disk: ``DiskFullError`` naming it)."""
    path = Path(path)
    atomic_torch_save({**state, "digest": content_digest(state)}, path)
    return path


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _old_globals() -> list[Any]:
    import numpy as np

    reconstruct = getattr(getattr(np, "_core", np.core), "multiarray")._reconstruct
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's state, on the CPU, after checking it (see the module docstring): raises
    :class:`CorruptCheckpointError`, :class:`UnverifiedCheckpointError` or ``FileNotFoundError``."""
    path = Path(path)
    stamp = _stamp(path)
    if _last.get("key") == (path, stamp):
        return _last.pop("state")
    try:
        needs = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated, empty, not a zip: whatever the reader says
        raise CorruptCheckpointError(path, f"not a readable torch archive ({stamp[0]} bytes; {_why(exc)})") from None
    old = bool(needs)
    if old and not needs <= _OLD_GLOBALS:
        raise CorruptCheckpointError(path, f"it asks for Python objects no checkpoint holds "
                                           f"({', '.join(sorted(needs - _OLD_GLOBALS))}); it was not loaded")
    if old:
        _trust_old(path)
    try:
        with torch.serialization.safe_globals(_old_globals() if old else []):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError, IndexError) as exc:
        raise CorruptCheckpointError(path, f"it does not load as tensors ({_why(exc)})") from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(path, f"it holds a {type(state).__name__}, not a checkpoint")
    if "digest" not in state:
        if not old:
            _trust_old(path)
        return state
    try:
        actual = content_digest(state)
    except TypeError as exc:
        raise CorruptCheckpointError(path, str(exc)) from None
    if actual != state["digest"]:
        raise CorruptCheckpointError(path, f"its content does not match its digest ({actual[:12]}... vs "
                                           f"{str(state['digest'])[:12]}...): changed after it was written")
    return state


def _trust_old(path: Path) -> None:
    if os.environ.get(TRUST_OLD_ENV, "").lower() not in ("1", "true", "yes"):
        raise UnverifiedCheckpointError(path)
    if path not in _warned_old:
        _warned_old.add(path)
        log.warning("loading %s, which carries no digest (written by an older repa-study), because %s=1", path,
                    TRUST_OLD_ENV)


def check_checkpoint(path: str | Path) -> None:
    """Read ``path`` as :func:`read_checkpoint` does, keeping its state for the next read of the same file."""
    path = Path(path)
    state = read_checkpoint(path)
    _last.clear()
    _last.update(key=(path, _stamp(path)), state=state)


def move_aside(path: str | Path, why: str) -> Path:
    """Rename a damaged checkpoint out of the way (``NAME.damaged-TIME``, for inspection; not a ``step_*.pt`` any
    more) with one warning naming both; returns the new path."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
    os.replace(path, aside)
    if _last.get("key", (None,))[0] == path:
        _last.clear()
    log.warning("%s; moved it aside to %s", why, aside.name)
    return aside
