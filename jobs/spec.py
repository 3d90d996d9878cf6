"""Sweep specs: one YAML file describing a whole study (what to train, evaluate and score, where, with what).

``load_spec(path, overrides)`` reads and validates a spec; :func:`validate_spec` then checks what pydantic cannot
(encoder names against the catalog, resources the chosen executor can never satisfy) so that a bad spec is
rejected before anything is submitted. See docs/cluster.md for the format.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

import encoders
from encoders import EncoderWeights
from study.config import (ConfigError, Extractor, SamplePrecision, SamplerMode, SamplerSettings, StrictModel,
                          list_presets, load_config, method_presets)
from study.evaluation import protocol_name, protocol_settings

__all__ = ["Resources", "ModelSize", "FidSettings", "Extension", "ScoringSettings", "AnalyzeSettings",
           "ExecutorSettings", "SweepSpec", "SpecError", "load_spec", "validate_spec", "resolve_spec_path",
           "scoring_mask_check", "SWEEPS_DIR"]

SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"


class SpecError(ConfigError):
    """A sweep spec is invalid; the message says what and how to fix it. Nothing has been submitted."""


class Resources(StrictModel):
    """What one job of a stage asks the scheduler for."""

    gpus: int = Field(1, ge=0, le=64, description="GPUs per node")
    nodes: int = Field(1, ge=1, le=64)
    cpus: int = Field(8, ge=1, le=1024, description="CPUs per node (split among its tasks, one task per GPU)")
    mem_gb: float = Field(64, gt=0, le=8192, description="memory per node, GB")
    time_min: int = Field(24 * 60, ge=1, le=30 * 24 * 60, description="time limit per attempt, minutes")


class ModelSize(StrictModel):
    """A SiT size (the training config's ``model.size``; default: its name in ``models``) and its resources."""

    size: str | None = Field(None, description="model.size of the training config (default: the entry's name)")
    train_overrides: list[str] = Field(default_factory=list, description="extra training overrides for this size")
    train: Resources = Field(default_factory=Resources)
    eval: Resources = Field(default_factory=lambda: Resources(time_min=6 * 60))


class FidSettings(StrictModel):
    """How checkpoints are evaluated. ``protocol`` names registered settings (:mod:`study.evaluation.protocols`): it fills
    extractor, n_samples, mode, num_steps and cfg_scale, and an explicit value contradicting it is an error."""

    protocol: str | None = Field(None, description="a registered FID protocol, e.g. adm-50k-sde250 "
                                                   "(study/evaluation/protocols.py); unset: the settings below")
    n_samples: int = Field(50_000, ge=2)
    extractor: Extractor = "inception"
    mode: SamplerMode = Field("sde", description="study.config.SAMPLER_MODES: meanflow "
                                                             "= MeanFlow's jumps (num_steps = NFE); JiT: ode/heun")
    num_steps: int = Field(250, ge=1)
    cfg_scale: float = Field(1.0, ge=0)
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    reference: str | None = Field(None, description="reference statistics / images (default: the dataset's)")
    precision: SamplePrecision = Field("tf32", description="the sampler's matmuls: tf32 (the paper's) or bf16 "
                                                          "autocast (protocol adm-50k-sde250-bf16)")

    @model_serializer(mode="wrap")
    def _omit_default_precision(self, handler):  # left out of dumps at its default: evaluation ids unchanged
        return {k: v for k, v in handler(self).items() if not (k == "precision" and v == "tf32")}

    @model_validator(mode="before")
    @classmethod
    def _expand_protocol(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("protocol") is None:
            return data
        fixed = protocol_settings(str(data["protocol"]))
        clash = [f"{k}={data[k]!r} (the protocol says {v!r})" for k, v in fixed.items()
                 if k in data and data[k] is not None and str(data[k]) != str(v)
                 and not (_is_number(data[k]) and float(data[k]) == float(v))]
        if clash:
            raise ValueError(f"fid.protocol {data['protocol']!r} contradicts {', '.join(clash)}: drop these keys, "
                             f"or unset the protocol (fid.protocol=null) to use your own settings")
        return {**data, **fixed}

    @property
    def sampler(self) -> SamplerSettings:
        """The sampler these FID settings draw their samples with (the YAML keeps its flat keys)."""
        return SamplerSettings(mode=self.mode, num_steps=self.num_steps, cfg_scale=self.cfg_scale, seed=self.seed,
                               precision=self.precision)

    @property
    def protocol_name(self) -> str:
        """The registered protocol these settings are, else a derived name (what generation rows record)."""
        return protocol_name(self.model_dump())


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


class ScoringSettings(StrictModel):
    """How encoders are scored (``study.scoring.score_encoder``). SRSS needs a foreground mask per image: synthetic
    data brings its own; ImageNet needs ``masks`` (ImageNet-S), or a prepared dataset that points to them."""

    enabled: bool = True
    encoders: list[str] | Literal["all", "trained"] = Field("all", description="names, 'all' (the catalog's "
                                                                               "published encoders) or 'trained'")
    dataset: str | None = Field(None, description="dataset spec for scoring (default: the sweep's dataset)")
    split: str = "val"
    limit: int | None = Field(None, ge=1)
    probe: bool = True
    masks: str | None = Field(None, description="folder of ImageNet-S style foreground masks for SRSS "
                                                "(MASKS/[<split>/]<class>/<stem>.png); default: the dataset's own")
    min_mask_fraction: float = Field(0.0, ge=0.0, le=0.5, description="SRSS only on images whose mask covers at "
                                                                      "least this fraction of the tokens and leaves "
                                                                      "as much background (the authors: 64/256 = "
                                                                      "0.25); 0 keeps every masked image")
    resources: Resources = Field(default_factory=lambda: Resources(gpus=1, time_min=4 * 60))


class AnalyzeSettings(StrictModel):
    enabled: bool = True
    reference: str | None = Field(None, description="e.g. 'paper' to overlay the paper's numbers")
    resources: Resources = Field(default_factory=lambda: Resources(gpus=0, cpus=2, mem_gb=8, time_min=60))


class ExecutorSettings(StrictModel):
    kind: Literal["slurm", "local", "debug"] = "slurm"
    folder: str | None = Field(None, description="submitit logs; default ROOT/submitit/<sweep name>")
    array_parallelism: int = Field(64, ge=1, description="max array tasks of one stage running at once")
    local_workers: int = Field(1, ge=1, le=256, description="jobs run at once by the local executor")
    group_methods: bool = Field(False, description="train the methods of one (model, encoder, seed) in one job: "
                                                   "one data pipeline and one encoder forward per step")
    group_sizes: bool = Field(False, description="with group_methods: one job per (encoder, seed, target) for all "
                                                 "model sizes too (the largest size's resources; every GPU holds "
                                                 "all the group's models)")
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    slurm_constraint: str | None = None
    slurm_additional: dict[str, str | int] = Field(default_factory=dict, description="extra sbatch options")
    max_node_gpus: int | None = Field(None, ge=0, description="GPUs per node on the cluster (checks requests)")
    max_node_cpus: int | None = Field(None, ge=1)
    max_node_mem_gb: float | None = Field(None, gt=0)


class Extension(StrictModel):
    """Runs trained further than the spec's ``steps``: those of the listed models, encoders and methods (each
    unset: all of the spec's). An encoder or method not in the spec's lists adds runs (trained to this entry's
    ``steps``). A run gets the highest target of the entries that select it and evaluates the spec's ``eval_steps``
    plus theirs; it stays one run (one train job, one id), so raising a target later resumes it."""

    note: str = Field("", description="what these runs are for, e.g. the paper's table")
    models: list[str] | None = Field(None, description="keys of `models` (default: all)")
    encoders: list[str] | None = Field(None, description="catalog names (default: the spec's encoders)")
    methods: list[str] | None = Field(None, description="training presets (default: the spec's methods)")
    steps: int = Field(..., ge=1, description="the training target of these runs")
    eval_steps: list[int] = Field(default_factory=list, description="checkpoints evaluated besides eval_steps")

    @field_validator("models", "encoders", "methods")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("an empty list selects nothing: leave the key out to select all")
            dup = sorted({v for v in value if value.count(v) > 1})
            if dup:
                raise ValueError(f"duplicate entries {dup}")
        return value

    @model_validator(mode="after")
    def _eval_within(self) -> "Extension":
        bad = [s for s in self.eval_steps if s < 1 or s > self.steps]
        if bad:
            raise ValueError(f"eval_steps {bad} outside 1..steps ({self.steps})")
        if len(set(self.eval_steps)) != len(self.eval_steps):
            raise ValueError("duplicate eval_steps")
        return self


class SweepSpec(StrictModel):
    """The whole study: trainings (encoders x models x methods x seeds), evaluations, scoring, analysis."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    dataset: str = Field(..., description="dataset spec: 'synthetic[:k=v,...]' or an ImageNet-style folder")
    encoder_weights: EncoderWeights = "pretrained"
    encoders: list[str] = Field(..., min_length=1)
    models: dict[str, ModelSize] = Field(..., min_length=1)
    methods: list[str] = Field(..., min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    steps: int = Field(..., ge=1, description="training steps")
    eval_steps: list[int] = Field(..., min_length=1, description="checkpoints to evaluate")
    extend: list[Extension] = Field(default_factory=list, description="runs trained beyond `steps` (and runs "
                                                                      "added with their own targets)")
    train_base: str | None = Field(None, description="training preset underneath the method (default: 'tiny' "
                                                     "for synthetic data, else 'imagenet')")
    train_overrides: list[str] = Field(default_factory=list, description="overrides for every training")
    cached_targets: list[str] = Field(default_factory=list, description="encoders whose trainings read an "
                                      "encoder-target cache (encoder.targets=cache; `repa-study data encode` writes "
                                      "it first; `sweep estimate` costs both ways)")
    fid: FidSettings = Field(default_factory=FidSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    analyze: AnalyzeSettings = Field(default_factory=AnalyzeSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)

    @field_validator("encoders", "methods")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dup = sorted({v for v in value if value.count(v) > 1})
        if dup:
            raise ValueError(f"duplicate entries {dup}")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("duplicate seeds")
        return value

    @model_validator(mode="after")
    def _eval_within_training(self) -> "SweepSpec":
        bad = [s for s in self.eval_steps if s < 1 or s > self.steps]
        if bad:
            raise ValueError(f"eval_steps {bad} outside 1..steps ({self.steps}): every evaluated checkpoint "
                             f"must exist after training")
        if len(set(self.eval_steps)) != len(self.eval_steps):
            raise ValueError("duplicate eval_steps")
        for i, ext in enumerate(self.extend):
            if ext.steps < self.steps:
                raise ValueError(f"extend[{i}].steps={ext.steps} is below steps ({self.steps}): an entry raises "
                                 f"the target of the runs it selects (or adds runs, or eval steps, at steps)")
            unknown = [m for m in ext.models or () if m not in self.models]
            if unknown:
                raise ValueError(f"extend[{i}].models: {unknown} are not keys of models ({', '.join(self.models)})")
        return self


def scoring_mask_check(spec: SweepSpec, *, count: bool = True) -> Any:
    """What SRSS will have in the sweep's score jobs: ``study.scoring.check_masks`` on the scoring dataset, split,
    masks, minimum mask fraction and limit (a ``MaskCheck``: ``.ok``, ``.problem``, ``.summary()``); None when the
    sweep scores nothing. ``count=False`` counts mask files without decoding them (seconds instead of minutes on
    ImageNet-S). Data not on this machine is not checked (``n_images`` None, no problem)."""
    if not spec.scoring.enabled:
        return None
    from study.scoring import check_masks

    s = spec.scoring
    return check_masks(s.dataset or spec.dataset, s.split, s.masks, min_fraction=s.min_mask_fraction, limit=s.limit,
                       count=count)


def resolve_spec_path(spec: str | Path) -> Path:
    """A path as given, or the name of a shipped sweep (``smoke`` -> jobs/sweeps/smoke.yaml)."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = SWEEPS_DIR / f"{spec}.yaml" if not str(spec).endswith(".yaml") else SWEEPS_DIR / str(spec)
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
    raise SpecError(f"sweep spec {str(spec)!r} not found: give a YAML path or one of the shipped sweeps {names}")


def load_spec(spec: str | Path, overrides: Iterable[str] = ()) -> SweepSpec:
    """Read, validate (:func:`validate_spec`) and return a sweep spec; raises :class:`SpecError`."""
    path = resolve_spec_path(spec)
    try:
        cfg = load_config(SweepSpec, path, overrides)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    validate_spec(cfg, where=str(path))
    return cfg


def _check_names(names: Iterable[str], where: str, errors: list[str]) -> None:
    """Every name must resolve exactly as ``encoders.get_encoder`` will resolve it at run time."""
    for name in names:
        try:
            encoders.resolve_name(name)
        except (encoders.UnknownEncoderError, ValueError) as exc:
            errors.append(f"{where}: {exc}")


def _local_gpus() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA means no GPUs
        return 0


def _check_resources(res: Resources, ex: ExecutorSettings, where: str, errors: list[str]) -> None:
    limits = {"gpus": ex.max_node_gpus, "cpus": ex.max_node_cpus, "mem_gb": ex.max_node_mem_gb}
    if ex.kind in ("local", "debug"):
        cpus = os.cpu_count() or 1
        if res.nodes > 1:
            errors.append(f"{where}: nodes={res.nodes} is impossible on the {ex.kind} executor (one machine)")
        limits["cpus"] = limits["cpus"] or cpus
        limits["gpus"] = limits["gpus"] if limits["gpus"] is not None else _local_gpus()
    for key, limit in limits.items():
        value = getattr(res, key)
        if limit is not None and value > limit:
            errors.append(f"{where}: {key}={value} exceeds what one node offers ({limit}); lower it or raise "
                          f"executor.max_node_{key}")
    if res.gpus == 0 and res.nodes > 1:
        errors.append(f"{where}: nodes={res.nodes} with gpus=0: multi-node jobs are for distributed GPU training")


def validate_spec(spec: SweepSpec, where: str = "sweep spec") -> None:
    """Checks beyond the schema; raises one :class:`SpecError` listing every problem found."""
    errors: list[str] = []
    _check_names(spec.encoders, f"{where}: encoders", errors)
    trained = {*spec.encoders, *(e for ext in spec.extend for e in ext.encoders or ())}
    stray = [e for e in spec.cached_targets if e not in trained]
    if stray:
        errors.append(f"{where}: cached_targets: {stray} are not encoders of this sweep")
    for i, ext in enumerate(spec.extend):
        _check_names(ext.encoders or (), f"{where}: extend[{i}].encoders", errors)
    if isinstance(spec.scoring.encoders, list):
        _check_names(spec.scoring.encoders, f"{where}: scoring.encoders", errors)
    for name, size in spec.models.items():
        _check_resources(size.train, spec.executor, f"{where}: models.{name}.train", errors)
        _check_resources(size.eval, spec.executor, f"{where}: models.{name}.eval", errors)
    if spec.scoring.enabled:
        _check_resources(spec.scoring.resources, spec.executor, f"{where}: scoring.resources", errors)
        if spec.scoring.masks and str(spec.scoring.dataset or spec.dataset).startswith("synthetic"):
            errors.append(f"{where}: scoring.masks: synthetic data carries its own masks; drop scoring.masks")
    if spec.analyze.enabled:
        _check_resources(spec.analyze.resources, spec.executor, f"{where}: analyze.resources", errors)
    methods, presets = method_presets(), list_presets()
    wanted = list(dict.fromkeys([*spec.methods, *(m for ext in spec.extend for m in ext.methods or ())]))
    for method in wanted:
        if method not in methods:
            errors.append(f"{where}: methods: {method!r} is not a method preset ({', '.join(methods)})")
    if spec.train_base is not None and spec.train_base not in presets:
        errors.append(f"{where}: train_base: {spec.train_base!r} is not a training preset ({', '.join(presets)})")
    if spec.fid.extractor == "inception" and not spec.fid.reference:
        errors.append(f"{where}: fid.reference is required with the inception extractor: the ADM reference batch "
                      f"(e.g. VIRTUAL_imagenet256_labeled.npz) or a dataset folder")
    if errors:
        raise SpecError("invalid sweep spec:\n  " + "\n  ".join(errors))
