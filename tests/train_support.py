"""Helpers shared by the training and sampling tests (engineer "train")."""
from __future__ import annotations

import os
import socket

import torch

SMOKE_DATA = "synthetic:n=64,size=32,classes=4,seed=0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_config(*overrides: str):
    from study.config import load_train_config

    return load_train_config("smoke", [f"data.spec={SMOKE_DATA}", "device=cpu", *overrides])


def params(run_dir, step: int) -> dict[str, torch.Tensor]:
    from study.run import checkpoint_path

    state = torch.load(checkpoint_path(run_dir, step), map_location="cpu", weights_only=False)
    return {**{f"model.{k}": v for k, v in state["model"].items()}, **{f"ema.{k}": v for k, v in state["ema"].items()}}


def ddp_worker(rank: int, world: int, port: int, run_dir: str, overrides: list[str]) -> None:
    """One rank of a gloo process group running ``train`` (target of torch.multiprocessing.spawn)."""
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from study.training import train

    try:
        train(smoke_config(*overrides), run_dir)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def preempted_rank_worker(rank: int, world: int, port: int, run_dir: str) -> None:
    """A rank of 2 (gloo) that gets SIGUSR2 during its step ``3 + rank`` (the ranks at different steps, as a
    scheduler's signal may reach them); log_every 4."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import signal

    import torch.distributed as dist

    import study.training.loop as loop

    class Requeued(Exception):
        pass

    real = loop.step_noise

    def noise(seed, step, *args, **kwargs):
        if step == 2 + rank:
            signal.raise_signal(signal.SIGUSR2)
        return real(seed, step, *args, **kwargs)

    def previous(signum, frame):
        raise Requeued

    loop.step_noise = noise
    signal.signal(signal.SIGUSR2, previous)
    try:
        loop.train(smoke_config("steps=20", "ckpt_every=100", "log_every=4", "batch_size=8"), run_dir)
    except Requeued:
        pass
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def sample_worker(rank: int, world: int, port: int, run_dir: str, step: int, kwargs: dict) -> None:
    """One rank of a gloo process group running ``sample_run``."""
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from study.sampling import sample_run

    try:
        sample_run(run_dir, step, **kwargs)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def load_samples(sample_dir) -> tuple:
    """All shards of a sample directory, in index order: ``(images [N,H,W,3] uint8, labels [N])``."""
    from pathlib import Path

    import numpy as np

    shards = sorted(Path(sample_dir).glob("samples_*.npz"))
    arrs = [np.load(p) for p in shards]
    return np.concatenate([a["arr_0"] for a in arrs]), np.concatenate([a["labels"] for a in arrs])


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread: with two on a shared, loaded machine, OpenMP waits dominate
    (measured here: smoke SiT forward+backward 0.03 s on 1 thread vs 1.9 s on 2)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def log_rows(run_dir) -> list[dict]:
    import json
    from pathlib import Path

    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
