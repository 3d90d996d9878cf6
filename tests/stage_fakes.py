"""Stand-in stage bodies for the executor tests (test_submit, test_run, test_slurm, the fault suite)."""
import importlib.util
import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Stand-in stage bodies: same inputs and outputs as jobs.tasks' stages, but instant and observable. Each call
# appends to ROOT/invocations.jsonl; training writes step_XXXXXXX.pt files every 10 steps and resumes from the last.
FAKE_STAGES = textwrap.dedent('''
    import json, os, sys, time, zlib
    from pathlib import Path
    import jobs.tasks as T

    def _count(root, job):
        with open(Path(root) / "invocations.jsonl", "a") as fh:
            fh.write(json.dumps({"job_id": job.job_id, "stage": job.stage, "pid": os.getpid()}) + "\\n")

    def train(job, root, run_dir):
        _count(root, job)
        while os.environ.get("FAKE_HOLD") and not Path(os.environ["FAKE_HOLD"]).exists():
            time.sleep(0.05)  # held until the test creates that file
        if os.environ.get("FAKE_FAIL_ENCODER") == job.encoder:
            raise RuntimeError(f"boom: cannot train {job.encoder}")
        ck = run_dir / "checkpoints"
        ck.mkdir(parents=True, exist_ok=True)
        start = max([int(p.stem.split("_")[1]) for p in ck.glob("step_*.pt")], default=0)
        for step in range(start + 1, job.steps + 1):
            time.sleep(float(os.environ.get("FAKE_STEP_S", "0")))
            if step % 10 == 0:
                (ck / f"step_{step:07d}.pt").write_text(str(step))
        return [("runs", [{"resumed_from": start}])]

    def evaluate(job, root, run_dir):
        _count(root, job)
        train_id = job.params.train_job
        if not T.is_done(root, train_id):
            raise RuntimeError(f"training job {train_id} has not finished")
        fd = zlib.crc32(f"{job.encoder}{job.method}".encode()) % 1000 / 10 + job.steps / 100
        return [("generation", [{"fd_synthetic": fd, "step": job.steps}])]

    def score(job, root, run_dir):
        _count(root, job)
        return [("encoders", [{"lds": zlib.crc32(job.encoder.encode()) % 100 / 100, "dataset": "d"}])]

    def analyze(job, root, run_dir):
        _count(root, job)
        out = Path(root) / "reports" / job.params.sweep
        out.mkdir(parents=True, exist_ok=True)
        (out / "index.html").write_text("report")
        return [("runs", [{"report": str(out)}])]

    T.STAGE_FUNCTIONS.update(train=train, eval=evaluate, score=score, analyze=analyze)

    if __name__ == "__main__":
        sys.path.insert(0, os.environ["REPA_REPO"])
        from jobs.executors.local import _main
        sys.exit(_main(sys.argv[1:]))
''')


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Install the stand-in stages here (debug executor) and in every local worker process."""
    import jobs.executors.local
    import jobs.tasks as tasks

    path = tmp_path / "fake_worker.py"
    path.write_text(FAKE_STAGES)
    monkeypatch.setenv("REPA_REPO", str(REPO))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setattr(jobs.executors.local, "WORKER_COMMAND", [sys.executable, str(path), "one"])
    monkeypatch.setattr(tasks, "STAGE_FUNCTIONS", dict(tasks.STAGE_FUNCTIONS))
    spec = importlib.util.spec_from_file_location("fake_worker", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tmp_path


def invocations(root: Path) -> Counter:
    """How often each job's stand-in stage ran (``ROOT/invocations.jsonl``)."""
    path = Path(root) / "invocations.jsonl"
    if not path.exists():
        return Counter()
    return Counter(json.loads(line)["job_id"] for line in path.read_text().splitlines())
