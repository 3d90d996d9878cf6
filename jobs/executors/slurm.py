"""The SLURM executor, through submitit: each stage is a job array per model size (``executor.array_parallelism``
at once), evaluations wait for their trainings and the analysis for everything (``afterany``: a job whose input
failed reports it), and every task is a :class:`jobs.tasks.SweepTask`, requeued by submitit on preemption or
time-out.

``squeue`` is asked what is alive, and its word is not taken blindly: a failing ``squeue`` is a
:class:`~jobs.executors.QueueError` (nothing is resubmitted), and an empty answer while jobs of the sweep say they are
queued (their state: pending or requeued) leaves those jobs alone with a warning, unless the user says the queue is
right (``trust_empty_queue``; ``sweep submit --trust-empty-queue``)."""
from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from jobs.executors.base import Entry, Executor, QueueError, Record, SubmitError
from jobs.plan import Job
from jobs.spec import SweepSpec
from jobs.states import PENDING, REQUEUED, RUNNING
from jobs.tasks import SweepTask, read_state
from study.common import get_logger

__all__ = ["SlurmExecutor", "slurm_available", "slurm_queue", "TASK_CLASS"]

log = get_logger(__name__)
#: The submitit callable for one job (a Checkpointable); tests substitute a subclass with stand-in stages.
TASK_CLASS = SweepTask
#: Stage order of the arrays (dependencies point to earlier stages only).
STAGE_ORDER = {"train": 0, "eval": 1, "score": 2, "analyze": 3}


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def slurm_queue() -> dict[str, str]:
    """``{slurm id: state}`` of every queued or running job (array tasks one per line); :class:`QueueError` when
    ``squeue`` is missing, fails or does not answer."""
    if not shutil.which("squeue"):
        raise QueueError("squeue is not on PATH: which SLURM jobs are still queued cannot be told here (run this on "
                         "a SLURM login node)")
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise QueueError(f"squeue failed ({exc}): which SLURM jobs are still queued is unknown; nothing was "
                         f"resubmitted, try again later") from None
    if out.returncode != 0:
        why = (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        raise QueueError(f"squeue failed ({why[0][:300]}): which SLURM jobs are still queued is unknown; nothing "
                         f"was resubmitted, try again later")
    queue = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            queue[parts[0]] = parts[1]
    return queue


class SlurmExecutor(Executor):
    """``options`` override ``spec.executor.slurm_*`` (keys without the prefix: partition, account, qos,
    constraint; and ``additional``, merged into ``slurm_additional``)."""

    name = "slurm"

    def check(self) -> None:
        if not slurm_available():
            raise SubmitError("executor 'slurm' needs sbatch/squeue on PATH (is this a SLURM login node?); "
                              "use --executor local to run on this machine")

    def submit(self, spec: SweepSpec, root: Path, todo: list[Job], *, record: Record, queued: Mapping[str, str],
               wait: bool, poll_s: float) -> tuple[dict[str, str], dict[str, str] | None]:
        """Submit ``todo`` as arrays; the dependents of ``queued`` jobs wait for exactly those SLURM tasks."""
        import submitit

        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        base = Path(spec.executor.folder) if spec.executor.folder else root / "submitit" / spec.name
        folder = base / stamp / "%j"  # a fresh folder per submission: ids may restart on a new cluster
        groups: dict[tuple[str, str | None], list[Job]] = defaultdict(list)
        for job in todo:
            groups[(job.stage, job.model if job.stage in ("train", "eval") else None)].append(job)
        submitted: dict[str, str] = {}
        array_of: dict[str, str] = dict(queued)  # job id -> SLURM id to wait for (array, job or task)
        for (stage, model), group in sorted(groups.items(), key=lambda kv: (STAGE_ORDER[kv[0][0]], str(kv[0][1]))):
            deps = sorted({array_of[d] for j in group for d in j.depends_on if d in array_of})
            params = self.parameters(spec, group[0])
            if deps:
                params["dependency"] = "afterany:" + ":".join(deps)
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=20)
            executor.update_parameters(**params)
            tasks = [TASK_CLASS(j.model_dump(mode="json"), str(root), spec.name) for j in group]
            try:
                if len(tasks) == 1:
                    handles = [executor.submit(tasks[0])]
                else:
                    with executor.batch():
                        handles = [executor.submit(t) for t in tasks]
            except Exception as exc:  # noqa: BLE001 - sbatch errors come back as various submitit errors
                record(submitted, folder=str(folder))
                raise SubmitError(f"sbatch refused the {stage} jobs{f' of {model}' if model else ''}: "
                                  f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}"
                                  f"\n({len(submitted)} jobs were submitted before this; resubmitting the spec "
                                  f"skips them)") from exc
            for job, handle in zip(group, handles):
                submitted[job.job_id] = str(handle.job_id)
                array_of[job.job_id] = str(handle.job_id).split("_")[0]
            log.info("submitted %d %s job(s)%s as SLURM %s%s", len(group), stage, f" ({model})" if model else "",
                     str(handles[0].job_id).split("_")[0], f" after {params['dependency']}" if deps else "")
        record(submitted, folder=str(folder))
        if not wait:
            return submitted, None
        waited = {**submitted, **queued}
        return submitted, self.wait(root, spec.name, {j: {"scheduler_id": s} for j, s in waited.items()}, poll_s)

    def parameters(self, spec: SweepSpec, job: Job) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters for ``job`` (its stage's array shares them)."""
        ex, res = spec.executor, job.resources
        tasks = max(1, res.gpus)
        params: dict[str, Any] = {
            "time": res.time_min, "nodes": res.nodes, "ntasks_per_node": tasks,
            "cpus_per_task": max(1, res.cpus // tasks), "mem": f"{math.ceil(res.mem_gb * 1024)}M",
            "array_parallelism": ex.array_parallelism, "job_name": f"{spec.name}-{job.stage}",
            "signal_delay_s": 120 if res.time_min > 10 else 30,
        }
        if res.gpus > 0:  # never emit a GPU request for CPU jobs (clusters without GRES reject it)
            params["gpus_per_node"] = res.gpus
        for key in ("partition", "account", "qos", "constraint"):
            value = self.options.get(key) or getattr(ex, f"slurm_{key}")
            if value:
                params[key] = value
        if ex.slurm_additional or self.options.get("additional"):
            params["additional_parameters"] = {**ex.slurm_additional, **(self.options.get("additional") or {})}
        return params

    def alive(self, root: Path, sweep: str, entries: Mapping[str, Entry]) -> dict[str, str | None] | None:
        """squeue's word: RUNNING for running and completing tasks, PENDING for every other state it lists."""
        if not entries:
            return {}
        queue = slurm_queue()
        if not queue and not self.options.get("trust_empty_queue"):
            queued = {j: None for j in entries if read_state(root, j).get("state") in (PENDING, REQUEUED)}
            if queued:
                log.warning("squeue lists no job at all, yet %d job(s) of sweep %s say they are queued: they are "
                            "left alone (if they really are gone, submit with --trust-empty-queue)", len(queued),
                            sweep)
            return queued
        return {job_id: RUNNING if queue[e["scheduler_id"]] in ("RUNNING", "COMPLETING") else PENDING
                for job_id, e in entries.items() if e.get("scheduler_id") in queue}

    def cancel(self, root: Path, sweep: str, entries: Mapping[str, Entry]) -> list[str]:
        live = self.alive(root, sweep, entries) or {}
        if live:
            subprocess.run(["scancel", *sorted({entries[j]["scheduler_id"] for j in live})], check=False, timeout=120)
        return list(live)

    def lost_error(self, entry: Entry) -> str:
        return (f"SLURM job {entry.get('scheduler_id')} left the queue without finishing (cancelled, killed, or out "
                f"of time without requeue); see its log in the submitit folder")
