"""Submit, watch, cancel and collect a sweep on SLURM (through submitit), locally, or in-process (debug).

Resubmitting a spec is idempotent: jobs whose state is ``done`` are skipped, jobs still queued or running from an
earlier submission are left alone, and the rest are (re)submitted; an unfinished training resumes from its last
checkpoint. On SLURM each stage is a job array per model size (``executor.array_parallelism`` at once), evaluations
wait for their trainings and the analysis for everything (``afterany``: a job whose input failed reports it),
and every task is a :class:`jobs.tasks.SweepTask`, requeued by submitit on preemption or time-out.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from jobs.executors import claim_driver, drive, driver_pid, run_debug, spawn_driver, sweep_dir
from jobs.plan import Job, plan
from jobs.spec import SweepSpec
from jobs.states import CANCELLED, DONE, ENDED, FAILED, LOST, NOT_SUBMITTED, PENDING, PROBLEMS, REQUEUED, RUNNING
from jobs.tasks import SweepTask, job_done, reached_step, read_state, write_state
from results import ResultStore
from results.provenance import now_iso
from study.common import get_logger, progress
from study.config import dump_config

__all__ = ["Submission", "submit_sweep", "sweep_status", "cancel_sweep", "collect_sweep", "SubmitError",
           "slurm_available"]

log = get_logger(__name__)
#: The submitit callable for one job (a Checkpointable); tests substitute a subclass with stand-in stages.
TASK_CLASS = SweepTask


class SubmitError(RuntimeError):
    """The sweep could not be submitted; nothing (more) was submitted."""


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


def _record(root: Path, sweep: str, entries: Iterable[dict[str, Any]]) -> None:
    path = _submissions_file(root, sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for entry in entries:
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


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def _slurm_queue() -> dict[str, str]:
    """``{slurm id: state}`` of every queued or running job (array tasks one per line), {} without SLURM."""
    if not shutil.which("squeue"):
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    queue = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            queue[parts[0]] = parts[1]
    return queue


def _active_elsewhere(root: Path, sweep: str, jobs: list[Job]) -> set[str]:
    """Jobs of this sweep still queued or running from an earlier submission."""
    subs = _submissions(root, sweep)
    queue = _slurm_queue() if any(s.get("executor") == "slurm" for s in subs.values()) else {}
    active = set()
    for job in jobs:
        entry = subs.get(job.job_id)
        if entry and entry.get("executor") == "slurm" and entry.get("scheduler_id") in queue:
            active.add(job.job_id)
    return active


# ---------------------------------------------------------------------------------------------- submit
def submit_sweep(spec: SweepSpec, root: str | Path | None = None, *, executor: str | None = None,
                 slurm: dict[str, Any] | None = None, wait: bool = False, poll_s: float = 5.0) -> Submission:
    """Plan ``spec`` and submit what is not done yet (see the module docstring). ``slurm`` overrides
    ``spec.executor.slurm_*`` (keys without the prefix: partition, account, qos, constraint)."""
    root = ResultStore(root).root
    kind = executor or spec.executor.kind
    jobs = plan(spec)
    done = [j.job_id for j in jobs if job_done(root, j)]
    pid = driver_pid(root, spec.name)
    if pid is not None:
        raise SubmitError(f"a local driver for sweep {spec.name!r} is still running (pid {pid}); wait for it, "
                          f"or stop it with `repa-study sweep cancel {spec.name}`")
    active = sorted(_active_elsewhere(root, spec.name, jobs) - set(done))
    todo_ids = {j.job_id for j in jobs} - set(done) - set(active)
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
    if kind == "slurm" and todo and not slurm_available():
        raise SubmitError("executor 'slurm' needs sbatch/squeue on PATH (is this a SLURM login node?); "
                          "use --executor local to run on this machine")
    directory = sweep_dir(root, spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    dump_config(spec, directory / "spec.yaml")
    (directory / "plan.json").write_text(json.dumps([j.model_dump(mode="json") for j in jobs], indent=1))
    sub = Submission(spec.name, kind, root, jobs, done, active, {})
    log.info("sweep %s: %d jobs planned, %d done, %d still queued, %d to run (%s executor)",
             spec.name, len(jobs), len(done), len(active), len(todo), kind)
    if not todo:
        if wait and active:
            sub.final = _wait_slurm(root, spec.name, {j: "" for j in active}, poll_s)
        elif wait:
            sub.final = {j: DONE for j in done}
        return sub
    for job in todo:
        if read_state(root, job.job_id).get("state") in (FAILED, CANCELLED, REQUEUED, RUNNING, DONE):
            write_state(root, job.job_id, state=PENDING, error=None)
    if kind == "debug":
        sub.submitted = {j.job_id: "debug" for j in todo}
        _record(root, spec.name, [{"job_id": k, "executor": kind, "scheduler_id": v, "submitted_at": now_iso()}
                                  for k, v in sub.submitted.items()])
        final = run_debug(todo, root, spec.name)
        sub.final = {**{j: DONE for j in done}, **final}
    elif kind == "local":
        sub.submitted = {j.job_id: "local" for j in todo}
        _record(root, spec.name, [{"job_id": k, "executor": kind, "scheduler_id": v, "submitted_at": now_iso()}
                                  for k, v in sub.submitted.items()])
        if wait:
            pid_file = claim_driver(root, spec.name)
            try:
                final = drive(todo, root, spec.name, workers=spec.executor.local_workers)
            finally:
                pid_file.unlink(missing_ok=True)
            sub.final = {**{j: DONE for j in done}, **final}
        else:
            plan_file = directory / "todo.json"
            plan_file.write_text(json.dumps([j.model_dump(mode="json") for j in todo]))
            pid = spawn_driver(root, spec.name, plan_file, spec.executor.local_workers)
            log.info("local driver started in the background (pid %d); follow it with "
                     "`repa-study sweep status %s`", pid, spec.name)
    elif kind == "slurm":
        subs = _submissions(root, spec.name)
        queued = {j: subs[j]["scheduler_id"] for j in active if j in subs}
        sub.submitted = _submit_slurm(spec, root, todo, slurm or {}, queued)
        if wait:
            final = _wait_slurm(root, spec.name, {**sub.submitted, **{j: "" for j in active}}, poll_s)
            sub.final = {**{j: DONE for j in done}, **final}
    else:
        raise SubmitError(f"unknown executor {kind!r} (slurm, local or debug)")
    return sub


def _slurm_parameters(spec: SweepSpec, job: Job, overrides: dict[str, Any]) -> dict[str, Any]:
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
        value = overrides.get(key) or getattr(ex, f"slurm_{key}")
        if value:
            params[key] = value
    if ex.slurm_additional or overrides.get("additional"):
        params["additional_parameters"] = {**ex.slurm_additional, **(overrides.get("additional") or {})}
    return params


def _submit_slurm(spec: SweepSpec, root: Path, todo: list[Job], overrides: dict[str, Any],
                  queued: dict[str, str] | None = None) -> dict[str, str]:
    """Submit ``todo`` as arrays; ``queued`` maps jobs still queued from an earlier submission to their SLURM ids
    (their dependents wait for exactly those tasks)."""
    import submitit

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    base = Path(spec.executor.folder) if spec.executor.folder else root / "submitit" / spec.name
    folder = base / stamp / "%j"  # a fresh folder per submission: ids may restart on a new cluster
    groups: dict[tuple[str, str | None], list[Job]] = defaultdict(list)
    for job in todo:
        groups[(job.stage, job.model if job.stage in ("train", "eval") else None)].append(job)
    order = {"train": 0, "eval": 1, "score": 2, "analyze": 3}
    submitted: dict[str, str] = {}
    array_of: dict[str, str] = dict(queued or {})  # job id -> SLURM id to wait for (array, job or task)
    for (stage, model), group in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], str(kv[0][1]))):
        deps = sorted({array_of[d] for j in group for d in j.depends_on if d in array_of})
        params = _slurm_parameters(spec, group[0], overrides)
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
            _record(root, spec.name, [{"job_id": k, "executor": "slurm", "scheduler_id": v, "folder": str(folder),
                                       "submitted_at": now_iso()} for k, v in submitted.items()])
            raise SubmitError(f"sbatch refused the {stage} jobs{f' of {model}' if model else ''}: "
                              f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}"
                              f"\n({len(submitted)} jobs were submitted before this; resubmitting the spec "
                              f"skips them)") from exc
        for job, handle in zip(group, handles):
            submitted[job.job_id] = str(handle.job_id)
            array_of[job.job_id] = str(handle.job_id).split("_")[0]
        log.info("submitted %d %s job(s)%s as SLURM %s%s", len(group), stage, f" ({model})" if model else "",
                 str(handles[0].job_id).split("_")[0], f" after {params['dependency']}" if deps else "")
    _record(root, spec.name, [{"job_id": k, "executor": "slurm", "scheduler_id": v, "folder": str(folder),
                               "submitted_at": now_iso()} for k, v in submitted.items()])
    return submitted


def _wait_slurm(root: Path, sweep: str, submitted: dict[str, str], poll_s: float) -> dict[str, str]:
    """Block until every job has ended (state file says so, or SLURM forgot it twice in a row)."""
    subs = _submissions(root, sweep)
    ids = {j: submitted.get(j) or subs.get(j, {}).get("scheduler_id", "") for j in submitted}
    final: dict[str, str] = {}
    missing: Counter[str] = Counter()
    bar = progress(total=len(ids), desc=f"sweep {sweep}", unit="job")
    try:
        while len(final) < len(ids):
            queue = _slurm_queue()
            for job_id, sid in ids.items():
                if job_id in final:
                    continue
                state = read_state(root, job_id).get("state", PENDING)
                if state in ENDED:
                    final[job_id] = state
                elif sid not in queue:
                    missing[job_id] += 1
                    if missing[job_id] >= 3:
                        write_state(root, job_id, state=FAILED,
                                    error=f"SLURM job {sid} left the queue without finishing (cancelled, killed, "
                                          f"or out of time without requeue); see its log in the submitit folder")
                        final[job_id] = FAILED
                else:
                    missing[job_id] = 0
                if job_id in final:
                    bar.update(1)
            if len(final) < len(ids):
                time.sleep(poll_s)
    finally:
        bar.close()
    return final


# ---------------------------------------------------------------------------------------------- status & co
def _last_error_line(state: dict[str, Any]) -> str:
    if state.get("error"):
        return str(state["error"])
    return ""


def sweep_status(spec: SweepSpec, root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per planned job: ``job_id, stage, label, state, attempt, scheduler_id, log, error``."""
    root = ResultStore(root).root
    jobs = plan(spec)
    subs = _submissions(root, spec.name)
    queue = _slurm_queue() if any(s.get("executor") == "slurm" for s in subs.values()) else {}
    driver = driver_pid(root, spec.name)
    rows = []
    for job in jobs:
        st = read_state(root, job.job_id)
        entry = subs.get(job.job_id, {})
        state = st.get("state", PENDING)
        if state == DONE and not job_done(root, job):  # a finished training whose target was raised since
            state, entry = PENDING, {}
        sid = entry.get("scheduler_id", "")
        if not entry and state == "pending":
            state = NOT_SUBMITTED
        elif state in (RUNNING, PENDING, REQUEUED) and entry:
            alive = (queue.get(sid) is not None) if entry.get("executor") == "slurm" else driver is not None
            if entry.get("executor") == "slurm" and sid in queue:
                state = RUNNING if queue[sid] in ("RUNNING", "COMPLETING") else PENDING
            elif not alive and entry.get("executor") != "debug":
                state = LOST if state == RUNNING else NOT_SUBMITTED
        log_path = st.get("log") or ""
        rows.append({"job_id": job.job_id, "stage": job.stage, "label": job.label, "state": state,
                     "attempt": st.get("attempt", 0), "scheduler_id": sid, "log": log_path,
                     "error": _last_error_line(st) if state in PROBLEMS else ""})
    return rows


def cancel_sweep(spec: SweepSpec, root: str | Path | None = None) -> list[str]:
    """Cancel this sweep's queued/running jobs (SLURM) or stop its local driver; returns the cancelled ids."""
    root = ResultStore(root).root
    subs = _submissions(root, spec.name)
    cancelled: list[str] = []
    slurm_ids = {j: s["scheduler_id"] for j, s in subs.items() if s.get("executor") == "slurm"}
    if slurm_ids:
        queue = _slurm_queue()
        live = {j: sid for j, sid in slurm_ids.items() if sid in queue}
        if live:
            subprocess.run(["scancel", *sorted(set(live.values()))], check=False, timeout=120)
            cancelled += list(live)
    pid = driver_pid(root, spec.name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)  # the driver stops its running jobs and marks them cancelled
        for _ in range(100):
            if driver_pid(root, spec.name) is None:
                break
            time.sleep(0.1)
        cancelled += [j for j, s in subs.items() if s.get("executor") == "local"
                      and read_state(root, j).get("state") not in (DONE, FAILED)]
    for job_id in set(cancelled):
        if read_state(root, job_id).get("state") not in (DONE, FAILED):
            write_state(root, job_id, state=CANCELLED, error="cancelled by `sweep cancel`")
    return sorted(set(cancelled))


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
