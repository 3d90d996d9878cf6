"""Build the model behind a catalog entry: one generic builder per source (timm, hf, timm+ckpt, local).

``weights``:
- ``pretrained``: real weights from the library's standard cache (HF hub cache, torch hub cache), or a file in
  ``$REPA_STUDY_WEIGHTS``; offline and missing, a :class:`MissingWeightsError` says what to put where. A ``local``
  entry's weights are trained by this project (``repa-study encoders pretrain NAME``) into
  :func:`local_weights_path`;
- ``random``: the full-size architecture, random init (no download);
- ``tiny``: the same architecture shrunk by the entry's ``tiny`` overrides (tests and the embedded default);
- ``meta``: full size on the meta device (no memory, no weights): shapes and parameter counts only.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .adapters import ADAPTERS
from .spec import ENCODER_WEIGHTS, EncoderSpec, EncoderWeights

#: ``meta``: the full-size architecture on the meta device, without memory or weights (``encoders check --meta``).
Weights = EncoderWeights | Literal["meta"]
WEIGHTS_MODES = (*ENCODER_WEIGHTS, "meta")
WEIGHTS_ENV = "REPA_STUDY_WEIGHTS"
_LOCAL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not available locally; the message says what to download and where to put it."""


def weights_dir() -> Path:
    """The directory for raw checkpoints and local weight files (``$REPA_STUDY_WEIGHTS``, default ~/.cache/...)."""
    return Path(os.environ.get(WEIGHTS_ENV) or Path.home() / ".cache" / "repa-study" / "weights")


def _local_file(spec: EncoderSpec) -> Path | None:
    """A user-provided weight file ``$REPA_STUDY_WEIGHTS/<name><suffix>`` overrides the library download."""
    for suffix in _LOCAL_SUFFIXES:
        path = weights_dir() / f"{spec.name}{suffix}"
        if path.is_file():
            return path
    return None


def _licence_note(spec: EncoderSpec) -> str:
    notes = []
    if spec.gated:
        notes.append(f"the upstream weights are gated ({spec.license}): accept the licence on the hub first")
    if "nc" in spec.license.split("-"):
        notes.append(f"licence {spec.license} is non-commercial")
    return ("; " + "; ".join(notes)) if notes else ""


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of timm
        return "~/.cache/huggingface/hub"


def _missing(spec: EncoderSpec, where: str, cause: BaseException | None) -> MissingWeightsError:
    local = weights_dir() / f"{spec.name}.safetensors"
    msg = (f"encoder {spec.name!r}: pretrained weights are not available here. {where} "
           f"Alternatively put a state dict at {local} (.safetensors/.pth also work). "
           f"Tests and the embedded default use weights='tiny' and need no download{_licence_note(spec)}.")
    if cause is not None:
        msg += f" (underlying error: {type(cause).__name__}: {str(cause).splitlines()[0][:200]})"
    return MissingWeightsError(msg)


def _timm_source_hint(spec: EncoderSpec) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.model_id)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if hub:
        return (f"timm loads it from the Hugging Face hub repo '{hub}' into the HF cache ({_hub_cache()}); on a "
                f"machine with internet run `huggingface-cli download {hub}` and copy that cache here (or set "
                f"HF_HOME).")
    if url:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        return f"timm downloads it from {url} into {cache}; download it there by hand when offline."
    return f"timm has no download source for {spec.model_id!r}."


def conv_stem_patch_embed(*args, **kwargs) -> nn.Module:
    """timm's ``PatchEmbed`` with a small conv stem as its projection (two 3x3 convs, then a strided conv to the
    patch grid): the local inductive bias that lets the miniature's tiny ViTs learn the synthetic shapes in
    hundreds of steps, not tens of thousands. Named in a catalog entry as ``create_kwargs: {embed_layer: conv-stem}``."""
    from timm.layers import PatchEmbed

    embed = PatchEmbed(*args, **kwargs)
    cin, dim, p = embed.proj.in_channels, embed.proj.out_channels, embed.patch_size[0]
    embed.proj = nn.Sequential(nn.Conv2d(cin, 32, 3, 1, 1), nn.GELU(), nn.Conv2d(32, 32, 3, 1, 1), nn.GELU(),
                               nn.Conv2d(32, dim, p + 1, p, p // 2))
    return embed


#: ``create_kwargs: {embed_layer: NAME}`` values (a class cannot be written in YAML).
EMBED_LAYERS = {"conv-stem": conv_stem_patch_embed}


def _timm_kwargs(spec: EncoderSpec, weights: Weights) -> dict:
    kwargs = dict(num_classes=0, **spec.create_kwargs)
    if weights == "tiny":
        kwargs.update(spec.tiny)
    if isinstance(kwargs.get("embed_layer"), str):
        if kwargs["embed_layer"] not in EMBED_LAYERS:
            raise ValueError(f"encoder {spec.name!r}: unknown embed_layer {kwargs['embed_layer']!r}; known: "
                             f"{sorted(EMBED_LAYERS)}")
        kwargs["embed_layer"] = EMBED_LAYERS[kwargs["embed_layer"]]
    return kwargs


def _build_timm(spec: EncoderSpec, weights: Weights) -> nn.Module:
    import timm

    kwargs = _timm_kwargs(spec, weights)
    if weights != "pretrained":
        return timm.create_model(spec.model_id, pretrained=False, **kwargs)
    local = _local_file(spec)
    if local is not None:
        return timm.create_model(spec.model_id, pretrained=True, pretrained_cfg_overlay={"file": str(local)},
                                 **kwargs)
    try:
        return timm.create_model(spec.model_id, pretrained=True, **kwargs)
    except Exception as exc:  # offline hub / URL failures surface as many exception types
        raise _missing(spec, _timm_source_hint(spec), exc) from exc


def _load_checkpoint(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # Upstream MoCo checkpoints pickle optimiser state and argparse objects, hence weights_only=False: only load
    # files you trust (they come from the paths the user placed in $REPA_STUDY_WEIGHTS).
    return torch.load(path, map_location="cpu", weights_only=False)


def _build_timm_ckpt(spec: EncoderSpec, weights: Weights) -> nn.Module:
    import timm
    from timm.layers import resample_abs_pos_embed

    model = timm.create_model(spec.model_id, pretrained=False, **_timm_kwargs(spec, weights))
    if weights != "pretrained":
        return model
    path = _local_file(spec) or weights_dir() / str(spec.checkpoint)
    if not path.is_file():
        raise _missing(spec, f"It is a raw upstream checkpoint: download {spec.checkpoint_url} and save it as "
                             f"{weights_dir() / str(spec.checkpoint)} (set {WEIGHTS_ENV} to choose the folder).",
                       None)
    state = ADAPTERS[str(spec.adapter)](_load_checkpoint(path))
    if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], model.patch_embed.grid_size,
                                                    num_prefix_tokens=model.num_prefix_tokens)
    model.load_state_dict(state, strict=True)
    return model


def local_weights_path(spec: EncoderSpec) -> Path:
    """Where ``repa-study encoders pretrain`` puts a ``local`` entry's weights: keyed by the entry's fingerprint, so
    a changed recipe or architecture never loads weights trained for the old one."""
    return weights_dir() / "local" / f"{spec.name}-{spec.fingerprint()}.safetensors"


def local_weights_file(spec: EncoderSpec) -> Path:
    """The file a ``local`` entry's pretrained weights load from: a user's ``$REPA_STUDY_WEIGHTS/<name>.*`` if
    there is one, else :func:`local_weights_path` (which may not exist yet)."""
    return _local_file(spec) or local_weights_path(spec)


def _build_local(spec: EncoderSpec, weights: Weights) -> nn.Module:
    import timm

    model = timm.create_model(spec.model_id, pretrained=False, **_timm_kwargs(spec, weights))
    if weights != "pretrained" or not spec.trained_here:
        return model  # recipe 'none': the seeded random init is the encoder
    path = local_weights_file(spec)
    if not path.is_file():
        raise MissingWeightsError(
            f"encoder {spec.name!r} is trained by this project ({spec.pretrain.recipe}, {spec.pretrain.steps} steps "
            f"on {spec.pretrain.data}) and has not been trained here yet: run `repa-study encoders pretrain "
            f"{spec.name}` (minutes on a CPU); it writes {path}. Sweeps and `repa-study run` do this themselves.")
    model.load_state_dict(_load_checkpoint(path), strict=True)
    return model


def _build_hf(spec: EncoderSpec, weights: Weights) -> nn.Module:
    import transformers

    cls = getattr(transformers, str(spec.hf_class), None)
    if cls is None:
        raise ValueError(f"encoder {spec.name!r}: transformers has no class {spec.hf_class!r}")
    if weights == "pretrained":
        local = _local_file(spec)
        if local is not None:
            model = cls(cls.config_class(**(spec.hf_config or {})))
            model.load_state_dict(_load_checkpoint(local), strict=True)
            return model
        try:
            return cls.from_pretrained(spec.model_id, revision=spec.revision)
        except Exception as exc:
            hint = (f"transformers loads the hub repo '{spec.model_id}' into the HF cache ({_hub_cache()}); on a "
                    f"machine with internet run `huggingface-cli download {spec.model_id}` and copy that cache here.")
            raise _missing(spec, hint, exc) from exc
    config = dict(spec.hf_config or {})
    if weights == "tiny":
        config.update(spec.tiny)
    return cls(cls.config_class(**config))


def _pe_integer_rope(model: nn.Module) -> None:
    # timm rescales PE's RoPE positions onto ref_feat_shape whenever the grid differs; PE's reference code uses
    # integer positions. Clearing ref_feat_shape restores them (create_model drops a None kwarg, hence this fix).
    rope = getattr(model, "rope", None)
    if rope is None or not hasattr(rope, "ref_feat_shape"):
        raise ValueError("pe_integer_rope: the model has no rope.ref_feat_shape (not a timm PE model?)")
    rope.ref_feat_shape = None
    rope.init_non_persistent_buffers()  # rebuild the cached table with integer positions


POST_BUILD_FIXES = {"pe_integer_rope": _pe_integer_rope}
_BUILDERS = {"timm": _build_timm, "timm+ckpt": _build_timm_ckpt, "hf": _build_hf, "local": _build_local}


def init_seed(spec: EncoderSpec, weights: str) -> int:
    """The seed of an entry's random-init weights (``tiny``/``random``): a hash of its name and the mode."""
    return int(hashlib.sha256(f"{spec.name}|{weights}".encode()).hexdigest()[:8], 16)


def build_model(spec: EncoderSpec, weights: Weights = "pretrained") -> nn.Module:
    """The model of ``spec`` in eval mode with frozen parameters (on the meta device for ``weights='meta'``)."""
    if weights not in WEIGHTS_MODES:
        raise ValueError(f"weights must be one of {WEIGHTS_MODES}, got {weights!r}")
    builder = _BUILDERS[spec.source]
    with torch.device("meta") if weights == "meta" else contextlib.nullcontext(), \
            torch.random.fork_rng(devices=[]):
        # Random-init weights come from a seed fixed by the entry: every process and every variant of an entry
        # sees the same stand-in (feature caches and training targets rely on it); the global RNG is untouched.
        torch.manual_seed(init_seed(spec, weights))
        model = builder(spec, "random" if weights == "meta" else weights)
        for fix in spec.post_build:
            POST_BUILD_FIXES[fix](model)
    model.eval()
    model.requires_grad_(False)
    return model


_HEAD_PREFIXES = ("attn_pool.", "head.", "fc_norm.", "pooler.")


def trunk_params(model: nn.Module) -> int:
    """Parameters of the trunk: pooling heads and classifiers (unused for patch tokens) excluded."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(_HEAD_PREFIXES))
