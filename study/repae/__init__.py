"""REPA-E (Leng et al. 2025, "Unlocking VAE for end-to-end tuning of latent diffusion transformers"): the VAE is
trained with the SiT. The alignment loss backpropagates into the VAE through the latents, the diffusion loss does
not (it sees detached latents); a BatchNorm without affine parameters replaces the fixed latent scale/bias; the
VAE keeps its own objective (L1, LPIPS, KL, PatchGAN) and optimizer. See docs/training.md ("REPA-E").

- the ``method.repae`` config section is :class:`study.config.train.RepaeSection`;
- :mod:`study.repae.latent_norm`, :mod:`study.repae.lpips`, :mod:`study.repae.discriminator`: the pieces;
- :mod:`study.repae.step`: the losses of one micro-batch; :mod:`study.repae.parts`: the run-level object;
- :mod:`study.repae.vae`: the VAE forward, and a checkpoint back to a codec (sampling, FID, export).
"""
from study.config import RepaeSection
from study.repae.discriminator import PatchDiscriminator, build_discriminator, hinge_d_loss
from study.repae.latent_norm import LatentBatchNorm, update_bn_ema
from study.repae.lpips import LPIPS
from study.repae.parts import RepaeParts
from study.repae.step import RepaeLosses, RepaeStep, VAEObjective, frozen_call
from study.repae.vae import (VAEPass, build_vae, codec_from_checkpoint, export_tuned_vae, resolve_latent_stats,
                             tiny_autoencoder)

__all__ = ["RepaeSection", "LatentBatchNorm", "update_bn_ema", "LPIPS", "PatchDiscriminator", "build_discriminator",
           "hinge_d_loss", "VAEObjective", "RepaeStep", "RepaeLosses", "RepaeParts", "frozen_call", "VAEPass",
           "build_vae", "tiny_autoencoder", "codec_from_checkpoint", "export_tuned_vae", "resolve_latent_stats"]
