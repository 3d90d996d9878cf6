"""Time ``spatial_metrics`` (one Gram per image shared by all four metrics) against a per-metric reference loop.

The reference computes a fresh Gram matrix for each metric, fits CDS distance by distance and loops over the images
for SRSS, the way a direct transcription of the definitions does. Both must agree to 1e-5.

    .venv/bin/python benchmarks/spatial_metrics.py [--batch 64] [--grid 16] [--dim 1024] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from study.scoring.spatial import _distances, spatial_metrics


def _gram(feats: torch.Tensor) -> torch.Tensor:
    xn = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return xn @ xn.transpose(1, 2)


def reference(feats: torch.Tensor, masks: torch.Tensor, far: int = 6, dmax: int = 8, near: int = 1) -> dict:
    h = w = int(feats.shape[1] ** 0.5)
    dist = _distances(h, w)
    k = _gram(feats)  # LDS
    lds = k[:, dist == 1].mean(1) - k[:, dist >= far].mean(1)
    k = _gram(feats)  # CDS
    g = torch.stack([k[:, dist == d].mean(1) for d in range(1, dmax + 1)], dim=1)
    x = torch.arange(1, dmax + 1, dtype=g.dtype)
    x = x - x.mean()
    cds = -((g - g.mean(1, keepdim=True)) * x).sum(1) / (x * x).sum()
    xn = feats / feats.norm(dim=-1, keepdim=True)  # RMSC
    rmsc = (xn - xn.mean(1, keepdim=True)).pow(2).sum(-1).mean(1).sqrt()
    srss = []
    for b in range(feats.shape[0]):  # SRSS, image by image
        kb = _gram(feats[b:b + 1])[0]
        fg = masks[b]
        pos = (dist >= 1) & (dist <= near) & fg[None, :]
        neg = (dist >= far) & ~fg[None, :]
        npos, nneg = pos.sum(1), neg.sum(1)
        ok = fg & (npos > 0) & (nneg > 0)
        if fg.sum() < 2 or (~fg).sum() < 1 or not ok.any():
            srss.append(torch.tensor(float("nan")))
            continue
        diff = (kb * pos).sum(1) / npos.clamp_min(1) - (kb * neg).sum(1) / nneg.clamp_min(1)
        srss.append(diff[ok].mean())
    return {"lds": lds, "cds": cds, "srss": torch.stack(srss), "rmsc": rmsc}


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t = args.grid * args.grid
    feats = torch.randn(args.batch, t, args.dim) + 0.5 * torch.randn(args.batch, 1, args.dim)
    masks = torch.zeros(args.batch, args.grid, args.grid, dtype=torch.bool)
    masks[:, args.grid // 4: 3 * args.grid // 4, args.grid // 4: 3 * args.grid // 4] = True
    masks = masks.reshape(args.batch, t)

    ours = spatial_metrics(feats, masks)
    ref = reference(feats, masks)
    worst = max(float((ours[k].double() - ref[k].double()).abs().nan_to_num(0).max()) for k in ref)
    fast = _time(lambda: spatial_metrics(feats, masks), args.repeats)
    slow = _time(lambda: reference(feats, masks), args.repeats)
    f, s = statistics.median(fast), statistics.median(slow)
    print(f"spatial_metrics  B={args.batch} grid={args.grid}x{args.grid} D={args.dim} on CPU, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats}")
    print(f"  shared Gram (spatial_metrics): {f * 1000:8.1f} ms")
    print(f"  per-metric reference loop:     {s * 1000:8.1f} ms")
    print(f"  speed-up: {s / f:.2f}x    max |difference|: {worst:.2e}  ({'ok' if worst < 1e-5 else 'MISMATCH'})")


if __name__ == "__main__":
    main()
