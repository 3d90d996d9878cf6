"""Flow matching: interpolation paths, velocity targets, time sampling, and the score from a velocity.

A path is ``x_t = alpha_t x + sigma_t eps`` with ``t`` in [0, 1] (t = 0: data, t = 1: noise); the model predicts
the velocity ``v = alpha'_t x + sigma'_t eps``.

- linear (SiT/REPA default): ``alpha = 1 - t``, ``sigma = t``, so ``v = eps - x``;
- cosine: ``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from study.config import PATHS, TIME_SAMPLINGS, SamplerSettings

__all__ = ["path_coefficients", "interpolate", "velocity_to_eps_x0", "score_from_velocity", "sample_time",
           "cfg_velocity", "flow_sample"]



def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def path_coefficients(path: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t, alpha'_t, sigma'_t)`` for a path name."""
    if path == "linear":
        return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)
    if path == "cosine":
        half_pi = math.pi / 2
        return (torch.cos(half_pi * t), torch.sin(half_pi * t), -half_pi * torch.sin(half_pi * t),
                half_pi * torch.cos(half_pi * t))
    raise ValueError(f"unknown path {path!r}; use one of {', '.join(PATHS)}")


def interpolate(path: str, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, v_target)`` for data ``x``, noise ``eps`` and times ``t [B]``."""
    a, s, da, ds = (_bcast(c, x) for c in path_coefficients(path, t))
    return a * x + s * eps, da * x + ds * eps


def velocity_to_eps_x0(path: str, v: torch.Tensor, x_t: torch.Tensor,
                       t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``x_t = a x + s eps`` and ``v = a' x + s' eps`` for ``(eps, x)``."""
    a, s, da, ds = (_bcast(c, x_t) for c in path_coefficients(path, t))
    det = a * ds - s * da
    eps = (a * v - da * x_t) / det
    x0 = (ds * x_t - s * v) / det
    return eps, x0


def score_from_velocity(path: str, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The score ``grad log p_t(x_t) = -E[eps | x_t] / sigma_t`` implied by a velocity prediction."""
    eps, _ = velocity_to_eps_x0(path, v, x_t, t)
    _, s, _, _ = path_coefficients(path, t)
    return -eps / _bcast(s, x_t)


def sample_time(kind: str, n: int, *, generator: torch.Generator | None = None, mean: float = 0.0,
                std: float = 1.0, path: str = "linear") -> torch.Tensor:
    """``n`` training times: uniform on [0, 1], or log-normal: ``r = exp(N(mean, std))`` is the noise-to-signal
    ratio ``sigma_t / alpha_t`` of ``path``, mapped to its time as the authors (REPA's loss) do:
    ``t = r / (1 + r) = sigmoid(n)`` on the linear path (SD3's logit-normal), ``t = 2 / pi * atan(r)`` on the
    cosine path. The draws from ``generator`` are the same for both paths."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; use one of {', '.join(PATHS)}")
    if kind == "uniform":
        return torch.rand(n, generator=generator)
    if kind == "lognormal":
        normal = mean + std * torch.randn(n, generator=generator)
        if path == "cosine":
            return torch.atan(torch.exp(normal)) * (2 / math.pi)
        return torch.sigmoid(normal)
    raise ValueError(f"unknown time sampling {kind!r}; use one of {', '.join(TIME_SAMPLINGS)}")


def cfg_velocity(net: nn.Module, x: torch.Tensor, t: float, y: torch.Tensor, null: int, cfg_scale: float,
                       interval: tuple[float, float]) -> torch.Tensor:
    """The network's velocity at time ``t``, with classifier-free guidance ``v_u + s (v_c - v_u)`` inside the
    guidance interval (the conditional and null-label passes in one batch)."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
    if cfg_scale == 1.0 or not (interval[0] <= t <= interval[1]):
        return net(x, tt, y).float()
    v = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, null)])).float()
    v_c, v_u = v.chunk(2)
    return v_u + cfg_scale * (v_c - v_u)


@torch.no_grad()
def flow_sample(net: nn.Module, y: torch.Tensor, noise: Callable[[], torch.Tensor], *, path: str,
                sampler: SamplerSettings) -> torch.Tensor:
    """Integrate a velocity network from t = 1 (``noise()``) to 0: Euler ODE over ``num_steps`` equal steps, or
    REPA's Euler-Maruyama SDE (times linear from 1 to 0.04 in ``num_steps`` points, diffusion ``w(t) = 2t``, drift
    ``v - w/2 * score``, fresh ``noise()`` each step, then a last deterministic step to 0)."""
    num_steps, cfg_scale = sampler.num_steps, sampler.cfg_scale
    interval = tuple(sampler.guidance_interval)
    null = net.num_classes
    x = noise()
    if sampler.mode == "ode":
        ts = np.linspace(1.0, 0.0, num_steps + 1)
        for t_cur, t_next in zip(ts[:-1], ts[1:]):
            x = x + (t_next - t_cur) * cfg_velocity(net, x, float(t_cur), y, null, cfg_scale, interval)
        return x
    if num_steps < 2:
        raise ValueError("the SDE sampler needs num_steps >= 2")
    ts = np.concatenate([np.linspace(1.0, 0.04, num_steps), [0.0]])

    def drift(x: torch.Tensor, t: float) -> torch.Tensor:
        v = cfg_velocity(net, x, t, y, null, cfg_scale, interval)
        tt = torch.full((x.shape[0],), t, device=x.device)
        return v - 0.5 * (2 * t) * score_from_velocity(path, v, x, tt)

    for t_cur, t_next in zip(ts[:-2], ts[1:-1]):
        dt = t_next - t_cur
        x = x + drift(x, float(t_cur)) * dt + np.sqrt(2 * t_cur) * np.sqrt(abs(dt)) * noise()
    t_cur, t_next = ts[-2], ts[-1]
    return x + drift(x, float(t_cur)) * (t_next - t_cur)
