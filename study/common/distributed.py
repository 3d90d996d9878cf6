"""torch.distributed set-up from torchrun's or submitit's (SLURM) environment, and small collective helpers.

- torchrun (or any launcher) sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``: used as they are.
- Under submitit on SLURM with several tasks, ``submitit.helpers.TorchDistributedEnvironment`` exports them (here,
  the one place that does: each rank then uses the GPU of its local rank, CUDA_VISIBLE_DEVICES untouched).
- Otherwise a single process runs without a process group.
The backend is nccl on GPU and gloo on CPU; each rank uses the GPU of its local rank.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from study.common.log import get_logger

__all__ = ["DistInfo", "init_distributed", "all_reduce_mean", "barrier", "resolve_device", "cpu_threads"]

log = get_logger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto``/None: the local rank's GPU when CUDA is available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available; use device=cpu or device=auto")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device(name)


def _export_submitit_env() -> None:
    """Under a multi-task submitit SLURM job without torchrun variables, export them from the job environment."""
    if "WORLD_SIZE" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join (or create) the process group named by the environment; a single process needs nothing."""
    _export_submitit_env()
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local, resolve_device(device, local))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device, local)
    if world > 1:
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set; launch with torchrun or submitit")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        log.info("process group: rank %d/%d (%s, %s)", rank, world, backend, dev)
    return DistInfo(rank, world, local, dev)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
