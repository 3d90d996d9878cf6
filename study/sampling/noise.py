"""Per-sample seeded Gaussian noise drawn on the device, one call per batch.

Sample ``i``'s noise must depend on its seed alone (not on the batch or rank it falls in), which one torch generator
per sample gives only one sample at a time, on the CPU, then copied over: 250 calls per batch for the SDE sampler.
:func:`seeded_normal` is a counter-based generator instead: element ``j`` of call ``k`` of the sample with seed ``s``
is a function of ``(s, k, j)``, computed for the whole batch at once with integer tensor ops on the device (a
32-bit integer hash, Chris Wellons' ``lowbias32``, chained over the seed's halves, the call and the element index;
exact integer arithmetic, so the bits are the same on every device), then Box-Muller on two 24-bit uniforms.
The same seeds give the same noise whatever the batch size, the number of ranks or the device (up to the last bit of
``log``/``cos``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["seeded_normal", "SeededNoise", "NOISE_VERSION"]

#: Recorded in sample manifests: which generator drew the noise (the earlier per-sample CPU generators: none).
NOISE_VERSION = "device-hash/1"
_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` in int64, in 16-bit halves (no int64 overflow)."""
    return (((((x >> 16) * c) & 0xFFFF) << 16) + (x & 0xFFFF) * c) & _M32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a bijective 32-bit hash with good avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _uniform(h: torch.Tensor) -> torch.Tensor:
    """24-bit uniforms in (0, 1) from 32-bit hashes."""
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / 2**24)


def seeded_normal(seeds: Sequence[int] | torch.Tensor, call: int, shape: tuple[int, ...],
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise ``[len(seeds), *shape]`` (float32, on ``device``): row ``b`` is a function of
    ``(seeds[b], call, element index)`` only."""
    device = torch.device(device)
    s = torch.as_tensor(seeds, dtype=torch.int64).to(device).reshape(-1, 1)
    key = _mix((s & _M32) ^ _mix(((s >> 32) & _M32) ^ 0x9E3779B9))
    key = _mix(key ^ _mix(torch.full_like(key, (call * 0x632BE5AB + 0x85EBCA6B) & _M32)))
    n = math.prod(shape)
    j = torch.arange(n, dtype=torch.int64, device=device).reshape(1, -1)
    u1 = _uniform(_mix(key ^ _mix(2 * j)))
    u2 = _uniform(_mix(key ^ _mix(2 * j + 1)))
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return z.reshape(len(s), *shape)


class SeededNoise:
    """The sampler's noise source (``study.objectives.Noise``): each call draws the next ``[B, *shape]`` noise of
    these per-sample seeds on ``device``, in one call."""

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...], device: torch.device) -> None:
        self.seeds = torch.as_tensor(list(seeds), dtype=torch.int64).to(device)
        self.shape, self.device, self.calls = tuple(shape), torch.device(device), 0

    def __call__(self) -> torch.Tensor:
        out = seeded_normal(self.seeds, self.calls, self.shape, self.device)
        self.calls += 1
        return out
