"""The estimate's ``assumptions``: every number the model takes as given, in words (what `sweep estimate` prints)."""
from __future__ import annotations

from typing import Any, Mapping

from jobs.cost.calibration import CALIBRATION_DIR, Calibration
from jobs.cost.fixed import BYTES_PER_PARAM, HBM_EFFICIENCY
from jobs.cost.gpus import GPUS
from jobs.cost.targets import TargetCosts
from jobs.cost.throughput import Throughput
from jobs.cost.work import IMAGENET_SPLITS

__all__ = ["assumptions", "fixed_assumptions"]


def fixed_assumptions(settings: Any, fixed_seen: Mapping[str, Any], targets: TargetCosts) -> list[str]:
    gpu = GPUS[settings.gpu]
    per = ", ".join(f"{k} {v} B" for k, v in BYTES_PER_PARAM.items())
    sizes = "; ".join(f"{m}: {ms:.3g} ms per GPU per step ({n / 1e6:.3g}M trained parameters, {g} GPUs)"
                      for m, (ms, g, parts, n) in fixed_seen.items())
    out = [f"train, fixed costs per step and GPU (jobs/cost/fixed.py; FLOPs miss them, every rank updates the whole "
           f"model): bytes per trained parameter ({per}) over {gpu.hbm_tbps:g} TB/s x {HBM_EFFICIENCY} memory "
           f"bandwidth, + the DDP all-reduce's last bucket at {gpu.allreduce_gbps:g} GB/s (the rest overlaps the "
           f"backward); {sizes}. The host adds nothing (batches, draws and cached targets are made ahead by the "
           "DataLoader; no sync between checks: benchmarks/host_overhead.py), checkpoints and checks are not counted"]
    if targets.modes:
        out.append("train, alignment targets: online = the frozen encoder's forward on every training image (once "
                   "per group); cache (encoder.targets=cache) = one `repa-study data encode` pass per encoder and "
                   "dataset (its images x the encoder's forward, booked as the 'target caches' row) and bf16 reads "
                   "(tokens x width x 2 bytes per image, not GPU time): `targets` gives both per encoder")
    return out


def assumptions(settings: Any, thr: Throughput, calibration: Calibration | None,
                 prec: Mapping[str, str], latent_data: Mapping[str, bool | None]) -> list[str]:
    gpu = GPUS[settings.gpu]
    peaks = ", ".join(f"{p} {v:g}" for p, v in gpu.peak_tflops.items())
    out = [
        f"GPU: {gpu.name}, dense peak TFLOP/s {peaks} (datasheet); sustained = peak x MFU per kind of work",
        (f"MFU: {thr.default} for every kind of work" + (" (--mfu)" if thr.explicit_mfu else
         " where no measurement exists (an assumption, not a measurement)")),
        (f"calibration: MFU measured by benchmarks/gpu_check.py in {calibration.path} ({calibration.device_name}) "
         "replaces the default for train, sample, decode, extract and encode where it has records"
         if calibration else f"calibration: none (no {'/'.join(CALIBRATION_DIR.parts[-3:])}/{settings.gpu}.json "
                             "from benchmarks/gpu_check.sh, or disabled)"),
        "FLOPs: torch.utils.flop_counter on the meta device (matmuls, convolutions, attention; element-wise ops, "
        "norms, the optimizer step and EMA are not counted), per image, from jobs/cost/flops.json",
        "train: steps x global batch x (3 x (SiT + projector forward) + frozen encoder forward), MeanFlow + 2 SiT "
        "forwards for the JVP (an assumption) + 1-2 for the folded CFG; these FLOPs' GPU-hours do "
        "not depend on the GPU count (perfect data-parallel scaling); the fixed per-step costs below do",
        "train, REPA-E runs (method.repae) add per image 3 x SD-VAE encoder + decoder, 3 x VGG16 (LPIPS), 6 x "
        "PatchGAN and 2 x (SiT up to the alignment depth + projector) forwards, at the SiT's precision "
        "(jobs/cost/repae.py)",
        "train precision: the SiT under bf16 autocast (precision auto on a GPU); the frozen encoder outside autocast "
        "(tf32 with the training's tf32: true, bf16 with encoder.bf16)",
        "train runs: jobs that differ only in their step target are one run (a continuation costs its extra steps); "
        "the runs of a grouped train job (executor.group_methods) share one encoder forward per step; periodic "
        "sample grids during training (16 images every sample_every steps) are not counted",
        f"eval: n_samples x num_steps SiT forwards (SDE and ODE both take num_steps forwards; x2 when cfg_scale != 1) "
        f"in {prec['sample']}, + SD-VAE decoder per sample ({prec['decode']}), + InceptionV3 at 299 px per sample "
        f"({prec['extract']}); ADM npz references cost nothing, a dataset reference is extracted once per sweep "
        "(its train split); precision/recall and Frechet distances are not counted",
        f"score: encoder forward ({prec['encode']}) over the scored split and the train split (the probe's "
        f"features), ImageNet sizes train {IMAGENET_SPLITS['train']:,} / val {IMAGENET_SPLITS['val']:,} for "
        "non-synthetic datasets (limit caps both), + one T x T x D Gram matrix per scored image",
        f"probe: {settings.probe_evaluations} L-BFGS loss+gradient evaluations per probe (4 N D C FLOPs each, N the "
        f"train images, C the classes; x2 with a CLS token), {prec['probe']}; an assumption: the code allows up "
        "to 7 fits x 375 evaluations",
        "analyze: CPU only, 0 GPU-hours",
    ]
    encoded = sorted(d for d, stored in latent_data.items() if stored is False)
    if encoded:
        out.append(f"train, latent runs on {', '.join(encoded)} (no stored SD-VAE moments: synthetic data, an image "
                   "folder, or prepared without a VAE) add the SD-VAE encoder's forward per training image "
                   "(vae-encode; fp32 weights outside autocast, tf32 with the training's tf32: true)")
    unseen = sorted(d for d, stored in latent_data.items() if stored is None)
    if unseen:
        out.append(f"train, latent runs on {', '.join(unseen)}: not found here (or not fully prepared), assumed to "
                   "hold stored SD-VAE moments (`repa-study data prepare` with a VAE); on an image folder each "
                   "training image also costs an SD-VAE encoder forward")
    if settings.all_steps:
        out.append(f"--all-steps {settings.all_steps}: every training costed at {settings.all_steps} steps, "
                   "evaluations beyond it dropped and one at it added for every run that lacks it")
    if settings.precision:
        out.append("precision overrides: " + ", ".join(f"{k}={v}" for k, v in settings.precision.items()))
    return out
