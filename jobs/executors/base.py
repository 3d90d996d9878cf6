"""What every executor does for a sweep: submit its jobs, say which recorded submissions are still alive, cancel
them, wait for them to end.

A submission is recorded (``ROOT/sweeps/<sweep>/submissions.jsonl``, kept by :mod:`jobs.submit`) as an *entry*:
``job_id, executor, scheduler_id, submitted_at`` and whatever else the executor needs later (SLURM: its folder).
:meth:`Executor.alive` is the one place an executor says what its scheduler knows of such entries: ``sweep status``
and a resubmission (which leaves alive jobs alone) both ask it, and only it.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from jobs.plan import Job
from jobs.spec import SweepSpec
from jobs.states import ENDED, FAILED, PENDING
from jobs.tasks import read_state, write_state
from study.common import get_logger, progress

__all__ = ["Executor", "SubmitError", "QueueError", "Entry", "Record", "sweep_dir"]

log = get_logger(__name__)
#: A recorded submission (one line of submissions.jsonl).
Entry = Mapping[str, Any]
#: ``record(submitted, **extra)`` appends one entry per ``{job id: scheduler id}`` of ``submitted`` (with
#: ``extra`` fields) to the sweep's submissions, as soon as the jobs are in the scheduler's hands.
Record = Callable[..., None]


class SubmitError(RuntimeError):
    """The sweep could not be submitted; nothing (more) was submitted."""


class QueueError(SubmitError):
    """The scheduler's queue could not be read (e.g. ``squeue`` failed): nothing was decided from it."""


def sweep_dir(root: str | Path, sweep: str) -> Path:
    """A sweep's bookkeeping: its spec, plan, submissions and (local executor) driver pid and log."""
    return Path(root) / "sweeps" / sweep


class Executor(ABC):
    """Where a sweep's jobs run. Subclasses are registered by ``name`` in :data:`jobs.executors.EXECUTORS`;
    ``options`` are settings given on the command line for this submission (SLURM: partition, account, ...)."""

    name: ClassVar[str]

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def check(self) -> None:
        """Raise :class:`SubmitError` when jobs cannot be submitted from here (before anything is written)."""

    @abstractmethod
    def submit(self, spec: SweepSpec, root: Path, todo: list[Job], *, record: Record, queued: Mapping[str, str],
               wait: bool, poll_s: float) -> tuple[dict[str, str], dict[str, str] | None]:
        """Start ``todo`` (in plan order, so dependencies come first) and ``record`` them; ``queued``: jobs of this
        sweep still alive on this executor from an earlier submission (job id -> scheduler id), which jobs of
        ``todo`` may depend on. Returns ``({job id: scheduler id}, {job id: final state} when waited, else None)``."""

    @abstractmethod
    def alive(self, root: Path, sweep: str, entries: Mapping[str, Entry]) -> dict[str, str | None] | None:
        """What the scheduler says of these submissions (job id -> entry): ``{job id: RUNNING or PENDING}`` for
        those still queued or running (the value None where it does not say which: the job's state file is the
        word); a job left out is not alive. None instead of a mapping: this executor cannot tell (nothing of it
        outlives its process; a job's lock says whether it runs). A queue that cannot be read raises
        :class:`QueueError`, never an empty answer."""

    @abstractmethod
    def cancel(self, root: Path, sweep: str, entries: Mapping[str, Entry]) -> list[str]:
        """Stop these submissions where they are still alive; returns the job ids stopped (the caller marks them
        cancelled)."""

    def lost_error(self, entry: Entry) -> str:
        """The error recorded for a job that left the scheduler without ending (:meth:`wait`)."""
        return f"{self.name} job {entry.get('scheduler_id')} ended without recording an end state"

    def wait(self, root: Path, sweep: str, entries: Mapping[str, Entry], poll_s: float) -> dict[str, str]:
        """Block until every job of ``entries`` has ended: its state file says so, or :meth:`alive` has not
        counted it for three polls in a row (it is then marked failed: :meth:`lost_error`). Returns ``{job id: final state}``."""
        final: dict[str, str] = {}
        missing: Counter[str] = Counter()
        bar = progress(total=len(entries), desc=f"sweep {sweep}", unit="job")
        try:
            while len(final) < len(entries):
                try:
                    alive = self.alive(root, sweep, {j: e for j, e in entries.items() if j not in final})
                except QueueError as exc:  # no word this time: nobody is counted missing
                    log.warning("%s; asking again in %.0f s", exc, poll_s)
                    alive = None
                for job_id, entry in entries.items():
                    if job_id in final:
                        continue
                    state = read_state(root, job_id).get("state", PENDING)
                    if state in ENDED:
                        final[job_id] = state
                    elif alive is not None and job_id not in alive:
                        missing[job_id] += 1
                        if missing[job_id] >= 3:
                            write_state(root, job_id, state=FAILED, error=self.lost_error(entry))
                            final[job_id] = FAILED
                    else:
                        missing[job_id] = 0
                    if job_id in final:
                        bar.update(1)
                if len(final) < len(entries):
                    time.sleep(poll_s)
        finally:
            bar.close()
        return final
