"""The encoder registry: one declarative catalog (``catalog.yaml``) and a uniform feature API.

>>> enc = get_encoder("dinov2-vit-b", weights="tiny")
>>> out = enc.encode(images_uint8)          # {"patch": [B, 256, D], "cls": [B, D] or None}

The catalog side (entries, their schema, the weights vocabulary, ``NAME@clsmix=`` variants) imports no torch, so a
config or a sweep plan can validate encoder names and weights without loading it; what builds or runs a network
(``get_encoder``, ``build_model``, ``check_encoder``, ...) loads on first use.
"""
from importlib import import_module

from .spec import ENCODER_WEIGHTS, CatalogError, EncoderSpec, EncoderWeights, load_catalog, parse_catalog
from .variants import parse_variant

#: name -> the module that defines it (imported on first access: these need torch)
_LAZY = {
    "MissingWeightsError": ".build", "UnsafeWeightsError": ".build", "find_weights": ".build",
    "WeightsOnDisk": ".build", "build_model": ".build", "local_weights_file": ".build",
    "local_weights_path": ".build", "trunk_params": ".build", "weights_dir": ".build", "uses_shipped_weights": ".build",
    "check_encoder": ".check",
    "Encoder": ".encoder", "UnknownEncoderError": ".encoder", "cache_key": ".encoder", "get_encoder": ".encoder",
    "get_spec": ".encoder", "list_encoders": ".encoder", "resolve_name": ".encoder",
}

__all__ = [
    "Encoder", "EncoderSpec", "EncoderWeights", "ENCODER_WEIGHTS", "cache_key", "CatalogError", "MissingWeightsError",
    "UnknownEncoderError", "UnsafeWeightsError", "WeightsOnDisk", "find_weights", "build_model", "check_encoder",
    "get_encoder", "get_spec", "list_encoders", "load_catalog", "local_weights_file", "local_weights_path",
    "parse_catalog", "parse_variant", "resolve_name", "trunk_params",
    "weights_dir", "uses_shipped_weights",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
