"""Atomic file writes: a reader (or a job killed mid-write) never sees a partial file.

Every writer goes to a unique temporary file beside the target (so concurrent writers never share one), which is
flushed to disk and renamed onto the target only once complete; on any error the temporary file is removed.

What else a shared cluster file system asks of a write:

- **Permissions**: the published file gets the mode an ordinary ``open`` would give it (``0666`` less the user's
  umask), not ``mkstemp``'s ``0600``, so colleagues of a group-shared results root can read run inputs.
- **A full disk** (``ENOSPC``, or a quota: ``EDQUOT``) is one :class:`DiskFullError` whose message names the file and
  the free space, never a library's opaque error (``torch.save`` reports ``inline_container.cc ... unexpected pos``).
- **Stale temporaries**: a temporary file's name carries its writer's host and pid (:func:`temporary_name`), so a
  later run can tell a dead writer's leftover (an 11 GB checkpoint after a kill) from a live write and remove it
  (:func:`remove_stale_temporaries`).
- **JSON-lines files** (logs, submission records) are appended a whole line at a time and read back tolerating a
  torn last line (:func:`append_jsonl`, :func:`read_jsonl`).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from study.common.log import get_logger

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_savez", "atomic_torch_save",
           "DiskFullError", "disk_full_error", "file_mode", "temporary_name", "remove_stale_temporaries",
           "append_jsonl", "read_jsonl", "file_digest"]

log = get_logger(__name__)

#: A temporary file whose writer cannot be checked (another host, or a name without host and pid) is stale once it
#: has not been written to for this long (a live writer of even an 11 GB checkpoint touches it every second).
STALE_AFTER_S = 3600.0
_FULL = (errno.ENOSPC, errno.EDQUOT)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>.+)-(?P<pid>\d+)-(?P<tag>[0-9a-f]+)(?:\.[^.]*)?$")
_OLD_TEMPORARY = re.compile(r"^\..+\.tmp(\.[^.]*)?$")  # mkstemp's names, written before host and pid were


class DiskFullError(OSError):
    """No space (or quota) left where a file was being written; the message names the file and the free space."""


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def disk_full_error(path: str | Path, cause: BaseException | None = None) -> DiskFullError:
    """The :class:`DiskFullError` for a failed write of ``path``: one line with the free space where it lives."""
    path = Path(path)
    where = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    try:
        usage = shutil.disk_usage(where)
        free = f"{_size(usage.free)} free of {_size(usage.total)}"
    except OSError:
        free = "free space unknown"
    code = getattr(cause, "errno", None) or errno.ENOSPC
    what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
    return DiskFullError(code, f"{what} writing {path} ({free} there); free some space and run again")


def _is_full(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the only other way (and put it back at once)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open`` gives a new file: ``0666`` less the user's umask."""
    return 0o666 & ~_umask()


def temporary_name(path: str | Path) -> Path:
    """A unique temporary path beside ``path`` naming its writer: ``.NAME.tmp-HOST-PID-TAG.SUFFIX`` (the suffix
    kept, so libraries that infer the format from the name, e.g. PIL, still work)."""
    path = Path(path)
    host = socket.gethostname().split(".")[0] or "host"
    return path.with_name(f".{path.name}.tmp-{host}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(path: Path, now: float) -> bool:
    try:
        age = now - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    m = _TEMPORARY.match(path.name)
    if m and m["host"] == (socket.gethostname().split(".")[0] or "host"):
        return int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
    return (m is not None or _OLD_TEMPORARY.match(path.name) is not None) and age > STALE_AFTER_S


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files (and folders) in ``directory`` left by writers that are gone: a writer on this
    host whose process has ended, or, for another host's (or an older release's) temporaries, one untouched for
    :data:`STALE_AFTER_S`. Returns what was removed; each removal is logged with its size."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed, now = [], time.time()
    for path in directory.iterdir():
        if not path.name.startswith(".") or not _is_stale(path, now):
            continue
        size = path.stat().st_size if path.is_file() else 0
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except FileNotFoundError:
            continue
        log.warning("removed %s, a temporary file left by a writer that stopped (%s)", path, _size(size))
        removed.append(path)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically with the mode an ordinary
    ``open`` would give it. A full disk raises :class:`DiskFullError` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        if _is_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full_error(path, exc) from exc
        raise
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


class _HashingWriter:
    """A binary file seen through ``write``: every byte also goes into a SHA-256, and the first ``OSError`` is kept
    (a library may wrap it into its own error)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.sha, self.error = fh, hashlib.sha256(), None

    def write(self, data: Any) -> int:
        try:
            n = self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.sha.update(memoryview(data)[:n] if n is not None else data)
        return n

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as exc:
            self.error = exc
            raise


def atomic_torch_save(obj: Any, path: str | Path) -> str:
    """``torch.save`` written atomically; returns the SHA-256 of the bytes written (computed while writing, so
    the file is not read again). A full disk is a :class:`DiskFullError` naming ``path``."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            writer = _HashingWriter(fh)
            try:
                torch.save(obj, writer)
                writer.flush()
            except Exception as exc:
                if _is_full(writer.error) or _is_full(exc):
                    raise disk_full_error(path, writer.error or exc) from exc
                raise
    return writer.sha.hexdigest()


def file_digest(path: str | Path, chunk: int = 1 << 24) -> str:
    """The SHA-256 of a file's bytes (read in 16 MiB chunks)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
    return sha.hexdigest()


# ------------------------------------------------------------------------------------------------ JSON lines
def _cut_torn_tail(fd: int, path: Path) -> int:
    """If the file does not end with a newline, cut its torn last line (a write that a full disk or a kill left
    half done); returns the size after."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    cut, end = 0, size
    while end > 0:  # back to the last newline, 1 MiB at a time
        start = max(0, end - (1 << 20))
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            cut = start + found + 1
            break
        end = start
    os.ftruncate(fd, cut)
    log.warning("%s: dropped a torn last line (%d bytes, left by a full disk or a killed writer)", path, size - cut)
    return cut


def append_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append ``rows`` to a JSON-lines file, each a whole line: a torn tail is cut first (so a new line never
    continues a half-written one), the lines go out in one ``O_APPEND`` write, and a failed write (a full disk: a
    :class:`DiskFullError`) is cut back, so no partial line stays behind."""
    path = Path(path)
    data = "".join(json.dumps(dict(r), default=str) + "\n" for r in rows).encode()
    if not data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = _cut_torn_tail(fd, path)
        done = 0
        try:
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError as exc:
            os.ftruncate(fd, size)
            if _is_full(exc):
                raise disk_full_error(path, exc) from exc
            raise
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file ([] when it does not exist). A torn last line is dropped with a warning; an
    unreadable line before it is a ``ValueError`` naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").split("\n")
    except FileNotFoundError:
        return []
    rows = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            if i == last:
                log.warning("%s: dropped a torn last line (%d bytes, left by a full disk or a killed writer)",
                            path, len(line))
                continue
            raise ValueError(f"{path}, line {i + 1}: not JSON ({exc}); it is not the last line, so it was not torn "
                             f"by a write: move the file aside or remove that line") from None
    return rows
