"""How close the cheaper updates and the cached targets of issue 18 stay to what the code computed before (CPU).

- EMA: one ``torch._foreach_lerp_`` (``ema + (1 - decay) (p - ema)``) vs the previous ``ema * decay + p * (1 - decay)``
  per parameter: the largest relative difference after one update, and both against a float64 EMA after ``--ema-steps``
  updates (the previous form's float32 ``decay`` and ``1 - decay`` do not sum to 1, so it drifts); differences are
  relative to each tensor's largest value (elementwise ratios of values near 0 say nothing);
- optimizer: the fused AdamW with the clip as its ``grad_scale`` vs the previous ``clip_grad_norm_`` + AdamW (the
  single-tensor loop on CPU), on a SiT-B/2-shaped parameter set's first tensors with random gradients, ``--opt-steps``
  steps: the largest parameter difference, relative to the largest parameter and to the largest change the steps made;
- cached targets: bf16 patch tokens (``repa-study data encode``) vs the online encoder's float32 ones (the encoder
  at full size, random init): largest absolute difference and relative difference of each token vector.

    .venv/bin/python benchmarks/update_equality.py [--ema-steps 10000] [--opt-steps 200]
"""
from __future__ import annotations

import argparse
import json

import torch


def ema(steps: int) -> dict:
    from study.training import update_ema

    torch.manual_seed(0)
    shapes = [(1152, 1152), (1152,)]
    model = [torch.randn(s) * 0.02 for s in shapes]
    new = [torch.randn(s) * 0.02 for s in shapes]
    old, exact = [e.clone() for e in new], [e.double() for e in new]
    first = None
    for i in range(steps):
        for p in model:
            p.add_(torch.randn_like(p) * 1e-3)
        update_ema(torch.nn.ParameterList(new), torch.nn.ParameterList(model), 0.9999)
        for e, p in zip(old, model):
            e.mul_(0.9999).add_(p, alpha=1 - 0.9999)
        for e, p in zip(exact, model):
            e.mul_(0.9999).add_(p.double(), alpha=1 - 0.9999)
        if i == 0:  # relative to each tensor's scale (elementwise ratios of values near 0 mean nothing)
            first = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(new, old))
    rel = lambda xs: max(float((x.double() - y).norm() / y.norm()) for x, y in zip(xs, exact))  # noqa: E731
    return {"updates": steps, "one_update_max_abs_diff_over_max_abs": first, "lerp_vs_float64_rel": rel(new),
            "previous_vs_float64_rel": rel(old),
            "lerp_vs_previous_max_abs": max(float((a - b).abs().max()) for a, b in zip(new, old))}


def optimizer(steps: int) -> dict:
    from study.config import load_train_config
    from study.training import adamw

    cfg = load_train_config("imagenet")
    torch.manual_seed(0)
    w0 = [torch.randn(768, 768) * 0.02, torch.randn(3072, 768) * 0.02, torch.randn(768)]
    out = {}
    for kind in ("previous", "fused"):
        ps = [torch.nn.Parameter(w.clone()) for w in w0]
        opt = (torch.optim.AdamW(ps, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                                 weight_decay=cfg.optim.weight_decay) if kind == "previous" else adamw(ps, cfg)[0])
        g = torch.Generator().manual_seed(1)
        for _ in range(steps):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g) * 0.05
            if kind == "previous":
                torch.nn.utils.clip_grad_norm_(ps, cfg.optim.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in ps])
                opt.found_inf = torch.zeros(())
                opt.grad_scale = 1.0 / torch.clamp(cfg.optim.grad_clip / (norm + 1e-6), max=1.0)
            opt.step()
        out[kind] = [p.detach() for p in ps]
    moved = max(float((a - w).abs().max()) for a, w in zip(out["previous"], w0))
    return {"steps": steps, "lr": cfg.optim.lr, "max_abs_diff": max(float((a - b).abs().max())
                                                                    for a, b in zip(out["fused"], out["previous"])),
            "max_abs_update": moved, "max_abs_diff_over_max_abs_update": max(
                float((a - b).abs().max()) for a, b in zip(out["fused"], out["previous"])) / moved,
            "max_abs_diff_over_max_abs_param": max(float((a - b).abs().max() / b.abs().max())
                                                   for a, b in zip(out["fused"], out["previous"]))}


def targets(images: int) -> dict:
    import encoders
    from study.data import open_dataset

    enc = encoders.get_encoder("dinov2-vit-b", weights="random")
    ds = open_dataset(f"synthetic:n={images},size=64,classes=10,seed=0")
    x = torch.stack([ds[i]["image"] for i in range(images)])
    online = enc.encode(x)["patch"]
    cached = online.to(torch.bfloat16).float()  # what the cache stores and training reads back
    rel = ((cached - online).norm(dim=-1) / online.norm(dim=-1)).max()
    return {"encoder": "dinov2-vit-b (random init)", "images": images,
            "max_abs_diff": float((cached - online).abs().max()), "max_token_rel_diff": float(rel),
            "bf16_unit_roundoff": 2.0 ** -9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ema-steps", type=int, default=2_000)
    ap.add_argument("--opt-steps", type=int, default=200)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"ema": ema(args.ema_steps)}), flush=True)
    print(json.dumps({"optimizer": optimizer(args.opt_steps)}), flush=True)
    print(json.dumps({"targets": targets(args.images)}), flush=True)


if __name__ == "__main__":
    main()
