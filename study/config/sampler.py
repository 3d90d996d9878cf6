"""The sampler's settings as one object, passed whole from the YAML/CLI to the sampler (no torch here).

Previews during training, ``repa-study sample``, ``repa-study eval fid`` and a sweep's FID settings all describe the
same things (integrator, steps, guidance, seed, and how the output becomes uint8); :class:`SamplerSettings` is their
one type. The YAML stays flat where it was (a sweep's ``fid:`` section, a run's ``preview:`` section), and those
sections hand out a ``SamplerSettings`` (``FidSettings.sampler``, ``PreviewSection.sampler``), so evaluation ids and
config hashes are unchanged.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator

from study.config.base import StrictModel
from study.config.vocab import SAMPLER_MODES, Rounding, SamplePrecision, SamplerMode

__all__ = ["SamplerSettings", "SAMPLER_MODES"]

#: sde / ode for flow models (ode is Euler, for JiT too), heun for an x-prediction model (JiT), meanflow for
#: MeanFlow's average-velocity jumps (num_steps = NFE); see study.sampling.sample.


class SamplerSettings(StrictModel):
    """How samples are drawn: the integrator, its steps, classifier-free guidance (scale, and the interval of t where
    it applies) and the seed of the per-sample noise generators."""

    mode: SamplerMode = "sde"  # Euler-Maruyama SDE (REPA's FID sampler), Euler ODE;
    # heun (x-prediction models, JiT), meanflow (MeanFlow's jumps): SAMPLER_MODES
    num_steps: int = Field(250, ge=1)
    cfg_scale: float = Field(1.0, ge=0)     # 1.0: no guidance
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    # model output -> uint8: "floor" = clamp(127.5 (x + 1)) then truncate, as the authors' and ADM's sampling code do
    # (paper-comparable FIDs); "round" = round to nearest (on average half a grey level brighter)
    rounding: Rounding = "floor"
    # the sampler's matmuls: tf32 (the run's tf32 setting, as DiT/SiT/REPA sample) or bf16 autocast, a cheaper
    # protocol that is never the default (adm-50k-sde250-bf16; validate it with `analyze --agreement`)
    precision: SamplePrecision = "tf32"

    @field_validator("guidance_interval")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError(f"guidance_interval {v} must satisfy 0 <= low <= high <= 1")
        return v

    def dir_name(self, step: int) -> str:
        """The sample directory of checkpoint ``step`` under these settings (``RUN_DIR/samples/<name>``)."""
        gi = "" if tuple(self.guidance_interval) == (0.0, 1.0) else \
            f"-gi{self.guidance_interval[0]:g}_{self.guidance_interval[1]:g}"
        rounding = "" if self.rounding == "floor" else f"-{self.rounding}"
        precision = "" if self.precision == "tf32" else f"-{self.precision}"
        return (f"step{step:07d}-{self.mode}-steps{self.num_steps}-cfg{self.cfg_scale:g}{gi}-seed{self.seed}{rounding}"
                f"{precision}")

    def manifest(self) -> dict[str, Any]:
        """The keys a sample manifest records (and ``find_samples`` matches) for these settings."""
        out = {"mode": self.mode, "num_steps": self.num_steps, "cfg_scale": self.cfg_scale, "seed": self.seed,
               "guidance_interval": [float(g) for g in self.guidance_interval], "rounding": self.rounding}
        if self.precision != "tf32":  # (manifests written before the setting lack the key: tf32)
            out["precision"] = self.precision
        return out

    def row(self) -> dict[str, Any]:
        """The ``generation``-table columns that name these settings."""
        return {"sampler_mode": self.mode, "sampler_steps": int(self.num_steps), "cfg_scale": float(self.cfg_scale),
                "sample_seed": int(self.seed),
                "guidance_interval": json.dumps([float(g) for g in self.guidance_interval]),
                "sample_rounding": self.rounding,
                **({"sampler_precision": self.precision} if self.precision != "tf32" else {})}
