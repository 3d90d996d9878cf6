"""Where a sweep's jobs run, behind one interface (:class:`Executor`: submit, alive, cancel, wait): on SLURM through
submitit (``slurm``), on this machine as background processes with dependencies (``local``), or in the calling
process (``debug``)."""
from typing import Any, Mapping

from jobs.executors.base import Entry, Executor, QueueError, Record, SubmitError, sweep_dir
from jobs.executors.debug import DebugExecutor
from jobs.executors.local import LocalExecutor, driver_pid
from jobs.executors.slurm import SlurmExecutor, slurm_available

__all__ = ["Executor", "Entry", "Record", "SubmitError", "QueueError", "EXECUTORS", "get_executor", "SlurmExecutor",
           "LocalExecutor", "DebugExecutor", "slurm_available", "driver_pid", "sweep_dir"]

#: Executor name (``executor.kind``, ``--executor``, a submission's ``executor``) -> its class.
EXECUTORS: dict[str, type[Executor]] = {cls.name: cls for cls in (SlurmExecutor, LocalExecutor, DebugExecutor)}


def get_executor(name: str, options: Mapping[str, Any] | None = None) -> Executor:
    """The executor called ``name`` with its command-line ``options`` (:class:`Executor`)."""
    if name not in EXECUTORS:
        raise SubmitError(f"unknown executor {name!r} ({', '.join(EXECUTORS)})")
    return EXECUTORS[name](options)
