"""Everything REPA-E adds to a training run, in one object: the tuned VAE, the latent BN (and its EMA), the
discriminator, the VAE-side objective, their optimizers, and their checkpoint state."""
from __future__ import annotations

from copy import deepcopy
from typing import Any, Mapping

import torch
from torch import nn

from study.config import RepaeSection
from study.data import LatentStats, SDVAECodec
from study.repae.discriminator import build_discriminator
from study.repae.latent_norm import LatentBatchNorm, update_bn_ema
from study.repae.step import RepaeStep, VAEObjective
from study.repae.vae import VAEPass, build_vae

__all__ = ["RepaeParts"]


def _adamw(params, lr: float, optim: Any) -> torch.optim.AdamW:
    """[CODE] the VAE and discriminator optimizers share the SiT's betas, eps and weight decay."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay, eps=optim.eps)


class RepaeParts:
    """``optim``: the run's ``OptimSection`` (betas, eps, weight decay, grad clip are shared, as in the code)."""

    def __init__(self, section: RepaeSection, *, optim: Any, init_stats: LatentStats | None,
                 device: torch.device | str = "cpu", vae=None) -> None:
        self.s, self.optim, self.device = section, optim, torch.device(device)
        self.vae = (vae if vae is not None else build_vae(section, self.device)).to(self.device).train()
        channels = int(self.vae.config.latent_channels)
        self.downsample = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.bn = LatentBatchNorm(channels, momentum=section.bn_momentum, eps=section.bn_eps).to(self.device)
        self.bn.init_from_stats(init_stats or LatentStats.default(channels))
        self.ema_bn = deepcopy(self.bn).eval()
        gan = section.disc_weight > 0 and section.disc_factor > 0
        self.disc = build_discriminator(section.disc_weights, section.disc_path).to(self.device) if gan else None
        self.objective = VAEObjective(section, self.disc).to(self.device)
        self.vae_pass = VAEPass(self.vae)
        self.opt_vae = _adamw(self.vae.parameters(), section.vae_lr, optim)
        self.opt_disc = _adamw(self.disc.parameters(), section.disc_lr, optim) if self.disc is not None else None

    # --------------------------------------------------------------------------------------------- training
    def wrap(self, wrapper) -> tuple[nn.Module, nn.Module | None]:
        """The VAE pass and the discriminator as the loop runs them (``wrapper``: e.g. DDP, or identity)."""
        return wrapper(self.vae_pass), (wrapper(self.disc) if self.disc is not None else None)

    def stepper(self, *, lam: float, path: str, num_classes: int, model: nn.Module, denoiser: nn.Module,
                vae_pass: nn.Module | None = None, disc: nn.Module | None = None) -> RepaeStep:
        return RepaeStep(self.s, lam=lam, path=path, num_classes=num_classes, model=model, denoiser=denoiser,
                         vae_pass=vae_pass or self.vae_pass, bn=self.bn, objective=self.objective,
                         disc=disc if disc is not None else self.disc)

    def train(self) -> None:
        self.vae.train()
        self.bn.train()
        if self.disc is not None:
            self.disc.train()

    def clip_and_step(self) -> dict[str, float]:
        """Clip the VAE's and the discriminator's gradients (``optim.grad_clip``, each its own norm as in the
        code), step both optimizers, zero their gradients; returns the pre-clip norms."""
        clip = self.optim.grad_clip if self.optim.grad_clip > 0 else float("inf")
        out = {"grad_norm_vae": float(torch.nn.utils.clip_grad_norm_(self.vae.parameters(), clip))}
        self.opt_vae.step()
        self.opt_vae.zero_grad(set_to_none=True)
        if self.disc is not None:
            out["grad_norm_disc"] = float(torch.nn.utils.clip_grad_norm_(self.disc.parameters(), clip))
            self.opt_disc.step()
            self.opt_disc.zero_grad(set_to_none=True)
        return out

    def update_ema(self, decay: float) -> None:
        update_bn_ema(self.ema_bn, self.bn, decay)

    # --------------------------------------------------------------------------------------------- decoding
    def codec(self, *, ema: bool = True) -> SDVAECodec:
        """Decode with the current VAE and the (EMA) BN statistics (for sample grids during training)."""
        bn = self.ema_bn if ema else self.bn
        training = self.vae.training
        codec = SDVAECodec("repae-tuned", vae=self.vae, stats=bn.latent_stats(), device=self.device)
        self.vae.train(training)  # the codec puts its VAE in eval mode: this one keeps training
        return codec

    # --------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint's ``repae`` entry holds (``study.repae.codec_from_checkpoint`` reads it back)."""
        return {"vae": self.vae.state_dict(), "vae_config": dict(self.vae.config), "bn": self.bn.state_dict(),
                "ema_bn": self.ema_bn.state_dict(), "opt_vae": self.opt_vae.state_dict(),
                "disc": self.disc.state_dict() if self.disc is not None else None,
                "opt_disc": self.opt_disc.state_dict() if self.opt_disc is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.vae.load_state_dict(state["vae"])
        self.bn.load_state_dict(state["bn"])
        self.ema_bn.load_state_dict(state["ema_bn"])
        self.opt_vae.load_state_dict(state["opt_vae"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.opt_disc.load_state_dict(state["opt_disc"])
