"""The training objective of one micro-batch: the denoising loss plus ``lam`` x the REPA/iREPA alignment loss.

The loop (``study.training``) calls :meth:`TrainingStep.losses` per micro-batch; runs trained as a group share
:meth:`TrainingStep.features` (one frozen-encoder forward for all of them). The denoising loss is the run's
:class:`~study.objectives.objective.Objective`'s.
"""
from __future__ import annotations

import torch
from torch import nn

from study.config import TrainConfig
from study.objectives.align import alignment_loss, pool_tokens, spatial_normalize
from study.objectives.objective import objective_for

__all__ = ["TrainingStep"]


class TrainingStep:
    """Loss of one micro-batch: the objective's denoising loss (flow matching, MeanFlow or x-prediction) plus
    ``lam`` x the alignment loss of the projections against the frozen encoders' (normalised) patch tokens."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, encoders: list, codec, num_classes: int) -> None:
        self.cfg, self.model, self.encoders, self.codec = cfg, model, encoders, codec
        self.num_classes = num_classes
        self.objective = objective_for(cfg)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen encoders' patch tokens of the clean uint8 images (eval mode, ``encode``'s inference mode; bf16
        weights and compiled where the loop asked): what runs that share an encoder share (``train_group`` computes
        them once per micro-batch), pooled to the SiT's grid when ``encoder.pool`` says so."""
        return [pool_tokens(enc.encode(images)["patch"], self.cfg.encoder.pool) for enc in self.encoders]

    def targets(self, images: torch.Tensor, features: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The alignment targets: the encoders' features, spatially normalised if the method says so."""
        zs = self.features(images) if features is None else features
        if self.cfg.method.spatial_norm:
            zs = [spatial_normalize(z, gamma=self.cfg.method.gamma) for z in zs]
        return zs

    def model_input(self, images: torch.Tensor, moments: torch.Tensor | None,
                    post: torch.Tensor | None) -> torch.Tensor:
        """The clean model-space input: stored VAE moments -> a posterior sample (noise ``post``), normalised by
        the codec's latent statistics (as the authors do each step). Without stored moments a latent codec encodes
        the images to their moments here (``data.online_vae``), sampled the same way; the identity codec scales
        the pixels."""
        with torch.no_grad():
            if moments is None and post is not None and hasattr(self.codec, "moments"):
                moments = self.codec.moments(images)
            if moments is None:
                return self.codec.encode(images).float()
            if post is None:
                raise ValueError("stored VAE moments need posterior noise (use a latent codec, not identity)")
            mean, logvar = moments.float().chunk(2, dim=1)
            return self.codec.stats.normalize(mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * post)

    def losses(self, images: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor, times: dict[str, torch.Tensor],
               drop: torch.Tensor, autocast, moments: torch.Tensor | None = None,
               post: torch.Tensor | None = None,
               features: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, denoising, alignment) loss; ``times``: the objective's draws for this micro-batch (``t``, and
        MeanFlow's ``r``); ``features``: the encoders' output for ``images`` if already computed."""
        x = self.model_input(images, moments, post)
        y = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        zs = self.targets(images, features) if (self.cfg.method.align and self.encoders) else []
        loss_v, preds = self.objective.loss(self.model, x, eps, times, y, drop, autocast)
        if zs:
            loss_a = torch.stack([alignment_loss(p, z) for p, z in zip(preds, zs)]).mean()
        else:
            loss_a = torch.zeros((), device=x.device)
        return loss_v + self.cfg.method.lam * loss_a, loss_v, loss_a
