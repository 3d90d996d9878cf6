"""REPA-E's adversarial term: taming-transformers' PatchGAN (``NLayerDiscriminator(3, ndf=64, n_layers=3)``,
BatchNorm) with hinge loss, as ``loss/losses.py`` uses it. Layer order and state-dict keys (``main.N.*``) follow
the official module, so its trained checkpoint (``sdvae-f8d4-discriminator-ckpt.pt``) loads as is."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from study.config import PartWeights

__all__ = ["PatchDiscriminator", "hinge_d_loss", "build_discriminator", "discriminator_path", "DISC_FILE", "DISC_REPO"]

DISC_REPO = "REPA-E/sdvae"                      # the Hugging Face repo the official recipe takes it from
DISC_FILE = "sdvae-f8d4-discriminator-ckpt.pt"  # [CODE] --disc-pretrained-ckpt pretrained/sdvae/<this>


class PatchDiscriminator(nn.Module):
    """``forward(*images)`` returns one logit map per argument, each run on its own (BatchNorm statistics per
    call, as the official code calls it once for real and once for fake images)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # taming's weights_init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.main(x) for x in images)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def discriminator_path(path: str | None) -> Path:
    from encoders.build import weights_dir

    return Path(path).expanduser() if path else weights_dir() / DISC_REPO / DISC_FILE


def build_discriminator(weights: PartWeights, path: str | None = None) -> PatchDiscriminator:
    """The PatchGAN, from REPA-E's trained checkpoint (``pretrained``, the official recipe) or untrained."""
    disc = PatchDiscriminator()
    if weights == "random":
        return disc
    file = discriminator_path(path)
    if not file.is_file():
        from encoders.build import MissingWeightsError

        raise MissingWeightsError(
            f"REPA-E's discriminator checkpoint {file} not found: download {DISC_FILE} from "
            f"https://huggingface.co/{DISC_REPO} (huggingface-cli download {DISC_REPO} {DISC_FILE}) and put it "
            f"there (or set method.repae.disc_path=FILE), or set method.repae.disc_weights=random (an untrained "
            f"discriminator: not the official recipe)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    disc.load_state_dict(state.get("discriminator", state) if isinstance(state, dict) else state)
    return disc
