"""Datasets and codecs: where images, labels, masks and latents come from.

``open_dataset(spec, split)`` is the one entry point:

- ``"synthetic"`` / ``"synthetic:n=512,size=64,classes=10,seed=0"``: generated shapes (:mod:`.synthetic`);
- a directory prepared by ``repa-study data prepare`` (``DIR/<split>/manifest.json``): images + SD-VAE moments;
- an ImageNet-style folder (``DIR/train/<class>/*.JPEG``, ``DIR/val/<class>/*``), optionally with aligned masks.

Beside a dataset, an encoder-target cache (:mod:`.targets`, ``repa-study data encode``) holds a frozen encoder's patch
tokens of each of its images, which training can read instead of running the encoder.
"""
from __future__ import annotations

from pathlib import Path

from .codecs import (GridMismatchError, IdentityCodec, LatentStats, SDVAECodec, check_token_grid, get_codec,
                     latents_from_moments, load_sd_vae, to_uint8, to_unit, token_grid)
from .dataset import SYNTHETIC_DEFAULTS, DatasetError, ImageDataset, SyntheticDataset, collate, parse_synthetic_spec
from .folder import verify_images
from .prepare import compute_latent_stats, parse_shard, prepare_split, shards_of_task
from .synthetic import make_synthetic
from .targets import TARGETS_FORMAT, TargetCache, TargetCacheError, open_target_caches, targets_dir, write_targets

__all__ = ["open_dataset", "ImageDataset", "SyntheticDataset", "DatasetError", "collate", "parse_synthetic_spec",
           "SYNTHETIC_DEFAULTS", "IdentityCodec", "SDVAECodec", "LatentStats", "GridMismatchError", "token_grid",
           "check_token_grid", "latents_from_moments", "load_sd_vae", "get_codec", "to_unit", "to_uint8",
           "prepare_split", "compute_latent_stats", "parse_shard", "shards_of_task", "stored_latents", "check_dataset",
           "verify_images", "TargetCache", "TargetCacheError", "TARGETS_FORMAT", "targets_dir", "write_targets",
           "open_target_caches", "make_synthetic"]


def open_dataset(spec: str, split: str = "train", *, size: int | None = None,
                 masks: str | Path | None = None) -> ImageDataset:
    """Open a dataset split by spec (see the module docstring).

    ``size``: image side in pixels. For synthetic data it is the render size (it must agree with a ``size=`` in
    the spec); for folders the center-crop size (default 256); a prepared dataset must match its stored size.
    ``masks``: an ImageNet-S style masks directory for a folder (default: ``DIR/masks`` when it exists) or a
    prepared directory (default: the one its manifest records).
    """
    spec = str(spec).strip()
    if spec == "synthetic" or spec.startswith("synthetic:"):
        if masks is not None:
            raise DatasetError("synthetic data carries its own masks; do not pass masks=")
        params = parse_synthetic_spec(spec)
        if size is not None:
            if "size=" in spec and int(size) != params["size"]:
                raise DatasetError(f"size={size} conflicts with size={params['size']} in the spec {spec!r}")
            params["size"] = int(size)
        return SyntheticDataset(params["n"], params["size"], params["classes"], params["seed"], split=split)
    root = Path(spec).expanduser()
    from .prepared import PreparedDataset, is_prepared

    if is_prepared(root):
        return PreparedDataset(root, split, size=size, masks=masks)
    from .folder import FolderDataset

    return FolderDataset(root, split, size=256 if size is None else size, masks=masks)


def stored_latents(spec: str, split: str = "train") -> bool | None:
    """Whether training on ``spec``'s ``split`` reads stored SD-VAE moments (a ``repa-study data prepare``
    directory made with a VAE) rather than encoding each image: False for synthetic data, an image folder or a
    prepared split without moments; None when the path is not found here (e.g. a sweep costed away from its data) or
    its preparation is incomplete. An image folder is not opened (that would list every image)."""
    spec = str(spec).strip()
    if spec.startswith("synthetic"):
        return False
    root = Path(spec).expanduser()
    if not root.exists():
        return None
    if not (root / split / "manifest.json").is_file():
        return False
    try:
        return bool(getattr(open_dataset(str(root), split), "has_moments", False))
    except DatasetError:
        return None


def check_dataset(spec: str, split: str = "train") -> bool:
    """Raise :class:`DatasetError` when ``spec``'s ``split`` cannot be opened, without reading its images (an image
    folder is not even listed); returns whether it carries masks (synthetic data does; a folder's ``masks/``)."""
    spec = str(spec).strip()
    if spec == "synthetic" or spec.startswith("synthetic:"):
        parse_synthetic_spec(spec)
        return True
    root = Path(spec).expanduser()
    from .prepared import is_prepared

    if is_prepared(root):
        return bool(open_dataset(str(root), split).has_masks)
    from .folder import check_folder

    return check_folder(root, split)
