"""What each training step sees: the global batch's dataset indices and its random draws, both functions of
(seed, step) alone.

The data order is a permutation drawn from (seed, epoch); each step's noise, times and label dropout come from a
generator seeded by (seed, step) over the *global* batch and each rank takes its slice. So a resumed run reproduces
the uninterrupted one, and N ranks reproduce one process on the same global batch.
"""
from __future__ import annotations

from typing import Iterator

import torch

from study.config import ConfigError, TrainConfig
from study.data import open_dataset
from study.objectives import Objective

__all__ = ["global_batch_indices", "StepBatches", "step_noise", "open_train_dataset"]


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


def global_batch_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """Dataset indices of the global batch of ``step`` (0-based): epochs of ``n // batch`` steps, each a
    permutation drawn from (seed, epoch); the data position of step s is ``s * batch``."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise ConfigError(f"batch_size {batch} is larger than the dataset ({n} images)")
    epoch, k = divmod(step, per_epoch)
    return _epoch_permutation(n, seed, epoch)[k * batch:(k + 1) * batch]


class StepBatches(torch.utils.data.Sampler):
    """Yields this rank's indices for steps ``start, start+1, ...`` (a batch sampler for the DataLoader)."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, rank: int, world: int) -> None:
        self.n, self.batch, self.seed, self.start, self.stop = n, batch, seed, start, stop
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        local = self.batch // self.world
        for step in range(self.start, self.stop):
            idx = global_batch_indices(self.n, self.batch, self.seed, step)
            yield idx[self.rank * local:(self.rank + 1) * local].tolist()


def open_train_dataset(cfg: TrainConfig):
    return open_dataset(cfg.data.spec, cfg.data.split, size=cfg.data.image_size)


def step_noise(seed: int, step: int, batch: int, shape: tuple[int, ...], objective: Objective, class_dropout: float,
               posterior: bool = False) -> dict[str, torch.Tensor]:
    """The global batch's random draws for ``step`` from a generator seeded by (seed, step): ``eps`` (noise), the
    objective's times (``t``; MeanFlow's ``(r, t)`` pairs), ``drop`` (label dropout) and, for stored VAE moments,
    ``post`` (the posterior sample's noise)."""
    g = torch.Generator().manual_seed((seed * 7_919 + step * 1_000_003 + 12_345) % (2**63))
    out = {"eps": torch.randn((batch, *shape), generator=g)}
    out.update(objective.draw_times(batch, g))
    out["drop"] = torch.rand(batch, generator=g) < class_dropout
    if posterior:
        out["post"] = torch.randn((batch, *shape), generator=g)
    return out
