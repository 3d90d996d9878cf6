"""The closed vocabularies of the configs, each spelled once: a ``Literal`` type for the typed configs and the tuple
of its values for messages, CLI choices and checks (``get_args``). The encoder-weights modes belong to the catalog
(``encoders.EncoderWeights``); everything else a config can name is here."""
from __future__ import annotations

from typing import Literal, get_args

__all__ = ["FlowPath", "PATHS", "TimeSampling", "TIME_SAMPLINGS", "ProjectorKind", "PROJECTOR_KINDS", "SamplerMode",
           "SAMPLER_MODES", "Rounding", "ROUNDINGS", "Precision", "PRECISIONS", "Extractor", "EXTRACTORS",
           "PartWeights", "PART_WEIGHTS", "ObjectiveKind", "OBJECTIVE_SAMPLERS", "TargetSource", "TARGET_SOURCES",
           "SamplePrecision", "SAMPLE_PRECISIONS"]

#: Flow-matching interpolation paths (``study.objectives.flow``).
FlowPath = Literal["linear", "cosine"]
PATHS: tuple[str, ...] = get_args(FlowPath)
#: How training draws its times (``flow.time``, ``meanflow.time``).
TimeSampling = Literal["uniform", "lognormal"]
TIME_SAMPLINGS: tuple[str, ...] = get_args(TimeSampling)
#: The alignment projector: REPA's MLP, a linear map, iREPA's convolution on the token grid.
ProjectorKind = Literal["mlp", "linear", "conv"]
PROJECTOR_KINDS: tuple[str, ...] = get_args(ProjectorKind)
#: Samplers: Euler-Maruyama SDE (REPA's FID sampler), Euler ODE, Heun (x-prediction models), MeanFlow's jumps.
SamplerMode = Literal["sde", "ode", "heun", "meanflow"]
SAMPLER_MODES: tuple[str, ...] = get_args(SamplerMode)
#: How samples in [-1, 1] become uint8: clamp then truncate (the authors' ``to(torch.uint8)``) or round to nearest.
Rounding = Literal["floor", "round"]
ROUNDINGS: tuple[str, ...] = get_args(Rounding)
#: Training precision: ``auto`` = bf16 autocast on GPU, fp32 on CPU.
Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: Feature extractors of generation metrics: InceptionV3 (FID), the small-data CNN (``fd_synthetic``) or the
#: layout-sensitive CNN for the synthetic shapes (``fd_layout``, study.evaluation.layout).
Extractor = Literal["inception", "synthetic", "layout"]
EXTRACTORS: tuple[str, ...] = get_args(Extractor)
#: Training objectives (``study.objectives``): velocity (flow matching), MeanFlow's average velocity, x-prediction.
ObjectiveKind = Literal["flow", "meanflow", "xpred"]
#: The sampler modes each objective's model can be sampled with (the first is its default family's FID sampler): a
#: MeanFlow network gives the instantaneous velocity at r = t, so the flow samplers run on it too; an x-prediction
#: model has no SDE sampler (JiT's are Euler and Heun).
OBJECTIVE_SAMPLERS: dict[str, tuple[str, ...]] = {
    "flow": ("sde", "ode"),
    "meanflow": ("meanflow", "ode", "sde"),
    "xpred": ("ode", "heun"),
}
#: Weights of a REPA-E part (LPIPS heads, the discriminator): the published file or an untrained stand-in.
PartWeights = Literal["pretrained", "random"]
PART_WEIGHTS: tuple[str, ...] = get_args(PartWeights)
#: Where training's alignment targets come from: the frozen encoder on every image, or its patch tokens cached once
#: (``repa-study data encode``).
TargetSource = Literal["online", "cache"]
TARGET_SOURCES: tuple[str, ...] = get_args(TargetSource)
#: The sampler's matmul precision: ``tf32`` (the run's ``tf32`` setting decides, as DiT/SiT/REPA sample: TF32 on in
#: every preset) or ``bf16`` autocast (a cheaper protocol, never the default; validate it with analyze --agreement).
SamplePrecision = Literal["tf32", "bf16"]
SAMPLE_PRECISIONS: tuple[str, ...] = get_args(SamplePrecision)
