"""Submit, watch, cancel and collect a sweep on SLURM (through submitit), locally, or in-process (debug): the
executor is picked by name from :data:`jobs.executors.EXECUTORS`, and every submission is recorded in
``ROOT/sweeps/<sweep>/submissions.jsonl``.

Resubmitting a spec is idempotent: jobs whose state is ``done`` are skipped, jobs still queued or running from an
earlier submission are left alone (their executor's :meth:`~jobs.executors.Executor.alive` says which), and the
rest are (re)submitted; an unfinished training resumes from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping

from jobs.executors import EXECUTORS, Entry, SubmitError, driver_pid, get_executor, sweep_dir
from jobs.plan import Job, plan
from jobs.spec import SweepSpec
from jobs.states import CANCELLED, DONE, FAILED, LOST, NOT_SUBMITTED, PENDING, PROBLEMS, REQUEUED, RUNNING
from jobs.tasks import job_done, reached_step, read_state, write_state
from results import ResultStore
from results.provenance import now_iso
from study.common import get_logger
from study.config import dump_config

__all__ = ["Submission", "submit_sweep", "sweep_status", "cancel_sweep", "collect_sweep", "SubmitError"]

log = get_logger(__name__)


@dataclasses.dataclass
class Submission:
    sweep: str
    executor: str
    root: Path
    jobs: list[Job]
    skipped_done: list[str]
    skipped_active: list[str]
    submitted: dict[str, str]  # job_id -> scheduler id ("local", "debug" or a SLURM id)
    final: dict[str, str] | None = None  # job_id -> final state, when waited for

    @property
    def failed(self) -> list[str]:
        return sorted(k for k, v in (self.final or {}).items() if v != DONE)

    @property
    def ok(self) -> bool:
        return self.final is not None and not self.failed


# ---------------------------------------------------------------------------------------------- bookkeeping
def _submissions_file(root: Path, sweep: str) -> Path:
    return sweep_dir(root, sweep) / "submissions.jsonl"


def _record(root: Path, sweep: str, executor: str, submitted: Mapping[str, str], **extra: Any) -> None:
    """One entry per ``{job id: scheduler id}`` (the executors' ``record``)."""
    path = _submissions_file(root, sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for job_id, scheduler_id in submitted.items():
            entry = {"job_id": job_id, "executor": executor, "scheduler_id": scheduler_id, **extra,
                     "submitted_at": now_iso()}
            fh.write(json.dumps(entry) + "\n")


def _submissions(root: Path, sweep: str) -> dict[str, dict[str, Any]]:
    """Latest submission per job id."""
    out: dict[str, dict[str, Any]] = {}
    path = _submissions_file(root, sweep)
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                out[entry["job_id"]] = entry
    return out


def _by_executor(subs: Mapping[str, Entry]) -> dict[str, dict[str, Entry]]:
    """The submissions grouped by the (registered) executor that holds them."""
    groups: dict[str, dict[str, Entry]] = defaultdict(dict)
    for job_id, entry in subs.items():
        if entry.get("executor") in EXECUTORS:
            groups[entry["executor"]][job_id] = entry
    return groups


def _alive(root: Path, sweep: str, subs: Mapping[str, Entry]) -> dict[str, dict[str, str | None] | None]:
    """Executor name -> its :meth:`~jobs.executors.Executor.alive` answer on its recorded submissions."""
    return {name: get_executor(name).alive(root, sweep, entries) for name, entries in _by_executor(subs).items()}


# ---------------------------------------------------------------------------------------------- submit
def submit_sweep(spec: SweepSpec, root: str | Path | None = None, *, executor: str | None = None,
                 slurm: dict[str, Any] | None = None, wait: bool = False, poll_s: float = 5.0) -> Submission:
    """Plan ``spec`` and submit what is not done yet (see the module docstring). ``slurm`` overrides
    ``spec.executor.slurm_*`` (keys without the prefix: partition, account, qos, constraint)."""
    root = ResultStore(root).root
    kind = executor or spec.executor.kind
    chosen = get_executor(kind, slurm)
    jobs = plan(spec)
    done = [j.job_id for j in jobs if job_done(root, j)]
    pid = driver_pid(root, spec.name)
    if pid is not None:
        raise SubmitError(f"a local driver for sweep {spec.name!r} is still running (pid {pid}); wait for it, "
                          f"or stop it with `repa-study sweep cancel {spec.name}`")
    subs = _submissions(root, spec.name)
    alive = _alive(root, spec.name, subs)
    planned = {j.job_id for j in jobs}
    active = sorted(j for j in planned - set(done) if j in subs and j in (alive.get(subs[j]["executor"]) or {}))
    todo_ids = planned - set(done) - set(active)
    # a finished job whose inputs run again (e.g. the analysis after a failed evaluation) must run again too,
    # except an evaluation of a step its training already reached: extending a run keeps its checkpoints
    def _reruns(dep: str, job: Job) -> bool:
        if dep not in todo_ids:
            return False
        reached = reached_step(root, job.params.train_job) if job.stage == "eval" else None
        return reached is None or job.steps > reached  # (the run, or its group, trains again past this step)

    for job in jobs:  # plan order is topological
        if job.job_id in done and any(_reruns(d, job) for d in job.depends_on):
            todo_ids.add(job.job_id)
            done.remove(job.job_id)
    todo = [j for j in jobs if j.job_id in todo_ids]
    if todo:
        chosen.check()
    directory = sweep_dir(root, spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    dump_config(spec, directory / "spec.yaml")
    (directory / "plan.json").write_text(json.dumps([j.model_dump(mode="json") for j in jobs], indent=1))
    sub = Submission(spec.name, kind, root, jobs, done, active, {})
    log.info("sweep %s: %d jobs planned, %d done, %d still queued, %d to run (%s executor)",
             spec.name, len(jobs), len(done), len(active), len(todo), kind)
    if not todo:
        if wait and active:
            sub.final = {}
            for name, entries in _by_executor({j: subs[j] for j in active}).items():
                sub.final.update(get_executor(name).wait(root, spec.name, entries, poll_s))
        elif wait:
            sub.final = {j: DONE for j in done}
        return sub
    for job in todo:
        if read_state(root, job.job_id).get("state") in (FAILED, CANCELLED, REQUEUED, RUNNING, DONE):
            write_state(root, job.job_id, state=PENDING, error=None)
    queued = {j: subs[j]["scheduler_id"] for j in active if subs[j].get("executor") == kind}
    record = functools.partial(_record, root, spec.name, kind)
    sub.submitted, final = chosen.submit(spec, root, todo, record=record, queued=queued, wait=wait, poll_s=poll_s)
    if final is not None:
        sub.final = {**{j: DONE for j in done}, **final}
    return sub


# ---------------------------------------------------------------------------------------------- status & co
def sweep_status(spec: SweepSpec, root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per planned job: ``job_id, stage, label, state, attempt, scheduler_id, log, error``."""
    root = ResultStore(root).root
    jobs = plan(spec)
    subs = _submissions(root, spec.name)
    alive = _alive(root, spec.name, subs)
    rows = []
    for job in jobs:
        st = read_state(root, job.job_id)
        entry = subs.get(job.job_id, {})
        state = st.get("state", PENDING)
        if state == DONE and not job_done(root, job):  # a finished training whose target was raised since
            state, entry = PENDING, {}
        if not entry and state == "pending":
            state = NOT_SUBMITTED
        elif state in (RUNNING, PENDING, REQUEUED) and entry:
            said = alive.get(entry.get("executor"))  # None: its executor cannot tell, the state file is the word
            if said is not None and job.job_id in said:
                state = said[job.job_id] or state
            elif said is not None:
                state = LOST if state == RUNNING else NOT_SUBMITTED
        rows.append({"job_id": job.job_id, "stage": job.stage, "label": job.label, "state": state,
                     "attempt": st.get("attempt", 0), "scheduler_id": entry.get("scheduler_id", ""),
                     "log": st.get("log") or "", "error": str(st.get("error") or "") if state in PROBLEMS else ""})
    return rows


def cancel_sweep(spec: SweepSpec, root: str | Path | None = None) -> list[str]:
    """Cancel this sweep's queued/running jobs (SLURM) or stop its local driver; returns the cancelled ids."""
    root = ResultStore(root).root
    groups = _by_executor(_submissions(root, spec.name))
    cancelled = {j for name in EXECUTORS for j in get_executor(name).cancel(root, spec.name, groups.get(name, {}))}
    for job_id in cancelled:
        if read_state(root, job_id).get("state") not in (DONE, FAILED):
            write_state(root, job_id, state=CANCELLED, error="cancelled by `sweep cancel`")
    return sorted(cancelled)


def collect_sweep(spec: SweepSpec, root: str | Path | None = None) -> dict[str, Path]:
    """One compacted parquet per table (this sweep's rows) plus ``summary.md`` under ``ROOT/collected/<sweep>``."""
    store = ResultStore(root)
    ids = [j.job_id for j in plan(spec)]
    out_dir = store.root / "collected" / spec.name
    written: dict[str, Path] = {}
    for table in ("generation", "encoders", "runs"):
        path = store.compact(table, out_dir, job_ids=ids)
        if path is not None:
            written[table] = path
    rows = sweep_status(spec, store.root)
    counts = Counter((r["stage"], r["state"]) for r in rows)
    lines = [f"# Sweep {spec.name}: collected {now_iso()}", "", f"Results root: `{store.root}`", "",
             "| stage | state | jobs |", "|---|---|---|"]
    lines += [f"| {stage} | {state} | {n} |" for (stage, state), n in sorted(counts.items())]
    lines += ["", "Tables:"] + [f"- `{t}`: `{p}`" for t, p in written.items()]
    summary = out_dir / "summary.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.write_text("\n".join(lines) + "\n")
    written["summary"] = summary
    return written
