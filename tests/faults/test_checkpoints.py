"""Faults in checkpoints (issue 19, cases 1-3): a pickle planted in a run folder, garbage inside a checkpoint, a
truncated or empty one. A resumed run moves a bad newest checkpoint aside, says so, and continues from the newest
good one exactly as an undisturbed run; sampling refuses a bad checkpoint by name; nothing planted ever runs."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch
from fault_support import damage, plant_pickle
from train_support import one_thread, params, smoke_config  # noqa: F401 (autouse fixture)

from study.config import SamplerSettings
from study.run import (TRUST_OLD_ENV, CorruptCheckpointError, UnverifiedCheckpointError, checkpoint_path,
                       load_sampling_model)
from study.sampling import sample_run
from study.training import NonFiniteLossError, train

CFG = ("ckpt_every=2", "log_every=1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with checkpoints at steps 2 and 4, and the same run trained undisturbed to 6."""
    base = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(smoke_config("steps=4", *CFG), base / "run")
        train(smoke_config("steps=6", *CFG), base / "full")
    finally:
        torch.set_num_threads(threads)
    return base


@pytest.fixture
def run(trained, tmp_path):
    return shutil.copytree(trained / "run", tmp_path / "run")


def _resume_to_6(run, trained, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        out = train(smoke_config("steps=6", *CFG), run)
    assert out["step"] == 6
    a, b = params(trained / "full", 6), params(run, 6)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


# ------------------------------------------------------------------------------------------------ case 1
def test_a_planted_newest_checkpoint_never_runs_and_resume_goes_on_from_the_good_one(run, trained, tmp_path, caplog):
    marker = tmp_path / "payload-ran"
    plant_pickle(checkpoint_path(run, 5), marker)
    try:
        _resume_to_6(run, trained, caplog)
    finally:
        assert not marker.exists(), "resuming ran a planted pickle"
    assert "step_0000005.pt" in caplog.text and "moved it aside" in caplog.text


def test_sampling_a_planted_checkpoint_refuses_it_without_running_it(run, tmp_path):
    marker = tmp_path / "payload-ran"
    plant_pickle(checkpoint_path(run, 2), marker)
    try:
        with pytest.raises(CorruptCheckpointError, match="step_0000002.pt"):
            sample_run(run, 2, 2, SamplerSettings(num_steps=2), device="cpu")
    finally:
        assert not marker.exists(), "sampling ran a planted pickle"


# ------------------------------------------------------------------------------------------------ case 2
@pytest.mark.parametrize("byte", [None, 0xFF], ids=["garbage", "nan-bytes"])
def test_garbage_inside_the_newest_checkpoint_is_detected_and_resume_falls_back(run, trained, caplog, byte):
    """Before: rc 0 with different weights (garbage), or a NaN stop naming the damaged file as the last good one."""
    damage(checkpoint_path(run, 4), byte=byte)
    try:
        _resume_to_6(run, trained, caplog)
    except NonFiniteLossError as exc:
        pytest.fail(f"resumed from the damaged checkpoint: {exc}")
    assert "step_0000004.pt is damaged" in caplog.text
    assert [p.name for p in (run / "checkpoints").glob("step_0000004.pt.damaged-*")]


def test_sampling_a_damaged_older_checkpoint_is_an_error_naming_it(run):
    damage(checkpoint_path(run, 2))
    with pytest.raises(CorruptCheckpointError, match=r"step_0000002.pt is damaged"):
        load_sampling_model(run, 2)
    load_sampling_model(run, 4)  # the intact one still loads


# ------------------------------------------------------------------------------------------------ case 3
@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "empty"])
def test_a_truncated_or_empty_newest_checkpoint_does_not_block_resume(run, trained, caplog, keep):
    path = checkpoint_path(run, 4)
    with open(path, "r+b") as fh:
        fh.truncate(int(path.stat().st_size * keep))
    _resume_to_6(run, trained, caplog)
    assert "step_0000004.pt is damaged" in caplog.text


# ------------------------------------------------------------------------------------------------ old checkpoints
def _as_old_checkpoint(path) -> None:
    """Rewrite a checkpoint as an older repa-study wrote it: no digest, numpy's own RNG state tuple."""
    import numpy as np

    state = torch.load(path, weights_only=True)
    del state["digest"]
    rng = state["rng"]["numpy"]
    state["rng"]["numpy"] = (rng["kind"], rng["keys"].numpy().astype(np.uint32), rng["pos"], rng["has_gauss"],
                             rng["cached_gaussian"])
    torch.save(state, path)


def test_an_old_checkpoint_loads_only_when_trusted_with_one_warning(run, trained, caplog, monkeypatch):
    _as_old_checkpoint(checkpoint_path(run, 4))
    with pytest.raises(UnverifiedCheckpointError, match=TRUST_OLD_ENV):
        train(smoke_config("steps=6", *CFG), run)
    monkeypatch.setenv(TRUST_OLD_ENV, "1")
    _resume_to_6(run, trained, caplog)
    assert caplog.text.count("carries no digest") == 1
