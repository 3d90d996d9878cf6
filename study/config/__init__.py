"""Typed configuration (no torch): the config base, the training config and its presets, the sampler's settings
and the model size tables. An unknown key is an error; ``config_hash`` names runs and jobs."""
from study.config.base import (HASH_CONTEXT, ConfigError, StrictModel, apply_overrides, config_hash, dump_config,
                               load_config, load_yaml, parse_overrides)
from study.config.sampler import SamplerSettings
from study.config.sizes import (JIT_SIZES, PAPER_PARAMS_M, SIZES, JiTSize, ModelSize, SiTSize, is_jit_size,
                                parse_jit_size, parse_size, resolve_size)
from study.config.train import (PRESETS_DIR, DataSection, EncoderSection, FlowSection, MeanFlowSection, MethodSection,
                                ModelSection, OptimSection, PreviewSection, RepaeSection, TrainConfig, XPredSection,
                                build_train_config, default_base, list_presets, load_train_config, method_aligns,
                                method_presets)
from study.config.vocab import (EXTRACTORS, OBJECTIVE_SAMPLERS, PART_WEIGHTS, PATHS, PRECISIONS, PROJECTOR_KINDS,
                                ROUNDINGS, SAMPLE_PRECISIONS, SAMPLER_MODES, TARGET_SOURCES, TIME_SAMPLINGS, Extractor,
                                FlowPath, ObjectiveKind, PartWeights, Precision, ProjectorKind, Rounding,
                                SamplePrecision, SamplerMode, TargetSource, TimeSampling)

__all__ = [
    "StrictModel", "ConfigError", "load_yaml", "load_config", "parse_overrides", "apply_overrides", "config_hash",
    "dump_config", "HASH_CONTEXT",
    "ModelSection", "MethodSection", "RepaeSection", "EncoderSection", "DataSection", "OptimSection", "FlowSection",
    "PreviewSection", "MeanFlowSection", "XPredSection", "TrainConfig", "PRESETS_DIR", "list_presets",
    "method_presets", "method_aligns", "default_base", "load_train_config", "build_train_config",
    "SamplerSettings",
    "FlowPath", "PATHS", "TimeSampling", "TIME_SAMPLINGS", "ProjectorKind", "PROJECTOR_KINDS", "SamplerMode",
    "SAMPLER_MODES", "Rounding", "ROUNDINGS", "Precision", "PRECISIONS", "Extractor", "EXTRACTORS", "PartWeights",
    "PART_WEIGHTS", "ObjectiveKind", "OBJECTIVE_SAMPLERS", "TargetSource", "TARGET_SOURCES", "SamplePrecision",
    "SAMPLE_PRECISIONS",
    "SiTSize", "SIZES", "parse_size", "JiTSize", "JIT_SIZES", "PAPER_PARAMS_M", "parse_jit_size", "is_jit_size",
    "ModelSize", "resolve_size",
]
