"""GPU figures for the cost model, in one short run (<= 8 minutes on one GPU): prints one JSON object.

Measured, each with its counted FLOPs per image so that `repa-study sweep estimate` turns it into an MFU:

- ``train``: the idealised training step (``benchmarks/train_step.py``: frozen encoder, SiT forward/backward with
  projector and both losses, the fused AdamW with the clip as its grad_scale, the foreach EMA) under bf16 on 256 px
  SD-VAE-shaped latents at the paper's batch per GPU (SiT-B/2 64, SiT-L/2 and SiT-XL/2 32): SiT-B/2, -L/2 and
  -XL/2 x REPA and iREPA with a B-size encoder (dinov2-vit-b), then SiT-XL/2 x iREPA with one encoder of each larger
  size class (dinov2-vit-l, dinov3-vit-h16plus, dinov2-vit-g, dinov3-vit-7b16), each built on the GPU with random
  init and bf16 weights, eager; last, SiT-XL/2 REPA and iREPA compiled: images/s, median step ms, peak memory;
- ``loop``: the real training loop (``study.training.train_group``: the DataLoader with its workers, the step's
  draws made there, the checks, the optimizer, the EMA) on a prepared-format dataset of random images and moments
  written to a temporary folder, REPA and iREPA as one group (the paper's jobs) for each size, eager: images/s per
  run and ms per group step, from the run's log (the first ``log_every`` steps left out); checkpoints not written;
- ``sample``: the SDE sampler's SiT forwards (with the sampler's on-device noise) for the three sizes, with TF32
  matmuls (the paper's protocol, what study/sampling/sample.py runs with the run's ``tf32: true``) and under bf16
  autocast (``adm-50k-sde250-bf16``): images/s for a 250-step sampling;
- ``decode``: the SD-VAE decoder (random init, sd-vae-ft-mse's architecture) on 32x32x4 latents;
- ``extract``: the ADM Inception extractor (torch-fidelity, random BN-calibrated weights) on 256 px images;
- ``encode``: scoring's encoder forward for dinov2-vit-b and dinov2-vit-g, in TF32 (what scoring runs) and fp32.

Output schema (``repa-study/gpu_check/1``; what jobs/cost/calibration.py reads from ``jobs/cost/calibration/<gpu>.json``):

    {"schema", "gpu": "h100|h200|a100|<slug>", "device_name", "dry_run", "torch", "cuda", "created", "budget_s",
     "elapsed_s",
     "train":   [{"model", "method", "encoder", "weights", "batch", "compile", "precision", "images_per_s",
                  "step_ms", "peak_mem_gb", "work": {"bf16": FLOPs/image, "tf32": ...}} | {..., "skipped"|"error"}],
     "loop":    [{"model", "methods", "encoder", "batch", "compile", "steps", "images_per_s", "group_step_ms",
                  "work"}],
     "sample":  [{"model", "precision", "batch", "num_steps", "measured_steps", "forward_ms", "images_per_s",
                  "peak_mem_gb", "work": {...}}],
     "decode":  [{"batch", "precision", "images_per_s", "work"}],
     "extract": [{"batch", "precision", "images_per_s", "work"}],
     "encode":  [{"encoder", "batch", "precision", "images_per_s", "work"}]}

``work`` is FLOPs per image by precision (jobs.cost.flops counts); ``images_per_s`` is per GPU (per run for
``loop``). A configuration that fails records ``error`` and the run goes on; configurations past ``--budget-s``
record ``skipped``. The JSON is written after every configuration (a timeout loses nothing): on a GPU to
``jobs/cost/calibration/<gpu>.json`` (``--out`` elsewhere), the file the estimate reads (``loop`` records are
reported, not read by the estimate).

    benchmarks/gpu_check.sh                                          # on the GPU
    benchmarks/gpu_check.sh --dry-run                                # tiny sizes on CPU: checks the script only

This file is long because it is one self-contained script to copy onto a GPU machine and run once: six sections,
each measuring what the code runs, with its budget and its error handling.
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
Save = Callable[[], None]


def _record(out: list, rec: dict[str, Any], save: Save, section: str) -> None:
    out.append(rec)
    print(f"# {section} {rec}", file=sys.stderr, flush=True)
    save()  # after every configuration: a killed run keeps what it measured


def _on_device(device: torch.device):
    """Build modules directly on the GPU (random init there: seconds for a 7B encoder, not minutes on the CPU)."""
    return torch.device(device) if device.type == "cuda" else contextlib.nullcontext()


def train_section(cfg: SimpleNamespace, device: torch.device, budget: Budget, out: list, save: Save) -> None:
    from train_step import bench

    import encoders
    from jobs.cost import codec_geometry, flop_table, train_work
    from study.config import load_train_config

    table = flop_table()
    # eager: every size x REPA/iREPA with the B-size encoder, then SiT-XL/2 iREPA with each larger encoder class;
    # compiled last (each compilation takes tens of seconds)
    big = cfg.models[-1]
    configs = [(model, cfg.encoders[0], method, False) for model in cfg.models for method in ("repa", "irepa")]
    configs += [(big, enc, "irepa", False) for enc in cfg.encoders[1:]]
    configs += [(big, cfg.encoders[0], method, True) for method in ("repa", "irepa") if True in cfg.compile]
    built: dict[str, Any] = {}
    for model, enc_name, method, compile_ in configs:
        rec: dict[str, Any] = {"model": model, "method": method, "encoder": enc_name, "weights": cfg.weights,
                               "batch": cfg.batch[model], "compile": compile_, "precision": cfg.precision}
        if not budget.left():
            _record(out, {**rec, "skipped": f"time budget ({budget.seconds:.0f} s) spent"}, save, "train")
            continue
        try:
            for other in [k for k in built if k != enc_name]:  # one encoder on the GPU at a time (the 7B's 14 GB)
                del built[other]
            _reset_mem(device)
            if enc_name not in built:  # bf16 weights under autocast on a GPU (the imagenet preset's encoder.bf16)
                with _on_device(device):
                    built[enc_name] = encoders.get_encoder(enc_name, weights=cfg.weights, device=device,
                                                           bf16=device.type == "cuda")
            args = SimpleNamespace(model=model, batch=cfg.batch[model], image_size=cfg.image_size, codec=cfg.codec,
                                   encoder=enc_name, weights=cfg.weights, precision=cfg.precision,
                                   compile=compile_, steps=cfg.steps, warmup=cfg.warmup + (2 if compile_ else 0))
            with _tf32(True), _on_device(device):  # as the training does (tf32: true)
                r = bench(method, args, device, enc=built[enc_name])
            train_cfg = load_train_config("tiny", [f"method={method}", f"model.size={model}"])
            m = train_cfg.method
            channels, down, _ = codec_geometry(cfg.codec)
            work = train_work(table, size=model, input_size=cfg.image_size // down, in_channels=channels,
                              num_classes=1000, patch_size=train_cfg.model.patch_size, qk_norm=False,
                              encoders=[(enc_name, cfg.weights)], align=m.align, projector=m.projector,
                              hidden_dim=m.hidden_dim, kernel_size=m.kernel_size,
                              sit_precision="bf16" if cfg.precision != "fp32" else "tf32",
                              encoder_precision="bf16" if device.type == "cuda" else "tf32")
            rec.update(images_per_s=round(r["img_s"], 2), step_ms=round(r["ms"], 2), peak_mem_gb=_peak_gb(device),
                       params_m=round(r["params_m"], 1), work={p: f for (_, p), f in _merge(work).items()})
        except Exception as exc:  # noqa: BLE001 - a failed configuration is a result, the run goes on
            rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
        _record(out, rec, save, "train")
    built.clear()
    _reset_mem(device)


def _merge(work: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """(kind, precision) -> FLOPs summed per precision (a record's work is per precision)."""
    merged: dict[tuple[str, str], float] = {}
    for (_, prec), flops in work.items():
        merged[("all", prec)] = merged.get(("all", prec), 0.0) + flops
    return merged


def _fake_prepared(root: Path, n: int, size: int, classes: int = 1000, shard: int = 512) -> Path:
    """A `repa-study data prepare` directory of random images and SD-VAE moments (what the loop reads)."""
    import numpy as np

    from study.data.prepared import PREPARED_FORMAT, shard_dir

    split = root / "train"
    split.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shards = -(-n // shard)
    for k in range(shards):
        m = min(shard, n - k * shard)
        d = shard_dir(split, k)
        d.mkdir()
        np.save(d / "images.npy", rng.integers(0, 256, (m, 3, size, size), dtype=np.uint8))
        np.save(d / "labels.npy", rng.integers(0, classes, m).astype(np.int64))
        np.save(d / "index.npy", np.arange(k * shard, k * shard + m, dtype=np.int64))
        mom = rng.standard_normal((m, 8, size // 8, size // 8)).astype(np.float32)
        mom[:, 4:] = -2.0  # logvar
        np.save(d / "moments.npy", mom)
    (split / "manifest.json").write_text(json.dumps({
        "format": PREPARED_FORMAT, "split": "train", "src": "gpu_check", "listing": "random", "num_images": n,
        "image_size": size, "shard_size": shard, "num_shards": shards, "classes": [f"c{i}" for i in range(classes)],
        "codec": {"id": "sdvae:random", "repo_id": "stabilityai/sd-vae-ft-mse", "channels": 4, "downsample": 8,
                  "moments": "mean,logvar"}}))
    return root


def loop_section(cfg: SimpleNamespace, device: torch.device, budget: Budget, out: list, save: Save) -> None:
    import os

    from diffusers import AutoencoderKL

    import study.training.loop as loop
    from jobs.cost import SD_VAE_CONFIG, codec_geometry, flop_table, train_work
    from study.config import load_train_config

    if not budget.left():
        _record(out, {"skipped": "time budget spent"}, save, "loop")
        return
    table = flop_table()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _fake_prepared(root / "data", cfg.loop_images, cfg.image_size) if cfg.codec == "sd-vae" else None
        weights_env = os.environ.get("REPA_STUDY_WEIGHTS")
        if data is not None:  # the codec's geometry comes from its VAE's config: a random-init one, on disk
            AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(root / "weights" / "stabilityai" / "sd-vae-ft-mse")
            os.environ["REPA_STUDY_WEIGHTS"] = str(root / "weights")
        saving = loop.save_checkpoint, loop.prune_checkpoints
        loop.save_checkpoint = loop.prune_checkpoints = lambda *a, **k: None  # the loop, not the disk
        try:
            for model in cfg.models:
                rec: dict[str, Any] = {"model": model, "methods": "repa+irepa", "encoder": cfg.encoders[0],
                                       "batch": cfg.batch[model], "compile": False, "steps": cfg.loop_steps,
                                       "workers": cfg.loop_workers}
                if not budget.left():
                    _record(out, {**rec, "skipped": "time budget spent"}, save, "loop")
                    continue
                try:
                    _reset_mem(device)
                    over = [f"model.size={model}", f"encoder.name={cfg.encoders[0]}", f"encoder.weights={cfg.weights}",
                            f"steps={cfg.loop_steps}", f"batch_size={cfg.batch[model]}", f"log_every={cfg.loop_log}",
                            "ckpt_every=1000000", "sample_every=0", "compile=false", f"device={device.type}",
                            f"data.num_workers={cfg.loop_workers}", "threads=null"]
                    over += ([f"data.spec={data}", "data.image_size=null"] if data is not None else
                             ["model.size=smoke", "data.spec=synthetic:n=64,size=32,classes=4", "encoder.weights=tiny"])
                    base = "imagenet" if data is not None else "smoke"
                    cfgs = [load_train_config(base, [f"method={m}", *over]) for m in ("repa", "irepa")]
                    dirs = [root / "runs" / f"{model.replace('/', '_')}-{m}" for m in ("repa", "irepa")]
                    t0 = time.perf_counter()
                    loop.train_group(cfgs, dirs)
                    rows = [json.loads(x) for x in (dirs[0] / "log.jsonl").read_text().splitlines()][1:]
                    rate = sorted(r["images_per_s"] for r in rows)[len(rows) // 2] if rows else None
                    work: dict[str, float] = {}
                    for c in cfgs:
                        channels, down, _ = codec_geometry(c.data.codec)
                        m = c.method
                        w = train_work(table, size=c.model.size, input_size=cfg.image_size // down,
                                       in_channels=channels, num_classes=1000, patch_size=c.model.patch_size,
                                       qk_norm=False, encoders=[(cfg.encoders[0], c.encoder.weights)], align=True,
                                       projector=m.projector, hidden_dim=m.hidden_dim, kernel_size=m.kernel_size,
                                       sit_precision="bf16", encoder_precision="bf16")
                        if c is cfgs[1]:  # the group runs the encoder once for both
                            w = {k: v for k, v in w.items() if k[0] != "target"}
                        for (_, prec), f in w.items():
                            work[prec] = work.get(prec, 0.0) + f
                    rec.update(images_per_s=rate and round(rate, 2),
                               group_step_ms=rate and round(1000 * cfg.batch[model] / rate, 2),
                               wall_s=round(time.perf_counter() - t0, 1), peak_mem_gb=_peak_gb(device), work=work)
                except Exception as exc:  # noqa: BLE001
                    rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
                _record(out, rec, save, "loop")
        finally:
            loop.save_checkpoint, loop.prune_checkpoints = saving
            if weights_env is None:
                os.environ.pop("REPA_STUDY_WEIGHTS", None)
            else:
                os.environ["REPA_STUDY_WEIGHTS"] = weights_env


def sample_section(cfg: SimpleNamespace, device: torch.device, budget: Budget, out: list, save: Save) -> None:
    from jobs.cost import flop_table
    from study.config import SamplerSettings
    from study.models import build_sit
    from study.objectives import FlowMatching
    from study.sampling import SeededNoise, sample_latents, sample_seed

    table = flop_table()
    channels, side = (4, cfg.image_size // 8) if cfg.codec == "sd-vae" else (3, cfg.image_size)
    for model in cfg.models:
        for precision in ("tf32", "bf16"):
            batch = cfg.sample_batch
            rec: dict[str, Any] = {"model": model, "precision": precision, "batch": batch, "num_steps": 250,
                                   "measured_steps": cfg.sample_steps}
            if not budget.left():
                _record(out, {**rec, "skipped": "time budget spent"}, save, "sample")
                continue
            try:
                _reset_mem(device)
                torch.manual_seed(0)
                with _on_device(device):
                    sit = build_sit(model, input_size=side, in_channels=channels, num_classes=1000,
                                    patch_size=2 if cfg.codec != "sd-vae" else None).to(device).eval()
                labels = torch.arange(batch, device=device) % 1000
                sampler = SamplerSettings(mode="sde", num_steps=cfg.sample_steps, precision=precision)

                def run() -> None:  # sample_latents applies the bf16 autocast of precision bf16
                    noise = SeededNoise([sample_seed(0, i) for i in range(batch)], (channels, side, side), device)
                    sample_latents(sit, labels, noise, objective=FlowMatching(), sampler=sampler)

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
            _record(out, rec, save, "sample")


def decode_section(cfg: SimpleNamespace, device: torch.device, budget: Budget, out: list, save: Save) -> None:
    from diffusers import AutoencoderKL

    from jobs.cost import SD_VAE_CONFIG, flop_table

    latent = cfg.latent_side
    rec: dict[str, Any] = {"batch": cfg.decode_batch, "precision": "tf32", "latent": latent}
    if not budget.left():
        _record(out, {**rec, "skipped": "time budget spent"}, save, "decode")
        return
    try:
        _reset_mem(device)
        with _on_device(device):
            vae = AutoencoderKL(**SD_VAE_CONFIG).to(device).eval()
        z = torch.randn(cfg.decode_batch, 4, latent, latent, device=device)
        with torch.no_grad(), _tf32(True):
            secs = _median_time(lambda: vae.decode(z), device, steps=cfg.repeats, warmup=1)
        rec.update(images_per_s=round(cfg.decode_batch / secs, 2), peak_mem_gb=_peak_gb(device),
                   work={"tf32": float(flop_table().sd_vae_decode(latent))})
    except Exception as exc:  # noqa: BLE001
        rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
    _record(out, rec, save, "decode")


def extract_section(cfg: SimpleNamespace, device: torch.device, budget: Budget, out: list, save: Save) -> None:
    from jobs.cost import flop_table
    from study.evaluation.inception import InceptionExtractor, random_inception_state_dict

    rec: dict[str, Any] = {"batch": cfg.extract_batch, "precision": "fp32", "image_size": 256}
    if not budget.left():
        _record(out, {**rec, "skipped": "time budget spent"}, save, "extract")
        return
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
    _record(out, rec, save, "extract")


def encode_section(cfg: SimpleNamespace, device: torch.device, budget: Budget, out: list, save: Save) -> None:
    import encoders
    from jobs.cost import flop_table

    for name in (cfg.encoders[0], cfg.encoders[-2]):  # B-size and g-size
        for precision in ("tf32", "fp32"):  # scoring runs TF32 (study.scoring, tf32=True); fp32 before issue 18
            rec: dict[str, Any] = {"encoder": name, "weights": cfg.weights, "batch": cfg.encode_batch,
                                   "precision": precision}
            if not budget.left():
                _record(out, {**rec, "skipped": "time budget spent"}, save, "encode")
                continue
            try:
                _reset_mem(device)
                with _on_device(device):
                    enc = encoders.get_encoder(name, weights=cfg.weights, device=device)
                images = torch.randint(0, 256, (cfg.encode_batch, 3, 256, 256), dtype=torch.uint8, device=device)
                with _tf32(precision == "tf32"):
                    secs = _median_time(lambda: enc.encode(images), device, steps=cfg.repeats, warmup=1)
                rec.update(images_per_s=round(cfg.encode_batch / secs, 2), peak_mem_gb=_peak_gb(device),
                           work={precision: float(flop_table().encoder(name, cfg.weights)["flops"])})
                del enc
            except Exception as exc:  # noqa: BLE001
                rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
            _record(out, rec, save, "encode")


# ------------------------------------------------------------------------------------------------ main
def settings(dry_run: bool) -> SimpleNamespace:
    if dry_run:  # CPU, tiny: exercises every code path in seconds; its figures mean nothing
        return SimpleNamespace(models=["smoke"], encoders=["dinov2-vit-b", "dinov2-vit-l", "dinov2-vit-g",
                                                           "dinov3-vit-7b16"],
                               weights="tiny", batch={"smoke": 2}, image_size=32, codec="identity", precision="fp32",
                               compile=[False], steps=1, warmup=1, sample_batch=2, sample_steps=3, repeats=1,
                               latent_side=8, decode_batch=1, extract_batch=2, encode_batch=2, loop_images=64,
                               loop_steps=4, loop_log=2, loop_workers=0)
    return SimpleNamespace(models=["SiT-B/2", "SiT-L/2", "SiT-XL/2"],
                           encoders=["dinov2-vit-b", "dinov2-vit-l", "dinov3-vit-h16plus", "dinov2-vit-g",
                                     "dinov3-vit-7b16"],
                           weights="random", batch={"SiT-B/2": 64, "SiT-L/2": 32, "SiT-XL/2": 32}, image_size=256,
                           codec="sd-vae", precision="bf16", compile=[False, True], steps=8, warmup=3,
                           sample_batch=64, sample_steps=8, repeats=3, latent_side=32, decode_batch=16,
                           extract_batch=100, encode_batch=64, loop_images=1024, loop_steps=30, loop_log=10,
                           loop_workers=4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU (checks the script, not the GPU)")
    ap.add_argument("--out", default=None, help="also write the JSON here (default on a GPU: "
                    "jobs/cost/calibration/<gpu>.json, what `sweep estimate --gpu <gpu>` reads; a dry run: nowhere)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting configurations after this")
    ap.add_argument("--sections", default="sample,decode,extract,encode,train,loop",
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

    def save() -> None:
        result["elapsed_s"] = round(budget.elapsed, 1)
        if out_file:
            atomic_write_json(out_file, result, indent=1)

    sections = {"train": train_section, "loop": loop_section, "sample": sample_section, "decode": decode_section,
                "extract": extract_section, "encode": encode_section}
    for section in args.sections.split(","):
        result[section] = []
        sections[section](cfg, device, budget, result[section], save)
        save()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
