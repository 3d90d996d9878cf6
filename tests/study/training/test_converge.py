"""300 steps on synthetic data reduce both the flow-matching and the alignment loss."""
import json

import pytest
from train_support import one_thread, smoke_config  # noqa: F401 (autouse fixture)

import study.training.loop as T


@pytest.mark.slow
def test_training_reduces_both_losses(tmp_path):
    # smoke SiT, pixel space (identity codec), 32 px synthetic images, tiny random-init DINOv2 stand-in, iREPA
    cfg = smoke_config("data.spec=synthetic:n=256,size=32,classes=4,seed=0", "steps=300", "batch_size=8",
                       "optim.lr=1e-3", "ckpt_every=1000", "log_every=1", "method=irepa")
    T.train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 300

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    first, last = rows[:40], rows[-40:]
    assert mean("loss_v", last) < 0.6 * mean("loss_v", first)
    assert mean("loss_align", last) < mean("loss_align", first) - 0.15  # cosine similarity up by > 0.15
