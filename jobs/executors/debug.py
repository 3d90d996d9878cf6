"""The debug executor: every job in the calling process, one after another, in plan order (for pdb)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from jobs.executors.base import Entry, Executor, Record
from jobs.plan import Job
from jobs.spec import SweepSpec
from jobs.states import DONE, FAILED
from jobs.tasks import run_job
from study.common import get_logger, progress

__all__ = ["DebugExecutor", "run_debug"]

log = get_logger(__name__)


def run_debug(jobs: Sequence[Job], root: str | Path, sweep: str) -> dict[str, str]:
    """Run ``jobs`` here; returns ``{job_id: final state}`` (a failure is logged, the other jobs still run)."""
    final: dict[str, str] = {}
    for job in progress(list(jobs), desc=f"sweep {sweep} (debug)", unit="job"):
        try:
            final[job.job_id] = run_job(job, root, sweep).get("state", DONE)
        except Exception:  # noqa: BLE001 - recorded in the job's state; the other jobs still run
            log.exception("job %s failed", job.job_id)
            final[job.job_id] = FAILED
    return final


class DebugExecutor(Executor):
    """Runs the jobs inside :meth:`submit`, so it always waits."""

    name = "debug"

    def submit(self, spec: SweepSpec, root: Path, todo: list[Job], *, record: Record, queued: Mapping[str, str],
               wait: bool, poll_s: float) -> tuple[dict[str, str], dict[str, str] | None]:
        submitted = {j.job_id: "debug" for j in todo}
        record(submitted)
        return submitted, run_debug(todo, root, spec.name)

    def alive(self, root: Path, sweep: str, entries: Mapping[str, Entry]) -> dict[str, str | None] | None:
        """Cannot tell: nothing outlives the process that ran the jobs, and a job still marked running may be one
        another process is debugging (its state file is the word)."""
        return None

    def cancel(self, root: Path, sweep: str, entries: Mapping[str, Entry]) -> list[str]:
        return []  # nothing runs in the background
