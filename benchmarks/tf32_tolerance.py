"""How far scoring's numbers move when the encoder's matmuls run in TF32 instead of fp32, emulated on the CPU.

TF32 (Ampere/Hopper tensor cores) multiplies fp32 operands rounded to 10 mantissa bits and accumulates in fp32. Here
every matmul, linear layer, convolution and attention product of the encoder's forward gets its fp32 operands rounded
to nearest-even at 10 mantissa bits first (a ``TorchFunctionMode``); products and sums stay fp32. That is TF32's
arithmetic, not cuBLAS's exact kernel (accumulation order differs), so it bounds the effect to expect on a GPU;
``benchmarks/gpu_check.sh`` measures the real thing there.

It scores synthetic images (with their masks) with a full-size encoder and prints, fp32 vs TF32: the patch tokens'
and the probe input's (mean-pooled tokens) largest relative difference, and each spatial metric's largest per-image
and dataset-mean differences.

    .venv/bin/python benchmarks/tf32_tolerance.py [--encoders dinov2-vit-b dinov2-vit-l] [--images 32] [--weights random]
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def to_tf32(x):
    """fp32 rounded to nearest-even at TF32's 10 mantissa bits (other inputs unchanged)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        return x
    b = x.contiguous().view(torch.int32)
    b = (b + 0x0FFF + ((b >> 13) & 1)) & ~0x1FFF
    return b.view(torch.float32).view(x.shape)


class TF32(TorchFunctionMode):
    """Round the operands of every matmul-class op to TF32 (the sum stays fp32)."""

    TWO = {torch.matmul, torch.mm, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.einsum}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear or func in (F.conv1d, F.conv2d, F.conv3d):
            args = (to_tf32(args[0]), to_tf32(args[1]), *args[2:])
        elif func in (torch.addmm, torch.baddbmm):
            args = (args[0], to_tf32(args[1]), to_tf32(args[2]), *args[3:])
        elif func is torch.einsum:
            args = (args[0], *[to_tf32(a) for a in args[1:]])
        elif func in self.TWO:
            args = tuple(to_tf32(a) for a in args)
        elif func is F.scaled_dot_product_attention:
            return self._attention(*args, **kwargs)
        return func(*args, **kwargs)

    def _attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        w = torch.matmul(q, k.transpose(-2, -1)) * scale  # (rounded by __torch_function__)
        if attn_mask is not None:
            w = w + attn_mask if attn_mask.dtype != torch.bool else w.masked_fill(~attn_mask, float("-inf"))
        return torch.matmul(w.softmax(-1), v)


def measure(name: str, weights: str, n: int, seed: int) -> dict:
    import encoders
    from study.data import open_dataset
    from study.scoring import masks_to_grid, spatial_metrics

    torch.manual_seed(seed)
    enc = encoders.get_encoder(name, weights=weights)
    ds = open_dataset(f"synthetic:n={n},size=64,classes=10,seed={seed}")
    items = [ds[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    grid = (enc.spec.grid, enc.spec.grid)
    masks = masks_to_grid(torch.stack([it["mask"] for it in items]).bool(), grid)
    out = {}
    for label, mode in (("fp32", None), ("tf32", TF32())):
        feats = []
        for s in range(0, n, 8):
            if mode is None:
                feats.append(enc.encode(images[s:s + 8])["patch"])
            else:
                with mode:
                    feats.append(enc.encode(images[s:s + 8])["patch"])
        patch = torch.cat(feats)
        out[label] = {"patch": patch, "mean": patch.mean(1), **spatial_metrics(patch, masks, grid)}
    a, b = out["fp32"], out["tf32"]

    def rel(x, y):  # per row, relative to the row's norm
        return float(((x - y).norm(dim=-1) / y.norm(dim=-1).clamp_min(1e-12)).max())

    row = {"encoder": name, "weights": weights, "images": n, "patch_rel_max": rel(b["patch"], a["patch"]),
           "mean_rel_max": rel(b["mean"], a["mean"])}
    for m in ("lds", "cds", "srss", "rmsc"):
        x, y = b[m].double(), a[m].double()
        ok = ~torch.isnan(y)
        row[f"{m}_abs_max"] = float((x[ok] - y[ok]).abs().max())
        row[f"{m}_mean_rel"] = float(abs(x[ok].mean() - y[ok].mean()) / y[ok].mean().abs())
        row[f"{m}_mean"] = float(y[ok].mean())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=["dinov2-vit-b", "dinov2-vit-l"])
    ap.add_argument("--weights", default="random", help="random (full size, offline) or pretrained")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.encoders:
        print(json.dumps(measure(name, args.weights, args.images, args.seed)), flush=True)


if __name__ == "__main__":
    main()
