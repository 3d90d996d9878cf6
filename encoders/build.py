"""Build the model behind a catalog entry: one generic builder per source (timm, hf, timm+ckpt, local).

``weights``:
- ``pretrained``: real weights from the library's standard cache (HF hub cache, torch hub cache), or a file in
  ``$REPA_STUDY_WEIGHTS``; offline and missing, a :class:`MissingWeightsError` says what to put where. A ``local``
  entry's weights are trained by this project (``repa-study encoders pretrain NAME``) into
  :func:`local_weights_path`;
- ``random``: the full-size architecture, random init (no download);
- ``tiny``: the same architecture shrunk by the entry's ``tiny`` overrides (tests and the embedded default);
- ``meta``: full size on the meta device (no memory, no weights): shapes and parameter counts only.

:func:`find_weights` says, offline and without building anything, whether an entry's pretrained weights are on disk
and where (``repa-study encoders check --weights``, the sweep preflight). With the hub offline (``HF_HUB_OFFLINE``)
a build whose weights are not on disk fails at once with :class:`MissingWeightsError`, not after the libraries'
retries. Weight files are read as tensors only (safetensors, or ``torch.load(weights_only=True)``): a file planted
in ``$REPA_STUDY_WEIGHTS`` cannot run code (:class:`UnsafeWeightsError`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Literal, NamedTuple

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


class UnsafeWeightsError(ValueError):
    """A weight file that does not load as tensors alone (a pickle asking for other Python objects)."""


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
    hundreds of steps, not tens of thousands. Named in a catalog entry as
    ``create_kwargs: {embed_layer: conv-stem}``."""
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
    if _hub_offline() and not find_weights(spec).found:  # fail now, not after the libraries' retries
        raise _missing(spec, _timm_source_hint(spec), None)
    try:
        return timm.create_model(spec.model_id, pretrained=True, **kwargs)
    except Exception as exc:  # offline hub / URL failures surface as many exception types
        raise _missing(spec, _timm_source_hint(spec), exc) from exc


def _load_checkpoint(path: Path) -> dict:
    """A weight file's tensors: safetensors, or a torch pickle loaded with ``weights_only=True`` (upstream MoCo
    checkpoints also hold optimiser state, plain values, and may hold an ``argparse.Namespace``, which is allowed)."""
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    import argparse
    import pickle

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            needs = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown objects"
        except Exception:  # noqa: BLE001 - only for the message
            needs = "unknown objects"
        raise UnsafeWeightsError(
            f"{path} does not load as weights alone: its pickle asks for {needs}, which loading would run. It was not "
            f"loaded. If the file is genuine, convert its state dict to {path.with_suffix('.safetensors').name} on "
            f"a machine where you trust it.") from exc


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


class WeightsOnDisk(NamedTuple):
    """Whether an entry's pretrained weights are here (``found``) and where they are, or are looked for
    (``where``: a file, or a hub repo in the HF cache)."""

    found: bool
    where: str


_HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                     "open_clip_pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _in_hub_cache(repo: str, revision: str | None, files: tuple[str, ...]) -> str | None:
    """The cached path of the first of ``files`` in ``repo`` (a sharded index only when its shards are there)."""
    from huggingface_hub import try_to_load_from_cache

    for name in files:
        path = try_to_load_from_cache(repo, name, revision=revision)
        if not isinstance(path, str):
            continue
        if name.endswith(".index.json"):
            shards = set(json.loads(Path(path).read_text()).get("weight_map", {}).values())
            if not all(isinstance(try_to_load_from_cache(repo, s, revision=revision), str) for s in shards):
                continue
        return path
    return None


def find_weights(spec: EncoderSpec) -> WeightsOnDisk:
    """Where ``spec``'s pretrained weights are on this machine, looked up offline without building the model: a
    local override in :func:`weights_dir`, a raw checkpoint (``timm+ckpt``), a locally trained file (``local``;
    recipe ``none`` needs none), or the HF hub cache (timm and transformers; timm's URL downloads: the torch hub
    cache)."""
    local = _local_file(spec)
    if local is not None:
        return WeightsOnDisk(True, str(local))
    if spec.source == "timm+ckpt":
        path = weights_dir() / str(spec.checkpoint)
        return WeightsOnDisk(path.is_file(), str(path))
    if spec.source == "local":
        path = local_weights_file(spec)
        return WeightsOnDisk(path.is_file() or not spec.trained_here,
                             str(path) if spec.trained_here else "no file: its seeded random init is the encoder")
    if spec.source == "hf":
        found = _in_hub_cache(str(spec.model_id), spec.revision, ("config.json",)) and \
            _in_hub_cache(str(spec.model_id), spec.revision, _HUB_WEIGHT_FILES)
        return WeightsOnDisk(bool(found), found or f"hub repo {spec.model_id} in {_hub_cache()}")
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.model_id)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if hub:
        repo, _, revision = hub.partition("@")
        extra = getattr(cfg, "hf_hub_filename", None)
        found = _in_hub_cache(repo, revision or None, ((extra,) if extra else ()) + _HUB_WEIGHT_FILES)
        return WeightsOnDisk(found is not None, found or f"hub repo {repo} in {_hub_cache()}")
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        return WeightsOnDisk(path.is_file(), str(path))
    return WeightsOnDisk(False, f"timm has no download source for {spec.model_id!r}")


def _build_timm_ckpt(spec: EncoderSpec, weights: Weights) -> nn.Module:
    import timm
    from timm.layers import resample_abs_pos_embed

    if weights != "pretrained":
        return timm.create_model(spec.model_id, pretrained=False, **_timm_kwargs(spec, weights))
    path = _local_file(spec) or weights_dir() / str(spec.checkpoint)
    if not path.is_file():
        raise _missing(spec, f"It is a raw upstream checkpoint: download {spec.checkpoint_url} and save it as "
                             f"{weights_dir() / str(spec.checkpoint)} (set {WEIGHTS_ENV} to choose the folder).",
                       None)
    state = ADAPTERS[str(spec.adapter)](_load_checkpoint(path))  # read (and checked) before building the model
    model = timm.create_model(spec.model_id, pretrained=False, **_timm_kwargs(spec, weights))
    if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], model.patch_embed.grid_size,
                                                    num_prefix_tokens=model.num_prefix_tokens)
    model.load_state_dict(state, strict=True)
    return model


def local_weights_path(spec: EncoderSpec) -> Path:
    """Where ``repa-study encoders pretrain`` puts a ``local`` entry's weights: keyed by the entry's fingerprint, so
    a changed recipe or architecture never loads weights trained for the old one (controlled entries that differ only
    in their composing rule share their student's file: :meth:`EncoderSpec.weights_fingerprint`)."""
    return weights_dir() / "local" / f"{spec.weights_name}-{spec.weights_fingerprint()}.safetensors"


#: Weights of ``local`` entries shipped with the package (``<name>-<fingerprint>.safetensors``): pretraining is
#: deterministic on one machine but chaotic across CPU instruction sets (mini-sup's loss at step 80: 3.4433 with
#: AVX-512 kernels, 3.4036 with AVX2), so the embedded study ships the weights it was measured with. A changed recipe
#: changes the fingerprint and trains its own; ``repa-study encoders pretrain NAME --force`` retrains.
SHIPPED_LOCAL_WEIGHTS = Path(__file__).parent / "weights"


def local_weights_file(spec: EncoderSpec) -> Path:
    """The file a ``local`` entry's pretrained weights load from: a user's ``$REPA_STUDY_WEIGHTS/<name>.*`` if
    there is one, else :func:`local_weights_path` if it was trained here, else the shipped file for this exact
    recipe, else :func:`local_weights_path` (which may not exist yet)."""
    own = _local_file(spec) or local_weights_path(spec)
    if own.is_file():
        return own
    shipped = SHIPPED_LOCAL_WEIGHTS / own.name
    return shipped if shipped.is_file() else own


def uses_shipped_weights(spec: EncoderSpec) -> bool:
    """Whether a ``local`` entry loads the weights shipped with the package (none trained or put here)."""
    return spec.source == "local" and local_weights_file(spec).parent == SHIPPED_LOCAL_WEIGHTS


def _build_local(spec: EncoderSpec, weights: Weights) -> nn.Module:
    import timm

    def model() -> nn.Module:
        vit = timm.create_model(spec.model_id, pretrained=False, **_timm_kwargs(spec, weights))
        if spec.controlled is None:
            return vit
        from .controlled import ControlledNet

        return ControlledNet(vit, spec.controlled, spec.prefix_tokens)

    if weights != "pretrained" or not spec.trained_here:  # recipe 'none': the seeded random init is the encoder
        return model()
    path = local_weights_file(spec)
    if not path.is_file():
        raise MissingWeightsError(
            f"encoder {spec.name!r} is trained by this project ({spec.pretrain.recipe}, {spec.pretrain.steps} steps "
            f"on {spec.pretrain.data}) and has not been trained here yet: run `repa-study encoders pretrain "
            f"{spec.name}` (minutes on a CPU); it writes {path}. Sweeps and `repa-study run` do this themselves.")
    net = model()
    net.load_state_dict(_load_checkpoint(path), strict=True)
    return net


def _build_hf(spec: EncoderSpec, weights: Weights) -> nn.Module:
    import transformers

    cls = getattr(transformers, str(spec.hf_class), None)
    if cls is None:
        raise ValueError(f"encoder {spec.name!r}: transformers has no class {spec.hf_class!r}")
    if weights == "pretrained":
        local = _local_file(spec)
        if local is not None:
            state = _load_checkpoint(local)
            model = cls(cls.config_class(**(spec.hf_config or {})))
            model.load_state_dict(state, strict=True)
            return model
        hint = (f"transformers loads the hub repo '{spec.model_id}' into the HF cache ({_hub_cache()}); on a "
                f"machine with internet run `huggingface-cli download {spec.model_id}` and copy that cache here.")
        if _hub_offline() and not find_weights(spec).found:  # fail now, not after the libraries' retries
            raise _missing(spec, hint, None)
        try:
            return cls.from_pretrained(spec.model_id, revision=spec.revision)
        except Exception as exc:
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
    """The seed of an entry's random-init weights (``tiny``/``random``): a hash of its name (a controlled entry's
    student's) and the mode."""
    return int(hashlib.sha256(f"{spec.weights_name}|{weights}".encode()).hexdigest()[:8], 16)


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
