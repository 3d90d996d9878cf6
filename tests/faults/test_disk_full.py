"""Faults of a full disk (issue 19, cases 9, 7 and 11), on a small tmpfs filled up (root only; skipped otherwise):
one line naming the path and the free space, a job that still records its failure, a log line written whole, no
temporary left behind."""
from __future__ import annotations

import errno

import pytest
from fault_support import fill, small_disk  # noqa: F401 (fixture)
from train_support import one_thread, smoke_config  # noqa: F401 (autouse fixture)

import study.training
from jobs import tasks
from jobs.plan import plan
from jobs.spec import load_spec
from results import ResultStore
from study.common import DiskFullError, atomic_write_text
from study.run import append_log
from study.training import train


def test_a_checkpoint_that_does_not_fit_is_one_line_naming_it_and_the_free_space(small_disk):
    run = small_disk / "run"
    fill(small_disk, leave=64 << 10)  # room for the header and the log, not for a checkpoint
    with pytest.raises(DiskFullError) as err:
        train(smoke_config("steps=2", "ckpt_every=2"), run)
    message = str(err.value)
    assert "\n" not in message and "step_0000002.pt" in message and "no space left" in message, message
    assert "free of" in message, message
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_group_still_records_its_failure_on_a_full_disk(small_disk, monkeypatch):
    """Before, the group's handler could not write the members' states: they stayed `running`."""
    root = small_disk / "root"
    spec = load_spec("smoke", ["encoders=[dinov2-vit-b]", "executor.group_methods=true", "eval_steps=[200]",
                               "scoring.enabled=false", "analyze.enabled=false"])
    group = next(j for j in plan(spec) if j.stage == "train")

    def train_group_filling_the_disk(cfgs, dirs, **kwargs):
        fill(small_disk)
        atomic_write_text(dirs[0] / "checkpoints" / "step_0000010.pt", "x" * (1 << 20))  # a checkpoint save

    monkeypatch.setattr(study.training, "train_group", train_group_filling_the_disk)
    with pytest.raises(OSError) as err:
        tasks.run_job(group, root, sweep="smoke")
    assert err.value.errno == errno.ENOSPC
    states = {j: tasks.read_state(root, j) for j in [group.job_id, *group.params.runs]}
    assert {j: s["state"] for j, s in states.items()} == dict.fromkeys(states, "failed"), states
    assert all("no space left" in s["error"].lower() for s in states.values()), states


def test_a_log_line_is_written_whole_or_not_at_all(small_disk):
    append_log(small_disk, {"step": 1, "loss": 0.5})
    fill(small_disk)
    with pytest.raises(OSError) as err:
        append_log(small_disk, {"step": 2, "note": "x" * 20000})
    assert err.value.errno == errno.ENOSPC
    assert (small_disk / "log.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n'


def test_compact_leaves_no_temporary_when_the_disk_is_full(small_disk, tmp_path):
    store = ResultStore(tmp_path / "root")
    store.write("runs", [{"job_id": f"train-{i}", "status": "done", "pad": "p" * 5000} for i in range(200)])
    out = small_disk / "collected"
    out.mkdir()
    fill(small_disk)
    with pytest.raises(OSError):
        store.compact("runs", out)
    assert not list(out.iterdir())
