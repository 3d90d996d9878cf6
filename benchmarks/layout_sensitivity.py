"""How much each small-data extractor's Fréchet distance sees of an image's layout (issue 20).

Reference: the training split of the miniature's synthetic data. Sets scored against it: held-out real images (the
floor: sampling noise), the same images with their 2x2 quadrants scrambled, rolled by a quarter of the image (every
object moved, nothing else changed), and with each object replaced by a soft blob of its colour at its place and
size (what an under-trained generator paints). A generation metric for the spatial-structure question must put the
scrambled, moved and blob sets far above the real floor. Trains both extractors from scratch (no cache), so the
times include training.

    .venv/bin/python benchmarks/layout_sensitivity.py [--spec synthetic:n=2048,size=32,classes=10,seed=0] [--n 1024]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from study.data import SyntheticDataset, open_dataset
from study.evaluation import (ExtractorConfig, LayoutConfig, LayoutExtractor, SyntheticExtractor, compute_statistics,
                              extract_features, fd, train_layout_cnn, train_small_cnn)
from study.evaluation.layout import layout_training_set


def scrambled(images: torch.Tensor) -> torch.Tensor:
    b, c, h, w = images.shape
    tiles = images.reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5).reshape(b, 4, c, h // 2, w // 2)
    tiles = tiles[:, [3, 2, 0, 1]]
    return tiles.reshape(b, 2, 2, c, h // 2, w // 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def rolled(images: torch.Tensor) -> torch.Tensor:
    return images.roll(shifts=(images.shape[-2] // 4, images.shape[-1] // 4), dims=(-2, -1))


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def blobs(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    x = images.float()
    m = masks.float()[:, None]
    colour = (x * m).sum((2, 3), keepdim=True) / m.sum((2, 3), keepdim=True).clamp_min(1)
    soft = _blur(m, 2.5)
    base = torch.where(m > 0, _blur(x, 3.0), x)
    return (soft * colour + (1 - soft) * base).round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default="synthetic:n=2048,size=32,classes=10,seed=0")
    ap.add_argument("--n", type=int, default=1024, help="held-out images per scored set")
    args = ap.parse_args()
    train = open_dataset(args.spec, "train")
    val = SyntheticDataset(args.n, train.image_size, train.num_classes, train.base_seed, "val")
    sets = {"real": val.images, "scrambled": scrambled(val.images), "rolled": rolled(val.images),
            "blobs": blobs(val.images, val.masks)}

    t0 = time.perf_counter()
    small = SyntheticExtractor(train_small_cnn(train.images, train.labels, train.num_classes, ExtractorConfig()), "b")
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = LayoutConfig()
    images, labels, masks, classes = layout_training_set(train, cfg.n_train, cfg.seed)
    layout = LayoutExtractor(train_layout_cnn(images, labels, masks, classes, cfg), "b")
    t_layout = time.perf_counter() - t0

    for name, ex, seconds in (("synthetic", small, t_small), ("layout", layout, t_layout)):
        with torch.no_grad():
            acc = float((ex.model(val.images).argmax(1) == val.labels).float().mean())
        ref = compute_statistics(extract_features(ex, [train.images])["pool"], "b/pool")
        out = {"extractor": name, "train_seconds": round(seconds, 1), "val_top1": round(acc, 4),
               "dim": int(ref.mu.shape[0])}
        for key, imgs in sets.items():
            out[f"fd_{key}"] = round(fd(compute_statistics(extract_features(ex, [imgs])["pool"], "b/pool"), ref), 2)
        trace = float(ref.sigma.trace())  # the features' total variance: FDs relative to it compare extractors
        out["trace"] = round(trace, 2)
        out.update({f"rel_{k}": round(out[f"fd_{k}"] / trace, 4) for k in sets})
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
