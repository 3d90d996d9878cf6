"""Codecs: what the diffusion model sees instead of pixels, and the token grid it gives the SiT.

Common interface: ``encode(images uint8 [B,3,H,W]) -> float [B,C,h,w]``, ``decode(latents) -> uint8 [B,3,H,W]``,
attributes ``channels``, ``downsample`` (H / h) and ``id`` (names the codec and its normalisation, for cache keys).

- :class:`IdentityCodec`: pixel-space diffusion, images scaled to [-1, 1].
- :class:`SDVAECodec`: ``stabilityai/sd-vae-ft-mse`` (AutoencoderKL via diffusers), 256 px -> 4x32x32 latents,
  normalised per channel as ``(z - bias) * scale`` (:class:`LatentStats`; as the iREPA/REPA-E code does, with
  ``bias`` the per-channel mean and ``scale`` 1/std of the dataset's latents; default 0.18215 and 0, REPA's single
  factor).

:func:`to_uint8` turns [-1, 1] floats into uint8 pixels; ``rounding="floor"`` (the default of every ``decode``) is
the authors' and ADM's convention, ``clamp(255 * (x + 1) / 2, 0, 255)`` then truncation, which FIDs comparable with
the paper need; ``"round"`` (nearest level) is what makes the identity codec's round trip lossless.

:func:`token_grid` and :func:`check_token_grid` make a SiT/encoder grid mismatch a clear error (never a silent
interpolation).
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from study.common import get_logger
from study.config import ROUNDINGS, Rounding

__all__ = ["IdentityCodec", "SDVAECodec", "LatentStats", "GridMismatchError", "token_grid", "check_token_grid",
           "latents_from_moments", "load_sd_vae", "get_codec", "to_unit", "to_uint8", "SD_VAE_REPO"]

log = get_logger(__name__)
SD_VAE_REPO = "stabilityai/sd-vae-ft-mse"
SD_SCALE = 0.18215


class GridMismatchError(ValueError):
    """The SiT token grid differs from the encoder's patch grid."""


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[B, 3, H, W]`` -> float in [-1, 1] (what both codecs feed their network)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"codecs take uint8 images [B,3,H,W], got {images.dtype} {tuple(images.shape)}")
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor, rounding: Rounding = "floor") -> torch.Tensor:
    """[-1, 1] floats -> uint8 levels. ``"floor"``: ``clamp(127.5 * (x + 1), 0, 255)`` truncated, as the authors'
    and ADM's sampling code (paper-comparable FIDs); ``"round"``: the nearest level, on average half a grey level
    brighter."""
    scaled = ((x.float() + 1) * 127.5).clamp(0, 255)
    if rounding == "round":
        scaled = scaled.round()
    elif rounding != "floor":
        raise ValueError(f"unknown rounding {rounding!r}; use one of {', '.join(ROUNDINGS)}")
    return scaled.to(torch.uint8)  # the cast truncates (the values are >= 0)


class IdentityCodec:
    """Pixel space: ``encode`` maps uint8 to [-1, 1] floats; ``decode(..., rounding="round")`` inverts it exactly
    (the default, ``"floor"``, is the sample convention of :func:`to_uint8`)."""

    channels = 3
    downsample = 1
    id = "identity"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return to_unit(images)

    def decode(self, latents: torch.Tensor, *, rounding: Rounding = "floor") -> torch.Tensor:
        return to_uint8(latents, rounding)

    def __repr__(self) -> str:
        return "IdentityCodec()"


@dataclass(frozen=True)
class LatentStats:
    """Per-channel latent normalisation ``(z - bias) * scale``; ``source`` says where the numbers come from."""

    scale: tuple[float, ...]
    bias: tuple[float, ...]
    source: str = "default"

    @classmethod
    def default(cls, channels: int = 4) -> "LatentStats":
        return cls((SD_SCALE,) * channels, (0.0,) * channels, "default-0.18215")

    @classmethod
    def load(cls, path: str | Path) -> "LatentStats":
        """A JSON file written by ``repa-study data prepare`` (``latents_scale``/``latents_bias`` lists) or the
        authors' ``.pt`` file with tensors ``latents_scale`` and ``latents_bias`` (shape [1,C,1,1])."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"latent statistics file {path} not found; compute it with "
                                    f"`repa-study data prepare --stats --out DIR`")
        if path.suffix == ".json":
            data: dict[str, Any] = json.loads(path.read_text())
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
        try:
            scale = [float(x) for x in torch.as_tensor(data["latents_scale"]).flatten()]
            bias = [float(x) for x in torch.as_tensor(data["latents_bias"]).flatten()]
        except KeyError as exc:
            raise ValueError(f"{path}: expected keys latents_scale and latents_bias, missing {exc}") from None
        if len(scale) != len(bias):
            raise ValueError(f"{path}: latents_scale has {len(scale)} channels, latents_bias {len(bias)}")
        return cls(tuple(scale), tuple(bias), f"file:{path.name}")

    def _view(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.scale) != ref.shape[1]:
            raise ValueError(f"latent statistics have {len(self.scale)} channels, latents have {ref.shape[1]}")
        return _stats_tensors(self.scale, self.bias, ref.dtype, ref.device)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        scale, bias = self._view(z)
        return (z - bias) * scale

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        scale, bias = self._view(z)
        return z / scale + bias

    @property
    def id(self) -> str:
        vals = ",".join(f"{x:.6g}" for x in self.scale + self.bias)
        return f"{self.source}[{vals}]"


@functools.lru_cache(maxsize=64)
def _stats_tensors(scale: tuple[float, ...], bias: tuple[float, ...], dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``[1, C, 1, 1]`` scale and bias tensors, built once per dtype and device (not a host-to-device copy on
    every training step)."""
    shape = (1, -1, 1, 1)
    return (torch.tensor(scale, dtype=dtype, device=device).view(shape),
            torch.tensor(bias, dtype=dtype, device=device).view(shape))


def latents_from_moments(moments: torch.Tensor, stats: LatentStats, *, sample: bool = True,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Normalised latents from stored posterior moments ``[B, 2C, h, w]`` (mean, logvar): a posterior sample
    (what the authors draw every training step) or, with ``sample=False``, the mean."""
    mean, logvar = moments.float().chunk(2, dim=1)
    z = mean
    if sample:
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        z = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return stats.normalize(z)


def load_sd_vae(repo_or_dir: str = SD_VAE_REPO, *, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32):
    """Load an AutoencoderKL: a local diffusers folder, ``$REPA_STUDY_WEIGHTS/<repo_id>``, or the HF cache/hub."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:  # pragma: no cover - diffusers is a dependency
        raise ImportError("the SD-VAE codec needs diffusers: pip install diffusers") from exc
    from encoders.build import MissingWeightsError, weights_dir

    local = Path(repo_or_dir).expanduser()
    candidates = [local] if local.is_dir() else [weights_dir() / repo_or_dir]
    for path in candidates:
        if path.is_dir():
            log.info("loading VAE from %s", path)
            return AutoencoderKL.from_pretrained(path, torch_dtype=dtype).to(device).eval()
    try:
        return AutoencoderKL.from_pretrained(repo_or_dir, torch_dtype=dtype).to(device).eval()
    except (OSError, ValueError) as exc:
        from huggingface_hub import constants

        raise MissingWeightsError(
            f"VAE weights {repo_or_dir!r} are not available (offline={os.environ.get('HF_HUB_OFFLINE', '0')}): "
            f"on a machine with internet run `huggingface-cli download {repo_or_dir}` (HF cache: "
            f"{constants.HF_HUB_CACHE}; copy it or set HF_HOME), or put the diffusers folder "
            f"(config.json + diffusion_pytorch_model.safetensors) at {weights_dir() / repo_or_dir}. ({exc})"
        ) from exc


class SDVAECodec:
    """Latent diffusion through an AutoencoderKL (default ``stabilityai/sd-vae-ft-mse``).

    ``vae``: inject a model (tests use a tiny random-init AutoencoderKL); otherwise it is loaded lazily on first use.
    ``stats``: a :class:`LatentStats`, a path to a stats file, or None for the 0.18215 default.
    ``encode`` returns the normalised posterior mean (``sample=True`` draws from the posterior instead).
    """

    def __init__(self, repo_id: str = SD_VAE_REPO, *, stats: LatentStats | str | Path | None = None,
                 vae: Any = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 sample: bool = False):
        self.repo_id, self.device, self.dtype, self.sample = repo_id, torch.device(device), dtype, sample
        self._vae = vae.to(self.device).eval() if vae is not None else None
        self._stats_arg = stats

    @property
    def vae(self):
        if self._vae is None:
            self._vae = load_sd_vae(self.repo_id, device=self.device, dtype=self.dtype)
        return self._vae

    @property
    def channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def stats(self) -> LatentStats:
        if isinstance(self._stats_arg, LatentStats):
            return self._stats_arg
        if self._stats_arg is None:
            return LatentStats.default(self.channels)
        self._stats_arg = LatentStats.load(self._stats_arg)
        return self._stats_arg

    @property
    def id(self) -> str:
        return f"sdvae:{self.repo_id}:{self.stats.id}"

    @torch.no_grad()
    def moments(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior moments ``[B, 2C, h, w]`` (mean, logvar) of uint8 images, un-normalised, float32."""
        x = to_unit(images).to(self.device, self.dtype)
        dist = self.vae.encode(x).latent_dist
        return torch.cat([dist.mean, dist.logvar], dim=1).float()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return latents_from_moments(self.moments(images), self.stats, sample=self.sample, generator=generator)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, rounding: Rounding = "floor") -> torch.Tensor:
        """uint8 images from normalised latents (``rounding``: see :func:`to_uint8`)."""
        z = self.stats.denormalize(latents.float()).to(self.device, self.dtype)
        return to_uint8(self.vae.decode(z).sample, rounding).cpu()

    def __repr__(self) -> str:
        return f"SDVAECodec({self.repo_id!r}, loaded={self._vae is not None})"


def get_codec(name: str, **kwargs: Any):
    """``"identity"`` or ``"sdvae"`` (kwargs go to :class:`SDVAECodec`)."""
    if name in ("identity", "pixel"):
        if kwargs:
            raise ValueError(f"the identity codec takes no options, got {sorted(kwargs)}")
        return IdentityCodec()
    if name in ("sdvae", "sd-vae", SD_VAE_REPO):
        return SDVAECodec(**kwargs)
    raise ValueError(f"unknown codec {name!r}; use 'identity' (pixel space) or 'sdvae' ({SD_VAE_REPO})")


def token_grid(codec: Any, image_size: int, patch_size: int) -> tuple[int, int]:
    """The SiT token grid ``(H, W)`` for square images of ``image_size`` px through ``codec`` and patch size."""
    down = int(codec.downsample)
    if image_size % down:
        raise GridMismatchError(f"image size {image_size} px is not divisible by the codec's downsampling /{down} "
                                f"({getattr(codec, 'id', codec)})")
    side = image_size // down
    if side % patch_size:
        raise GridMismatchError(f"the codec's {side}x{side} output (image {image_size} px, codec /{down}) is not "
                                f"divisible by the SiT patch size {patch_size}")
    return side // patch_size, side // patch_size


def check_token_grid(codec: Any, image_size: int, patch_size: int,
                     encoder_grid: int | Sequence[int]) -> tuple[int, int]:
    """Return the SiT grid, or raise :class:`GridMismatchError` when it differs from the encoder's patch grid."""
    grid = token_grid(codec, image_size, patch_size)
    enc = (int(encoder_grid),) * 2 if isinstance(encoder_grid, int) else tuple(int(g) for g in encoder_grid)
    if grid != enc:
        down = int(codec.downsample)
        side = image_size // down
        need = [p for p in (1, 2, 4, 8, 16, 32) if side % p == 0 and side // p == enc[0]]
        hint = (f"use patch size {need[0]}" if need else
                f"use images of {enc[0] * patch_size * down} px")
        raise GridMismatchError(
            f"SiT grid {grid[0]}x{grid[1]} (image {image_size} px, codec /{down}, patch {patch_size}) != encoder grid "
            f"{enc[0]}x{enc[1]}; change the SiT patch size or the image size so they agree ({hint}); the study never "
            f"interpolates alignment targets")
    return grid
