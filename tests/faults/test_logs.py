"""Fault: a training attempt that died before its first checkpoint left log lines behind; the next attempt starts
from step 0, so those lines describe steps that no checkpoint holds and must not stay in the run's log."""
import json

from train_support import one_thread, smoke_config  # noqa: F401 (autouse fixture)

from study.training import train


def test_a_restart_without_a_checkpoint_starts_a_fresh_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)))
    train(smoke_config("steps=2", "log_every=1", "ckpt_every=100"), run)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] != 9.0 for r in rows)
