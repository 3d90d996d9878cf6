"""Alignment targets online or cached, costed both ways: what the frozen encoders cost run on every training image
(``encoder.targets: online``, the default) and what an encoder-target cache costs instead (``repa-study data
encode``: one forward per dataset image, then reads), per encoder, so ``sweep estimate`` can say which pays.

A cache pass is paid once per (encoder, weights, bf16, dataset, split), however many runs read it; reading it is
not GPU work but disk traffic: ``tokens x width x 2`` bytes per training image (bf16), which the estimate states as
the cache's size and the read rate a job needs at its modelled step time.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from jobs.cost.work import Work, split_size

__all__ = ["TargetCosts"]


class TargetCosts:
    """Collects, per encoder label, the online target hours of the plan's runs, the cache passes they would need,
    and the read rate cached runs would need; :meth:`summary` is the estimate's ``targets``."""

    def __init__(self, table: Any, thr: Any) -> None:
        self.table, self.thr = table, thr
        self.online: dict[str, float] = defaultdict(float)      # GPU-seconds of online target forwards
        self.passes: dict[tuple, dict[str, Any]] = {}           # cache key -> pass
        self.modes: dict[str, set[str]] = defaultdict(set)
        self.read: dict[str, float] = defaultdict(float)        # bytes per second a cached run reads (max)

    def pass_of(self, cfg: Any, label: str, precision: str) -> dict[str, Any]:
        """The cache pass of ``cfg``'s encoders on its data (registered once)."""
        key = (tuple(cfg.encoder.names), cfg.encoder.weights, cfg.encoder.bf16, str(cfg.data.spec), cfg.data.split)
        if key not in self.passes:
            n = split_size(str(cfg.data.spec), cfg.data.split, None)
            encs = [self.table.encoder(name, cfg.encoder.weights) for name in cfg.encoder.names]
            work: Work = {("target", precision): float(n) * sum(float(e["flops"]) for e in encs)}
            per_image = sum(int(e["tokens"]) * int(e["embed_dim"]) * 2 for e in encs)
            self.passes[key] = {"label": label, "work": work, "seconds": self.thr.seconds(work), "images": n,
                                "bytes": float(n) * per_image, "bytes_per_image": per_image, "used": False}
        return self.passes[key]

    def add_run(self, cfg: Any, label: str, target_work: Work, seconds_online: float, step_seconds: float) -> None:
        """One run's share: ``seconds_online`` (its target forwards, 0 when a group member already paid them),
        ``step_seconds`` the wall time of one of its steps without the encoder (what a cached run reads against)."""
        cached = cfg.encoder.targets == "cache"
        precision = next(iter(target_work))[1] if target_work else "bf16"
        p = self.pass_of(cfg, label, precision)
        self.online[label] += seconds_online
        self.modes[label].add("cache" if cached else "online")
        if cached:
            p["used"] = True
        if step_seconds > 0:
            self.read[label] = max(self.read[label], cfg.batch_size * p["bytes_per_image"] / step_seconds)

    def used_passes(self) -> list[dict[str, Any]]:
        return [p for p in self.passes.values() if p["used"]]

    def summary(self) -> dict[str, Any]:
        out = {}
        for label in sorted(self.modes):
            passes = [p for p in self.passes.values() if p["label"] == label]
            out[label] = {"mode": "+".join(sorted(self.modes[label])),
                          "online_gpu_hours": self.online[label] / 3600,
                          "cache_gpu_hours": sum(p["seconds"] for p in passes) / 3600,
                          "cache_tb": sum(p["bytes"] for p in passes) / 1e12,
                          "read_gb_per_s": self.read[label] / 1e9}
        return out
