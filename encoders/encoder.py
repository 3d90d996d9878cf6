"""The uniform feature API: ``get_encoder(name).encode(uint8 images) -> {"patch": [B, T, D], "cls": [B, D] | None}``."""
from __future__ import annotations

import contextlib
import difflib

import torch
import torch.nn.functional as F
from torch import nn

from .build import build_model
from .spec import ENCODER_WEIGHTS, EncoderSpec, EncoderWeights, load_catalog
from .variants import Variant, parse_variant


class UnknownEncoderError(KeyError):
    """No catalog entry has this name; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def list_encoders() -> list[str]:
    """All catalog entry names, in catalog order (variants such as ``@clsmix=`` are not listed)."""
    return list(load_catalog())


def get_spec(name: str) -> EncoderSpec:
    """The catalog entry of ``name`` (a variant resolves to its base entry)."""
    base = parse_variant(name).base
    catalog = load_catalog()
    if base not in catalog:
        close = difflib.get_close_matches(base, list(catalog), n=5, cutoff=0.4)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise UnknownEncoderError(f"unknown encoder {base!r}.{hint} `repa-study encoders list` shows all "
                                  f"{len(catalog)}; add new ones to encoders/catalog.yaml.")
    return catalog[base]


def resolve_name(name: str) -> tuple[EncoderSpec, Variant]:
    """The entry and the validated variant of ``name``: raises UnknownEncoderError (with the closest names) or
    ValueError (a malformed variant, or CLS mixing on an entry without a CLS token)."""
    variant = parse_variant(name)
    spec = get_spec(name)
    if variant.clsmix is not None and spec.cls_index is None:
        raise ValueError(f"{name!r}: {spec.name} has no CLS token, so CLS mixing is undefined; choose an entry "
                         "with a CLS token (cls_index set), e.g. dinov2-vit-b@clsmix=0.5")
    return spec, variant


def cache_key(name: str, weights: str, bf16: bool = False) -> str:
    """The feature-cache key of ``get_encoder(name, weights, bf16=bf16)``, without building the model."""
    spec, variant = resolve_name(name)
    return f"{spec.name}{variant.suffix}|{weights}|{spec.fingerprint()}" + ("|bf16" if bf16 else "")


#: The layers whose weights bf16 autocast runs in bf16 (matmuls and convolutions): ``bf16=True`` stores these in bf16
#: once, so no forward re-casts them; norms, embeddings and tokens keep float32, as autocast computes them.
_BF16_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _bf16_weights(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, _BF16_LAYERS):
            m.to(torch.bfloat16)
    return model


class Encoder:
    """A frozen encoder: resizes and normalises per its entry, runs in eval mode under ``torch.inference_mode``.

    ``bf16``: the forward runs under bf16 autocast with the matmul and convolution weights stored in bf16 (cast once
    here, as autocast would cast them on every call: the same numbers). :meth:`compile` compiles the forward."""

    def __init__(self, spec: EncoderSpec, model: nn.Module, weights: str, device: str | torch.device = "cpu",
                 variant: Variant | None = None, bf16: bool = False) -> None:
        self.spec = spec
        self.model = _bf16_weights(model) if bf16 else model
        self.weights = weights
        self.variant = variant or Variant(spec.name)
        self.device = torch.device(device)
        self.bf16 = bf16
        self._run = self._forward
        mean, std = spec.normalization
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        if self.variant.clsmix is not None and spec.cls_index is None:
            raise ValueError(f"{self.name!r}: {spec.name} has no CLS token (prefix tokens: {spec.prefix_tokens}, "
                             "cls_index: null), so CLS mixing is undefined")

    @property
    def name(self) -> str:
        return self.spec.name + self.variant.suffix

    @property
    def embed_dim(self) -> int:
        """Token width: the entry's, except for tiny stand-ins, whose width comes from their ``tiny`` overrides."""
        if self.weights != "tiny":
            return self.spec.embed_dim
        config = getattr(self.model, "config", None)
        return int(config.hidden_size) if config is not None else int(self.model.num_features)

    @property
    def has_cls(self) -> bool:
        return self.spec.cls_index is not None

    @property
    def cache_key(self) -> str:
        """Encoder + variant + weights + entry fingerprint (preprocessing included) + bf16: keys feature caches."""
        return f"{self.name}|{self.weights}|{self.spec.fingerprint()}" + ("|bf16" if self.bf16 else "")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, H, W]`` -> resized to ``input_res`` and normalised float32."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: encode() takes uint8 images [B, 3, H, W], got {images.dtype} "
                             f"{tuple(images.shape)}")
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        res = self.spec.input_res
        if x.shape[-2:] != (res, res):
            x = F.interpolate(x, size=(res, res), mode=self.spec.resize.mode, align_corners=False,
                              antialias=self.spec.resize.antialias)
        return (x - self._mean) / self._std

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        spec = self.spec
        if spec.controlled is not None:  # encoders.controlled: tokens composed from the student's class and mask
            return self.model(x)
        if spec.source == "hf":
            hidden = self.model(pixel_values=x).last_hidden_state
            cls = hidden[:, spec.cls_index] if spec.cls_index is not None else None
            return hidden[:, spec.prefix_tokens:], cls
        if spec.prefix_tokens == 0:
            fmap = self.model.forward_intermediates(x, indices=1, norm=spec.final_norm, intermediates_only=True)[0]
            return fmap.flatten(2).transpose(1, 2), None
        fmap, prefix = self.model.forward_intermediates(x, indices=1, norm=spec.final_norm,
                                                        return_prefix_tokens=True, intermediates_only=True)[0]
        cls = prefix[:, spec.cls_index] if spec.cls_index is not None else None
        return fmap.flatten(2).transpose(1, 2), cls

    def compile(self) -> "Encoder":
        """Run the forward through ``torch.compile`` from now on (fixed shapes); should compilation fail on the
        first batch, the eager forward is kept, with a warning."""
        compiled = torch.compile(self._forward, dynamic=False)

        def first_call(x: torch.Tensor):
            try:
                out = compiled(x)
            except Exception as exc:  # noqa: BLE001 - an architecture dynamo cannot trace runs eagerly
                import warnings

                warnings.warn(f"{self.name}: torch.compile failed ({type(exc).__name__}: {exc}); running eagerly")
                self._run = self._forward
                return self._forward(x)
            self._run = compiled
            return out

        self._run = first_call
        return self

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Patch tokens ``[B, grid*grid, D]`` (prefix tokens dropped) and the CLS token ``[B, D]`` or None, float32
        (ordinary tensors: they may be saved for a backward, e.g. as alignment targets)."""
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        with torch.inference_mode():
            x = self.preprocess(images)
            with autocast:
                patch, cls = self._run(x)
        patch = patch.to(torch.float32, copy=True)  # out of inference mode
        cls = cls.to(torch.float32, copy=True) if cls is not None else None
        expected = (self.spec.num_tokens, self.embed_dim)
        if tuple(patch.shape[1:]) != expected:
            raise RuntimeError(f"{self.name}: produced tokens {tuple(patch.shape[1:])}, the entry promises "
                               f"{expected} (grid {self.spec.grid}x{self.spec.grid}); check input_res/patch_size")
        if self.variant.clsmix is not None:
            alpha = self.variant.clsmix
            if self.variant.clsmix_form == "additive":
                patch = patch + alpha * cls[:, None]
            else:
                patch = (1.0 - alpha) * patch + alpha * cls[:, None]
        return {"patch": patch, "cls": cls}

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, weights={self.weights!r}, device={str(self.device)!r})"


def get_encoder(name: str, weights: EncoderWeights = "pretrained",
                device: str | torch.device = "cpu", *, bf16: bool = False) -> Encoder:
    """Build the encoder ``name`` (a catalog entry, optionally ``NAME@clsmix=ALPHA``) ready for ``encode``."""
    if weights not in ENCODER_WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(ENCODER_WEIGHTS)}, got {weights!r}")
    spec, variant = resolve_name(name)
    model = build_model(spec, weights).to(device)
    return Encoder(spec, model, weights, device=device, variant=variant, bf16=bf16)
