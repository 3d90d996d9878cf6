"""The local executor: runs a sweep's jobs as background processes on this machine, respecting dependencies.

Each job runs in its own Python process, forked from a fork server that imported torch and the stages once (so a
job does not pay ~5 CPU-seconds of imports), with its output in ``ROOT/jobs/<job_id>/log.txt``; at most ``workers``
run at once. A job starts when every job it depends on has
ended (done or failed, like SLURM's ``afterany``); a job whose input is missing then fails with a clear error
(e.g. an evaluation whose training failed). Jobs already done are never run again.

``sweep submit --executor local`` without ``--wait`` starts :func:`drive` in a detached process (its pid in
``ROOT/sweeps/<name>/driver.pid``, output in ``driver.log``), so the shell returns at once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from jobs.executors.base import Entry, Executor, Record, sweep_dir
from jobs.plan import Job
from jobs.spec import SweepSpec
from jobs.states import CANCELLED, DONE, FAILED
from jobs.tasks import job_dir, job_done, job_running, read_state, run_job, write_state
from study.common import get_logger, progress

__all__ = ["LocalExecutor", "drive", "spawn_driver", "driver_pid", "claim_driver", "WORKER_COMMAND"]

log = get_logger(__name__)
#: How one job is started. The default forks each job from a fork server that has imported torch & co. once
#: (a fresh process per job, without the import cost); any other command runs as a subprocess with the job's
#: arguments appended (tests point it at a worker with stand-in stages).
DEFAULT_WORKER_COMMAND = [sys.executable, "-m", "jobs.executors.local", "one"]
WORKER_COMMAND = list(DEFAULT_WORKER_COMMAND)


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]


def claim_driver(root: str | Path, sweep: str, pid: int | None = None) -> Path:
    """Record ``pid`` (default: this process) as the sweep's local driver; returns the pid file."""
    pid = pid or os.getpid()
    path = sweep_dir(root, sweep) / "driver.pid"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {_start_time(pid) or ''}\n")
    return path


def driver_pid(root: str | Path, sweep: str) -> int | None:
    """The pid of a live local driver for this sweep (checked against its start time), else None."""
    path = sweep_dir(root, sweep) / "driver.pid"
    try:
        parts = path.read_text().split()
        pid = int(parts[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    started = _start_time(pid)
    if started is None or (len(parts) > 1 and parts[1] != started):
        return None
    return pid


def _job_env(job: Job) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(max(1, job.resources.cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = threads
    env.setdefault("REPA_STUDY_PROGRESS", "0")
    return env


#: Modules the fork server imports once, so each job process starts without paying for torch & co.
PRELOAD = ["torch", "timm", "study.training.loop", "study.sampling.sample", "study.evaluation.evaluate", "study.scoring.score", "analysis.report"]
_FORKSERVER = None


def _forkserver():
    """A ``forkserver`` context with the heavy imports preloaded (created once per driver)."""
    global _FORKSERVER
    if _FORKSERVER is None:
        import multiprocessing as mp

        _FORKSERVER = mp.get_context("forkserver")
        _FORKSERVER.set_forkserver_preload(PRELOAD)
    return _FORKSERVER


class _ForkedJob:
    """A job process forked from the fork server, with the small part of Popen's interface ``drive`` uses."""

    def __init__(self, process):
        self._p = process

    @property
    def returncode(self) -> int | None:
        return self._p.exitcode

    def poll(self) -> int | None:
        return self._p.exitcode

    def terminate(self) -> None:
        self._p.terminate()

    def kill(self) -> None:
        self._p.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        self._p.join(timeout)
        if self._p.exitcode is None:
            raise subprocess.TimeoutExpired("job", timeout)
        return self._p.exitcode


def _run_forked(data: dict, root: str, sweep: str, log_path: str, threads: int) -> None:
    """Body of a forked job process: output to the job's log, the job's thread count, then :func:`run_job`."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("REPA_STUDY_PROGRESS", "0")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    from study.common import setup_logging

    setup_logging()
    code = 0
    try:
        run_job(data, root, sweep, log_path=log_path)
    except Exception:  # noqa: BLE001 - state and traceback are recorded by run_job
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def _launch(job: Job, root: Path, sweep: str):
    directory = job_dir(root, job.job_id)
    directory.mkdir(parents=True, exist_ok=True)
    spec_file = directory / "job.json"
    spec_file.write_text(json.dumps({"sweep": sweep, **job.model_dump(mode="json")}))
    log_path = directory / "log.txt"
    if WORKER_COMMAND == DEFAULT_WORKER_COMMAND:
        ctx = _forkserver()
        proc = ctx.Process(target=_run_forked, name=f"repa-job-{job.job_id}",
                           args=(job.model_dump(mode="json"), str(root), sweep, str(log_path),
                                 max(1, job.resources.cpus)))
        proc.start()
        return _ForkedJob(proc)
    out = open(log_path, "ab")
    cmd = [*WORKER_COMMAND, str(spec_file), str(root), sweep, str(log_path)]
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_job_env(job),
                                cwd=Path(__file__).resolve().parents[2])
    finally:
        out.close()


def drive(jobs: Sequence[Job], root: str | Path, sweep: str, *, workers: int = 1,
          on_update: Callable[[dict[str, str]], None] | None = None, poll_s: float = 0.2) -> dict[str, str]:
    """Run ``jobs`` (a planned sweep, or part of one) to the end; return ``{job_id: final state}``.

    Dependencies on jobs outside ``jobs`` are taken as satisfied when those jobs are done (else they count as
    ended too, and the dependent job reports the missing input itself), once no process runs them any more (their
    lock is free: a killed driver's orphan, another sweep's copy, is waited for).
    """
    root = Path(root)
    todo = {j.job_id: j for j in jobs}
    labels = {j.job_id: j.label for j in jobs}
    final: dict[str, str] = {}
    for job_id, job in list(todo.items()):
        if job_done(root, job):
            final[job_id] = DONE
            del todo[job_id]
    running: dict[str, subprocess.Popen] = {}
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        # `sweep cancel` sends SIGTERM: leave through the cleanup below, which stops and marks the running jobs
        previous_handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    bar = progress(total=len(jobs), desc=f"sweep {sweep}", unit="job", initial=len(final))
    try:
        while todo or running:
            for job_id, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[job_id]
                state = read_state(root, job_id).get("state")
                if proc.returncode != 0 and state != FAILED and job_running(root, job_id) is None:
                    # the process died before it could record its failure (killed, crashed); a copy that died
                    # waiting for another process running the job leaves that one's state alone
                    write_state(root, job_id, state=FAILED,
                                error=f"process exited with status {proc.returncode}")
                    state = FAILED
                final[job_id] = state or FAILED
                bar.update(1)
                log.log(20 if final[job_id] == DONE else 30, "%s %s: %s", final[job_id], job_id,
                        labels[job_id])
                if on_update:
                    on_update(final)
            for job_id, job in list(todo.items()):
                if len(running) >= workers:
                    break
                deps_ended = all(d in final or (d not in todo and d not in running and job_running(root, d) is None)
                                 for d in job.depends_on)
                if not deps_ended:
                    continue
                del todo[job_id]
                running[job_id] = _launch(job, root, sweep)
                log.info("started %s: %s", job_id, job.label)
            time.sleep(poll_s)
    except BaseException:
        for proc in running.values():
            proc.terminate()
        for job_id, proc in running.items():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            write_state(root, job_id, state=CANCELLED, error="the local driver was stopped")
        raise
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    return final


def _exit_on_sigterm(signum, frame) -> None:
    sys.exit(128 + signum)


def spawn_driver(root: str | Path, sweep: str, plan_file: Path, workers: int) -> int:
    """Start :func:`drive` in a detached background process (same ``WORKER_COMMAND``); returns its pid."""
    directory = sweep_dir(root, sweep)
    directory.mkdir(parents=True, exist_ok=True)
    out = open(directory / "driver.log", "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.executors.local", "drive", str(plan_file), str(root), sweep, str(workers),
             json.dumps(WORKER_COMMAND)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=Path(__file__).resolve().parents[2])
    finally:
        out.close()
    claim_driver(root, sweep, proc.pid)
    return proc.pid


class LocalExecutor(Executor):
    """Background processes on this machine: :func:`drive` in this process with ``wait``, else in a detached
    driver (:func:`spawn_driver`); ``executor.local_workers`` jobs at once."""

    name = "local"

    def submit(self, spec: SweepSpec, root: Path, todo: list[Job], *, record: Record, queued: Mapping[str, str],
               wait: bool, poll_s: float) -> tuple[dict[str, str], dict[str, str] | None]:
        submitted = {j.job_id: "local" for j in todo}
        record(submitted)
        if wait:
            pid_file = claim_driver(root, spec.name)
            try:
                return submitted, drive(todo, root, spec.name, workers=spec.executor.local_workers)
            finally:
                pid_file.unlink(missing_ok=True)
        plan_file = sweep_dir(root, spec.name) / "todo.json"
        plan_file.write_text(json.dumps([j.model_dump(mode="json") for j in todo]))
        pid = spawn_driver(root, spec.name, plan_file, spec.executor.local_workers)
        log.info("local driver started in the background (pid %d); follow it with `repa-study sweep status %s`",
                 pid, spec.name)
        return submitted, None

    def alive(self, root: Path, sweep: str, entries: Mapping[str, Entry]) -> dict[str, str | None] | None:
        """Every job of a live driver (which of them runs, its state file says); none without one."""
        return dict.fromkeys(entries) if driver_pid(root, sweep) is not None else {}

    def cancel(self, root: Path, sweep: str, entries: Mapping[str, Entry]) -> list[str]:
        """SIGTERM to the driver, which stops its running jobs and marks them cancelled; the jobs it had not
        finished are returned."""
        pid = driver_pid(root, sweep)
        if pid is None:
            return []
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if driver_pid(root, sweep) is None:
                break
            time.sleep(0.1)
        return [j for j in entries if read_state(root, j).get("state") not in (DONE, FAILED)]

    def lost_error(self, entry: Entry) -> str:
        return "the local driver stopped before this job ended (see driver.log)"


def _main(argv: list[str]) -> int:
    from study.common import setup_logging

    setup_logging()
    if argv[:1] == ["one"]:
        spec_file, root, sweep, log_path = argv[1:5]
        data = json.loads(Path(spec_file).read_text())
        data.pop("sweep", None)
        try:
            run_job(data, root, sweep, log_path=log_path)
        except Exception:  # noqa: BLE001 - state and traceback are recorded by run_job
            import traceback
            traceback.print_exc()
            return 1
        return 0
    if argv[:1] == ["drive"]:
        plan_file, root, sweep, workers = argv[1:5]
        if len(argv) > 5:
            global WORKER_COMMAND
            WORKER_COMMAND = json.loads(argv[5])
        jobs = [Job.model_validate(j) for j in json.loads(Path(plan_file).read_text())]
        final = drive(jobs, root, sweep, workers=int(workers))
        failed = sorted(k for k, v in final.items() if v != DONE)
        print(f"sweep {sweep}: {len(final) - len(failed)} done, {len(failed)} not done", flush=True)
        return 1 if failed else 0
    print("usage: python -m jobs.executors.local one JOB.json ROOT SWEEP LOG | drive PLAN.json ROOT SWEEP WORKERS [CMD]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
