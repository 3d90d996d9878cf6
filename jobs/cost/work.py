"""The work of one image, in FLOPs by kind of work and precision: a training image, an evaluated sample.

Each kind of work (:data:`KINDS`) runs at its own throughput; the counts come from the flop table
(:mod:`jobs.cost.flops`). Datasets are sized without opening them (ImageNet's split sizes for folders).
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

from jobs.cost.flops import SD_VAE_CONFIG, SD_VAE_DOWNSAMPLE

__all__ = ["Work", "KINDS", "KIND_DOC", "DEFAULT_PRECISION", "IMAGENET_SPLITS", "add_work", "codec_geometry",
           "stored_latents", "geometry", "sit_args", "train_work", "meanflow_forwards", "train_image_work", "sample_work",
           "extractor_flops", "num_classes", "split_size"]

Work = dict[tuple[str, str], float]  # (kind, precision) -> FLOPs

# kinds of work, each with its own throughput (MFU) and precision
KINDS = ("train", "target", "vae-encode", "sample", "decode", "extract", "encode", "probe")
KIND_DOC = {
    "train": "SiT + projector forward and backward in training",
    "target": "frozen encoder forward in training (the alignment target)",
    "vae-encode": "SD-VAE encoder on each training image (latent runs on data without stored SD-VAE moments)",
    "sample": "SiT forward in the sampler",
    "decode": "SD-VAE decoder on each sample",
    "extract": "FID extractor (InceptionV3) on samples and dataset references",
    "encode": "encoder forward and spatial-metric Gram matrices in scoring",
    "probe": "linear-probe L-BFGS evaluations",
}
# what the code runs today outside training (study/sampling/sample.py turns TF32 matmuls on with the run's tf32 setting,
# true in every preset, as DiT/SiT/REPA sample, and runs bf16 autocast only for a protocol that says precision: bf16;
# cuDNN convolutions allow TF32 by default; the Inception extractor turns TF32 off; scoring's encoders run their
# matmuls in TF32 (study.scoring, since issue 18; bf16 when asked); the probe is fp32)
DEFAULT_PRECISION = {"sample": "tf32", "decode": "tf32", "extract": "fp32", "encode": "tf32", "probe": "fp32"}

IMAGENET_SPLITS = {"train": 1_281_167, "val": 50_000}
IMAGENET_CLASSES = 1000


def add_work(total: Work, part: Mapping[tuple[str, str], float], scale: float = 1.0) -> None:
    for key, flops in part.items():
        total[key] = total.get(key, 0.0) + scale * flops


def _sit_precision(cfg_precision: str, tf32: bool) -> str:
    if cfg_precision in ("auto", "bf16"):
        return "bf16"  # auto = bf16 autocast on a GPU
    return "tf32" if tf32 else "fp32"


# ------------------------------------------------------------------------------------------------ datasets
def _synthetic(spec: str) -> dict[str, int]:
    from study.data import parse_synthetic_spec

    return parse_synthetic_spec(spec)


def num_classes(dataset: str) -> int:
    return _synthetic(dataset)["classes"] if str(dataset).startswith("synthetic") else IMAGENET_CLASSES


def split_size(dataset: str, split: str, limit: int | None) -> int:
    if str(dataset).startswith("synthetic"):
        n = _synthetic(dataset)["n"]
    else:
        n = IMAGENET_SPLITS.get(split, IMAGENET_SPLITS["val"])
    return min(n, limit) if limit else n


@functools.lru_cache(maxsize=None)
def stored_latents(dataset: str, split: str) -> bool | None:
    """:func:`study.data.stored_latents`, memoised (a sweep asks once per run)."""
    from study.data import stored_latents as lookup

    return lookup(dataset, split)


# ------------------------------------------------------------------------------------------------ geometry
def codec_geometry(codec: str) -> tuple[int, int, bool]:
    """``(channels, downsample, latent)`` of ``data.codec``'s model space, the name resolved as training resolves
    it (:func:`study.data.get_codec`: ``sd-vae``, ``sdvae``, the hub id...), without loading the VAE."""
    from study.data import SDVAECodec, get_codec

    made = get_codec(codec)
    if isinstance(made, SDVAECodec):  # its channels and downsampling would load the weights: use the config
        return SD_VAE_CONFIG["latent_channels"], SD_VAE_DOWNSAMPLE, True
    return int(made.channels), int(made.downsample), False


def geometry(cfg: Any) -> dict[str, Any]:
    """Model-space geometry of a training config, without opening its dataset or loading the VAE."""
    spec = str(cfg.data.spec)
    if cfg.data.image_size:
        image_size = int(cfg.data.image_size)
    elif spec.startswith("synthetic"):
        image_size = _synthetic(spec)["size"]
    else:
        image_size = 256  # folders are center-cropped to 256 by default; prepared data stores 256 px crops
    channels, down, latent = codec_geometry(cfg.data.codec)
    return {"image_size": image_size, "input_size": image_size // down, "in_channels": channels,
            "num_classes": num_classes(spec), "latent": latent}


# ------------------------------------------------------------------------------------------------ training
def train_work(table: Any, *, size: str, input_size: int, in_channels: int, num_classes: int,
               patch_size: int | None, qk_norm: bool, encoders: Iterable[tuple[str, str]], align: bool,
               projector: str, hidden_dim: int, kernel_size: int, sit_precision: str,
               encoder_precision: str, extra_forwards: float = 0.0) -> Work:
    """FLOPs of one training image: 3 x (SiT + projectors forward) + each frozen encoder's forward, plus
    ``extra_forwards`` SiT forwards without grad (MeanFlow: see :func:`meanflow_forwards`)."""
    from study.config import resolve_size

    resolved = resolve_size(size, patch_size)
    dims, grid = resolved.dims, (input_size // resolved.patch, input_size // resolved.patch)
    sit = table.sit(size, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                    patch_size=patch_size, qk_norm=qk_norm)
    trained, target = float(sit), 0.0
    if align:
        for name, weights in encoders:
            enc = table.encoder(name, weights)
            target += enc["flops"]
            trained += table.projector(projector, dims.hidden, enc["embed_dim"], grid=grid, hidden_dim=hidden_dim,
                                       kernel_size=kernel_size)
    work: Work = {("train", sit_precision): 3.0 * trained + extra_forwards * float(sit)}
    if target:
        work[("target", encoder_precision)] = target
    return work


def meanflow_forwards(meanflow: Any) -> float:
    """SiT forwards a MeanFlow step adds to flow matching's forward + backward: the JVP (counted as 2 forwards:
    primal and tangent, an assumption) and the guidance forwards of the folded CFG (1 with kappa 0, 2 with kappa >
    0, none without guidance)."""
    if meanflow is None:
        return 0.0
    guided = not (meanflow.omega == 1.0 and meanflow.kappa == 0.0)
    return 2.0 + (0.0 if not guided else (2.0 if meanflow.kappa > 0 else 1.0))


def sit_args(cfg: Any, geo: Mapping[str, Any]) -> dict[str, Any]:
    """What names a run's SiT in the flop table (``table.sit(**sit_args(...))``)."""
    return dict(size=cfg.model.size, input_size=geo["input_size"], in_channels=geo["in_channels"],
                num_classes=geo["num_classes"], patch_size=cfg.model.patch_size, qk_norm=cfg.model.qk_norm)


def train_image_work(table: Any, cfg: Any, geo: Mapping[str, Any], *, encodes_images: bool) -> Work:
    """FLOPs of one training image of ``cfg`` (a TrainConfig): :func:`train_work`, REPA-E's extra work
    (:mod:`jobs.cost.repae`), and with ``encodes_images`` (a latent run on data without stored moments:
    :func:`stored_latents`) the SD-VAE encoder."""
    m = cfg.method
    sit_prec = _sit_precision(cfg.precision, cfg.tf32)
    common = sit_args(cfg, geo)
    work = train_work(table, **common, encoders=[(n, cfg.encoder.weights) for n in cfg.encoder.names],
                      align=m.align, projector=m.projector, hidden_dim=m.hidden_dim, kernel_size=m.kernel_size,
                      sit_precision=sit_prec,
                      encoder_precision="bf16" if cfg.encoder.bf16 else ("tf32" if cfg.tf32 else "fp32"),
                      extra_forwards=meanflow_forwards(cfg.meanflow))
    if m.repae is not None:  # REPA-E: + the VAE (which encodes the images), LPIPS, PatchGAN, the VAE's alignment pass
        from jobs.cost.repae import repae_train_flops

        sit = float(table.sit(**common))
        work[("train", sit_prec)] += repae_train_flops(table, cfg, image_size=geo["image_size"], sit_flops=sit,
                                                       projector_flops=work[("train", sit_prec)] / 3.0 - sit)
    elif encodes_images:
        # the codec encodes each image, fp32 weights outside autocast (cuDNN TF32 with the run's tf32)
        work[("vae-encode", "tf32" if cfg.tf32 else "fp32")] = float(table.sd_vae_encode(geo["image_size"]))
    return work


# ------------------------------------------------------------------------------------------------ evaluation
def sample_work(table: Any, *, size: str, input_size: int, in_channels: int, num_classes: int,
                patch_size: int | None, qk_norm: bool, num_steps: int, cfg_scale: float, latent: bool,
                extractor: str, precision: Mapping[str, str]) -> Work:
    """FLOPs of one evaluated sample: the sampler's forwards, the VAE decoder, the feature extractor."""
    sit = table.sit(size, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                    patch_size=patch_size, qk_norm=qk_norm)
    cfg_factor = 1.0 if cfg_scale == 1.0 else 2.0
    work: Work = {("sample", precision["sample"]): float(num_steps) * cfg_factor * sit}
    if latent:
        work[("decode", precision["decode"])] = float(table.sd_vae_decode(input_size))
    work[("extract", precision["extract"])] = float(extractor_flops(table, extractor, num_classes))
    return work


def extractor_flops(table: Any, extractor: str, num_classes: int) -> int:
    if extractor == "inception":
        return table.inception()
    return table.layout_cnn(num_classes) if extractor == "layout" else table.small_cnn(num_classes)
