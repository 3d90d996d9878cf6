"""The encoder registry: one declarative catalog (``catalog.yaml``) and a uniform feature API.

>>> enc = get_encoder("dinov2-vit-b", weights="tiny")
>>> out = enc.encode(images_uint8)          # {"patch": [B, 256, D], "cls": [B, D] or None}
"""
from .build import MissingWeightsError, build_model, local_weights_file, local_weights_path, trunk_params, weights_dir
from .check import check_encoder
from .encoder import Encoder, UnknownEncoderError, cache_key, get_encoder, get_spec, list_encoders, resolve_name
from .spec import CatalogError, EncoderSpec, load_catalog, parse_catalog
from .variants import parse_variant

__all__ = [
    "Encoder", "EncoderSpec", "cache_key", "CatalogError", "MissingWeightsError", "UnknownEncoderError", "build_model",
    "check_encoder", "get_encoder", "get_spec", "list_encoders", "load_catalog", "local_weights_file", "local_weights_path",
    "parse_catalog", "parse_variant", "resolve_name", "trunk_params", "weights_dir",
]
