"""FLOPs of the study's networks, counted with ``torch.utils.flop_counter`` on the meta device (no memory, no weights).

Counts are per image and per forward pass: SiT (by size and input geometry), the alignment projector, each catalog
encoder (full size, or its ``tiny`` stand-in), the SD-VAE encoder and decoder and InceptionV3. Counting a full-size encoder takes
about a second, so the counts of every catalog entry and SiT size are shipped in ``jobs/cost/flops.json`` (regenerated
by ``benchmarks/count_flops.py``); anything not in it (a new entry, a changed entry: keys carry the entry's
fingerprint, a tiny stand-in) is counted on first use and memoised in the process.

FlopCounterMode counts matrix multiplications, convolutions and attention (2 FLOPs per multiply-add); element-wise
ops, norms and softmax are not counted (a few % of a transformer's FLOPs).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["FLOPS_FILE", "SD_VAE_CONFIG", "SD_VAE_DOWNSAMPLE", "count_flops", "sit_key", "sit_flops", "projector_flops", "encoder_key",
           "encoder_flops", "sd_vae_encode_flops", "sd_vae_decode_flops", "inception_flops", "small_cnn_flops", "layout_cnn_flops",
           "FlopTable", "flop_table"]

FLOPS_FILE = Path(__file__).resolve().parent / "flops.json"
FORMAT = 1

# stabilityai/sd-vae-ft-mse's AutoencoderKL config (its config.json), so the VAE builds offline on meta
SD_VAE_CONFIG: dict[str, Any] = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                                     up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                                     layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=256)
#: the SD-VAE latent grid is the image side over this (SDVAECodec.downsample, from the config)
SD_VAE_DOWNSAMPLE = 2 ** (len(SD_VAE_CONFIG["block_out_channels"]) - 1)


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs that ``fn()`` dispatches (under no_grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------ SiT + projector
def sit_key(size: str, *, input_size: int, in_channels: int, num_classes: int, patch_size: int | None = None,
            qk_norm: bool = False) -> str:
    return f"sit|{size}|in{input_size}x{in_channels}|p{patch_size}|c{num_classes}|qk{int(qk_norm)}"


def sit_flops(size: str, *, input_size: int, in_channels: int, num_classes: int = 1000,
              patch_size: int | None = None, qk_norm: bool = False) -> int:
    """One SiT forward of one sample (``input_size`` is the model-space side: 32 for SD-VAE latents of 256 px); a
    ``JiT-*`` size counts the JiT (pixel space)."""
    from study.models import build_network

    with torch.device("meta"):
        sit = build_network(size, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                            patch_size=patch_size, qk_norm=qk_norm)
    sit = sit.to("meta")  # the sin-cos position buffer is built from numpy on the CPU
    x = torch.zeros(1, in_channels, input_size, input_size, device="meta")
    t = torch.zeros(1, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    return count_flops(lambda: sit(x, t, y))


def projector_flops(kind: str, in_dim: int, out_dim: int, *, grid: tuple[int, int], hidden_dim: int = 2048,
                    kernel_size: int = 3) -> int:
    """One projector forward over one sample's ``grid`` of tokens."""
    from study.objectives import build_projector

    with torch.device("meta"):
        proj = build_projector(kind, in_dim, out_dim, hidden_dim=hidden_dim, kernel_size=kernel_size)
    h = torch.zeros(1, grid[0] * grid[1], in_dim, device="meta")
    return count_flops(lambda: proj(h, grid))


# ------------------------------------------------------------------------------------------------ encoders
def _mode(weights: str) -> str:
    """Random-init and pretrained weights have the same cost; only the tiny stand-ins differ."""
    return "tiny" if weights == "tiny" else "full"


# the entry fields that decide the network and its input (not its licence, notes or normalisation constants)
_ARCH_FIELDS = ("source", "model_id", "hf_class", "hf_config", "adapter", "create_kwargs", "post_build", "input_res",
                "patch_size", "grid", "embed_dim", "prefix_tokens", "final_norm", "tiny")


def _arch_fingerprint(spec: Any) -> str:
    import hashlib

    data = spec.model_dump(mode="json")
    blob = json.dumps({k: data.get(k) for k in _ARCH_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def encoder_key(name: str, weights: str = "pretrained") -> str:
    """``encoder|BASE|full|ARCH-FINGERPRINT``: variants (``@clsmix=``) cost what their base entry costs; a change to
    an entry's architecture fields gives a new key (counted afresh), other edits keep the shipped count."""
    import encoders

    spec, _ = encoders.resolve_name(name)
    return f"encoder|{spec.name}|{_mode(weights)}|{_arch_fingerprint(spec)}"


def encoder_flops(name: str, weights: str = "pretrained") -> dict[str, Any]:
    """One forward of one image at the entry's ``input_res`` (the resize is not counted):
    ``{flops, embed_dim, tokens, has_cls}``; built on the meta device as ``encoders.check_encoder`` does."""
    import encoders
    from encoders.build import build_model

    spec, _ = encoders.resolve_name(name)
    if _mode(weights) == "tiny":
        with torch.device("meta"):
            model = build_model(spec, "tiny")
    else:
        model = build_model(spec, "meta")
    model = model.to("meta")
    enc = encoders.Encoder(spec, model, "tiny" if _mode(weights) == "tiny" else "meta", device="meta")
    x = enc.preprocess(torch.zeros(1, 3, spec.input_res, spec.input_res, dtype=torch.uint8, device="meta"))
    out: dict[str, Any] = {}

    def run() -> None:
        patch, _ = enc._forward(x)
        out["tokens"], out["embed_dim"] = int(patch.shape[1]), int(patch.shape[2])

    flops = count_flops(run)
    return {"flops": flops, "embed_dim": out["embed_dim"], "tokens": out["tokens"],
            "has_cls": spec.cls_index is not None}


# ------------------------------------------------------------------------------------------------ codec, evaluation nets
def _sd_vae():
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL(**SD_VAE_CONFIG)


def sd_vae_encode_flops(image_size: int = 256) -> int:
    """The SD-VAE encoder (to the posterior moments) on one ``image_size`` px image."""
    x = torch.zeros(1, 3, image_size, image_size, device="meta")
    vae = _sd_vae()
    return count_flops(lambda: vae.encode(x))


def sd_vae_decode_flops(latent_size: int = 32) -> int:
    """The SD-VAE decoder on one ``4 x latent_size^2`` latent (256 px image for 32)."""
    z = torch.zeros(1, SD_VAE_CONFIG["latent_channels"], latent_size, latent_size, device="meta")
    vae = _sd_vae()
    return count_flops(lambda: vae.decode(z))


def inception_flops() -> int:
    """InceptionV3 at 299 px (torchvision's architecture; the TF-compat one of torch-fidelity has the same layers)."""
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    net.eval()
    x = torch.zeros(1, 3, 299, 299, device="meta")
    return count_flops(lambda: net(x))


def layout_cnn_flops(num_classes: int = 10) -> int:
    """The layout-sensitive extractor (``study.evaluation.LayoutCNN``, default recipe) on one image."""
    from study.evaluation import LayoutCNN, LayoutConfig

    cfg = LayoutConfig()
    with torch.device("meta"):
        net = LayoutCNN(num_classes, cfg.width, cfg.dim_global, cfg.spatial_ch).eval()
    x = torch.zeros(1, 3, net.input_size, net.input_size, dtype=torch.uint8, device="meta")  # what it is fed
    return count_flops(lambda: net(x))


def small_cnn_flops(num_classes: int = 10) -> int:
    """The synthetic-data extractor (``study.evaluation.extractor.SmallCNN``, default recipe) on one image."""
    from study.evaluation import ExtractorConfig, SmallCNN

    cfg = ExtractorConfig()
    with torch.device("meta"):
        net = SmallCNN(num_classes, width=cfg.width, dim=cfg.dim, input_size=cfg.input_size)
    x = torch.zeros(1, 3, cfg.input_size, cfg.input_size, device="meta")
    return count_flops(lambda: net(x))


# ------------------------------------------------------------------------------------------------ the table
class FlopTable:
    """Counts by key: the shipped JSON first, else counted now (and kept for this process; ``save`` writes)."""

    def __init__(self, path: Path | None = FLOPS_FILE) -> None:
        self.path = path
        self.entries: dict[str, Any] = {}
        self.counted: list[str] = []  # keys not found in the file
        self._lock = threading.Lock()
        if path is not None and path.is_file():
            data = json.loads(path.read_text())
            if data.get("format") == FORMAT:
                self.entries = dict(data.get("entries", {}))

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self.entries:
                self.entries[key] = compute()
                self.counted.append(key)
            return self.entries[key]

    def sit(self, size: str, *, input_size: int, in_channels: int, num_classes: int, patch_size: int | None = None,
            qk_norm: bool = False) -> int:
        key = sit_key(size, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                      patch_size=patch_size, qk_norm=qk_norm)
        return int(self.get(key, lambda: sit_flops(size, input_size=input_size, in_channels=in_channels,
                                                   num_classes=num_classes, patch_size=patch_size,
                                                   qk_norm=qk_norm)))

    def projector(self, kind: str, in_dim: int, out_dim: int, *, grid: tuple[int, int], hidden_dim: int,
                  kernel_size: int) -> int:
        key = f"projector|{kind}|{in_dim}->{out_dim}|g{grid[0]}x{grid[1]}|h{hidden_dim}|k{kernel_size}"
        return int(self.get(key, lambda: projector_flops(kind, in_dim, out_dim, grid=grid, hidden_dim=hidden_dim,
                                                         kernel_size=kernel_size)))

    def encoder(self, name: str, weights: str = "pretrained") -> dict[str, Any]:
        def count() -> dict[str, Any]:
            try:
                return encoder_flops(name, weights)
            except Exception as exc:  # a build failure on meta is the entry's problem, say which
                raise ValueError(f"cannot count the FLOPs of encoder {name!r} ({type(exc).__name__}: {exc}); "
                                 f"check it with `repa-study encoders check {name} --meta`") from exc
        return dict(self.get(encoder_key(name, weights), count))

    def sd_vae_encode(self, image_size: int = 256) -> int:
        return int(self.get(f"sd-vae-encode|{image_size}", lambda: sd_vae_encode_flops(image_size)))

    def sd_vae_decode(self, latent_size: int = 32) -> int:
        return int(self.get(f"sd-vae-decode|{latent_size}", lambda: sd_vae_decode_flops(latent_size)))

    def inception(self) -> int:
        return int(self.get("inception-v3|299", inception_flops))

    def small_cnn(self, num_classes: int) -> int:
        return int(self.get(f"small-cnn|c{num_classes}", lambda: small_cnn_flops(num_classes)))

    def layout_cnn(self, num_classes: int) -> int:
        return int(self.get(f"layout-cnn|c{num_classes}", lambda: layout_cnn_flops(num_classes)))

    def save(self, path: Path | None = None) -> Path:
        from study.common import atomic_write_json

        target = Path(path or self.path or FLOPS_FILE)
        atomic_write_json(target, {"format": FORMAT, "torch": torch.__version__,
                                   "note": "FLOPs per image, one forward (torch.utils.flop_counter on meta); "
                                           "regenerate with benchmarks/count_flops.py",
                                   "entries": dict(sorted(self.entries.items()))}, indent=1)
        return target


_TABLE: FlopTable | None = None


def flop_table() -> FlopTable:
    """The process-wide table (shipped counts + anything counted since)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = FlopTable()
    return _TABLE
