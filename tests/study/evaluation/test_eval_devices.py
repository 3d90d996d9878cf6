"""Multi-GPU evaluation: every rank builds its FID extractor on its own device, after the process group exists."""
import pytest
import torch
from train_support import one_thread, smoke_config  # noqa: F401 (autouse fixture)

import study.evaluation.evaluate as E
from study.common import DistInfo


def test_each_rank_builds_its_extractor_on_its_own_device(tmp_path, monkeypatch):
    import study.training.loop as T

    run = tmp_path / "run"
    T.train(smoke_config("steps=1", "ckpt_every=1"), run)
    order = []

    def fake_init(device="auto"):
        order.append("init")
        return DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cuda", 1))

    class Built(Exception):
        pass

    def fake_extractor(name, *, dataset, weights_path, device):
        order.append(("extractor", device))
        raise Built

    monkeypatch.setattr(E, "init_distributed", fake_init)
    monkeypatch.setattr(E, "get_extractor", fake_extractor)
    with pytest.raises(Built):
        E.evaluate_run(run, 1, n=4, extractor="synthetic")
    assert order == ["init", ("extractor", "cuda:1")]
