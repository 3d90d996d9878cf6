"""State-dict adapters for raw upstream checkpoints (source ``timm+ckpt``), looked up by the entry's ``adapter``."""
from __future__ import annotations

from typing import Any, Callable

import torch

_MOCO_PREFIX = "module.base_encoder."
# The RCG ViT-L checkpoint misnames four keys of blocks 13 and 14.
_RCG_KEY_FIXES = {
    "blocks.13.norm13": "blocks.13.norm1",
    "blocks.13.mlp.fc13": "blocks.13.mlp.fc1",
    "blocks.14.norm14": "blocks.14.norm2",
    "blocks.14.mlp.fc14": "blocks.14.mlp.fc2",
}


def mocov3_to_timm(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """MoCo v3 (official ViT-B, RCG ViT-L) -> timm ``vit_*_patch16_224`` keys.

    Keeps the base encoder only (drops the momentum encoder, predictor and projection head) and repairs the RCG
    key bug. The position table is resampled to the model's grid by the caller.
    """
    state = checkpoint.get("state_dict", checkpoint)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(_MOCO_PREFIX):
            continue
        key = key[len(_MOCO_PREFIX):]
        if key.startswith("head."):
            continue
        for bad, good in _RCG_KEY_FIXES.items():
            key = key.replace(bad, good)
        out[key] = value
    if not out:
        raise ValueError(f"no '{_MOCO_PREFIX}*' keys found: this is not a MoCo v3 checkpoint")
    return out


ADAPTERS: dict[str, Callable[[dict[str, Any]], dict[str, torch.Tensor]]] = {"mocov3_to_timm": mocov3_to_timm}
