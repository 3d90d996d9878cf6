"""The GPUs the estimate knows: datasheet dense peaks per precision (FLOPs are divided by peak x MFU)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GpuSpec", "GPUS", "PRECISIONS"]

PRECISIONS = ("bf16", "tf32", "fp32")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    peak_tflops: dict[str, float]  # dense, no sparsity, per precision
    hbm_tbps: float = 3.35         # memory bandwidth (datasheet), TB/s: what the per-step fixed costs are bound by
    allreduce_gbps: float = 350.0  # all-reduce bus bandwidth between the GPUs of a node (NVLink), GB/s: an assumption


# Vendor datasheet peaks (dense) and memory bandwidths: H100 SXM5 and H200 SXM share the Hopper compute (the H200 has
# more and faster memory); A100 SXM4 80GB. The all-reduce bus bandwidths are typical NCCL figures within an 8-GPU
# NVLink node (H100/H200: NVLink 4, 900 GB/s bidirectional; A100: NVLink 3, 600 GB/s), not datasheet values.
GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec("NVIDIA H100 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}, 3.35, 350.0),
    "h200": GpuSpec("NVIDIA H200 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}, 4.8, 350.0),
    "a100": GpuSpec("NVIDIA A100 SXM", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}, 2.04, 230.0),
}
