"""GPU figures for the cost model, in one short run (<= 8 minutes on one GPU): prints one JSON object.

Measured, each with its counted FLOPs per image so that `repa-study sweep estimate` turns it into an MFU:

- ``train``: SiT-B/2 and SiT-XL/2 training steps (``benchmarks/train_step.py``'s step: frozen encoder, SiT
  forward/backward with projector and both losses, clipping, AdamW, EMA) under bf16 on 256 px SD-VAE-shaped latents,
  for REPA and iREPA, with a B-size (dinov2-vit-b) and a g-size (dinov2-vit-g) random-init encoder, without and then
  with torch.compile: images/s, median step ms, peak memory;
- ``sample``: the SDE sampler's SiT forwards for SiT-B/2 and SiT-XL/2, in fp32 with TF32 matmuls (what
  study/sampling/sample.py runs with the run's ``tf32: true``) and under bf16 autocast: images/s for a 250-step sampling;
- ``decode``: the SD-VAE decoder (random init, sd-vae-ft-mse's architecture) on 32x32x4 latents;
- ``extract``: the ADM Inception extractor (torch-fidelity, random BN-calibrated weights) on 256 px images;
- ``encode``: scoring's encoder forward (fp32) for dinov2-vit-b and dinov2-vit-g.

Output schema (``repa-study/gpu_check/1``; what jobs/cost/calibration.py reads from ``jobs/cost/calibration/<gpu>.json``):

    {"schema", "gpu": "h100|h200|a100|<slug>", "device_name", "dry_run", "torch", "cuda", "created", "budget_s",
     "elapsed_s",
     "train":   [{"model", "method", "encoder", "weights", "batch", "compile", "precision", "images_per_s",
                  "step_ms", "peak_mem_gb", "work": {"bf16": FLOPs/image, "tf32": ...}} | {..., "skipped"|"error"}],
     "sample":  [{"model", "precision", "batch", "num_steps", "measured_steps", "forward_ms", "images_per_s",
                  "peak_mem_gb", "work": {...}}],
     "decode":  [{"batch", "precision", "images_per_s", "work"}],
     "extract": [{"batch", "precision", "images_per_s", "work"}],
     "encode":  [{"encoder", "batch", "precision", "images_per_s", "work"}]}

``work`` is FLOPs per image by precision (jobs.cost.flops counts); ``images_per_s`` is per GPU. A section that fails
records ``error`` and the run goes on; configurations past ``--budget-s`` record ``skipped``. On a GPU the output is
also written to ``jobs/cost/calibration/<gpu>.json`` (``--out`` elsewhere), the file the estimate reads.

    benchmarks/gpu_check.sh                                          # on the GPU
    benchmarks/gpu_check.sh --dry-run                                # tiny sizes on CPU: checks the script only
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

from jobs.cost import CALIBRATION_DIR, CALIBRATION_SCHEMA

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_step.py next to this file



def gpu_key(name: str) -> str:
    for key in ("h200", "h100", "a100"):
        if key in name.lower():
            return key
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


class Budget:
    def __init__(self, seconds: float) -> None:
        self.t0, self.seconds = time.perf_counter(), seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> bool:
        return self.elapsed < self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_mem(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _median_time(fn: Callable[[], Any], device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@contextlib.contextmanager
def _tf32(on: bool):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ------------------------------------------------------------------------------------------------ sections
def train_section(cfg: SimpleNamespace, device: torch.device, budget: Budget) -> list[dict[str, Any]]:
    from train_step import bench

    import encoders
    from jobs.cost import codec_geometry, flop_table, train_work
    from study.config import load_train_config

    table = flop_table()
    # eager first; then compiled, B-size encoder before g-size and the models interleaved, so that a budget cut
    # (each compilation takes tens of seconds) still leaves a compiled figure for every model
    configs = [(model, enc, method, compile_) for compile_ in cfg.compile for enc in cfg.encoders
               for method in ("repa", "irepa") for model in cfg.models]
    built: dict[str, Any] = {}
    out = []
    for model, enc_name, method, compile_ in configs:
        rec: dict[str, Any] = {"model": model, "method": method, "encoder": enc_name, "weights": cfg.weights,
                               "batch": cfg.batch[model], "compile": compile_, "precision": cfg.precision}
        if not budget.left():
            out.append({**rec, "skipped": f"time budget ({budget.seconds:.0f} s) spent"})
            continue
        try:
            if enc_name not in built:  # built once (a g-size random init takes a while); both fit on one GPU
                # under bf16 autocast on a GPU, as the paper-scale presets run it (imagenet: encoder.bf16: true)
                built[enc_name] = encoders.get_encoder(enc_name, weights=cfg.weights, device=device,
                                                       bf16=device.type == "cuda")
            args = SimpleNamespace(model=model, batch=cfg.batch[model], image_size=cfg.image_size, codec=cfg.codec,
                                   encoder=enc_name, weights=cfg.weights, precision=cfg.precision,
                                   compile=compile_, steps=cfg.steps, warmup=cfg.warmup + (2 if compile_ else 0))
            _reset_mem(device)
            with _tf32(True):  # as the training does (tf32: true)
                r = bench(method, args, device, enc=built[enc_name])
            train_cfg = load_train_config("tiny", [f"method={method}", f"model.size={model}"])
            m = train_cfg.method
            channels, down, _ = codec_geometry(cfg.codec)
            work = train_work(table, size=model, input_size=cfg.image_size // down, in_channels=channels, num_classes=1000,
                              patch_size=train_cfg.model.patch_size, qk_norm=False,
                              encoders=[(enc_name, cfg.weights)], align=m.align, projector=m.projector,
                              hidden_dim=m.hidden_dim, kernel_size=m.kernel_size,
                              sit_precision="bf16" if cfg.precision != "fp32" else "tf32",
                              encoder_precision="bf16" if device.type == "cuda" else "tf32")
            rec.update(images_per_s=round(r["img_s"], 2), step_ms=round(r["ms"], 2), peak_mem_gb=_peak_gb(device),
                       params_m=round(r["params_m"], 1), work={p: f for (_, p), f in _merge(work).items()})
        except Exception as exc:  # noqa: BLE001 - a failed configuration is a result, the run goes on
            rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
        out.append(rec)
        print(f"# train {rec}", file=sys.stderr, flush=True)
    return out


def _merge(work: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """(kind, precision) -> FLOPs summed per precision (a record's work is per precision)."""
    merged: dict[tuple[str, str], float] = {}
    for (_, prec), flops in work.items():
        merged[("all", prec)] = merged.get(("all", prec), 0.0) + flops
    return merged


class _Noise:
    """What study.sampling.sample.sample_latents draws noise from (a callable with a device)."""

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.shape, self.device = shape, device

    def __call__(self) -> torch.Tensor:
        return torch.randn(self.shape, device=self.device)


def sample_section(cfg: SimpleNamespace, device: torch.device, budget: Budget) -> list[dict[str, Any]]:
    from jobs.cost import flop_table
    from study.config import SamplerSettings
    from study.models import build_sit
    from study.objectives import FlowMatching
    from study.sampling import sample_latents

    table = flop_table()
    channels, side = (4, cfg.image_size // 8) if cfg.codec == "sd-vae" else (3, cfg.image_size)
    out = []
    for model in cfg.models:
        for precision in ("tf32", "bf16"):
            batch = cfg.sample_batch
            rec: dict[str, Any] = {"model": model, "precision": precision, "batch": batch, "num_steps": 250,
                                   "measured_steps": cfg.sample_steps}
            if not budget.left():
                out.append({**rec, "skipped": "time budget spent"})
                continue
            try:
                _reset_mem(device)
                torch.manual_seed(0)
                sit = build_sit(model, input_size=side, in_channels=channels, num_classes=1000,
                                patch_size=2 if cfg.codec != "sd-vae" else None).to(device).eval()
                labels = torch.arange(batch, device=device) % 1000
                noise = _Noise((batch, channels, side, side), device)
                autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                            else contextlib.nullcontext())

                def run() -> None:
                    with autocast:
                        sample_latents(sit, labels, noise, objective=FlowMatching(),
                                       sampler=SamplerSettings(mode="sde", num_steps=cfg.sample_steps))

                with _tf32(True):  # sample_run turns TF32 matmuls on with the run's tf32 (true in every preset)
                    secs = _median_time(run, device, steps=cfg.repeats, warmup=1)
                per_forward = secs / cfg.sample_steps
                flops = table.sit(model, input_size=side, in_channels=channels, num_classes=1000,
                                  patch_size=2 if cfg.codec != "sd-vae" else None)
                rec.update(forward_ms=round(1000 * per_forward, 3), images_per_s=round(batch / (per_forward * 250), 4),
                           peak_mem_gb=_peak_gb(device), work={precision: 250.0 * flops})
                del sit
            except Exception as exc:  # noqa: BLE001
                rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
            out.append(rec)
            print(f"# sample {rec}", file=sys.stderr, flush=True)
    return out


def decode_section(cfg: SimpleNamespace, device: torch.device, budget: Budget) -> list[dict[str, Any]]:
    from diffusers import AutoencoderKL

    from jobs.cost import SD_VAE_CONFIG, flop_table

    latent = cfg.latent_side
    rec: dict[str, Any] = {"batch": cfg.decode_batch, "precision": "tf32", "latent": latent}
    if not budget.left():
        return [{**rec, "skipped": "time budget spent"}]
    try:
        _reset_mem(device)
        vae = AutoencoderKL(**SD_VAE_CONFIG).to(device).eval()
        z = torch.randn(cfg.decode_batch, 4, latent, latent, device=device)
        with torch.no_grad():
            secs = _median_time(lambda: vae.decode(z), device, steps=cfg.repeats, warmup=1)
        rec.update(images_per_s=round(cfg.decode_batch / secs, 2), peak_mem_gb=_peak_gb(device),
                   work={"tf32": float(flop_table().sd_vae_decode(latent))})
    except Exception as exc:  # noqa: BLE001
        rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
    print(f"# decode {rec}", file=sys.stderr, flush=True)
    return [rec]


def extract_section(cfg: SimpleNamespace, device: torch.device, budget: Budget) -> list[dict[str, Any]]:
    from jobs.cost import flop_table
    from study.evaluation.inception import InceptionExtractor, random_inception_state_dict

    rec: dict[str, Any] = {"batch": cfg.extract_batch, "precision": "fp32", "image_size": 256}
    if not budget.left():
        return [{**rec, "skipped": "time budget spent"}]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inception-random.pth"
            torch.save(random_inception_state_dict(), path)
            ext = InceptionExtractor(path, device=device, download=False)
            images = torch.randint(0, 256, (cfg.extract_batch, 3, 256, 256), dtype=torch.uint8)
            secs = _median_time(lambda: ext(images), device, steps=cfg.repeats, warmup=1)
        rec.update(images_per_s=round(cfg.extract_batch / secs, 2), work={"fp32": float(flop_table().inception())})
    except Exception as exc:  # noqa: BLE001
        rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
    print(f"# extract {rec}", file=sys.stderr, flush=True)
    return [rec]


def encode_section(cfg: SimpleNamespace, device: torch.device, budget: Budget) -> list[dict[str, Any]]:
    import encoders
    from jobs.cost import flop_table

    out = []
    for name in cfg.encoders:
        rec: dict[str, Any] = {"encoder": name, "weights": cfg.weights, "batch": cfg.encode_batch,
                               "precision": "fp32"}
        if not budget.left():
            out.append({**rec, "skipped": "time budget spent"})
            continue
        try:
            _reset_mem(device)
            enc = encoders.get_encoder(name, weights=cfg.weights, device=device)
            images = torch.randint(0, 256, (cfg.encode_batch, 3, 256, 256), dtype=torch.uint8, device=device)
            with _tf32(False):  # scoring does not enable TF32
                secs = _median_time(lambda: enc.encode(images), device, steps=cfg.repeats, warmup=1)
            rec.update(images_per_s=round(cfg.encode_batch / secs, 2), peak_mem_gb=_peak_gb(device),
                       work={"fp32": float(flop_table().encoder(name, cfg.weights)["flops"])})
            del enc
        except Exception as exc:  # noqa: BLE001
            rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
        out.append(rec)
        print(f"# encode {rec}", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------------------------------------ main
def settings(dry_run: bool) -> SimpleNamespace:
    if dry_run:  # CPU, tiny: exercises every code path in seconds; its figures mean nothing
        return SimpleNamespace(models=["smoke"], encoders=["dinov2-vit-b", "dinov2-vit-g"], weights="tiny",
                               batch={"smoke": 2}, image_size=32, codec="identity", precision="fp32",
                               compile=[False], steps=1, warmup=1, sample_batch=2, sample_steps=3, repeats=1,
                               latent_side=8, decode_batch=1, extract_batch=2, encode_batch=2)
    return SimpleNamespace(models=["SiT-B/2", "SiT-XL/2"], encoders=["dinov2-vit-b", "dinov2-vit-g"],
                           weights="random", batch={"SiT-B/2": 64, "SiT-XL/2": 64}, image_size=256, codec="sd-vae",
                           precision="bf16", compile=[False, True], steps=10, warmup=3, sample_batch=64,
                           sample_steps=10, repeats=3, latent_side=32, decode_batch=16, extract_batch=100,
                           encode_batch=64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU (checks the script, not the GPU)")
    ap.add_argument("--out", default=None, help="also write the JSON here (default on a GPU: "
                    "jobs/cost/calibration/<gpu>.json, what `sweep estimate --gpu <gpu>` reads; a dry run: nowhere)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting configurations after this")
    ap.add_argument("--sections", default="sample,decode,extract,encode,train",
                    help="comma-separated, run in this order (the short ones first, training last)")
    args = ap.parse_args()
    from study.common import atomic_write_json

    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device; run with --dry-run to check the script on CPU", file=sys.stderr)
            return 2
        device = torch.device("cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    cfg = settings(args.dry_run)
    budget = Budget(args.budget_s)
    result: dict[str, Any] = {
        "schema": CALIBRATION_SCHEMA, "gpu": "cpu" if args.dry_run else gpu_key(name), "device_name": name,
        "dry_run": args.dry_run, "torch": torch.__version__, "cuda": torch.version.cuda,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": args.budget_s}
    out_file = args.out or (None if args.dry_run else str(CALIBRATION_DIR / f"{result['gpu']}.json"))
    sections = {"train": train_section, "sample": sample_section, "decode": decode_section,
                "extract": extract_section, "encode": encode_section}
    for section in args.sections.split(","):
        result[section] = sections[section](cfg, device, budget)
        result["elapsed_s"] = round(budget.elapsed, 1)
        if out_file:  # after every section: a killed run keeps what it measured
            atomic_write_json(out_file, result, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
