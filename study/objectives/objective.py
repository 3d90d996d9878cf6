"""One object per training objective, the way SiT keeps its process in ``transport/``: what the network predicts,
how a step draws its times, the denoising loss of a micro-batch, and the sampler that integrates it back.

- :class:`FlowMatching`: velocity prediction on a path (``flow`` section; SiT and REPA's default);
- :class:`MeanFlow`: the average velocity over ``[r, t]`` (``meanflow`` section; a SiT with a second time input);
- :class:`XPrediction`: the clean image, with the velocity loss (``xpred`` section; JiT).

:func:`objective_for` picks a config's; training (:class:`~study.objectives.step.TrainingStep`, the per-step draws)
and sampling call its methods instead of branching on the config. Which sampler modes an objective accepts is
:data:`study.config.OBJECTIVE_SAMPLERS`, which the config validates too.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from study.config import OBJECTIVE_SAMPLERS, FlowSection, MeanFlowSection, SamplerSettings, TrainConfig, XPredSection
from study.objectives.flow import flow_sample, interpolate, sample_time
from study.objectives.meanflow import meanflow_sample, meanflow_step, sample_time_pair, unwrap
from study.objectives.xpred import xpred_inputs, xpred_loss, xpred_sample

__all__ = ["Objective", "FlowMatching", "MeanFlow", "XPrediction", "objective_for", "Noise"]

#: Draws fresh noise of the batch's shape on each call (per-sample seeded: ``study.sampling``).
Noise = Callable[[], torch.Tensor]


class Objective(ABC):
    """What a network is trained to predict and how its samples are integrated."""

    kind: str  # the key of OBJECTIVE_SAMPLERS

    @abstractmethod
    def draw_times(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The step's times for ``n`` samples (``{"t"}``, MeanFlow also ``"r"``), drawn from ``generator``."""

    @property
    def draws_key(self) -> str:
        """Names what :meth:`draw_times` draws (the objective and its settings): runs whose keys are equal draw
        the same times from the same generator (a training group draws them once)."""
        return type(self).__name__ + "".join(f"|{k}={v!r}" for k, v in sorted(vars(self).items()))

    @abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, eps: torch.Tensor, times: dict[str, torch.Tensor],
             y: torch.Tensor, drop: torch.Tensor, autocast: ContextManager) -> tuple[torch.Tensor, list]:
        """``(denoising loss, the projections)`` of a micro-batch: ``model(x_t, t, y) -> (prediction,
        projections)`` (the trained module, maybe DDP-wrapped); ``y``: labels after dropout (``drop`` marks them)."""

    @abstractmethod
    def _integrate(self, net: nn.Module, y: torch.Tensor, noise: Noise, sampler: SamplerSettings) -> torch.Tensor:
        ...

    def sample(self, net: nn.Module, y: torch.Tensor, noise: Noise, sampler: SamplerSettings) -> torch.Tensor:
        """Integrate from t = 1 (``noise()``) to t = 0 in the model's space with ``sampler``'s mode and steps."""
        modes = OBJECTIVE_SAMPLERS[self.kind]
        if sampler.mode not in modes:
            raise ValueError(f"sampler mode {sampler.mode!r} does not fit this model (a {self.kind} model samples "
                             f"with {', '.join(modes)}): 'meanflow' needs a MeanFlow model, 'heun' an x-prediction "
                             "model (JiT), and an x-prediction model has no SDE sampler")
        return self._integrate(net, y, noise, sampler)


class FlowMatching(Objective):
    """Velocity prediction on ``path``: ``x_t = alpha_t x + sigma_t eps``, target ``alpha'_t x + sigma'_t eps``."""

    kind = "flow"

    def __init__(self, flow: FlowSection = FlowSection()) -> None:
        self.flow = flow

    def draw_times(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        f = self.flow
        return {"t": sample_time(f.time, n, generator=generator, mean=f.time_mean, std=f.time_std, path=f.path)}

    def loss(self, model, x, eps, times, y, drop, autocast):
        t = times["t"]
        x_t, v_target = interpolate(self.flow.path, x, eps, t)
        with autocast:
            v, preds = model(x_t, t, y)
        return F.mse_loss(v.float(), v_target), preds

    def _integrate(self, net, y, noise, sampler):
        return flow_sample(net, y, noise, path=self.flow.path, sampler=sampler)


class MeanFlow(Objective):
    """MeanFlow's average velocity ``u(z_t, r, t)`` with the JVP target (``study.objectives.meanflow``); its network
    gives the instantaneous velocity at ``r = t``, so the flow-matching samplers run on it too."""

    kind = "meanflow"

    def __init__(self, settings: MeanFlowSection) -> None:
        self.settings = settings

    def draw_times(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        r, t = sample_time_pair(n, self.settings, generator=generator)
        return {"r": r, "t": t}

    def loss(self, model, x, eps, times, y, drop, autocast):
        with autocast:
            loss, _, preds = meanflow_step(model, unwrap(model).sit, x, eps, times["r"], times["t"], y, drop,
                                           self.settings)
        return loss, preds

    def _integrate(self, net, y, noise, sampler):
        if sampler.mode != "meanflow":
            return flow_sample(net, y, noise, path="linear", sampler=sampler)
        if sampler.cfg_scale != 1.0:
            raise ValueError("MeanFlow folds guidance into training (meanflow.omega / kappa): sample it with "
                             "cfg_scale 1.0")
        return meanflow_sample(lambda z, t, r: net(z, t, y, r), noise(), sampler.num_steps)


class XPrediction(Objective):
    """x-prediction with the velocity loss (JiT): times as flow matching draws them on the linear path."""

    kind = "xpred"

    def __init__(self, xpred: XPredSection, flow: FlowSection = FlowSection()) -> None:
        self.xpred, self.flow = xpred, flow

    def draw_times(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return FlowMatching(self.flow).draw_times(n, generator)

    def loss(self, model, x, eps, times, y, drop, autocast):
        t = times["t"]
        x_t, v_target = xpred_inputs(x, eps, t, noise_scale=self.xpred.noise_scale, t_eps=self.xpred.t_eps)
        with autocast:
            x_pred, preds = model(x_t, t, y)
        return xpred_loss(x_pred, x_t, v_target, t, self.xpred.t_eps), preds

    def _integrate(self, net, y, noise, sampler):
        return xpred_sample(net, y, noise(), null=net.num_classes, num_steps=sampler.num_steps,
                            method="heun" if sampler.mode == "heun" else "euler", cfg_scale=sampler.cfg_scale,
                            guidance_interval=tuple(sampler.guidance_interval), noise_scale=self.xpred.noise_scale,
                            t_eps=self.xpred.t_eps)


def objective_for(cfg: TrainConfig) -> Objective:
    """The objective a training config names: ``meanflow`` set -> MeanFlow, ``xpred`` set -> x-prediction, else flow
    matching on ``flow.path``."""
    if cfg.meanflow is not None:
        return MeanFlow(cfg.meanflow)
    if cfg.xpred is not None:
        return XPrediction(cfg.xpred, cfg.flow)
    return FlowMatching(cfg.flow)
