"""Measured MFU: the output of ``benchmarks/gpu_check.py`` on one GPU kind (schema ``repa-study/gpu_check/1``).

The shipped files are package data, ``jobs/cost/calibration/<gpu>.json``; the estimate uses the one of its GPU
when present (or the file given with ``--calibration``), else the default MFU.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from jobs.cost.gpus import GPUS, GpuSpec

__all__ = ["CALIBRATION_DIR", "CALIBRATION_SCHEMA", "Calibration", "load_calibration"]

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
CALIBRATION_SCHEMA = "repa-study/gpu_check/1"
#: The sections of a gpu_check output, each a kind of work of the estimate (``target`` uses ``train``'s records).
MEASURED = ("train", "sample", "decode", "extract", "encode")


@dataclass
class Calibration:
    """MFU measured on one GPU kind, per kind of work (records of benchmarks/gpu_check.py)."""

    path: str
    gpu: str
    device_name: str
    records: dict[str, list[dict[str, Any]]]  # kind -> [{mfu, model?, precision?, compile?, ...}]

    def mfu(self, kind: str, *, model: str | None = None, compile: bool | None = None,
            precision: str | None = None) -> tuple[float, str] | None:
        """The median measured MFU of the closest records (same model and compile flag, else same model, else all)."""
        group = {"target": "train"}.get(kind, kind)
        recs = [r for r in self.records.get(group, []) if r.get("mfu")]
        if precision is not None and group != "train":
            recs = [r for r in recs if r.get("precision") == precision] or recs
        if not recs:
            return None
        tiers = [("same model and compile", lambda r: r.get("model") == model and r.get("compile") == compile),
                 ("same model", lambda r: r.get("model") == model), ("all records", lambda r: True)]
        for label, keep in tiers:
            chosen = [r for r in recs if keep(r)]
            if chosen:
                how = label if model is not None else "all records"
                return statistics.median(r["mfu"] for r in chosen), f"measured ({how}, {len(chosen)} records)"
        return None  # pragma: no cover - the last tier keeps everything


def _record_mfu(rec: Mapping[str, Any], gpu: GpuSpec) -> float | None:
    """MFU of a record: images/s x seconds-at-peak per image (its work per precision over the peak)."""
    rate, work = rec.get("images_per_s"), rec.get("work")
    if not rate or not work:
        return None
    at_peak = sum(float(flops) / (gpu.peak_tflops[p] * 1e12) for p, flops in work.items() if p in gpu.peak_tflops)
    return rate * at_peak if at_peak > 0 else None


def load_calibration(gpu: str, path: str | Path | None = None) -> Calibration | None:
    """gpu_check output for ``gpu``: ``path``, else ``CALIBRATION_DIR/<gpu>.json`` (None when absent)."""
    explicit = path is not None
    file = Path(path) if explicit else CALIBRATION_DIR / f"{gpu}.json"
    if not file.is_file():
        if explicit:
            raise ValueError(f"calibration file {file} not found (write one with benchmarks/gpu_check.sh on that GPU)")
        return None
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"calibration file {file} is not JSON ({exc}); rerun benchmarks/gpu_check.sh") from None
    if data.get("schema") != CALIBRATION_SCHEMA:
        raise ValueError(f"{file}: schema {data.get('schema')!r}, expected {CALIBRATION_SCHEMA!r} (gpu_check output)")
    if data.get("dry_run"):
        raise ValueError(f"{file} is a --dry-run (CPU) output: its figures say nothing about a GPU")
    if data.get("gpu") != gpu:
        raise ValueError(f"{file} was measured on {data.get('gpu')!r} ({data.get('device_name')}), not {gpu!r}; "
                         f"pass --gpu {data.get('gpu')} or another calibration file")
    spec = GPUS[gpu]
    records: dict[str, list[dict[str, Any]]] = {}
    for kind in MEASURED:
        rows = data.get(kind) or []
        rows = [rows] if isinstance(rows, dict) else rows
        kept = []
        for rec in rows:
            if rec.get("skipped") or rec.get("error"):
                continue
            mfu = _record_mfu(rec, spec)
            if mfu:
                kept.append({**rec, "mfu": mfu})
        records[kind] = kept
    return Calibration(str(file), gpu, str(data.get("device_name", "")), records)
