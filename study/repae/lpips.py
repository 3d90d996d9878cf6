"""LPIPS (Zhang et al. 2018), VGG16 variant, as REPA-E's perceptual loss (``perceptual_loss: lpips``).

Images in [-1, 1]; VGG16 features after relu1_2 .. relu5_3, unit-normalised over channels, squared differences
weighted by the learned 1x1 heads ``lin0..lin4`` and averaged over space, summed over layers: one value per image.

Weights are two files, looked up locally (nothing is downloaded):
- the LPIPS heads ``vgg.pth`` (keys ``linK.model.1.weight``; the ``lpips`` package's ``weights/v0.1/vgg.pth`` and
  taming-transformers' ``vgg_lpips`` are this file): ``$REPA_STUDY_WEIGHTS/lpips/vgg.pth``, or the installed
  ``lpips`` package's copy;
- torchvision's ImageNet VGG16 ``vgg16-397923af.pth``: ``$REPA_STUDY_WEIGHTS/lpips/``, or torch hub's cache
  (``$TORCH_HOME/hub/checkpoints``).
``weights="random"`` builds an untrained stand-in (tests, CPU runs at tiny size).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from study.config import PartWeights

__all__ = ["LPIPS", "lpips_weight_files", "LPIPS_HEADS", "VGG16_FILE"]

LPIPS_HEADS = "vgg.pth"
VGG16_FILE = "vgg16-397923af.pth"
_TAPS = (3, 8, 15, 22, 29)          # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16.features
_CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = (-0.030, -0.088, -0.188)   # LPIPS ScalingLayer
_SCALE = (0.458, 0.448, 0.450)


def _candidates(name: str) -> list[Path]:
    from encoders.build import weights_dir

    out = [weights_dir() / "lpips" / name]
    if name == LPIPS_HEADS:
        try:
            import lpips  # type: ignore[import-not-found]

            out.append(Path(lpips.__file__).parent / "weights" / "v0.1" / name)
        except ImportError:
            pass
    else:
        out.append(Path(torch.hub.get_dir()) / "checkpoints" / name)
    return out


def lpips_weight_files() -> tuple[Path, Path]:
    """The (heads, vgg16) files, or a MissingWeightsError that says which file goes where."""
    from encoders.build import MissingWeightsError

    found = []
    for name, source in ((LPIPS_HEADS, "the lpips package's lpips/weights/v0.1/vgg.pth "
                                       "(pip download lpips, or github.com/richzhang/PerceptualSimilarity)"),
                         (VGG16_FILE, "torchvision's VGG16_Weights.IMAGENET1K_V1 "
                                      "(https://download.pytorch.org/models/vgg16-397923af.pth)")):
        paths = _candidates(name)
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            raise MissingWeightsError(
                f"LPIPS needs {name} ({source}); none of {', '.join(map(str, paths))} exists. Put the file at "
                f"{paths[0]}, or set method.repae.perceptual_weight=0 (no perceptual loss; not the official "
                f"recipe) or method.repae.lpips_weights=random (an untrained stand-in, for tests)")
        found.append(hit)
    return found[0], found[1]


class _Head(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))  # keys linK.model.1.weight


class LPIPS(nn.Module):
    """Frozen VGG16 LPIPS; ``forward(a, b) -> [B]`` distances of images in [-1, 1]."""

    def __init__(self, weights: PartWeights = "pretrained") -> None:
        super().__init__()
        from torchvision.models import vgg16

        self.features = vgg16(weights=None).features[:_TAPS[-1] + 1]
        for k, c in enumerate(_CHANNELS):
            self.add_module(f"lin{k}", _Head(c))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        if weights == "pretrained":
            self._load()
        elif weights == "random":
            for k in range(len(_CHANNELS)):  # the learned heads are non-negative
                nn.init.uniform_(getattr(self, f"lin{k}").model[1].weight, 0.0, 1.0 / _CHANNELS[k])
        else:
            raise ValueError(f"LPIPS weights {weights!r}: use 'pretrained' or 'random'")
        self.requires_grad_(False).eval()

    def _load(self) -> None:
        heads, vgg = lpips_weight_files()
        state = torch.load(vgg, map_location="cpu", weights_only=True)
        feats = {k[len("features."):]: v for k, v in state.items()
                 if k.startswith("features.") and int(k.split(".")[1]) <= _TAPS[-1]}
        self.features.load_state_dict(feats, strict=True)
        lins = torch.load(heads, map_location="cpu", weights_only=True)
        lins = {k: v for k, v in lins.items() if k.startswith("lin")}
        missing = self.load_state_dict(lins, strict=False)
        bad = [k for k in missing.missing_keys if k.startswith("lin")] + list(missing.unexpected_keys)
        if bad:
            raise ValueError(f"{heads} is not an LPIPS VGG head file (keys {bad[:4]} do not fit)")

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # always eval: the heads' dropout never runs (the official module is .eval())

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b]).float()
        x = (x - self.shift) / self.scale
        total = torch.zeros(a.shape[0], device=a.device)
        k = 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                fa, fb = x.chunk(2)
                fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + getattr(self, f"lin{k}").model((fa - fb) ** 2).mean((1, 2, 3))
                k += 1
        return total
