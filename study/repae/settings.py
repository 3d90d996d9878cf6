"""The ``method.repae`` config section: REPA-E's end-to-end VAE tuning, value by value with its source.

[CODE] = the official REPA-E code (End2End-Diffusion/REPA-E: ``train_repae.py`` defaults and README command,
``configs/l1_lpips_kl_gan.yaml``, ``loss/losses.py``, ``models/sit.py``); [PAPER] = Leng et al. 2025
(arXiv 2504.10483). Where they disagree, both readings are a setting and the default is the code's.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from study.config import StrictModel
from study.data.codecs import SD_VAE_REPO

__all__ = ["RepaeSection", "DISC_FILE", "DISC_REPO"]

DISC_REPO = "REPA-E/sdvae"                      # the Hugging Face repo the official recipe takes it from
DISC_FILE = "sdvae-f8d4-discriminator-ckpt.pt"  # [CODE] --disc-pretrained-ckpt pretrained/sdvae/<this>


class RepaeSection(StrictModel):
    """End-to-end VAE tuning (REPA-E). Absent (None) in every other method: the VAE stays frozen."""

    vae: str = SD_VAE_REPO          # the VAE to start from: a diffusers folder or hub id ([CODE] REPA-E/sdvae, f8d4)
    vae_weights: Literal["pretrained", "tiny"] = "pretrained"  # tiny: random-init 2-level AutoencoderKL (/2), CPU
    vae_lr: float = Field(1e-4, gt=0)    # [CODE] --vae-learning-rate; AdamW with optim.betas/eps/weight_decay
    disc_lr: float = Field(1e-4, gt=0)   # [CODE] --disc-learning-rate
    vae_lam: float = Field(1.5, ge=0)    # [CODE] --vae-align-proj-coeff: alignment weight in the VAE's objective
    #                                      ([PAPER] writes one lambda for both: set vae_lam = method.lam for that)
    align_labels: Literal["clean", "dropped"] = "clean"  # [CODE] the VAE's alignment pass runs the SiT in eval
    #                                      mode, so without label dropout; "dropped" reuses the SiT pass's labels
    bn_momentum: float = Field(0.1, gt=0, le=1)  # [CODE] --bn-momentum
    bn_eps: float = Field(1e-4, gt=0)    # [CODE] BatchNorm2d(eps=1e-4, affine=False)
    recon: Literal["l1", "mse"] = "l1"   # [CODE] reconstruction_loss: l1; [PAPER] L_MSE in L_REG
    recon_weight: float = Field(1.0, ge=0)       # [CODE] reconstruction_weight
    perceptual_weight: float = Field(1.0, ge=0)  # [CODE] LPIPS (VGG16) weight; 0 skips LPIPS (no VGG weights needed)
    lpips_weights: Literal["pretrained", "random"] = "pretrained"  # random: an untrained stand-in (tests only)
    kl_weight: float = Field(1e-6, ge=0)         # [CODE] kl_weight (KL summed over C,H,W, mean over the batch)
    disc_weight: float = Field(0.1, ge=0)        # [CODE] discriminator_weight (generator's GAN term); 0: no GAN
    disc_factor: float = Field(1.0, ge=0)        # [CODE] discriminator_factor (scales both GAN terms)
    disc_start: int = Field(0, ge=0)             # [CODE] discriminator_start: GAN terms from this step on
    disc_weights: Literal["pretrained", "random"] = "pretrained"  # [CODE] starts from REPA-E's trained PatchGAN
    disc_path: str | None = None  # None: $REPA_STUDY_WEIGHTS/REPA-E/sdvae/sdvae-f8d4-discriminator-ckpt.pt
