"""Submit, watch, cancel and collect a sweep on SLURM (through submitit), locally, or in-process (debug): the
executor is picked by name from :data:`jobs.executors.EXECUTORS`, and every submission is recorded in
``ROOT/sweeps/<sweep>/submissions.jsonl``.

Resubmitting a spec is idempotent: jobs whose state is ``done`` are skipped, jobs still queued or running from an
earlier submission are left alone (their executor's :meth:`~jobs.executors.Executor.alive` says which), and the
rest are (re)submitted; an unfinished training resumes from its last checkpoint.

The queue's word is not the only one: a job whose lock is held is running somewhere (a killed driver's orphan,
another sweep's copy of a shared run) whatever the queue says. It is left alone, its state untouched, when the
attempt running covers the planned target (its dependants wait for it); a training whose target was raised since
is submitted again without touching its state, and that copy waits for the running one, then trains the rest. A
queue that cannot be read is an error (:class:`~jobs.executors.QueueError`): nothing is submitted.

Before anything is written, :func:`jobs.preflight.preflight` checks the inputs of the jobs to submit (training
configs, encoder weights, datasets, the FID reference, masks) and refuses with every problem at once.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping

from jobs.executors import EXECUTORS, Entry, QueueError, SubmitError, driver_pid, get_executor, sweep_dir
from jobs.plan import Job, plan
from jobs.preflight import PreflightError, preflight
from jobs.spec import SweepSpec
from jobs.states import CANCELLED, DONE, FAILED, LOST, NOT_SUBMITTED, PENDING, PROBLEMS, REQUEUED, RUNNING
from jobs.tasks import job_done, job_running, reached_step, read_state, running_target, write_state
from results import ResultStore
from results.provenance import now_iso
from study.common import append_jsonl, get_logger, read_jsonl
from study.config import dump_config

__all__ = ["Submission", "submit_sweep", "sweep_status", "cancel_sweep", "collect_sweep", "SubmitError",
           "PreflightError", "QueueError"]

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
    running_elsewhere: dict[str, str] = dataclasses.field(default_factory=dict)  # job_id -> who holds its lock
    warnings: list[str] = dataclasses.field(default_factory=list)  # the preflight's

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
    """One entry per ``{job id: scheduler id}`` (the executors' ``record``), each a whole line."""
    stamp = now_iso()
    append_jsonl(_submissions_file(root, sweep), [
        {"job_id": job_id, "executor": executor, "scheduler_id": scheduler_id, **extra, "submitted_at": stamp}
        for job_id, scheduler_id in submitted.items()])


def _submissions(root: Path, sweep: str) -> dict[str, dict[str, Any]]:
    """Latest submission per job id (a torn last line, left by a full disk or a kill, is dropped with a warning)."""
    return {e["job_id"]: e for e in read_jsonl(_submissions_file(root, sweep))
            if isinstance(e, dict) and "job_id" in e}


def _by_executor(subs: Mapping[str, Entry]) -> dict[str, dict[str, Entry]]:
    """The submissions grouped by the (registered) executor that holds them."""
    groups: dict[str, dict[str, Entry]] = defaultdict(dict)
    for job_id, entry in subs.items():
        if entry.get("executor") in EXECUTORS:
            groups[entry["executor"]][job_id] = entry
    return groups


def _alive(root: Path, sweep: str, subs: Mapping[str, Entry],
           options: Mapping[str, Any] | None = None) -> dict[str, dict[str, str | None] | None]:
    """Executor name -> its :meth:`~jobs.executors.Executor.alive` answer on its recorded submissions (a queue that
    cannot be read raises :class:`QueueError`)."""
    return {name: get_executor(name, options).alive(root, sweep, entries)
            for name, entries in _by_executor(subs).items()}


def _elsewhere(root: Path, jobs: list[Job], skip: set[str]) -> dict[str, str]:
    """Jobs (but ``skip``) whose lock is held: running somewhere now, whatever a queue says. ``{job id: holder}``."""
    return {j.job_id: holder for j in jobs if j.job_id not in skip and (holder := job_running(root, j.job_id))}


def _covers(root: Path, job: Job) -> bool:
    """Whether the attempt running ``job`` elsewhere reaches what the plan asks (a training's target may have been
    raised since it started)."""
    return job.stage != "train" or (running_target(root, job.job_id) or 0) >= (job.steps or 0)


# ---------------------------------------------------------------------------------------------- submit
def submit_sweep(spec: SweepSpec, root: str | Path | None = None, *, executor: str | None = None,
                 slurm: dict[str, Any] | None = None, wait: bool = False, poll_s: float = 5.0,
                 check: bool = True) -> Submission:
    """Plan ``spec`` and submit what is not done yet (see the module docstring). ``slurm`` overrides
    ``spec.executor.slurm_*`` (keys without the prefix: partition, account, qos, constraint; and
    ``trust_empty_queue``); ``check``: run the preflight (:class:`PreflightError`, nothing written)."""
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
    alive = _alive(root, spec.name, subs, slurm)
    planned = {j.job_id for j in jobs}
    active = sorted(j for j in planned - set(done) if j in subs and j in (alive.get(subs[j]["executor"]) or {}))
    elsewhere = _elsewhere(root, jobs, set(done) | set(active))
    by_id = {j.job_id: j for j in jobs}
    active = sorted({*active, *(j for j in elsewhere if _covers(root, by_id[j]))})
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
    warnings: list[str] = []
    if todo:
        if check:
            report = preflight(spec, todo)
            if not report.ok:
                raise PreflightError(report)
            warnings = report.warnings
            for warning in warnings:
                log.warning("%s", warning)
        chosen.check()
    for job_id, holder in sorted(elsewhere.items()):
        log.warning("job %s is running elsewhere (%s)%s", job_id, holder,
                    "" if job_id in active else ": submitted again for its raised target; the copy waits for it")
    directory = sweep_dir(root, spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    dump_config(spec, directory / "spec.yaml")
    (directory / "plan.json").write_text(json.dumps([j.model_dump(mode="json") for j in jobs], indent=1))
    sub = Submission(spec.name, kind, root, jobs, done, active, {}, running_elsewhere=elsewhere, warnings=warnings)
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
    for job in todo:  # (a job running elsewhere keeps its state: it is that attempt's)
        if job.job_id not in elsewhere and \
                read_state(root, job.job_id).get("state") in (FAILED, CANCELLED, REQUEUED, RUNNING, DONE):
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
    alive: dict[str, Any] = {}
    for name, entries in _by_executor(subs).items():
        try:
            alive[name] = get_executor(name).alive(root, spec.name, entries)
        except QueueError as exc:  # the state files (and the locks) are the word
            log.warning("%s; the states shown are the jobs' own", exc)
            alive[name] = None
    rows = []
    for job in jobs:
        st = read_state(root, job.job_id)
        entry = subs.get(job.job_id, {})
        state = st.get("state", PENDING)
        if state == DONE and not job_done(root, job):  # a finished training whose target was raised since
            state, entry = PENDING, {}
        confirmed = False
        if not entry and state == "pending":
            state = NOT_SUBMITTED
        elif state in (RUNNING, PENDING, REQUEUED) and entry:
            said = alive.get(entry.get("executor"))  # None: its executor cannot tell, the state file is the word
            if said is not None and job.job_id in said:
                state, confirmed = said[job.job_id] or state, True
            elif said is not None:
                state = LOST if state == RUNNING else NOT_SUBMITTED
        if not confirmed and state in (RUNNING, LOST, NOT_SUBMITTED, FAILED):
            # the job's lock is the last word: held, it runs (a killed driver's orphan, another sweep's copy);
            # free, a job whose state says running died without recording it
            state = RUNNING if job_running(root, job.job_id) is not None else LOST if state == RUNNING else state
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
