"""Stand-in stage bodies for the executor tests (test_submit, test_run, test_slurm)."""
import textwrap

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
