"""Sustained throughput per kind of work: the GPU's datasheet peak at the work's precision x an MFU, the default
(:data:`DEFAULT_MFU`), the one given (``--mfu``), or the one measured on that GPU (a :class:`Calibration`)."""
from __future__ import annotations

from typing import Any

from jobs.cost.calibration import Calibration
from jobs.cost.gpus import GpuSpec
from jobs.cost.work import KIND_DOC, Work

__all__ = ["DEFAULT_MFU", "Throughput"]

DEFAULT_MFU = 0.35


class Throughput:
    """Seconds of work on ``gpu``; ``used`` records each (kind, model, precision) rate used and where its MFU came
    from (the estimate's ``throughput``)."""

    def __init__(self, gpu: GpuSpec, mfu: float | None, calibration: Calibration | None) -> None:
        self.gpu = gpu
        self.default = mfu if mfu is not None else DEFAULT_MFU
        self.explicit_mfu = mfu is not None
        self.calibration = calibration
        self.used: dict[str, dict[str, Any]] = {}

    def mfu(self, kind: str, precision: str, model: str | None = None, compile: bool | None = None) -> float:
        source = f"--mfu {self.default}" if self.explicit_mfu else f"default MFU {self.default}"
        mfu = self.default
        if self.calibration is not None and not self.explicit_mfu:
            hit = self.calibration.mfu(kind, model=model, compile=compile, precision=precision)
            if hit is not None:
                mfu, how = hit
                source = f"{how} in {self.calibration.path}"
        label = kind if model is None else f"{kind} {model}"
        peak = self.gpu.peak_tflops[precision]
        self.used.setdefault(f"{label} ({precision})", {
            "kind": kind, "what": KIND_DOC[kind], "model": model, "precision": precision, "peak_tflops": peak,
            "mfu": round(mfu, 4), "sustained_tflops": round(peak * mfu, 1), "source": source})
        return mfu

    def seconds(self, work: Work, model: str | None = None, compile: bool | None = None) -> float:
        total = 0.0
        for (kind, prec), flops in work.items():
            per_model = model if kind in ("train", "target", "sample") else None
            rate = self.gpu.peak_tflops[prec] * 1e12 * self.mfu(kind, prec, per_model, compile)
            total += flops / rate
        return total
