"""Linear-probe cost: time one loss+gradient evaluation, count L-BFGS evaluations, extrapolate to ImageNet-1K.

1. Times one full-batch evaluation (forward logits, cross-entropy, weight gradient; 4 N D C FLOPs) at
   ``--n x --dim x --classes`` on this machine and reports the achieved FLOP rate.
2. Runs the whole probe (L2 sweep on a hold-out + refit) on a synthetic problem of overlapping Gaussian classes and
   reports how many evaluations it took.
3. Extrapolates to 1.28M x 1536 features, 1000 classes, at a FLOP rate you give (``--gpu-tflops``; default 40, about
   60 % of an H100 SXM's 67 TFLOP/s fp32 peak; TF32 would be several times faster).

    .venv/bin/python benchmarks/probe.py [--n 20000] [--dim 1536] [--classes 1000] [--gpu-tflops 40]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from study.scoring import linear_probe

SPREAD = 8.0  # noise sd per dimension: overlapping classes, so the probe has a real optimum to find


def time_evaluation(n: int, dim: int, classes: int, repeats: int = 3) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    w = torch.zeros(dim, classes, requires_grad=True)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        w.grad = None
        F.cross_entropy(x @ w, y).backward()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def count_evaluations(n: int, dim: int, classes: int) -> tuple[int, float, float]:
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(classes, dim, generator=g)
    def draw(m):
        y = torch.randint(0, classes, (m,), generator=g)
        return (centres[y] + SPREAD * torch.randn(m, dim, generator=g)).half(), y
    xt, yt = draw(n)
    xv, yv = draw(n // 4)
    res = linear_probe(xt, yt, xv, yv, device="cpu")
    return res.iterations, res.seconds, res.top1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--probe-n", type=int, default=10000)
    p.add_argument("--probe-dim", type=int, default=256)
    p.add_argument("--probe-classes", type=int, default=100)
    p.add_argument("--gpu-tflops", type=float, default=40.0)
    args = p.parse_args()

    t = time_evaluation(args.n, args.dim, args.classes)
    flops = 4.0 * args.n * args.dim * args.classes
    print(f"one evaluation at {args.n} x {args.dim} x {args.classes} on CPU ({torch.get_num_threads()} threads): "
          f"{t:.3f} s = {flops / t / 1e9:.0f} GFLOP/s")
    evals, seconds, top1 = count_evaluations(args.probe_n, args.probe_dim, args.probe_classes)
    print(f"full probe (6 L2 values + refit) at {args.probe_n} x {args.probe_dim} x {args.probe_classes}: "
          f"{evals} evaluations, {seconds:.1f} s, val top-1 {top1:.3f}")
    big = 4.0 * 1.28e6 * 1536 * 1000
    per_eval = big / (args.gpu_tflops * 1e12)
    cap = 7 * 300 * 1.25  # max_iter 300 per fit, 7 fits, ~1.25 evaluations per iteration (strong Wolfe)
    print(f"ImageNet-1K (1.28M x 1536, 1000 classes): {big / 1e12:.1f} TFLOP per evaluation = {per_eval:.2f} s at "
          f"{args.gpu_tflops:g} TFLOP/s; {evals} evaluations (as measured above) -> {evals * per_eval / 60:.1f} min; "
          f"the iteration cap ({cap:.0f}) -> {cap * per_eval / 60:.1f} min")


if __name__ == "__main__":
    main()
