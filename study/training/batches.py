"""What each training step sees: the global batch's dataset indices and its random draws, both functions of
(seed, step) alone, made off the training loop's critical path.

The data order is a permutation drawn from (seed, epoch), drawn once per epoch (not per step: a permutation of
ImageNet costs tens of milliseconds); each step's noise, times and label dropout come from a generator seeded by
(seed, step) over the *global* batch and each rank takes its slice. So a resumed run reproduces the uninterrupted
one, and N ranks reproduce one process on the same global batch.

:class:`StepData` is what the loop's DataLoader iterates: item ``s`` is this rank's slice of step ``s``'s batch,
collated, with the step's draws (one set per distinct :class:`DrawSpec` of a training group: runs that draw alike
share one draw) and, for runs reading an encoder-target cache, the cached targets. In DataLoader workers (``data.
num_workers``) all of it is made while the GPU runs earlier steps, and arrives pinned.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from study.config import ConfigError, TrainConfig
from study.data import collate, open_dataset
from study.objectives import Objective

__all__ = ["global_batch_indices", "StepBatches", "StepData", "DrawSpec", "step_noise", "open_train_dataset",
           "pack_draws", "unpack_draws"]


@functools.lru_cache(maxsize=2)  # the current epoch and the next: a step at an epoch boundary needs no redraw
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


def global_batch_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """Dataset indices of the global batch of ``step`` (0-based): epochs of ``n // batch`` steps, each a
    permutation drawn from (seed, epoch); the data position of step s is ``s * batch``. The permutation is drawn once
    per epoch (per process) and kept; the result is a view of it: do not modify it."""
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
               posterior: bool = False, *, drawn: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The global batch's random draws for ``step`` from a generator seeded by (seed, step): ``eps`` (noise), the
    objective's times (``t``; MeanFlow's ``(r, t)`` pairs), ``drop`` (label dropout) and, for stored VAE moments,
    ``post`` (the posterior sample's noise).

    ``drawn``: these draws made ahead (by :class:`StepData`, maybe only this rank's slice of them), returned as they
    are; the loop passes them here so that every run's draws go through this one function."""
    if drawn is not None:
        return drawn
    g = torch.Generator().manual_seed((seed * 7_919 + step * 1_000_003 + 12_345) % (2**63))
    out = {"eps": torch.randn((batch, *shape), generator=g)}
    out.update(objective.draw_times(batch, g))
    out["drop"] = torch.rand(batch, generator=g) < class_dropout
    if posterior:
        out["post"] = torch.randn((batch, *shape), generator=g)
    return out


@dataclass(frozen=True)
class DrawSpec:
    """What a run's draws depend on besides (seed, step, batch): runs with equal specs get equal draws, so a
    training group draws them once. ``objective`` is only carried; ``times`` names its time distribution."""

    shape: tuple[int, ...]
    times: str
    class_dropout: float
    posterior: bool
    objective: Objective | None = None  # not compared: ``times`` stands for it

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DrawSpec) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def key(self) -> tuple:
        return (self.shape, self.times, self.class_dropout, self.posterior)

    @classmethod
    def of(cls, shape: tuple[int, ...], objective: Objective, class_dropout: float, posterior: bool) -> "DrawSpec":
        return cls(tuple(shape), objective.draws_key, float(class_dropout), bool(posterior), objective)


class StepData(torch.utils.data.Dataset):
    """Item ``step``: this rank's part of step ``step``'s global batch, ready for the loop: ``collate``'s keys
    (``image``, ``label``, ``moments`` ...), ``step``, ``draws`` (per spec of ``specs``, in order: the global
    batch's :func:`step_noise`, sliced to this rank, packed by :func:`pack_draws`) and, with ``targets`` (encoder-target caches, one per
    encoder), ``targets``: their bf16 patch tokens of these images.

    Index it with a sampler over steps and ``batch_size=None`` (see :meth:`loader`)."""

    def __init__(self, dataset: Any, batch: int, seed: int, rank: int, world: int, specs: Sequence[DrawSpec],
                 targets: Sequence[Any] = ()) -> None:
        self.dataset, self.batch, self.seed, self.rank, self.world = dataset, batch, seed, rank, world
        self.specs, self.targets = list(specs), list(targets)
        self.n = len(dataset)
        self.local = batch // world

    def __len__(self) -> int:
        return 2**62  # indexed by step

    def indices(self, step: int) -> list[int]:
        idx = global_batch_indices(self.n, self.batch, self.seed, step)
        return idx[self.rank * self.local:(self.rank + 1) * self.local].tolist()

    def __getitem__(self, step: int) -> dict[str, Any]:
        idx = self.indices(step)
        out = collate([self.dataset[i] for i in idx])
        out["step"] = step
        part = slice(self.rank * self.local, (self.rank + 1) * self.local)
        out["draws"] = [pack_draws({k: v[part] for k, v in step_noise(self.seed, step, self.batch, s.shape,
                                                                       s.objective, s.class_dropout,
                                                                       s.posterior).items()})
                        for s in self.specs]
        if self.targets:
            out["targets"] = [cache.read(idx) for cache in self.targets]
        return out

    def loader(self, start: int, stop: int, *, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
        """Steps ``start .. stop - 1`` in order; ``num_workers`` > 0 makes them ahead (2 steps per worker)."""
        return torch.utils.data.DataLoader(self, batch_size=None, sampler=range(start, stop),
                                           num_workers=num_workers, pin_memory=pin_memory,
                                           collate_fn=_as_is)


def pack_draws(draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
    """A step's draws as one float32 tensor ``[B, columns]`` and its layout (fewer tensors to hand from a DataLoader
    worker to the loop, and one copy to the device); :func:`unpack_draws` gives them back as views."""
    layout = tuple((k, tuple(v.shape[1:]), v.dtype == torch.bool) for k, v in draws.items())
    return torch.cat([v.reshape(len(v), -1).float() for v in draws.values()], dim=1), layout


def unpack_draws(packed: torch.Tensor, layout: tuple) -> dict[str, torch.Tensor]:
    """:func:`pack_draws`'s draws again (views of ``packed``, on its device; label dropout as bool)."""
    out, at = {}, 0
    for key, shape, is_bool in layout:
        n = 1
        for d in shape:
            n *= d
        v = packed[:, at:at + n].reshape(len(packed), *shape)
        out[key] = v > 0.5 if is_bool else v
        at += n
    return out


def _as_is(item: dict[str, Any]) -> dict[str, Any]:
    """The item unchanged (the default would convert it again)."""
    return item
