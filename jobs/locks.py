"""Job locks: ``ROOT/jobs/<job id>/lock``, held (``flock``) while a job runs, so the same job, or the same run
folder, never runs twice at once.

A job takes its own lock and, for a group of trainings, every member run's, all or none (:func:`job_locks`); a copy
that finds one held waits for the holder to end. :func:`job_running` says, by taking a lock for an instant, whether
a job runs somewhere right now, whatever the scheduler's queue says (an orphan of a killed driver, another sweep's
copy). The lock file names its holder (pid and host) for the messages of the others. ``flock`` must work on the file
system (local disks, NFSv4, Lustre mounted with ``flock``).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO, Iterator

from results import ResultStore
from study.common import get_logger

__all__ = ["JobBusyError", "job_locks", "job_running", "wait_while_running", "LOCK_FILE", "LOCK_POLL_S"]

log = get_logger(__name__)
LOCK_FILE = "lock"
#: How often a job waiting for another copy of itself (or for its training) looks again, in seconds.
LOCK_POLL_S = float(os.environ.get("REPA_STUDY_LOCK_POLL_S", "10"))


class JobBusyError(RuntimeError):
    """Another process holds this job's lock: it is already running somewhere."""


def _holder(directory: Path) -> str:
    with contextlib.suppress(OSError):
        text = (directory / LOCK_FILE).read_text().split()
        if len(text) >= 2:
            return f"pid {text[0]} on {text[1]}"
    return "another process"


def _take_locks(directories: list[Path]) -> list[IO[str]]:
    """Every directory's lock, all or none (sorted: no two takers wait on each other); :class:`JobBusyError`
    naming the first one held elsewhere."""
    handles: list[IO[str]] = []
    try:
        for directory in sorted(set(directories)):
            directory.mkdir(parents=True, exist_ok=True)
            fh = open(directory / LOCK_FILE, "a+")
            handles.append(fh)
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JobBusyError(f"job {directory.name} is already running ({_holder(directory)}; lock "
                                   f"{directory / LOCK_FILE})") from None
        for fh in handles:  # who holds it, for the messages of the others
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()} {socket.gethostname()}\n")
            fh.flush()
        return handles
    except BaseException:
        for fh in handles:
            fh.close()
        raise


@contextlib.contextmanager
def job_locks(directories: list[Path], *, wait: bool = True) -> Iterator[None]:
    """Hold the locks of ``directories`` (a job's, and a group's members') while the block runs; with ``wait``,
    a lock held elsewhere is waited for (one warning), else it is a :class:`JobBusyError`."""
    warned = False
    while True:
        try:
            handles = _take_locks(directories)
            break
        except JobBusyError as exc:
            if not wait:
                raise
            if not warned:
                log.warning("%s: waiting for it to end (then only what it left undone runs)", exc)
                warned = True
            time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        for fh in handles:
            fh.close()


def job_running(root: str | Path, job_id: str) -> str | None:
    """Who holds the job's lock (``"pid P on HOST"``) when it is running somewhere, else None (checked by taking
    the lock for an instant)."""
    directory = ResultStore(root).run_dir(job_id)
    if not (directory / LOCK_FILE).is_file():
        return None
    try:
        with open(directory / LOCK_FILE, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _holder(directory)
    except OSError:
        return None
    return None


def wait_while_running(root: str | Path, job_id: str, why: str) -> None:
    """Block while the job runs somewhere (its lock is held), with one warning saying who waits for what."""
    holder = job_running(root, job_id)
    if holder is not None:
        log.warning("job %s is running elsewhere (%s): %s waits for it to end", job_id, holder, why)
    while job_running(root, job_id) is not None:
        time.sleep(LOCK_POLL_S)
