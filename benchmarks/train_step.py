"""Training-step cost of REPA vs iREPA (and REPA-E vs iREPA-E), side by side: ms per optimizer step, images/s.

One step = frozen encoder on the clean images + SiT forward/backward with the projector and both losses + gradient
clipping + AdamW (fused, the clip as its grad_scale) + EMA (one foreach lerp), the code the training loop runs (``study.objectives.step.TrainingStep``), on synthetic tensors
(no data loading). Latent models get random stored SD-VAE moments (as ``repa-study data prepare`` writes them), pixel
models random uint8 images.

A REPA-E method (``repa-e``, ``irepa-e``: a method preset with ``method.repae``) adds what its loop adds
(``study.repae.RepaeStep``): the VAE forward (encoder + decoder), L1 + LPIPS + KL + PatchGAN terms, the VAE's
alignment pass through the frozen SiT, the discriminator's loss, and the VAE's and discriminator's clipping, AdamW
and the BN EMA. Its VAE is random-init with the real architecture (the SD-VAE's at 256 px; the tiny /2 VAE of the
smoke preset at 32 px, with SiT patch 1), LPIPS and the discriminator random-init too: the cost, not the weights.

    .venv/bin/python benchmarks/train_step.py --model smoke --batch 16 --device cpu           # the CPU machine
    .venv/bin/python benchmarks/train_step.py --model SiT-XL/2 --batch 64 --weights random    # a GPU (bf16)
    .venv/bin/python benchmarks/train_step.py --model SiT-XL/2 --batch 32 --methods repa-e irepa-e

``--variants flow meanflow meanflow-cfg jit`` times the training variants too: MeanFlow (its JVP pass; ``-cfg``
adds the two guidance forwards of kappa > 0) on the same SiT, and JiT (x-prediction; ``--jit-model``, pixel space).
"""
from __future__ import annotations

import argparse
import time
from copy import deepcopy

import torch

from study.common import resolve_device
from study.config import load_train_config
from study.data import IdentityCodec, LatentStats
from study.objectives import TrainingStep
from study.run import build_denoiser
from study.training import adamw, autocast_for, update_ema


class _LatentShape:
    """Stands in for the SD-VAE codec: stored moments are sampled and normalised; the VAE itself never runs."""

    channels, downsample, id = 4, 8, "sdvae-shape-only"
    stats = LatentStats.default(4)


def _sd_vae_architecture():
    """stabilityai/sd-vae-ft-mse's AutoencoderKL layout (f8, 4 channels), random-init: its cost, not its weights."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                         norm_num_groups=32, sample_size=256)


VARIANTS = {"flow": [], "meanflow": ["meanflow.kappa=0.0"], "meanflow-cfg": ["meanflow.kappa=0.5"],
            "jit": ["xpred.t_eps=0.05"]}


def bench(method: str, args: argparse.Namespace, device: torch.device, enc=None,
          variant: str = "flow") -> dict[str, float]:
    """Median step time of ``method`` in ``variant``; ``enc``: an already built encoder for ``args.encoder`` (else
    built here)."""
    jit = variant == "jit"
    latent = args.image_size == 256 and args.codec == "sd-vae" and not jit
    model_size = getattr(args, "jit_model", "JiT-smoke") if jit else args.model
    overrides = [f"method={method}", f"model.size={model_size}", f"encoder.name={args.encoder}",
                 f"encoder.weights={args.weights}", f"precision={args.precision}", f"batch_size={args.batch}"]
    if "repae" in (_method_section(method) or {}):
        return bench_repae(overrides, args, device, latent, enc)
    cfg = load_train_config("tiny", [*overrides, *VARIANTS[variant],
                                     *(["model.patch_size=null"] if "/" in model_size else [])])
    import encoders

    codec = _LatentShape() if latent else IdentityCodec()
    if jit and args.image_size % 16:
        raise SystemExit(f"JiT needs a 16x16 grid: --image-size {args.image_size} with --jit-model {model_size}")
    enc = enc or encoders.get_encoder(args.encoder, weights=args.weights, device=device)
    images = torch.randint(0, 256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8,
                           device=device)
    dim = enc.encode(images[:1])["patch"].shape[-1]
    torch.manual_seed(0)
    model = build_denoiser(cfg, image_size=args.image_size, num_classes=1000, codec=codec, encoder_dims=[dim]).to(device)
    ema = deepcopy(model.sit).requires_grad_(False)
    opt, fused = adamw(model.parameters(), cfg)
    fwd = torch.compile(model) if args.compile else model
    step = TrainingStep(cfg, fwd, [enc], codec, 1000)
    no_inf = torch.zeros((), device=device)
    autocast = autocast_for(cfg, device)
    side = args.image_size // codec.downsample
    labels = torch.randint(0, 1000, (args.batch,), device=device)
    moments = torch.randn(args.batch, 8, side, side, device=device) if latent else None

    def one() -> None:
        eps = torch.randn(args.batch, codec.channels, side, side, device=device)
        times = {k: v.to(device) for k, v in step.objective.draw_times(args.batch, torch.Generator()).items()}
        drop = torch.rand(args.batch, device=device) < 0.1
        loss, _, _ = step.losses(images, labels, eps, times, drop, autocast, moments=moments,
                                 post=torch.randn_like(eps) if latent else None)
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if fused:  # what the loop does: the clip as the fused AdamW's grad_scale, found_inf on the device
            opt.found_inf, opt.grad_scale = no_inf, 1.0 / torch.clamp(1.0 / (norm + 1e-6), max=1.0)
        else:
            torch.nn.utils.clip_grads_with_norm_(params, 1.0, norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(ema, model.sit, 0.9999)

    ms = _timed(one, args, device)
    return {"ms": ms, "img_s": args.batch / (ms / 1000), "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def _method_section(method: str) -> dict | None:
    from study.config.train import load_train_config as load

    return load(method).model_dump()["method"] if method else None


def _timed(one, args: argparse.Namespace, device: torch.device) -> float:
    """Median milliseconds of ``args.steps`` calls after ``args.warmup``."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        one()
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        one()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * times[len(times) // 2]


def bench_repae(overrides: list[str], args: argparse.Namespace, device: torch.device, latent: bool,
                enc=None) -> dict[str, float]:
    """One REPA-E optimizer step: SiT + VAE + discriminator, as the loop runs them."""
    import encoders
    from study.repae import RepaeParts, tiny_autoencoder

    # the size's alignment depth (repa-e.yaml's 8 is SiT-XL/2's, and its default anyway)
    extra = ["data.codec=sd-vae", "method.depth=null", "method.repae.lpips_weights=random",
             "method.repae.disc_weights=random"]
    if not latent:
        extra.append("model.patch_size=1")  # the tiny VAE halves 32 px: patch 1 keeps the 16x16 token grid
    cfg = load_train_config("tiny", [*overrides, *extra])
    torch.manual_seed(0)
    parts = RepaeParts(cfg.method.repae, optim=cfg.optim, init_stats=None, device=device,
                       vae=_sd_vae_architecture() if latent else tiny_autoencoder())
    codec = parts.codec(ema=False)
    enc = enc or encoders.get_encoder(args.encoder, weights=args.weights, device=device)
    images = torch.randint(0, 256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8,
                           device=device)
    dim = enc.encode(images[:1])["patch"].shape[-1]
    model = build_denoiser(cfg, image_size=args.image_size, num_classes=1000, codec=codec, encoder_dims=[dim]).to(device)
    ema = deepcopy(model.sit).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0)
    fwd = torch.compile(model) if args.compile else model
    targets = TrainingStep(cfg, fwd, [enc], codec, 1000).targets
    e2e = parts.stepper(lam=cfg.method.lam, path=cfg.flow.path, num_classes=1000, model=fwd, denoiser=model)
    autocast = autocast_for(cfg, device)
    side = args.image_size // codec.downsample
    labels = torch.randint(0, 1000, (args.batch,), device=device)
    parts.train()

    def one() -> None:
        eps = torch.randn(args.batch, codec.channels, side, side, device=device)
        t = torch.rand(args.batch, device=device)
        drop = torch.rand(args.batch, device=device) < 0.1
        out = e2e.losses(images, labels, eps, t, drop, torch.randn_like(eps), targets(images), 0, autocast)
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(ema, model.sit, 0.9999)
        parts.clip_and_step()
        parts.update_ema(0.9999)

    ms = _timed(one, args, device)
    trained = [model, parts.vae] + ([parts.disc] if parts.disc is not None else [])
    return {"ms": ms, "img_s": args.batch / (ms / 1000),
            "params_m": sum(p.numel() for m in trained for p in m.parameters()) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smoke", help="SiT size: smoke, tiny, SiT-S/2, SiT-B/2, SiT-L/2, SiT-XL/2")
    ap.add_argument("--batch", type=int, default=16, help="batch per device")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image-size", type=int, default=None, help="default: 256 on GPU (latents), 32 on CPU (pixels)")
    ap.add_argument("--codec", default=None, help="sd-vae (256 px latents) or identity; default by device")
    ap.add_argument("--encoder", default="dinov2-vit-b")
    ap.add_argument("--weights", default=None, help="tiny (CPU default) or random (GPU default: real-size cost)")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["repa", "irepa"],
                    help="method presets; repa-e / irepa-e time a REPA-E step (SiT + VAE + discriminator)")
    ap.add_argument("--variants", nargs="+", default=["flow"], choices=sorted(VARIANTS),
                    help="objectives to time: flow (SiT), meanflow, meanflow-cfg (SiT), jit (--jit-model)")
    ap.add_argument("--jit-model", default="JiT-smoke", help="JiT size for --variants jit (patch from the size, "
                                                              "else 2 on 32 px: give JiT-B/16 at 256 px on a GPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.image_size = args.image_size or (256 if gpu else 32)
    args.codec = args.codec or ("sd-vae" if args.image_size == 256 else "identity")
    args.weights = args.weights or ("random" if gpu else "tiny")
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# {args.model}, batch {args.batch}, {args.image_size} px {args.codec}, encoder {args.encoder} "
          f"({args.weights}), {args.precision}, compile={args.compile}, on {name}; median of {args.steps} steps")
    print(f"{'variant':13s} {'method':16s} {'params_M':>9s} {'ms/step':>9s} {'images/s':>9s} {'vs first':>9s}  "
          f"(params: all trained: SiT + projector, + VAE + discriminator for REPA-E)")
    first = None
    for variant in args.variants:
        for method in args.methods:
            r = bench(method, args, device, variant=variant)
            first = first or r["ms"]
            print(f"{variant:13s} {method:16s} {r['params_m']:9.2f} {r['ms']:9.1f} {r['img_s']:9.1f} "
                  f"{100 * (r['ms'] / first - 1):+8.1f}%")


if __name__ == "__main__":
    main()
