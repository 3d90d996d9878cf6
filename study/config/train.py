"""The training configuration: typed sections, the presets in ``study/config/presets/`` and how configs are resolved.

No torch here: the sweep planner, the CLI and the run-directory reader validate configs without loading a model.

- ``load_train_config(preset_or_path, overrides)``: a preset name, a YAML path or a mapping, with ``key=value``
  overrides. A config may name ``base: PRESET`` (merged underneath), and ``method: NAME`` (a string) takes the whole
  method section of that preset, so ``method=irepa`` swaps the method and ``method.gamma=0.8`` then refines it.
- ``build_train_config(method, model, encoder, ...)``: the config of one sweep point (the typed path a sweep job takes).
- ``default_base(dataset)``: the one rule for which preset lies underneath a sweep point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from pydantic import Field, field_validator, model_serializer, model_validator

from encoders import EncoderWeights
from study.config.base import ConfigError, StrictModel, apply_overrides, load_config, load_yaml, parse_overrides
from study.config.sampler import SamplerSettings
from study.config.sizes import is_jit_size, resolve_size
from study.config.vocab import (OBJECTIVE_SAMPLERS, FlowPath, ObjectiveKind, PartWeights, Precision, ProjectorKind,
                                SamplerMode, TargetSource, TimeSampling)

__all__ = [
    "ModelSection", "MethodSection", "RepaeSection", "EncoderSection", "DataSection", "OptimSection", "FlowSection",
    "PreviewSection", "MeanFlowSection", "XPredSection", "TrainConfig", "PRESETS_DIR", "list_presets",
    "method_presets", "default_base",
    "load_train_config", "build_train_config",
]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


# ------------------------------------------------------------------------------------------------------ sections
class ModelSection(StrictModel):
    size: str = "SiT-XL/2"          # SiT-S/2 ... SiT-XL/2, tiny, smoke; JiT-B/16, JiT-L/16, JiT-H/16, JiT-tiny, JiT-smoke
    patch_size: int | None = None   # overrides the size's /P (default 2); the token grid must match the encoder's
    qk_norm: bool = False
    class_dropout: float = Field(0.1, ge=0.0, le=1.0)  # label dropout for classifier-free guidance

    @field_validator("size")
    @classmethod
    def _known_size(cls, v: str) -> str:
        resolve_size(v)
        return v


class RepaeSection(StrictModel):
    """``method.repae``: REPA-E's end-to-end VAE tuning (``study.repae``), value by value with its source.

    [CODE] = the official REPA-E code (End2End-Diffusion/REPA-E: ``train_repae.py`` defaults and README command,
    ``configs/l1_lpips_kl_gan.yaml``, ``loss/losses.py``, ``models/sit.py``); [PAPER] = Leng et al. 2025
    (arXiv 2504.10483). Where they disagree both readings are a setting, and the default is the code's.
    """

    vae: str = "stabilityai/sd-vae-ft-mse"  # the VAE to start from: diffusers folder or hub id ([CODE] REPA-E/sdvae)
    vae_weights: Literal["pretrained", "tiny"] = "pretrained"  # tiny: random-init 2-level AutoencoderKL (/2), CPU
    vae_lr: float = Field(1e-4, gt=0)    # [CODE] --vae-learning-rate; AdamW with optim.betas/eps/weight_decay
    disc_lr: float = Field(1e-4, gt=0)   # [CODE] --disc-learning-rate
    vae_lam: float = Field(1.5, ge=0)    # [CODE] --vae-align-proj-coeff: alignment weight in the VAE's objective
    #                                      ([PAPER] writes one lambda for both: set vae_lam = method.lam for that)
    align_labels: Literal["clean", "dropped"] = "clean"  # [CODE] the VAE's alignment pass runs the SiT in eval
    #                                      mode, so without label dropout; "dropped" reuses the SiT pass's labels
    bn_momentum: float = Field(0.1, gt=0, le=1)  # [CODE] --bn-momentum
    bn_eps: float = Field(1e-4, gt=0)    # [CODE] BatchNorm2d(eps=1e-4, affine=False)
    recon: Literal["l1", "mse"] = "l1"   # [CODE] reconstruction_loss: l1; [PAPER] L_MSE in L_REG
    recon_weight: float = Field(1.0, ge=0)       # [CODE] reconstruction_weight
    perceptual_weight: float = Field(1.0, ge=0)  # [CODE] LPIPS (VGG16) weight; 0 skips LPIPS (no VGG weights needed)
    lpips_weights: PartWeights = "pretrained"  # random: an untrained stand-in (tests only)
    kl_weight: float = Field(1e-6, ge=0)         # [CODE] kl_weight (KL summed over C,H,W, mean over the batch)
    disc_weight: float = Field(0.1, ge=0)        # [CODE] discriminator_weight (generator's GAN term); 0: no GAN
    disc_factor: float = Field(1.0, ge=0)        # [CODE] discriminator_factor (scales both GAN terms)
    disc_start: int = Field(0, ge=0)             # [CODE] discriminator_start: GAN terms from this step on
    disc_weights: PartWeights = "pretrained"  # [CODE] starts from REPA-E's trained PatchGAN
    disc_path: str | None = None  # None: $REPA_STUDY_WEIGHTS/REPA-E/sdvae/sdvae-f8d4-discriminator-ckpt.pt


class MethodSection(StrictModel):
    name: str = "repa"              # a label recorded with results; the values below define the method
    align: bool = True              # False: vanilla SiT (no encoder, no alignment loss)
    projector: ProjectorKind = "mlp"
    kernel_size: int = Field(3, ge=1)
    hidden_dim: int = Field(2048, ge=1)  # MLP projector width
    spatial_norm: bool = False      # iREPA's spatial z-score of the encoder target
    gamma: float = 0.6
    lam: float = Field(0.5, ge=0.0)  # weight of the alignment loss (lambda)
    depth: int | None = None        # align after this block; None: the size's default (4 for S/B, 8 for L/XL)
    repae: RepaeSection | None = None  # REPA-E: tune the VAE end to end (study.repae); None: the VAE stays frozen

    @model_validator(mode="after")
    def _repae_aligns(self) -> "MethodSection":
        if self.repae is not None and not self.align:
            raise ValueError("method.repae (REPA-E) tunes the VAE through the alignment loss: it needs align: true")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_repae(self, handler):
        """``repae: None`` is left out of dumps, so other methods' configs and hashes are what they were before
        the field existed."""
        data = handler(self)
        if data.get("repae", 0) is None:
            data.pop("repae")
        return data


class EncoderSection(StrictModel):
    name: str | list[str] = "dinov2-vit-b"  # one name or a list (losses averaged); NAME@clsmix=A variants allowed
    weights: EncoderWeights = "pretrained"
    bf16: bool = False              # the frozen encoder's weights in bf16 and its forward under bf16 autocast (GPU)
    targets: TargetSource = "online"  # cache: read the patch tokens `repa-study data encode` wrote (study.data.targets)
    # average-pool the encoder's 16x16 token grid by this factor before alignment (2: 8x8), for a SiT on a coarser
    # grid (the miniature's patch 4 at 32 px); 1 (the paper's): the SiT's grid must equal the encoder's
    pool: int = Field(1, ge=1)

    @property
    def names(self) -> list[str]:
        return [self.name] if isinstance(self.name, str) else list(self.name)

    @model_serializer(mode="wrap")
    def _omit_online(self, handler):  # left out of dumps at its default: existing hashes unchanged
        return {k: v for k, v in handler(self).items()
                if not (k == "targets" and v == "online") and not (k == "pool" and v == 1)}


class DataSection(StrictModel):
    spec: str = "synthetic:n=512,size=32,classes=10,seed=0"  # see study.data.open_dataset
    split: str = "train"
    image_size: int | None = None   # resize to this (None: the dataset's own size)
    codec: str = "identity"         # identity (pixel space) or sd-vae (latent space)
    latent_stats: str | None = None  # SD-VAE per-channel scale/bias file (None: the prepared dataset's, else 0.18215)
    num_workers: int = Field(0, ge=0)
    # a latent run on data without stored SD-VAE moments encodes every image each step only with true (else refused)
    online_vae: bool = False

    @model_serializer(mode="wrap")
    def _omit_default_online_vae(self, handler):  # left out of dumps at its default: existing hashes unchanged
        return {k: v for k, v in handler(self).items() if not (k == "online_vae" and v is False)}


class OptimSection(StrictModel):
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    eps: float = 1e-8
    grad_clip: float = Field(1.0, ge=0)  # 0: no clipping
    warmup_steps: int = Field(0, ge=0)


class FlowSection(StrictModel):
    path: FlowPath = "linear"
    time: TimeSampling = "uniform"
    time_mean: float = 0.0
    time_std: float = 1.0


class PreviewSection(StrictModel):
    """The periodic preview sheet of EMA samples (``preview.*``; ``grid.*``, its name before, is still read)."""

    n: int = Field(16, ge=1)        # images on the sheet
    num_steps: int = Field(50, ge=1)
    mode: SamplerMode = "ode"
    cfg_scale: float = 1.0

    def sampler(self, seed: int) -> SamplerSettings:
        """The sheet's sampler (its noise seeded by the run's ``seed``)."""
        return SamplerSettings(mode=self.mode, num_steps=self.num_steps, cfg_scale=self.cfg_scale, seed=seed)


class MeanFlowSection(StrictModel):
    """MeanFlow's objective (``study.objectives.meanflow``): average velocity, JVP target, CFG folded into training.

    Defaults: the reference code's ImageNet SiT-B/2 recipe; sources and paper/code differences: docs/training.md."""

    time: TimeSampling = "lognormal"  # t and r: two draws, sorted
    time_mean: float = -0.4
    time_std: float = Field(1.0, gt=0)
    equal_fraction: float = Field(0.75, ge=0.0, le=1.0)  # share of the batch with r = t ("ratio of r != t": 25 %)
    omega: float = Field(1.0, gt=0)                       # CFG in the target; omega 1, kappa 0: none
    kappa: float = Field(0.0, ge=0.0, lt=1.0)             # effective CFG scale omega / (1 - kappa)
    guidance_interval: tuple[float, float] = (0.0, 1.0)   # t range where the guided target applies
    norm_p: float = Field(1.0, ge=0.0)                    # adaptive weight 1 / (sq + norm_eps) ** norm_p
    norm_eps: float = Field(0.01, gt=0.0)                 # reference code 0.01; the paper writes 1e-3

    @property
    def guided(self) -> bool:
        """Whether CFG is folded into the target (omega 1, kappa 0: not)."""
        return not (self.omega == 1.0 and self.kappa == 0.0)

    @property
    def effective_scale(self) -> float:
        """The CFG scale the folded target corresponds to, ``omega / (1 - kappa)``."""
        return self.omega / (1.0 - self.kappa)


class XPredSection(StrictModel):
    """x-prediction with the velocity loss (JiT, ``study.objectives.xpred``): the model predicts the clean image."""

    noise_scale: float = Field(1.0, gt=0)  # x_t = (1 - t) x + t * noise_scale * eps (JiT: 1.0 at 256 px)
    t_eps: float = Field(0.05, gt=0, lt=1)  # v = (x_t - x) / max(t, t_eps), in training and sampling


#: Optional sections that are left out of a config's dump (and so of its hash) while unset, so that adding them
#: changed no existing run's config hash.
_HASH_NEUTRAL = ("meanflow", "xpred")


class TrainConfig(StrictModel):
    model: ModelSection = ModelSection()
    method: MethodSection = MethodSection()
    encoder: EncoderSection = EncoderSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    flow: FlowSection = FlowSection()
    preview: PreviewSection = PreviewSection()
    steps: int = Field(400_000, ge=1)
    batch_size: int = Field(256, ge=1)  # global batch (all ranks, all accumulation micro-batches)
    grad_accum: int = Field(1, ge=1)
    ema_decay: float = Field(0.9999, ge=0.0, le=1.0)
    seed: int = 0
    ckpt_every: int = Field(50_000, ge=1)  # resume points (see study.run.run_dir.kept_checkpoint for which are kept)
    ckpt_keep_every: int | None = Field(None, ge=1)  # also keep multiples of this; None with no ckpt_keep: keep all
    ckpt_keep: list[int] = Field(default_factory=list)  # steps always written and kept (e.g. the evaluated ones)
    log_every: int = Field(100, ge=1)
    sample_every: int = Field(0, ge=0)  # 0: no preview sheets
    precision: Precision = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    tf32: bool = True
    compile: bool = False
    device: str = "auto"
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)
    meanflow: MeanFlowSection | None = None  # None: flow matching; set: MeanFlow (a SiT with two time inputs)
    xpred: XPredSection | None = None        # None: velocity prediction; set: x-prediction + v-loss (JiT needs it)

    @model_serializer(mode="wrap")
    def _dump(self, handler, info):
        data = handler(self)
        if isinstance(data, dict):
            for key in _HASH_NEUTRAL:
                if data.get(key, 0) is None:
                    del data[key]
            if info.context and info.context.get("hash") and "preview" in data:
                data["grid"] = data.pop("preview")  # the section's name when hashes were first made
        return data

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        """``grid`` was the ``preview`` section's name (run directories and user files still say it): read it, over
        ``preview`` when both are given."""
        if isinstance(data, Mapping) and "grid" in data:
            data = dict(data)
            old = data.pop("grid")
            data["preview"] = {**(data.get("preview") or {}), **old} if isinstance(old, Mapping) else old
        return data

    @model_validator(mode="after")
    def _objective_fits_model(self) -> "TrainConfig":
        jit = is_jit_size(self.model.size)
        if self.meanflow is not None and self.xpred is not None:
            raise ValueError("meanflow and xpred are two objectives: set one of them")
        if self.meanflow is not None and jit:
            raise ValueError(f"meanflow needs a SiT (model.size {self.model.size!r} is a JiT)")
        if jit and self.xpred is None:
            raise ValueError(f"model.size {self.model.size!r} is a JiT, which predicts the clean image: set the "
                             "xpred section (e.g. base the config on the jit preset, or pass xpred.t_eps=0.05)")
        if (self.meanflow is not None or self.xpred is not None) and self.method.repae is not None:
            raise ValueError("method.repae (REPA-E) trains with the flow-matching loss: it does not combine with "
                             "meanflow or xpred")
        if (self.meanflow is not None or self.xpred is not None) and self.flow.path != "linear":
            raise ValueError("meanflow and xpred are defined on the linear path: set flow.path=linear")
        modes = OBJECTIVE_SAMPLERS[self.objective]
        if self.preview.mode not in modes:
            raise ValueError(f"preview.mode {self.preview.mode!r} does not fit this objective ({self.objective}: "
                             f"{', '.join(modes)})")
        return self

    @property
    def objective(self) -> ObjectiveKind:
        """What the network learns: ``meanflow`` (section set), ``xpred`` (section set) or ``flow`` matching."""
        return "meanflow" if self.meanflow is not None else "xpred" if self.xpred is not None else "flow"

    @model_validator(mode="after")
    def _repae_needs_a_vae(self) -> "TrainConfig":
        if self.method.repae is not None and self.data.codec in ("identity", "pixel"):
            raise ValueError("method.repae (REPA-E) trains a VAE: set data.codec=sd-vae (the VAE it starts from is "
                             "method.repae.vae), not the pixel-space identity codec")
        return self


# ------------------------------------------------------------------------------------------------------ presets
def list_presets() -> list[str]:
    """Every training preset (``study/config/presets/*.yaml``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def method_presets() -> list[str]:
    """The presets that define a named method (what ``method: NAME`` and a sweep's ``methods`` may name)."""
    return [name for name in list_presets() if "name" in (load_yaml(PRESETS_DIR / f"{name}.yaml").get("method") or {})]


def method_aligns(method: str) -> bool:
    """Whether the method preset aligns to an encoder (``vanilla`` does not: one run serves every encoder)."""
    return bool(MethodSection(**_method_of(method)).align)


def default_base(dataset: str) -> str:
    """The preset underneath a sweep point: ``tiny`` for synthetic data, else ``imagenet``."""
    return "tiny" if dataset.startswith("synthetic") else "imagenet"


def _preset_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(f"{name_or_path!r} is neither a config file nor a preset; presets: "
                          f"{', '.join(list_presets())}")
    return preset


def _load_raw(name_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config file's mapping with its ``base:`` chain merged in and ``method: NAME`` resolved."""
    path = _preset_path(name_or_path)
    key = str(path.resolve())
    if key in seen:
        raise ConfigError(f"config base cycle: {' -> '.join(seen + (key,))}")
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        data = apply_overrides(_load_raw(base, seen + (key,)), data)
    if isinstance(data.get("method"), str):
        data["method"] = _method_of(data["method"], seen + (key,))
    return data


def _method_of(preset: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``method`` section of a preset, so ``method=irepa`` swaps in the whole method."""
    method = _load_raw(preset, seen).get("method")
    if not isinstance(method, Mapping):
        raise ConfigError(f"preset {preset!r} has no method section; method presets: {', '.join(method_presets())}")
    return dict(method)


def _merge_overrides(data: dict[str, Any], overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(overrides, Mapping):
        extra = dict(overrides)
    else:
        items = list(overrides)
        for item in items:  # method=NAME first, so method.gamma=... may refine it
            if item.split("=", 1)[0].strip() == "method":
                data["method"] = _method_of(item.split("=", 1)[1].strip())
        extra = parse_overrides([i for i in items if i.split("=", 1)[0].strip() != "method"])
    if isinstance(extra.get("method"), str):
        data["method"] = _method_of(extra.pop("method"))
    return apply_overrides(data, extra)


# ------------------------------------------------------------------------------------------------------ loading
def load_train_config(preset_or_path: str | Path | Mapping[str, Any],
                      overrides: Iterable[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """A preset name (``study/config/presets/NAME.yaml``), a YAML path or a mapping, with ``key=value`` overrides."""
    if isinstance(preset_or_path, Mapping):
        data = dict(preset_or_path)
        base = data.pop("base", None)
        if base is not None:
            data = apply_overrides(_load_raw(base), data)
        if isinstance(data.get("method"), str):
            data["method"] = _method_of(data["method"])
        where = "<mapping>"
    else:
        data = _load_raw(preset_or_path)
        where = str(_preset_path(preset_or_path))
    data = _merge_overrides(data, overrides)
    try:
        return load_config(TrainConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_train_config(method: str, model: str, encoder: str | list[str], *, steps: int, seed: int, data: str,
                       base: str | None = None,
                       overrides: Iterable[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """The config of one sweep point: ``base`` preset (default :func:`default_base`), the ``method`` preset's
    method section, then model size, encoder, steps, seed, dataset, then ``overrides``."""
    raw = _load_raw(base or default_base(data))
    raw["method"] = _method_of(method)
    raw = apply_overrides(raw, {"model": {"size": model}, "encoder": {"name": encoder}, "steps": steps,
                                "seed": seed, "data": {"spec": data}})
    raw = _merge_overrides(raw, overrides)
    try:
        return load_config(TrainConfig, raw)
    except ConfigError as exc:
        raise ConfigError(f"sweep point ({method}, {model}, {encoder}, seed {seed}): {exc}") from None
