"""x-prediction with the velocity loss (JiT, Li & He 2025): the network predicts the clean image, the loss is on the
velocity it implies, and the sampler integrates that velocity.

On the linear path with a noise scale ``s``, ``x_t = (1 - t) x + t s eps`` (t = 0 data, t = 1 noise, this project's
convention), a clean-image prediction ``x_pred`` implies the velocity

    v_pred = (x_t - x_pred) / max(t, t_eps),     and the target is   v = (x_t - x) / max(t, t_eps),

so the loss ``mean (v_pred - v)^2 = mean (x_pred - x)^2 / max(t, t_eps)^2`` is an x-loss reweighted by the noise
level; above ``t_eps`` the target is the usual ``s eps - x``.

The released JiT code runs time the other way (``z = t x + (1 - t) e``, t = 1 data, ``t ~ sigmoid(N(P_mean, P_std))``
with ``P_mean = -0.8, P_std = 0.8``). With ``t_ours = 1 - t_JiT`` its times are ``sigmoid(N(0.8, 0.8))`` here
(``flow.time=lognormal flow.time_mean=0.8 flow.time_std=0.8``), its ``v`` is minus ours, and its clamp
``(1 - t_JiT).clamp_min(t_eps)`` is our ``max(t, t_eps)``. The network sees ``t_ours``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["xpred_inputs", "xpred_velocity", "xpred_loss", "xpred_sample", "XPredFn", "SAMPLERS"]

XPredFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, y) -> x_pred
SAMPLERS = ("euler", "heun")


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def xpred_inputs(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, *, noise_scale: float = 1.0,
                 t_eps: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, v_target)`` for clean ``x``, unit noise ``eps`` and times ``t [B]``."""
    tt = _bcast(t, x)
    x_t = (1 - tt) * x + tt * noise_scale * eps
    return x_t, (x_t - x) / tt.clamp_min(t_eps)


def xpred_velocity(x_pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, t_eps: float = 0.05) -> torch.Tensor:
    """The velocity a clean-image prediction implies at ``(x_t, t)``."""
    return (x_t - x_pred) / _bcast(t, x_t).clamp_min(t_eps)


def xpred_loss(x_pred: torch.Tensor, x_t: torch.Tensor, v_target: torch.Tensor, t: torch.Tensor,
               t_eps: float = 0.05) -> torch.Tensor:
    """JiT's loss: mean squared error between the implied and the target velocity (mean over all elements)."""
    return F.mse_loss(xpred_velocity(x_pred.float(), x_t.float(), t, t_eps), v_target.float())


@torch.no_grad()
def xpred_sample(x_fn: XPredFn, labels: torch.Tensor, noise: torch.Tensor, *, null: int, num_steps: int = 50,
                 method: str = "euler", cfg_scale: float = 1.0, guidance_interval: tuple[float, float] = (0.0, 1.0),
                 noise_scale: float = 1.0, t_eps: float = 0.05) -> torch.Tensor:
    """JiT's ODE sampler: ``num_steps`` equal steps from t = 1 to 0 starting at ``noise_scale * noise``; every step
    but the last uses ``method`` (Euler, or Heun as the released code's default), the last is Euler.

    Guidance (``v_u + s (v_c - v_u)``) applies where ``guidance_interval[0] <= t <= guidance_interval[1]``.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown JiT sampler {method!r}; use one of {', '.join(SAMPLERS)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    y = labels.to(noise.device)

    def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((z.shape[0],), t, device=z.device, dtype=torch.float32)
        if cfg_scale == 1.0 or not (guidance_interval[0] <= t <= guidance_interval[1]):
            return xpred_velocity(x_fn(z, tt, y).float(), z, tt, t_eps)
        both = x_fn(torch.cat([z, z]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, null)])).float()
        v_c, v_u = xpred_velocity(both, torch.cat([z, z]), torch.cat([tt, tt]), t_eps).chunk(2)
        return v_u + cfg_scale * (v_c - v_u)

    z = noise_scale * noise
    ts = np.linspace(1.0, 0.0, num_steps + 1)
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        dt = float(t_next - t_cur)
        v = velocity(z, float(t_cur))
        if method == "heun" and i < num_steps - 1:
            v = 0.5 * (v + velocity(z + dt * v, float(t_next)))
        z = z + dt * v
    return z
