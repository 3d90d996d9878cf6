"""Validate an entry against the model it builds (grid, embed_dim, prefix tokens, parameter count) and, for timm
entries, its preprocessing against timm's own ``pretrained_cfg`` (mean, std, interpolation)."""
from __future__ import annotations

import time
from typing import Any

import torch

from .build import build_model, trunk_params
from .encoder import Encoder, get_spec
from .spec import TIMM_CFG_FIELDS, EncoderSpec
from .variants import parse_variant

PARAMS_TOLERANCE = 0.01  # relative
CFG_TOLERANCE = 1e-6  # absolute, on mean and std


def _differs(field: str, ours: Any, theirs: Any) -> bool:
    if field == "interpolation":
        return ours != theirs
    return any(abs(a - b) > CFG_TOLERANCE for a, b in zip(ours, theirs, strict=True))


def timm_cfg_mismatches(spec: EncoderSpec) -> list[str]:
    """Where the preprocessing the entry applies (mean, std, resize mode) differs from timm's ``pretrained_cfg``
    of ``model_id`` without a ``timm_cfg_overrides`` reason, and overrides that no longer differ. Empty for
    ``hf`` and ``local`` entries (no timm cfg; local weights are trained with the entry's own preprocessing)."""
    if spec.source in ("hf", "local"):
        return []
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.model_id)
    if cfg is None:
        return [f"timm has no pretrained_cfg for {spec.model_id!r}"]
    mean, std = spec.normalization
    ours = {"mean": tuple(mean), "std": tuple(std), "interpolation": spec.resize.mode}
    problems = []
    for field in TIMM_CFG_FIELDS:
        theirs = cfg.interpolation if field == "interpolation" else tuple(getattr(cfg, field))
        differs = _differs(field, ours[field], theirs)
        if differs and field not in spec.timm_cfg_overrides:
            problems.append(f"{field} {ours[field]} differs from timm's pretrained_cfg {theirs}: fix the entry, or "
                            f"add timm_cfg_overrides: {{{field}: <why>}} if it differs on purpose")
        elif not differs and field in spec.timm_cfg_overrides:
            problems.append(f"timm_cfg_overrides.{field} is stale: the entry's {field} agrees with timm's "
                            "pretrained_cfg; remove the override")
    return problems


def check_encoder(name: str, *, meta: bool = True) -> dict[str, Any]:
    """Build ``name`` at full size without weights (on the meta device when ``meta``), run a 256 px forward, and
    compare with the entry (and timm entries' preprocessing with timm's ``pretrained_cfg``). Returns ``{name, ok, grid, embed_dim, prefix_tokens, params_m, seconds, reason?}``."""
    t0 = time.perf_counter()
    result: dict[str, Any] = {"name": name, "ok": False, "grid": None, "embed_dim": None, "prefix_tokens": None,
                              "params_m": None}
    try:
        spec = get_spec(name)
        model = build_model(spec, "meta" if meta else "random")
        result["params_m"] = round(trunk_params(model) / 1e6, 1)
        prefix = spec.prefix_tokens if spec.source == "hf" else getattr(model, "num_prefix_tokens", 0)
        result["prefix_tokens"] = prefix
        device = "meta" if meta else "cpu"
        encoder = Encoder(spec, model, "meta" if meta else "random", device=device, variant=parse_variant(name))
        images = torch.zeros(1, 3, 256, 256, dtype=torch.uint8, device=device)
        x = encoder.preprocess(images)
        with torch.no_grad():
            patch, _ = encoder._forward(x)
        tokens, dim = patch.shape[1], patch.shape[2]
        side = int(round(tokens ** 0.5))
        result["grid"] = side if side * side == tokens else None
        result["embed_dim"] = dim
        problems = []
        if tokens != spec.num_tokens:
            problems.append(f"{tokens} tokens, entry grid {spec.grid}x{spec.grid} = {spec.num_tokens}")
        if dim != spec.embed_dim:
            problems.append(f"embed_dim {dim} != entry {spec.embed_dim}")
        if prefix != spec.prefix_tokens:
            problems.append(f"prefix tokens {prefix} != entry {spec.prefix_tokens}")
        rel = abs(result["params_m"] - spec.params_m) / spec.params_m
        if rel > PARAMS_TOLERANCE:
            problems.append(f"params {result['params_m']} M differ from entry {spec.params_m} M by {rel:.1%}")
        problems += timm_cfg_mismatches(spec)
        result["ok"] = not problems
        if problems:
            result["reason"] = "; ".join(problems)
    except Exception as exc:  # a check reports every failure as data, it never crashes the batch
        result["reason"] = f"{type(exc).__name__}: {exc}"
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result
