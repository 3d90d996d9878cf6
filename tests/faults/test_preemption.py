"""Fault: a preemption signal reaching a training group between its members' steps. Every member must save at the
same step (before, only the members stepped after the signal saved; the others lost their steps since their last
checkpoint)."""
import signal

import pytest
from train_support import one_thread, smoke_config  # noqa: F401 (autouse fixture)

import study.training.loop as T
from study.training import train_group

BASE = ("steps=50", "ckpt_every=100", "log_every=1", "encoder.name=dinov2-vit-b", "encoder.weights=tiny")


class Requeued(Exception):
    pass


@pytest.mark.parametrize("member", [0, 1])
def test_every_member_of_a_group_saves_at_the_same_step(tmp_path, monkeypatch, member):
    real_noise, calls = T.step_noise, {"n": 0}

    def noise_then_signal(seed, step, *args, **kwargs):
        if step == 4 and calls["n"] % 2 == member:  # during the 5th step, inside the first or the second member's
            signal.raise_signal(signal.SIGUSR2)
        calls["n"] += 1
        return real_noise(seed, step, *args, **kwargs)

    def previous_handler(signum, frame):
        raise Requeued

    monkeypatch.setattr(T, "step_noise", noise_then_signal)
    old = signal.signal(signal.SIGUSR2, previous_handler)
    dirs = [tmp_path / "repa", tmp_path / "irepa"]
    try:
        with pytest.raises(Requeued):
            train_group([smoke_config(*BASE, "method=repa", "method.hidden_dim=32"),
                         smoke_config(*BASE, "method=irepa")], dirs)
    finally:
        signal.signal(signal.SIGUSR2, old)
    saved = [sorted(p.name for p in (d / "checkpoints").iterdir()) for d in dirs]
    assert saved[0] == saved[1] and len(saved[0]) == 1, saved
