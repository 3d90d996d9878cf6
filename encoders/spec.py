"""The catalog entry schema and the catalog loader.

An entry is declarative (timm's ``pretrained_cfg`` idea): everything that differs between encoders is data here,
and one generic builder (``encoders.build``) turns any entry into a model. Unknown fields, duplicate names, unknown
sources or adapters, and grids other than 16x16 are rejected when the catalog loads.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")

#: Named normalisation constants (per-channel mean, std).
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
#: The token grid every encoder must produce for a 256x256 image (the SiT's grid at 256 px).
STUDY_GRID = 16
#: Which weights an encoder is built with: the published ones, a seeded random init of the full architecture, or a
#: seeded random init of the entry's small ``tiny`` stand-in (tests and CPU runs). One definition for every layer.
EncoderWeights = Literal["pretrained", "random", "tiny"]
ENCODER_WEIGHTS: tuple[str, ...] = get_args(EncoderWeights)
#: Names known to the builder (kept here so that the schema can validate entries without importing torch).
ADAPTERS = ("mocov3_to_timm",)
POST_BUILD = ("pe_integer_rope",)
#: The preprocessing fields ``encoders check`` compares with timm's ``pretrained_cfg``.
TIMM_CFG_FIELDS = ("mean", "std", "interpolation")


class CatalogError(ValueError):
    """The catalog (or one entry of it) is malformed; the message names the entry and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Resize(_Strict):
    mode: Literal["bicubic", "bilinear"] = "bicubic"
    antialias: bool = True


Triple = tuple[float, float, float]


class Pretrain(_Strict):
    """How the project trains a ``source: local`` encoder itself (``study.pretrain``; weights cached, deterministic).

    ``supervised``: cross-entropy on the labels from the CLS token and the mean patch token; ``mim``: SimMIM-style
    masked patch prediction (a learned mask token replaces ``mask_ratio`` of the patches, a linear head predicts
    their pixels); ``controlled``: the student of a :class:`Controlled` entry: a class head on the CLS token
    (cross-entropy) and an object-mask head on each patch token (the fraction of the token's cell the object covers,
    binary cross-entropy); ``none``: the seeded random init is the encoder (a control with no training).
    """

    recipe: Literal["supervised", "mim", "controlled", "none"]
    data: str = Field("synthetic:n=4096,size=32,classes=10,seed=0", description="dataset spec (train split)")
    steps: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    mask_ratio: float = Field(0.5, gt=0, lt=1, description="mim: fraction of patches masked")
    seed: int = 0

    @model_validator(mode="after")
    def _steps_match_recipe(self) -> "Pretrain":
        if (self.recipe == "none") != (self.steps == 0):
            raise ValueError("recipe 'none' trains nothing (steps: 0); the other recipes need steps >= 1")
        return self


class Controlled(_Strict):
    """An encoder whose global information and spatial structure are set by construction (the miniature's test of
    the paper's question): a trained student predicts each image's class and its object's mask per token, and fixed
    random unit vectors (seeded) compose the tokens from those predictions (``encoders.controlled``)::

        object = O + gain * C[group(class)]
        layout:  token(t) = m(t) * object + (1 - m(t)) * B     (m: the predicted object fraction of token t)
        global:  token(t) = object                             (the same token everywhere: no layout)
        cls = object   (so NAME@clsmix=ALPHA adds alpha * object to every token, lowering LDS at the same LP)

    ``groups`` merges the classes into that many groups (a fixed permutation), so a linear probe can only tell the
    groups apart: LP falls while the layout, hence LDS/CDS/SRSS/RMSC, stays. Entries that differ only in this
    section share one student's weights (``student`` names its file).
    """

    student: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="name of the shared student's weight file")
    kind: Literal["layout", "global"] = "layout"
    groups: int = Field(ge=1, description="class groups the tokens can tell apart (1: no class information)")
    gain: float = Field(1.0, ge=0, description="weight of the class vector in the object descriptor")
    classes: int = Field(10, ge=2, description="classes of the student's training data")
    seed: int = Field(0, description="seed of the composing vectors and of the class -> group permutation")

    @model_validator(mode="after")
    def _groups_within_classes(self) -> "Controlled":
        if self.groups > self.classes:
            raise ValueError(f"groups ({self.groups}) cannot exceed classes ({self.classes})")
        return self


class EncoderSpec(_Strict):
    """One catalog entry. Fields marked 'asserted' are checked against the built model by ``check_encoder``."""

    name: str
    family: str
    source: Literal["timm", "hf", "timm+ckpt", "local"] = "timm"
    model_id: str = Field(description="timm 'arch.tag', HF repo id, or timm arch for timm+ckpt")
    revision: str | None = None
    hf_class: str | None = None
    hf_config: dict[str, Any] | None = None
    checkpoint: str | None = Field(None, description="file name under $REPA_STUDY_WEIGHTS (timm+ckpt)")
    checkpoint_url: str | None = None
    adapter: str | None = None
    create_kwargs: dict[str, Any] = Field(default_factory=dict)
    post_build: tuple[str, ...] = ()
    input_res: int = Field(gt=0)
    patch_size: int = Field(gt=0, description="token stride: the ViT patch size, 32 for Hiera")
    grid: int = STUDY_GRID
    embed_dim: int = Field(gt=0)
    prefix_tokens: int = Field(ge=0)
    cls_index: int | None = None
    final_norm: bool = True
    mean: Triple
    std: Triple
    normalize_override: str | None = None
    resize: Resize = Resize()
    timm_cfg_overrides: dict[Literal["mean", "std", "interpolation"], str] = Field(
        default_factory=dict, description="field -> reason, where the entry differs from timm's pretrained_cfg on "
                                          "purpose (checked by `encoders check`)")
    license: str
    gated: bool = False
    params_m: float = Field(gt=0)
    study: bool = Field(False, description="one of the 27 encoders of the paper's correlation study")
    tiny: dict[str, Any] = Field(default_factory=dict)
    pretrain: Pretrain | None = Field(None, description="source 'local': how the project trains the weights")
    controlled: Controlled | None = Field(None, description="tokens composed from a student's class and mask")
    notes: str = ""

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _named_constants(cls, value: Any, info) -> Any:
        if isinstance(value, str):
            if value not in NORMALIZATIONS:
                raise ValueError(f"unknown normalisation {value!r}; use one of {sorted(NORMALIZATIONS)} or 3 numbers")
            return NORMALIZATIONS[value][0 if info.field_name == "mean" else 1]
        return value

    @field_validator("normalize_override")
    @classmethod
    def _known_override(cls, value: str | None) -> str | None:
        if value is not None and value not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize_override {value!r}; use one of {sorted(NORMALIZATIONS)}")
        return value

    @field_validator("timm_cfg_overrides")
    @classmethod
    def _reasoned_overrides(cls, value: dict[str, str]) -> dict[str, str]:
        empty = [k for k, reason in value.items() if not str(reason).strip()]
        if empty:
            raise ValueError(f"timm_cfg_overrides {empty} need a reason (why the entry differs from timm's "
                             "pretrained_cfg)")
        return value

    @field_validator("post_build")
    @classmethod
    def _known_fixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in POST_BUILD]
        if unknown:
            raise ValueError(f"unknown post_build fix(es) {unknown}; known: {list(POST_BUILD)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_cls_index(cls, data: Any) -> Any:
        # A CLS token sits at index 0 whenever there are prefix tokens, unless the entry says otherwise.
        if isinstance(data, dict) and "cls_index" not in data:
            data = {**data, "cls_index": 0 if data.get("prefix_tokens", 0) else None}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "EncoderSpec":
        if self.input_res % self.patch_size:
            raise ValueError(f"input_res {self.input_res} is not a multiple of patch_size {self.patch_size}")
        if self.input_res // self.patch_size != self.grid:
            raise ValueError(f"input_res {self.input_res} / patch_size {self.patch_size} = "
                             f"{self.input_res // self.patch_size}, but grid is {self.grid}")
        if self.grid != STUDY_GRID:
            raise ValueError(f"grid must be {STUDY_GRID} (the SiT token grid of a 256 px image), got {self.grid}; "
                             f"choose input_res = {STUDY_GRID} x patch_size")
        if self.cls_index is not None and not 0 <= self.cls_index < self.prefix_tokens:
            raise ValueError(f"cls_index {self.cls_index} must point into the {self.prefix_tokens} prefix tokens")
        if self.source == "hf" and (not self.hf_class or not self.hf_config):
            raise ValueError("source 'hf' needs hf_class (e.g. Dinov2Model) and hf_config (architecture numbers, "
                             "so the model builds offline)")
        if self.source == "timm+ckpt":
            if not self.checkpoint or not self.adapter:
                raise ValueError("source 'timm+ckpt' needs checkpoint (a file name) and adapter")
            if self.adapter not in ADAPTERS:
                raise ValueError(f"unknown adapter {self.adapter!r}; known: {list(ADAPTERS)}")
        elif self.adapter or self.checkpoint:
            raise ValueError(f"checkpoint/adapter only apply to source 'timm+ckpt', not {self.source!r}")
        if (self.source == "local") != (self.pretrain is not None):
            raise ValueError("source 'local' needs a pretrain recipe (pretrain: {recipe: ...}), and only local "
                             "entries have one")
        if (self.controlled is not None) != (self.pretrain is not None and self.pretrain.recipe == "controlled"):
            raise ValueError("a controlled entry needs pretrain recipe 'controlled' (its student), and that recipe "
                             "needs a controlled section")
        if self.controlled is not None and self.cls_index != 0:
            raise ValueError("a controlled entry's student has a CLS token at index 0 (prefix_tokens: 1)")
        if self.source == "hf" and self.timm_cfg_overrides:
            raise ValueError("timm_cfg_overrides only apply to timm entries (source 'timm' or 'timm+ckpt')")
        return self

    @property
    def trained_here(self) -> bool:
        """A local entry whose weights this project trains (recipe other than 'none')."""
        return self.pretrain is not None and self.pretrain.recipe != "none"

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def normalization(self) -> tuple[Triple, Triple]:
        """The (mean, std) actually applied: the entry's, or the named override that reproduces a reference."""
        if self.normalize_override:
            return NORMALIZATIONS[self.normalize_override]
        return self.mean, self.std

    def fingerprint(self) -> str:
        """A short hash of every field: a changed entry never matches a cache made from the old one. The
        ``timm_cfg_overrides`` reasons document a check and change no feature, so they are left out."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"timm_cfg_overrides"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @model_serializer(mode="wrap")
    def _omit_no_controlled(self, handler):  # left out of dumps when unset: fingerprints from before are unchanged
        return {k: v for k, v in handler(self).items() if not (k == "controlled" and v is None)}

    @property
    def weights_name(self) -> str:
        """The stem of a ``local`` entry's weight file: its name, or the shared student's for a controlled entry."""
        return self.controlled.student if self.controlled is not None else self.name

    def weights_fingerprint(self) -> str:
        """:meth:`fingerprint` over what the weights depend on: a controlled entry's name, notes and composing rule
        are left out, so entries that differ only in those share one student."""
        if self.controlled is None:
            return self.fingerprint()
        blob = json.dumps(self.model_dump(mode="json", exclude={"timm_cfg_overrides", "name", "notes", "controlled"}),
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def summary(self) -> dict[str, Any]:
        """The fields ``repa-study encoders list --json`` prints."""
        keys = ("name", "family", "source", "model_id", "input_res", "patch_size", "grid", "embed_dim",
                "prefix_tokens", "cls_index", "final_norm", "mean", "std", "license", "gated", "params_m", "study")
        data = self.model_dump(mode="json")
        return {k: data[k] for k in keys}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise CatalogError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}): each encoder name "
                               "and each field may appear once")
        seen[key] = loader.construct_object(value_node, deep=deep)
    return seen


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_catalog(text: str, origin: str = "<catalog>") -> dict[str, EncoderSpec]:
    """Validate catalog YAML text into specs; every problem names the entry and the field."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("encoders"), dict):
        raise CatalogError(f"{origin}: expected a top-level 'encoders:' mapping of name -> entry")
    unknown_top = set(data) - {"encoders", "_tiny", "_timm_cfg_overrides"}
    if unknown_top:
        raise CatalogError(f"{origin}: unknown top-level key(s) {sorted(unknown_top)}")
    specs: dict[str, EncoderSpec] = {}
    for name, entry in data["encoders"].items():
        if not isinstance(entry, dict):
            raise CatalogError(f"{origin}: entry {name!r} must be a mapping of fields")
        if "@" in str(name):
            raise CatalogError(f"{origin}: entry name {name!r} may not contain '@' (reserved for variants)")
        try:
            specs[name] = EncoderSpec(name=name, **entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: "
                f"{'unknown field' if e['type'] == 'extra_forbidden' else e['msg']}"
                for e in exc.errors())
            raise CatalogError(f"{origin}: entry {name!r} is invalid: {problems}") from None
        except TypeError as exc:  # e.g. a 'name' field inside the entry
            raise CatalogError(f"{origin}: entry {name!r} is invalid: {exc}") from None
    return specs


@functools.lru_cache(maxsize=None)
def load_catalog(path: str | None = None) -> dict[str, EncoderSpec]:
    """The catalog (default: ``encoders/catalog.yaml``), validated once and cached."""
    p = Path(path) if path else CATALOG_PATH
    return parse_catalog(p.read_text(), origin=str(p))
