"""One REPA-E micro-batch: the three objectives of ``train_repae.py`` and which parameters each may move.

Per micro-batch, in the official order:

1. VAE forward: posterior sample ``z`` (seeded noise) and its reconstruction.
2. VAE objective = reconstruction (L1) + LPIPS + KL + GAN generator term + ``vae_lam`` x the alignment loss of the
   SiT run on ``bn_running(z)`` with the SiT's parameters detached, up to the alignment depth only (its projector
   output is what the VAE aligns; [CODE] ``requires_grad(model, False); model.eval()``, ``align_only``).
   Gradient: VAE only.
3. Discriminator objective: hinge loss on real images vs ``recon.detach()``. Gradient: discriminator only.
4. SiT objective = velocity MSE + ``lam`` x alignment on ``bn(z.detach())`` in training mode (batch statistics,
   running stats updated): the stop-gradient keeps the diffusion loss out of the VAE. Gradient: SiT + projectors.

The objectives touch disjoint parameters, so ``losses.total`` (their sum) needs one backward and each optimizer
steps on its own gradients; that equals the official three backward/step pairs (the VAE and discriminator
updates of a step do not change what the later objectives of that step see: each uses the forward of step 1).
The same noise ``eps`` and times ``t`` serve both alignment passes ([CODE] ``time_input``/``noises`` reused).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from study.config import RepaeSection
from study.objectives import alignment_loss, interpolate
from study.repae.discriminator import PatchDiscriminator, hinge_d_loss
from study.repae.latent_norm import LatentBatchNorm
from study.repae.lpips import LPIPS
from study.repae.vae import unit_images

__all__ = ["VAEObjective", "RepaeLosses", "RepaeStep", "frozen_call"]


def frozen_call(module: nn.Module, *args: torch.Tensor, **kwargs):
    """``module(*args, **kwargs)`` with its parameters detached: gradients reach the inputs, never the parameters
    (and no DDP hook or requires_grad flag is touched). Buffers are the module's own (BatchNorm stats update)."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, args, kwargs)


class VAEObjective(nn.Module):
    """The VAE's own objective and the discriminator's ([CODE] ``ReconstructionLoss_Single_Stage``), in fp32."""

    def __init__(self, section: RepaeSection, discriminator: PatchDiscriminator | None) -> None:
        super().__init__()
        self.s = section
        self.lpips = LPIPS(section.lpips_weights) if section.perceptual_weight > 0 else None
        self.discriminator = discriminator

    def gan_factor(self, step: int) -> float:
        """[CODE] ``discriminator_factor`` from ``discriminator_start`` on, else 0 (``step`` = steps done)."""
        return self.s.disc_factor if step >= self.s.disc_start else 0.0

    def generator(self, x: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor,
                  step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.s
        x, recon = x.float(), recon.float()
        rec = (F.l1_loss if s.recon == "l1" else F.mse_loss)(recon, x) * s.recon_weight  # / exp(logvar 0)
        zero = torch.zeros((), device=x.device)
        perc = self.lpips(x, recon).mean() if self.lpips is not None else zero
        factor = self.gan_factor(step)
        gan = zero
        if factor > 0 and s.disc_weight > 0 and self.discriminator is not None:
            gan = -frozen_call(self.discriminator, recon)[0].mean()
        total = rec + s.perceptual_weight * perc + s.kl_weight * kl + s.disc_weight * factor * gan
        return total, {"rec": rec.detach(), "lpips": perc.detach(), "kl": kl.detach(), "gan": gan.detach()}

    def discriminator_loss(self, disc: nn.Module, x: torch.Tensor, recon: torch.Tensor, step: int) -> torch.Tensor:
        """``disc`` may be the DDP-wrapped discriminator; one call runs real and fake separately."""
        real, fake = disc(x.float().detach(), recon.float().detach())
        return self.gan_factor(step) * hinge_d_loss(real, fake)


@dataclass
class RepaeLosses:
    total: torch.Tensor      # sit + vae + disc: backward this once
    sit: torch.Tensor        # loss_v + lam * loss_align
    loss_v: torch.Tensor
    loss_align: torch.Tensor
    vae: torch.Tensor        # VAE objective incl. vae_lam * vae_align
    vae_align: torch.Tensor  # the alignment loss the VAE sees (running-stat BN, SiT detached)
    disc: torch.Tensor
    parts: dict[str, torch.Tensor]

    def log_values(self) -> dict[str, float]:
        out = {"loss_vae": self.vae, "loss_vae_align": self.vae_align, "loss_disc": self.disc,
               **{f"vae_{k}": v for k, v in self.parts.items()}}
        return {k: float(v.detach()) for k, v in out.items()}


class RepaeStep:
    """Losses of one micro-batch. ``model``: what runs the SiT pass (the Denoiser, maybe DDP/compiled);
    ``denoiser``: the plain Denoiser (run with detached parameters for the VAE's pass); ``vae_pass``: a
    :class:`~study.repae.vae.VAEPass`, maybe DDP-wrapped; ``disc``: the discriminator, maybe DDP-wrapped."""

    def __init__(self, section: RepaeSection, *, lam: float, path: str, num_classes: int, model: nn.Module,
                 denoiser: nn.Module, vae_pass: nn.Module, bn: LatentBatchNorm, objective: VAEObjective,
                 disc: nn.Module | None = None) -> None:
        self.s, self.lam, self.path, self.num_classes = section, lam, path, num_classes
        self.model, self.denoiser, self.vae_pass, self.bn, self.objective = model, denoiser, vae_pass, bn, objective
        self.disc = disc if disc is not None else objective.discriminator

    @staticmethod
    def _align(preds: list[torch.Tensor], targets: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        if not targets:
            return torch.zeros((), device=device)
        return torch.stack([alignment_loss(p, z) for p, z in zip(preds, targets)]).mean()

    def losses(self, images: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
               drop: torch.Tensor, post: torch.Tensor, targets: list[torch.Tensor], step: int,
               autocast) -> RepaeLosses:
        """``step``: optimizer steps done before this one (the GAN start counts these, as ``global_step``)."""
        x = unit_images(images)
        with autocast:
            z, recon, kl = self.vae_pass(x, post)
        z = z.float()
        y_drop = torch.where(drop, torch.full_like(labels, self.num_classes), labels)

        # 2. the VAE's objective: the alignment loss through the frozen SiT, on running-stat BN latents
        gen, parts = self.objective.generator(x, recon, kl, step)
        x_frozen, _ = interpolate(self.path, self.bn.normalize_frozen(z), eps, t)
        y_align = labels if self.s.align_labels == "clean" else y_drop
        with autocast:
            _, preds_frozen = frozen_call(self.denoiser, x_frozen, t, y_align, projections_only=True)
        vae_align = self._align(preds_frozen, targets, z.device)
        vae = gen + self.s.vae_lam * vae_align

        # 3. the discriminator's objective
        disc = (self.objective.discriminator_loss(self.disc, x, recon, step) if self.disc is not None
                else torch.zeros((), device=z.device))

        # 4. the SiT's objective on detached latents (stop-gradient), BN in training mode
        x_sit = self.bn(z.detach())
        x_t, v_target = interpolate(self.path, x_sit, eps, t)
        with autocast:
            v, preds = self.model(x_t, t, y_drop)
        loss_v = F.mse_loss(v.float(), v_target)
        loss_a = self._align(preds, targets, z.device)
        sit = loss_v + self.lam * loss_a
        return RepaeLosses(total=sit + vae + disc, sit=sit, loss_v=loss_v, loss_align=loss_a, vae=vae,
                           vae_align=vae_align, disc=disc, parts=parts)
