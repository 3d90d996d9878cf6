"""Job bodies (train / eval / score / analyze) and the per-job state every executor shares.

Each job owns ``ROOT/jobs/<job_id>/``: ``job.json`` (its definition), ``state.json`` (pending/running/done/failed/
requeued, attempts, log path, last error line), ``lock`` (held while it runs, so the same job never runs twice at
once), and for trainings the run directory itself (config, log, checkpoints). A job whose state is ``done`` is
skipped by every later submission; an unfinished training resumes from its last checkpoint.

Locks match what runs: a group of trainings holds its own lock and every member run's (all or none), so a member
submitted on its own (another sweep, the ungrouped plan) never trains the same run folder at once. A copy of a job
that finds its lock held waits for the holder to end, then skips what the holder finished (it is never recorded
``failed`` for being a copy), and an evaluation whose training is running elsewhere waits for it likewise
(:func:`job_running` says whether a job's lock is held: ``sweep status`` and resubmission ask it too). The lock
needs a file system with working ``flock`` (local disks, NFSv4, Lustre with ``flock`` mounted).

A full disk still lets a job record its failure: a state that cannot be written beside the old one is written over
it in place (the old file's blocks need no new space).

:class:`SweepTask` is what submitit pickles: a ``submitit.helpers.Checkpointable``, so on preemption or time-out
submitit requeues it (``checkpoint`` returns a ``DelayedSubmission`` of the same task) and the training resumes
from its run directory. Rows go to the results store only when a stage finishes, so a requeued job writes them once.
"""
from __future__ import annotations

import contextlib
import json
import os
import traceback
from pathlib import Path
from typing import Any, Callable

import submitit

from jobs.locks import JobBusyError, job_locks, job_running, wait_while_running
from jobs.plan import Job, TrainGroupParams
from jobs.states import DONE, FAILED, PENDING, REQUEUED, RUNNING, UNKNOWN
from results import JOB_HASH, RUN_HASH, ResultStore
from results.provenance import now_iso
from study.common import DiskFullError, atomic_write_json, get_logger
from study.config import TrainConfig, config_hash
from study.evaluation import row_protocol

__all__ = ["SweepTask", "run_job", "read_state", "write_state", "job_dir", "is_done", "job_done", "reached_step",
           "JobBusyError", "STATE_FILE", "job_running", "running_target"]

log = get_logger(__name__)
STATE_FILE = "state.json"


# ---------------------------------------------------------------------------------------------- state files
def job_dir(root: str | Path, job_id: str) -> Path:
    return ResultStore(root).run_dir(job_id)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically; on a full disk over the old file in place (its blocks are allocated already; the traceback is
    left out to keep it small), so a job can still record that it failed."""
    try:
        atomic_write_json(path, data)
    except DiskFullError as exc:
        if not path.is_file():
            raise
        text = json.dumps({k: v for k, v in data.items() if k != "traceback"}, indent=1, default=str)
        try:
            with open(path, "r+") as fh:
                fh.write(text)
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            raise exc from None
        log.warning("%s: %s; written in place", path, exc)


def read_state(root: str | Path, job_id: str) -> dict[str, Any]:
    """The job's state (``{"state": "pending"}`` when it never started)."""
    path = job_dir(root, job_id) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"state": PENDING}
    except json.JSONDecodeError:
        return {"state": UNKNOWN, "error": f"unreadable {path}"}


def write_state(root: str | Path, job_id: str, **fields: Any) -> dict[str, Any]:
    state = {**read_state(root, job_id), **fields, "updated_at": now_iso()}
    _write_json(job_dir(root, job_id) / STATE_FILE, state)
    return state


def is_done(root: str | Path, job_id: str) -> bool:
    return read_state(root, job_id).get("state") == DONE


def reached_step(root: str | Path, job_id: str) -> int | None:
    """The step a finished training reached (``None`` if it never finished)."""
    state = read_state(root, job_id)
    if state.get("state") != "done":
        return None
    if state.get("reached_step") is not None:
        return int(state["reached_step"])
    return running_target(root, job_id)  # older state files: the job's target


def _reached_target(root: str | Path, job_id: str, steps: int | None) -> bool:
    reached = reached_step(root, job_id)
    return reached is not None and (steps is None or reached >= steps)


def job_done(root: str | Path, job: Job) -> bool:
    """Whether ``job`` needs no (more) running: its state is done and, for a training, its run reached the job's
    target step (a raised target makes a finished training run again, resuming from its newest checkpoint); a
    group of trainings is done when each member is."""
    if job.stage != "train":
        return is_done(root, job.job_id)
    if isinstance(job.params, TrainGroupParams):
        return is_done(root, job.job_id) and all(_reached_target(root, mid, p.steps)
                                                 for mid, p in job.params.runs.items())
    return _reached_target(root, job.job_id, job.steps)


def running_target(root: str | Path, job_id: str) -> int | None:
    """The target step of the attempt that last started the job (its ``job.json``), None when unknown."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(json.loads((job_dir(root, job_id) / "job.json").read_text())["steps"])
    return None


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


# ---------------------------------------------------------------------------------------------- stages
def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool)) or v is None}


def _stage_train(job: Job, root: Path, run_dir: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    from study.training import train

    if isinstance(job.params, TrainGroupParams):
        return _stage_train_group(job, root)
    cfg = job.params.config()
    summary = train(cfg, run_dir)
    return [("runs", [_training_columns(summary, cfg)])]


def _training_columns(summary: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """A training's ``runs`` columns: its summary, with the run's hash (the summary's ``config_hash``) as
    ``RUN_HASH``, and ``train_config_hash``, the hash of its whole config (length fields included)."""
    columns = {k: v for k, v in _scalars(summary).items() if k != "config_hash"}
    return {**columns, RUN_HASH: summary.get("config_hash"), "train_config_hash": config_hash(cfg)}


def _stage_train_group(job: Job, root: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """Train the group's members that are not done, in one process; each member's state and run directory are its
    own (its evaluations check that state), so a member finished here is never trained again."""
    from study.training import train_group

    todo = {mid: p for mid, p in job.params.runs.items() if not _reached_target(root, mid, p.steps)}
    if not todo:
        return [("runs", [{"members": ",".join(job.params.runs)}])]
    cfgs = [p.config() for p in todo.values()]
    dirs = [job_dir(root, mid) for mid in todo]
    started = now_iso()
    primary = _global_rank() == 0
    members = {mid: Job(job_id=mid, stage="train", encoder=p.encoder, model=p.model, method=p.method, seed=p.seed,
                        steps=p.steps, params=p, resources=job.resources) for mid, p in todo.items()}
    sweep = json.loads((job_dir(root, job.job_id) / "job.json").read_text()).get("sweep", "") if primary else ""
    for mid, member in members.items():
        if primary:
            _write_json(job_dir(root, mid) / "job.json", {"sweep": sweep, "group": job.job_id,
                                                          **member.model_dump(mode="json")})
            write_state(root, mid, state=RUNNING, group=job.job_id, started_at=started, ended_at=None, error=None)
    try:
        summaries = train_group(cfgs, dirs)
    except BaseException as exc:
        if primary:
            state = REQUEUED if isinstance(exc, SystemExit) else FAILED
            for mid in todo:  # each member on its own: one that cannot be written does not stop the others
                try:
                    write_state(root, mid, state=state, ended_at=now_iso(),
                                error=f"group {job.job_id}: {type(exc).__name__}: {exc}".splitlines()[0][:500])
                except OSError as err:
                    log.error("could not record the end of %s: %s", mid, err)
        raise
    if primary:
        store = ResultStore(root)
        for (mid, member), summary, cfg in zip(members.items(), summaries, cfgs):
            ended = now_iso()
            store.write("runs", [{**_training_columns(summary, cfg), **_identity_columns(member, sweep),
                                  "group": job.job_id, "status": DONE, "started_at": started, "ended_at": ended}])
            write_state(root, mid, state=DONE, ended_at=ended, reached_step=int(summary.get("step") or member.steps))
    return [("runs", [{"members": ",".join(job.params.runs)}])]


def _stage_eval(job: Job, root: Path, run_dir: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    from study.evaluation import evaluate_run

    p = job.params
    reached = reached_step(root, p.train_job)
    if reached is None or reached < p.step:  # still training elsewhere (another sweep's job, a killed driver's)?
        wait_while_running(root, p.train_job, f"its evaluation at step {p.step}")
        reached = reached_step(root, p.train_job)
    if reached is None or reached < p.step:
        raise RuntimeError(f"training job {p.train_job} has not finished (state: "
                           f"{read_state(root, p.train_job).get('state')}"
                           f"{f', reached step {reached}' if reached is not None else ''}); its evaluation at step "
                           f"{p.step} cannot run")
    fid = p.fid
    row = evaluate_run(job_dir(root, p.train_job), p.step, n=fid.n_samples, extractor=fid.extractor,
                       ref=fid.reference, sampler=fid.sampler, batch_size=fid.batch_size, job_id=job.job_id)
    return [("generation", [{**dict(row), "protocol": row_protocol(row)}])]


def _stage_score(job: Job, root: Path, run_dir: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    from study.scoring import score_encoder

    p = job.params
    row = score_encoder(p.encoder, p.dataset, split=p.split, limit=p.limit, probe=p.probe,
                        weights=p.encoder_weights, masks=p.masks, srss_min_fraction=p.srss_min_fraction,
                        job_id=job.job_id)
    return [("encoders", [{**dict(row), "dataset": p.dataset}])]


def _stage_analyze(job: Job, root: Path, run_dir: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    from analysis.report import analyze

    p = job.params
    store = ResultStore(root)
    inputs = set(p.inputs)
    gen, enc = store.read("generation"), store.read("encoders")
    gen = gen[gen["job_id"].isin(inputs)] if "job_id" in gen.columns else gen
    enc = enc[enc["job_id"].isin(inputs)] if "job_id" in enc.columns else enc
    if gen.empty and enc.empty:
        raise RuntimeError("nothing to analyze: no generation or encoder rows from this sweep's jobs")
    report = analyze(gen, enc, root / "reports" / p.sweep, reference=p.reference)
    return [("runs", [{"report": str(report)}])]


STAGE_FUNCTIONS: dict[str, Callable[[Job, Path, Path], list[tuple[str, list[dict[str, Any]]]]]] = {
    "train": _stage_train, "eval": _stage_eval, "score": _stage_score, "analyze": _stage_analyze,
}


# ---------------------------------------------------------------------------------------------- running a job
def _identity_columns(job: Job, sweep: str) -> dict[str, Any]:
    ident = {"job_id": job.job_id, "stage": job.stage, "sweep": sweep, "encoder": job.encoder, "model": job.model,
             "method": job.method, "seed": job.seed, JOB_HASH: job.job_id.split("-", 1)[-1]}
    if job.stage == "eval":
        ident.update(train_job_id=job.params.train_job, step=job.steps)
    return ident


def run_job(job: Job | dict[str, Any], root: str | Path, sweep: str = "", log_path: str | None = None) -> dict:
    """Run one job to completion (idempotent: a done job returns its recorded state without running again)."""
    job = job if isinstance(job, Job) else Job.model_validate(job)
    root = Path(root)
    directory = job_dir(root, job.job_id)
    if _global_rank() != 0:  # distributed training: only rank 0 records state and rows
        STAGE_FUNCTIONS[job.stage](job, root, directory)
        return {}
    if job_done(root, job):
        log.info("job %s (%s) already done; skipping", job.job_id, job.label)
        return read_state(root, job.job_id)
    group = isinstance(job.params, TrainGroupParams)
    with job_locks([directory, *(job_dir(root, mid) for mid in (job.params.runs if group else ()))]):
        state = read_state(root, job.job_id)
        if job_done(root, job):  # another copy finished it while this one waited for the lock
            log.info("job %s (%s) was finished by another copy of it; skipping", job.job_id, job.label)
            return state
        _write_json(directory / "job.json", {"sweep": sweep, **job.model_dump(mode="json")})
        started = now_iso()
        attempt = int(state.get("attempt", 0)) + 1
        write_state(root, job.job_id, state=RUNNING, attempt=attempt, started_at=started, ended_at=None,
                    error=None, log=log_path or state.get("log"), pid=os.getpid(), host=os.uname().nodename,
                    slurm_job_id=os.environ.get("SLURM_JOB_ID"))
        log.info("job %s (%s): attempt %d", job.job_id, job.label, attempt)
        store = ResultStore(root)
        ident = _identity_columns(job, sweep)
        try:
            outputs = STAGE_FUNCTIONS[job.stage](job, root, directory)
            ended = now_iso()
            for table, rows in outputs:
                if table == "runs":
                    continue
                # identity columns first (the column order) and last (a stage's row cannot override them)
                store.write(table, [{**ident, **row, **ident, "started_at": started, "ended_at": ended}
                                    for row in rows])
            extra = next((rows[0] for table, rows in outputs if table == "runs" and rows), {})
            store.write("runs", [{**_scalars(extra), **ident, "status": DONE, "attempt": attempt,
                                  "started_at": started, "ended_at": ended, "log": log_path or ""}])
            single = job.stage == "train" and not isinstance(job.params, TrainGroupParams)
            reached = {"reached_step": int(extra.get("step") or job.steps)} if single else {}
            return write_state(root, job.job_id, state=DONE, ended_at=ended, **reached)
        except SystemExit:
            # submitit's preemption/time-out handler exits after requeueing: not a failure
            write_state(root, job.job_id, state=REQUEUED, ended_at=now_iso())
            raise
        except Exception as exc:
            ended = now_iso()
            last = f"{type(exc).__name__}: {exc}".strip().splitlines()
            error = last[0][:500] if last else type(exc).__name__
            write_state(root, job.job_id, state=FAILED, ended_at=ended, error=error,
                        traceback=traceback.format_exc()[-4000:])
            try:
                store.write("runs", [{**ident, "status": FAILED, "attempt": attempt, "error": error,
                                      "started_at": started, "ended_at": ended, "log": log_path or ""}])
            except OSError as err:  # e.g. the disk that failed the job: its state says failed already
                log.error("could not write the failure row of %s: %s", job.job_id, err)
            raise


class SweepTask(submitit.helpers.Checkpointable):
    """One planned job as a submitit callable; requeued on preemption/time-out (training resumes)."""

    def __init__(self, job: dict[str, Any], root: str, sweep: str):
        self.job = job
        self.root = root
        self.sweep = sweep

    def __call__(self) -> dict:
        from study.common import setup_logging

        setup_logging()  # the job process starts bare: send our INFO logs to its stderr (the submitit log)
        # a multi-task job's torch.distributed variables are exported by study.common.distributed.init_distributed
        log_path = None
        with contextlib.suppress(Exception):
            env = submitit.JobEnvironment()
            log_path = str(env.paths.stderr).replace("%j", str(env.job_id))
        return run_job(self.job, self.root, self.sweep, log_path=log_path)
