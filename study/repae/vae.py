"""The tuned VAE: building it, its training-time forward, and turning a checkpoint back into a codec.

The VAE is a diffusers ``AutoencoderKL`` (``stabilityai/sd-vae-ft-mse`` by default; the official recipe starts from
``REPA-E/sdvae``, "derived from" that VAE). A checkpoint stores its config and state dict plus the latent
BatchNorm of the SiT and of its EMA, so sampling and FID decode with the tuned VAE and the EMA BN statistics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from study.config import RepaeSection
from study.data import LatentStats, SDVAECodec, load_sd_vae, to_unit
from study.repae.latent_norm import LatentBatchNorm

__all__ = ["build_vae", "tiny_autoencoder", "VAEPass", "vae_from_state", "codec_from_checkpoint",
           "export_tuned_vae", "resolve_latent_stats"]


def tiny_autoencoder(seed: int = 0):
    """A random-init 2-level AutoencoderKL (/2, 4 latent channels): 32 px images -> 4x16x16 latents."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                             norm_num_groups=4, sample_size=32)


def build_vae(section: RepaeSection, device: torch.device | str = "cpu"):
    """The VAE REPA-E starts from (trainable, float32)."""
    vae = tiny_autoencoder() if section.vae_weights == "tiny" else load_sd_vae(section.vae, device=device)
    return vae.to(device).float().requires_grad_(True)


class VAEPass(nn.Module):
    """One training forward of the VAE (what DDP wraps): images in [-1, 1] and the posterior noise ``post`` ->
    ``(z, recon, kl)``: the raw posterior sample ``mean + std * post``, its decoding, and the KL to N(0, I) summed
    over C,H,W and averaged over the batch ([CODE] ``posteriors.kl()``, ``sum / batch``)."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, post: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(x).latent_dist
        z = dist.mean + dist.std * post.to(dist.mean.dtype)
        recon = self.vae.decode(z).sample
        kl = dist.kl().float().sum() / x.shape[0]
        return z, recon, kl


def resolve_latent_stats(stats: LatentStats | str | Path | None) -> LatentStats | None:
    """``data.latent_stats`` (a file) or a prepared dataset's statistics, as the BN's initial running stats."""
    return stats if stats is None or isinstance(stats, LatentStats) else LatentStats.load(stats)


def vae_from_state(config: Mapping[str, Any], state: Mapping[str, torch.Tensor], device: torch.device | str = "cpu"):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_config(dict(config))
    vae.load_state_dict(state)
    return vae.to(device).eval()


def codec_from_checkpoint(state: Mapping[str, Any], device: torch.device | str = "cpu", *,
                          ema: bool = True) -> SDVAECodec | None:
    """The codec a REPA-E checkpoint decodes with: its tuned VAE and the (EMA) latent BN's running statistics;
    None for a checkpoint of any other method."""
    extra = state.get("repae")
    if not extra:
        return None
    vae = vae_from_state(extra["vae_config"], extra["vae"], device)
    bn_state = extra["ema_bn" if ema else "bn"]
    bn = LatentBatchNorm(int(bn_state["running_mean"].numel()))
    bn.load_state_dict(bn_state)
    step = state.get("step", "?")
    stats = bn.latent_stats(f"repae-{'ema-' if ema else ''}bn@{step}")
    return SDVAECodec(f"repae-tuned@{step}", vae=vae, stats=stats, device=device)


def export_tuned_vae(state: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write a checkpoint's tuned VAE as a diffusers folder (``AutoencoderKL.from_pretrained``-loadable, usable as
    a frozen VAE elsewhere) plus ``latent_stats.json`` from the EMA BN (the format ``LatentStats.load`` reads)."""
    from study.common import atomic_write_json

    codec = codec_from_checkpoint(state)
    if codec is None:
        raise ValueError("not a REPA-E checkpoint: it holds no tuned VAE")
    out = Path(out_dir)
    codec.vae.save_pretrained(out)
    st = codec.stats
    atomic_write_json(out / "latent_stats.json", {"latents_scale": list(st.scale), "latents_bias": list(st.bias),
                                                  "source": st.source})
    return out


def unit_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B,3,H,W]`` -> float [-1, 1] (the VAE's input, [CODE] ``preprocess_imgs_vae``)."""
    return to_unit(images)
