"""Benchmark generation-metric costs: Fréchet distance at 2048-d (ours vs scipy's sqrtm route) and feature
extraction images/s (Inception with stand-in weights, and the small synthetic extractor).

    .venv/bin/python benchmarks/fid.py                    # defaults: d=2048, N=5000, CPU
    .venv/bin/python benchmarks/fid.py --skip-sqrtm --device cuda

Inception timings use random, BN-calibrated weights (same architecture and cost as the real ones; the numbers they
produce are meaningless, only their speed is measured). Prints one line per figure.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def _time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_frechet(dim: int, n: int, repeats: int, skip_sqrtm: bool) -> None:
    from study.evaluation.fid import compute_statistics, frechet_distance, frechet_distance_sqrtm

    rng = np.random.default_rng(0)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    t0 = time.perf_counter()
    a = compute_statistics(rng.standard_normal((n, dim)).astype(np.float32))
    b = compute_statistics((rng.standard_normal((n, dim)) @ mix + 0.1).astype(np.float32))
    print(f"statistics (np.cov float64) of 2 x {n} x {dim}: {time.perf_counter() - t0:.2f} s")
    t_ours, v_ours = _time(lambda: frechet_distance(a.mu, a.sigma, b.mu, b.sigma), repeats)
    print(f"frechet_distance (eigh route), d={dim}, N={n}: {t_ours:.2f} s (best of {repeats}); FD={v_ours:.6f}")
    if not skip_sqrtm:
        t_sq, v_sq = _time(lambda: frechet_distance_sqrtm(a.mu, a.sigma, b.mu, b.sigma), 1)
        print(f"frechet_distance_sqrtm (scipy.linalg.sqrtm, ADM/TTUR route): {t_sq:.2f} s; FD={v_sq:.6f}; "
              f"|diff|={abs(v_sq - v_ours):.2e}; speed-up {t_sq / t_ours:.1f}x")


def bench_extraction(device: str, sizes: list[int], batch: int, batches: int) -> None:
    import tempfile
    from pathlib import Path

    from study.evaluation import SmallCNN, SyntheticExtractor
    from study.evaluation.inception import InceptionExtractor, random_inception_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "random-inception.pth"
        torch.save(random_inception_state_dict(calibration_images=8, size=64), weights)
        extractors = {"inception": InceptionExtractor(weights, device=device),
                      "synthetic": SyntheticExtractor(SmallCNN(10).to(device), "bench")}
        for name, ex in extractors.items():
            if name == "synthetic" and device != "cpu":
                continue  # SyntheticExtractor runs on CPU tensors
            for size in sizes:
                x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
                ex(x)  # warm-up
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(batches):
                    ex(x)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t
                print(f"features {name:9s} {size:3d}px batch {batch:3d} on {device}: "
                      f"{batch * batches / dt:8.1f} images/s ({dt / (batch * batches) * 1000:.1f} ms/image)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--n", type=int, default=5000, help="feature vectors per set for the statistics")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-sqrtm", action="store_true", help="skip scipy's sqrtm (tens of seconds at 2048-d)")
    p.add_argument("--skip-features", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 256])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, numpy {np.__version__}")
    bench_frechet(args.dim, args.n, args.repeats, args.skip_sqrtm)
    if not args.skip_features:
        bench_extraction(args.device, args.sizes, args.batch, args.batches)


if __name__ == "__main__":
    main()
