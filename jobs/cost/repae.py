"""FLOPs REPA-E adds to one training image, for ``jobs.cost.estimate`` (counted like ``jobs.cost.flops``: FlopCounterMode on the
meta device, matmuls and convolutions, memoised in the flop table under ``repae|...`` keys).

Per image, on top of REPA's 3 x (SiT + projector) forward and the frozen encoder (``study.repae.step``):

- the VAE, encoder + decoder, forward and backward with weight gradients: 3 x (encode + decode);
- LPIPS (VGG16 features) on the image and its reconstruction, backward to the reconstruction only: 3 x VGG16;
- the PatchGAN: the generator term (forward, backward to its input) and the discriminator's loss on real and
  reconstructed images (forward, weight gradients): 6 x discriminator (none without the GAN);
- the VAE's alignment pass: the SiT up to the alignment depth (its share of the blocks) and the projector, forward
  and backward to the input only: 2 x (SiT x depth / blocks + projector).
"""
from __future__ import annotations

from typing import Any

import torch

from jobs.cost.flops import SD_VAE_DOWNSAMPLE, count_flops, sd_vae_decode_flops, sd_vae_encode_flops

__all__ = ["vae_flops", "vgg16_flops", "discriminator_flops", "repae_train_flops"]


def vae_flops(image_size: int) -> int:
    """The SD-VAE's encoder and decoder, one forward of one ``image_size`` px image."""
    return sd_vae_encode_flops(image_size) + sd_vae_decode_flops(image_size // SD_VAE_DOWNSAMPLE)


def vgg16_flops(image_size: int) -> int:
    """LPIPS's VGG16 features (to relu5_3) on one image; the 1x1 heads are negligible."""
    from torchvision.models import vgg16

    with torch.device("meta"):
        net = vgg16(weights=None).features[:30]
    x = torch.zeros(1, 3, image_size, image_size, device="meta")
    return count_flops(lambda: net(x))


def discriminator_flops(image_size: int) -> int:
    from study.repae import PatchDiscriminator

    with torch.device("meta"):
        disc = PatchDiscriminator()
    x = torch.zeros(1, 3, image_size, image_size, device="meta")
    return count_flops(lambda: disc(x))


def repae_train_flops(table: Any, cfg: Any, *, image_size: int, sit_flops: float, projector_flops: float) -> float:
    """REPA-E's extra FLOPs per training image of ``cfg`` (a TrainConfig with ``method.repae``); ``sit_flops``,
    ``projector_flops``: one forward of the run's SiT and of its projectors."""
    from study.config import resolve_size
    from study.run import align_depth

    s = cfg.method.repae
    extra = 3.0 * table.get(f"repae|sd-vae-enc-dec|{image_size}", lambda: vae_flops(image_size))
    if s.perceptual_weight > 0:
        extra += 3.0 * table.get(f"repae|vgg16-lpips|{image_size}", lambda: vgg16_flops(image_size))
    if s.disc_weight > 0 and s.disc_factor > 0:
        extra += 6.0 * table.get(f"repae|patchgan|{image_size}", lambda: discriminator_flops(image_size))
    share = align_depth(cfg) / resolve_size(cfg.model.size, cfg.model.patch_size).dims.depth
    return extra + 2.0 * (sit_flops * share + projector_flops)
