"""Runs trained as one group share one data pipeline and one forward of the frozen encoders per step, so everything
that decides which images a step sees and what the encoders make of them must be the same in every run of it."""
from __future__ import annotations

from study.config import ConfigError, TrainConfig

__all__ = ["SHARED_KEYS", "check_group"]

SHARED_KEYS = ("data", "encoder", "batch_size", "grad_accum", "seed", "steps", "device", "threads")


def check_group(cfgs: list[TrainConfig]) -> None:
    """Raise ``ConfigError`` unless ``cfgs`` can train as one group (:data:`SHARED_KEYS` equal)."""
    if not cfgs:
        raise ConfigError("a training group needs at least one config")
    first = cfgs[0].model_dump(mode="json")
    for i, cfg in enumerate(cfgs[1:], start=1):
        other = cfg.model_dump(mode="json")
        differ = [k for k in SHARED_KEYS if other[k] != first[k]]
        if differ:
            raise ConfigError(f"runs 0 and {i} of the group differ in {', '.join(differ)}: runs trained together "
                              f"share the data pipeline and the encoder forward, so {', '.join(SHARED_KEYS)} must "
                              "be equal")
