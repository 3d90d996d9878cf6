"""The GPUs the estimate knows: datasheet dense peaks per precision (FLOPs are divided by peak x MFU)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GpuSpec", "GPUS", "PRECISIONS"]

PRECISIONS = ("bf16", "tf32", "fp32")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    peak_tflops: dict[str, float]  # dense, no sparsity, per precision


# Vendor datasheet peaks (dense): H100 SXM5 and H200 SXM share the Hopper compute; A100 SXM4.
GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec("NVIDIA H100 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    "h200": GpuSpec("NVIDIA H200 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    "a100": GpuSpec("NVIDIA A100 SXM", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
}
