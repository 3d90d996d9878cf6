"""MeanFlow (Geng et al., "Mean Flows for One-step Generative Modeling", 2025): objective and samplers.

The model predicts the average velocity ``u(z_t, r, t)`` over ``[r, t]`` on the linear path
``z_t = (1 - t) x + t eps`` (t = 0 data, t = 1 noise, as in ``study.objectives.flow``). The MeanFlow identity gives the target

    u_tgt = v_g - clip(t - r, 0, 1) * (v_g . d_z u + d_t u),     stop-gradient,

where the total derivative is one forward-mode JVP (``torch.func.jvp``) of ``u`` along ``(v_g, dt/dt = 1, dr/dt = 0)``
and ``v_g`` is the (guided) instantaneous velocity: with CFG folded into training (the paper's eq. 13-19)

    v_g = omega * v + (1 - omega - kappa) * u(z_t, t, t | null) + kappa * u(z_t, t, t | y)

inside the guidance interval (``v`` outside it and for the label-dropped samples). The per-sample squared error is
summed over dimensions and divided by ``(sq + c) ** p`` (adaptive weighting, stop-gradient). With ``r = t`` the target
is ``v_g`` and the loss is flow matching.

Samplers: ``z_r = z_t - (t - r) u(z_t, r, t)`` over ``num_steps`` equal intervals from 1 to 0 (1 NFE: one jump).
Sources and the settings where the paper and the codes differ: docs/training.md, "MeanFlow".
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from study.config import MeanFlowSection
from study.objectives.flow import sample_time

__all__ = ["sample_time_pair", "guided_velocity", "meanflow_target",
           "adaptive_weight", "meanflow_loss", "meanflow_sample", "meanflow_step", "unwrap", "UFn"]

UFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (z, t, r) -> u


def sample_time_pair(n: int, settings: MeanFlowSection, *,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r, t)`` for ``n`` samples: two independent draws sorted so ``t >= r``; then ``round(n * equal_fraction)``
    samples (at random positions) get ``r = t``."""
    a = sample_time(settings.time, n, generator=generator, mean=settings.time_mean, std=settings.time_std)
    b = sample_time(settings.time, n, generator=generator, mean=settings.time_mean, std=settings.time_std)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    equal = torch.zeros(n, dtype=torch.bool)
    equal[torch.randperm(n, generator=generator)[:int(n * settings.equal_fraction)]] = True
    return torch.where(equal, t, r), t


def _bcast(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return s.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def guided_velocity(v: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, drop: torch.Tensor,
                    v_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], null: int,
                    settings: MeanFlowSection) -> torch.Tensor:
    """The instantaneous velocity the target is built on: ``v``, or the CFG-folded ``v_g`` (no grad).

    ``v_fn(z, t, y)`` is the model's own instantaneous velocity ``u(z, t, t | y)``; ``drop`` marks label-dropped
    samples, which keep ``v``.
    """
    if not settings.guided:
        return v
    lo, hi = settings.guidance_interval
    inside = ((t >= lo) & (t <= hi)).reshape(-1, *([1] * (v.ndim - 1)))
    with torch.no_grad():
        v_u = v_fn(z_t, t, torch.full_like(y, null)).float()
        if settings.kappa == 0.0:
            v_g = v_u + settings.omega * (v - v_u)
        else:
            v_c = v_fn(z_t, t, y).float()
            v_g = settings.omega * v + (1 - settings.omega - settings.kappa) * v_u + settings.kappa * v_c
    v_g = torch.where(inside, v_g, v)
    return torch.where(drop.bool().reshape(-1, *([1] * (v.ndim - 1))), v, v_g)


def meanflow_target(u_fn: UFn, z_t: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                    v_g: torch.Tensor) -> torch.Tensor:
    """``v_g - clip(t - r, 0, 1) * du/dt`` with ``du/dt`` from one forward-mode JVP, without grad.

    Attention runs on the math kernel inside the JVP (the fused CPU/GPU kernels have no forward-mode derivative).
    """
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        _, du_dt = torch.func.jvp(u_fn, (z_t, t, r), (v_g.to(z_t.dtype), torch.ones_like(t), torch.zeros_like(r)))
    return (v_g - _bcast((t - r).clamp(0.0, 1.0), v_g) * du_dt.float()).detach()


def adaptive_weight(sq: torch.Tensor, p: float, c: float) -> torch.Tensor:
    """``1 / (sq + c) ** p`` per sample, without grad (p = 0: all ones)."""
    return 1.0 / (sq.detach() + c).pow(p)


def meanflow_loss(u: torch.Tensor, u_tgt: torch.Tensor,
                  settings: MeanFlowSection) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weighted loss, plain mean squared error)``: the squared error summed over dimensions, adaptively weighted,
    averaged over the batch; the second value (mean over all elements) is for logging."""
    err = (u.float() - u_tgt).pow(2)
    sq = err.flatten(1).sum(1)
    return (adaptive_weight(sq, settings.norm_p, settings.norm_eps) * sq).mean(), err.mean().detach()


@torch.no_grad()
def meanflow_sample(u_fn: UFn, noise: torch.Tensor, num_steps: int = 1) -> torch.Tensor:
    """Integrate from t = 1 (noise) to 0 with ``num_steps`` average-velocity jumps ``z <- z - (t - r) u(z, t, r)``.

    ``u_fn(z, t, r)`` closes over the labels (CFG is in the trained model, none is applied here).
    """
    if num_steps < 1:
        raise ValueError(f"MeanFlow sampling needs num_steps >= 1, got {num_steps}")
    z = noise
    ts = torch.linspace(1.0, 0.0, num_steps + 1)
    for t_cur, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        t = torch.full((z.shape[0],), t_cur, device=z.device)
        r = torch.full((z.shape[0],), t_next, device=z.device)
        z = z - (t_cur - t_next) * u_fn(z, t, r).float()
    return z


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP / torch.compile wrappers (``torch.func.jvp`` needs the plain module)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def meanflow_step(model: nn.Module, net: nn.Module, x: torch.Tensor, eps: torch.Tensor, r: torch.Tensor,
                  t: torch.Tensor, y: torch.Tensor, drop: torch.Tensor,
                  settings: MeanFlowSection) -> tuple[torch.Tensor, torch.Tensor, object]:
    """One micro-batch of MeanFlow: ``(loss, mse, extras)``.

    ``net(z, t, y, r) -> u`` is the plain MeanFlow SiT (used for the guidance velocities and the JVP, without grad);
    ``model(z, t, y, r=r) -> (u, extras)`` is what is trained (the SiT with its projectors, maybe DDP-wrapped), run
    once with grad. ``y`` holds the labels after dropout (``drop`` marks the dropped ones).
    """
    from study.objectives.flow import interpolate

    z_t, v = interpolate("linear", x, eps, t)
    v_g = guided_velocity(v, z_t, t, y, drop, lambda z, tt, yy: net(z, tt, yy), net.num_classes, settings)
    u_tgt = meanflow_target(lambda z, tt, rr: net(z, tt, y, rr), z_t, r, t, v_g)
    u, extras = model(z_t, t, y, r=r)
    loss, mse = meanflow_loss(u, u_tgt, settings)
    return loss, mse, extras
