"""The training objective of one micro-batch: the denoising loss plus ``lam`` x the REPA/iREPA alignment loss.

The loop (``study.training.loop``) calls :meth:`TrainingStep.losses` per micro-batch; runs trained as a group share
:meth:`TrainingStep.features` (one frozen-encoder forward for all of them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from study.config import TrainConfig
from study.objectives.align import alignment_loss, spatial_normalize
from study.objectives.flow import interpolate
from study.objectives.meanflow import meanflow_settings, meanflow_step, unwrap
from study.objectives.xpred import xpred_inputs, xpred_loss

__all__ = ["TrainingStep"]


class TrainingStep:
    """Loss of one micro-batch: the denoising loss plus ``lam`` x the alignment loss. The denoising loss is the
    flow-matching MSE on the velocity; MeanFlow's adaptively weighted average-velocity loss (``cfg.meanflow``,
    ``r`` given); or JiT's velocity loss of an x-prediction (``cfg.xpred``)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, encoders: list, codec, num_classes: int,
                 grid: tuple[int, int]) -> None:
        self.cfg, self.model, self.encoders, self.codec = cfg, model, encoders, codec
        self.num_classes, self.grid = num_classes, grid

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen encoders' patch tokens of the clean uint8 images (no grad, eval mode): what runs that share an
        encoder share (``train_group`` computes them once per micro-batch)."""
        with torch.no_grad():
            return [enc.encode(images)["patch"].float() for enc in self.encoders]

    def targets(self, images: torch.Tensor, features: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The alignment targets: the encoders' features, spatially normalised if the method says so."""
        zs = self.features(images) if features is None else features
        if self.cfg.method.spatial_norm:
            zs = [spatial_normalize(z, gamma=self.cfg.method.gamma) for z in zs]
        return zs

    def model_input(self, images: torch.Tensor, moments: torch.Tensor | None,
                    post: torch.Tensor | None) -> torch.Tensor:
        """The clean model-space input: stored VAE moments -> a posterior sample (noise ``post``), normalised by
        the codec's latent statistics (as the authors do each step); otherwise the codec encodes the images."""
        with torch.no_grad():
            if moments is None:
                return self.codec.encode(images).float()
            if post is None:
                raise ValueError("stored VAE moments need posterior noise (use a latent codec, not identity)")
            mean, logvar = moments.float().chunk(2, dim=1)
            return self.codec.stats.normalize(mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * post)

    def losses(self, images: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
               drop: torch.Tensor, autocast, moments: torch.Tensor | None = None,
               post: torch.Tensor | None = None,
               features: list[torch.Tensor] | None = None,
               r: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, denoising, alignment) loss; ``features``: the encoders' output for ``images`` if already
        computed; ``r``: MeanFlow's interval starts (``cfg.meanflow`` set)."""
        x = self.model_input(images, moments, post)
        y = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        zs = self.targets(images, features) if (self.cfg.method.align and self.encoders) else []
        if self.cfg.meanflow is not None:
            if r is None:
                raise ValueError("MeanFlow needs the interval starts r (step_noise(..., meanflow=cfg.meanflow))")
            with autocast:
                loss_v, _, preds = meanflow_step(self.model, unwrap(self.model).sit, x, eps, r, t, y, drop,
                                                 meanflow_settings(self.cfg.meanflow))
        elif self.cfg.xpred is not None:
            x_t, v_target = xpred_inputs(x, eps, t, noise_scale=self.cfg.xpred.noise_scale,
                                         t_eps=self.cfg.xpred.t_eps)
            with autocast:
                x_pred, preds = self.model(x_t, t, y)
            loss_v = xpred_loss(x_pred, x_t, v_target, t, self.cfg.xpred.t_eps)
        else:
            x_t, v_target = interpolate(self.cfg.flow.path, x, eps, t)
            with autocast:
                v, preds = self.model(x_t, t, y)
            loss_v = F.mse_loss(v.float(), v_target)
        if zs:
            loss_a = torch.stack([alignment_loss(p, z) for p, z in zip(preds, zs)]).mean()
        else:
            loss_a = torch.zeros((), device=x.device)
        return loss_v + self.cfg.method.lam * loss_a, loss_v, loss_a
