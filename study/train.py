"""REPA / iREPA training of a SiT: typed config, the training loop, checkpoint/resume, data parallel.

``train(cfg, run_dir)`` runs (or resumes) one training run. The run directory holds:

- ``config.yaml`` (resolved) and ``config_hash``; ``provenance.json`` (git commit, versions, seeds, world size);
- ``log.jsonl``: one line per ``log_every`` steps (step, loss, loss_v, loss_align, grad_norm, images_per_s, lr);
- ``checkpoints/step_XXXXXXX.pt`` every ``ckpt_every`` steps and at the end, written atomically: model, EMA,
  optimizer, step, RNG states, data position;
- ``samples/grid_step_XXXXXXX.png`` every ``sample_every`` steps (EMA model, fixed noise, Euler ODE).

Determinism: the data order is a permutation drawn from (seed, epoch); each step's noise, times and label dropout
come from a generator seeded by (seed, step) over the *global* batch and each rank takes its slice. So a resumed run
reproduces the uninterrupted one, and N ranks reproduce one process on the same global batch.
"""
from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from copy import deepcopy
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from study.align import alignment_loss, build_projector, spatial_normalize
from study.config import ConfigError, StrictModel, apply_overrides, config_hash, dump_config, load_config, \
    load_yaml, parse_overrides
from study.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from study.flow import interpolate, sample_time
from study.io import atomic_torch_save, atomic_write_json, atomic_write_text
from study.log import get_logger, progress
from study.data import collate, open_dataset
from study.data.codecs import GridMismatchError, check_token_grid
from study.models.sit import SiT, build_sit, parse_size

__all__ = [
    "TrainConfig", "load_train_config", "build_train_config", "train", "PRESETS_DIR", "list_presets",
    "GridMismatchError", "NonFiniteLossError", "build_model", "build_codec", "latest_checkpoint",
    "checkpoint_path", "Denoiser", "TrainingStep",
]

log = get_logger(__name__)
PRESETS_DIR = Path(__file__).resolve().parent / "presets"


# ------------------------------------------------------------------------------------------------------ config
class ModelSection(StrictModel):
    size: str = "SiT-XL/2"          # SiT-S/2, SiT-B/2, SiT-L/2, SiT-XL/2, tiny, smoke (a /P suffix sets the patch)
    patch_size: int | None = None   # overrides the size's /P (default 2); the token grid must match the encoder's
    qk_norm: bool = False
    class_dropout: float = Field(0.1, ge=0.0, le=1.0)  # label dropout for classifier-free guidance

    @field_validator("size")
    @classmethod
    def _known_size(cls, v: str) -> str:
        parse_size(v)
        return v


class MethodSection(StrictModel):
    name: str = "repa"              # a label recorded with results; the values below define the method
    align: bool = True              # False: vanilla SiT (no encoder, no alignment loss)
    projector: Literal["mlp", "linear", "conv"] = "mlp"
    kernel_size: int = Field(3, ge=1)
    hidden_dim: int = Field(2048, ge=1)  # MLP projector width
    spatial_norm: bool = False      # iREPA's spatial z-score of the encoder target
    gamma: float = 0.6
    lam: float = Field(0.5, ge=0.0)  # weight of the alignment loss (lambda)
    depth: int | None = None        # align after this block; None: the size's default (4 for S/B, 8 for L/XL)


class EncoderSection(StrictModel):
    name: str | list[str] = "dinov2-vit-b"  # one name or a list (losses averaged); NAME@clsmix=A variants allowed
    weights: Literal["pretrained", "random", "tiny"] = "pretrained"
    bf16: bool = False              # run the frozen encoder under bf16 autocast (faster on GPU; targets in fp32)

    @property
    def names(self) -> list[str]:
        return [self.name] if isinstance(self.name, str) else list(self.name)


class DataSection(StrictModel):
    spec: str = "synthetic:n=512,size=32,classes=10,seed=0"  # see study.data.open_dataset
    split: str = "train"
    image_size: int | None = None   # resize to this (None: the dataset's own size)
    codec: str = "identity"         # identity (pixel space) or sd-vae (latent space)
    latent_stats: str | None = None  # SD-VAE per-channel scale/bias file (None: the prepared dataset's, else 0.18215)
    num_workers: int = Field(0, ge=0)


class OptimSection(StrictModel):
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    eps: float = 1e-8
    grad_clip: float = Field(1.0, ge=0)  # 0: no clipping
    warmup_steps: int = Field(0, ge=0)


class FlowSection(StrictModel):
    path: Literal["linear", "cosine"] = "linear"
    time: Literal["uniform", "lognormal"] = "uniform"
    time_mean: float = 0.0
    time_std: float = 1.0


class GridSection(StrictModel):
    n: int = Field(16, ge=1)        # images in the periodic sample grid
    num_steps: int = Field(50, ge=1)
    mode: Literal["ode", "sde"] = "ode"
    cfg_scale: float = 1.0


class TrainConfig(StrictModel):
    model: ModelSection = ModelSection()
    method: MethodSection = MethodSection()
    encoder: EncoderSection = EncoderSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    flow: FlowSection = FlowSection()
    grid: GridSection = GridSection()
    steps: int = Field(400_000, ge=1)
    batch_size: int = Field(256, ge=1)  # global batch (all ranks, all accumulation micro-batches)
    grad_accum: int = Field(1, ge=1)
    ema_decay: float = Field(0.9999, ge=0.0, le=1.0)
    seed: int = 0
    ckpt_every: int = Field(50_000, ge=1)  # resume points (see _prune_checkpoints for which are kept)
    ckpt_keep_every: int | None = Field(None, ge=1)  # also keep multiples of this; None with no ckpt_keep: keep all
    ckpt_keep: list[int] = Field(default_factory=list)  # steps always written and kept (e.g. the evaluated ones)
    log_every: int = Field(100, ge=1)
    sample_every: int = Field(0, ge=0)  # 0: no sample grids
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    tf32: bool = True
    compile: bool = False
    device: str = "auto"
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)


# ------------------------------------------------------------------------------------------------------ loading
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _preset_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(f"{name_or_path!r} is neither a config file nor a preset; presets: "
                          f"{', '.join(list_presets())}")
    return preset


def _load_raw(name_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config file's mapping with its ``base:`` chain merged in and ``method: NAME`` resolved."""
    path = _preset_path(name_or_path)
    key = str(path.resolve())
    if key in seen:
        raise ConfigError(f"config base cycle: {' -> '.join(seen + (key,))}")
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        data = apply_overrides(_load_raw(base, seen + (key,)), data)
    if isinstance(data.get("method"), str):
        data["method"] = _method_of(data["method"], seen + (key,))
    return data


def _method_of(preset: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``method`` section of a preset, so ``method=irepa`` swaps in the whole method."""
    method = _load_raw(preset, seen).get("method")
    if not isinstance(method, Mapping):
        raise ConfigError(f"preset {preset!r} has no method section; method presets: repa, irepa, irepa-released")
    return dict(method)


def _merge_overrides(data: dict[str, Any], overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(overrides, Mapping):
        extra = dict(overrides)
    else:
        items = list(overrides)
        for item in items:  # method=NAME first, so method.gamma=... may refine it
            if item.split("=", 1)[0].strip() == "method":
                data["method"] = _method_of(item.split("=", 1)[1].strip())
        extra = parse_overrides([i for i in items if i.split("=", 1)[0].strip() != "method"])
    if isinstance(extra.get("method"), str):
        data["method"] = _method_of(extra.pop("method"))
    return apply_overrides(data, extra)


def load_train_config(preset_or_path: str | Path | Mapping[str, Any],
                      overrides: Iterable[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """A preset name (``study/presets/NAME.yaml``), a YAML path or a mapping, with ``key=value`` overrides.

    A config may name ``base: PRESET`` (merged underneath), and ``method: repa|irepa|irepa-released`` (a string)
    takes the method section of that preset.
    """
    if isinstance(preset_or_path, Mapping):
        data = dict(preset_or_path)
        base = data.pop("base", None)
        if base is not None:
            data = apply_overrides(_load_raw(base), data)
        if isinstance(data.get("method"), str):
            data["method"] = _method_of(data["method"])
        where = "<mapping>"
    else:
        data = _load_raw(preset_or_path)
        where = str(_preset_path(preset_or_path))
    data = _merge_overrides(data, overrides)
    try:
        return load_config(TrainConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_train_config(method: str, model: str, encoder: str | list[str], *, steps: int, seed: int, data: str,
                       base: str | None = None,
                       overrides: Iterable[str] | Mapping[str, Any] = {}) -> TrainConfig:  # noqa: B006
    """The config of one sweep point: ``base`` preset (default ``tiny`` for synthetic data, else ``imagenet``),
    the ``method`` preset's method section, then model size, encoder, steps, seed, dataset, then ``overrides``."""
    base = base or ("tiny" if data.startswith("synthetic") else "imagenet")
    raw = _load_raw(base)
    raw["method"] = _method_of(method)
    raw = apply_overrides(raw, {"model": {"size": model}, "encoder": {"name": encoder}, "steps": steps,
                                "seed": seed, "data": {"spec": data}})
    raw = _merge_overrides(raw, overrides)
    return load_config(TrainConfig, raw)


# ------------------------------------------------------------------------------------------------------ errors
class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


# ------------------------------------------------------------------------------------------------------ codec
def build_codec(name: str, device: torch.device | str = "cpu", *, stats: Any = None):
    """The codec named by ``data.codec`` (``study.data.codecs``): ``identity`` or ``sd-vae`` (with latent stats)."""
    from study.data.codecs import get_codec

    if name in ("identity", "pixel"):
        return get_codec(name)
    return get_codec(name, device=device, stats=stats)


# ------------------------------------------------------------------------------------------------------ model
class Denoiser(nn.Module):
    """The trained module: the SiT plus one projector per encoder (what DDP wraps and the optimizer updates)."""

    def __init__(self, sit: SiT, projectors: list[nn.Module]) -> None:
        super().__init__()
        self.sit = sit
        self.projectors = nn.ModuleList(projectors)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        v, hidden = self.sit(x_t, t, y)
        return v, [p(hidden, self.sit.grid) for p in self.projectors]


def build_model(cfg: TrainConfig, *, image_size: int, num_classes: int, codec,
                encoder_dims: list[int] = ()) -> Denoiser:
    sit = build_sit(cfg.model.size, input_size=image_size // codec.downsample, in_channels=codec.channels,
                    num_classes=num_classes, patch_size=cfg.model.patch_size, align_depth=cfg.method.depth,
                    qk_norm=cfg.model.qk_norm)
    m = cfg.method
    projectors = [build_projector(m.projector, sit.hidden, d, hidden_dim=m.hidden_dim, kernel_size=m.kernel_size)
                  for d in encoder_dims] if m.align else []
    return Denoiser(sit, projectors)


def _encoder_dims_and_check(encoders: list, codec, image_size: int, patch_size: int,
                            device: torch.device) -> list[int]:
    """Each encoder's feature width, probed on a dummy batch; a token-grid mismatch is a clear error."""
    dims = []
    for enc in encoders:
        try:
            grid = check_token_grid(codec, image_size, patch_size, enc.spec.grid)
        except GridMismatchError as exc:
            raise GridMismatchError(f"encoder {enc.name}: {exc}") from None
        out = enc.encode(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8, device=device))["patch"]
        if out.shape[1] != grid[0] * grid[1]:
            raise GridMismatchError(f"encoder {enc.name} gives {out.shape[1]} tokens, not the {grid[0]}x{grid[1]} "
                                    "grid its catalog entry promises")
        dims.append(out.shape[-1])
    return dims


# ------------------------------------------------------------------------------------------------------ data
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


def global_batch_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """Dataset indices of the global batch of ``step`` (0-based): epochs of ``n // batch`` steps, each a
    permutation drawn from (seed, epoch); the data position of step s is ``s * batch``."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise ConfigError(f"batch_size {batch} is larger than the dataset ({n} images)")
    epoch, k = divmod(step, per_epoch)
    return _epoch_permutation(n, seed, epoch)[k * batch:(k + 1) * batch]


class _StepBatches(torch.utils.data.Sampler):
    """Yields this rank's indices for steps ``start, start+1, ...`` (a batch sampler for the DataLoader)."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, rank: int, world: int) -> None:
        self.n, self.batch, self.seed, self.start, self.stop = n, batch, seed, start, stop
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        local = self.batch // self.world
        for step in range(self.start, self.stop):
            idx = global_batch_indices(self.n, self.batch, self.seed, step)
            yield idx[self.rank * local:(self.rank + 1) * local].tolist()


def open_train_dataset(cfg: TrainConfig):
    return open_dataset(cfg.data.spec, cfg.data.split, size=cfg.data.image_size)


def step_noise(seed: int, step: int, batch: int, shape: tuple[int, ...], flow: FlowSection, class_dropout: float,
               posterior: bool = False) -> dict[str, torch.Tensor]:
    """The global batch's random draws for ``step`` from a generator seeded by (seed, step): ``eps`` (noise),
    ``t`` (times), ``drop`` (label dropout) and, for stored VAE moments, ``post`` (the posterior sample's noise)."""
    g = torch.Generator().manual_seed((seed * 7_919 + step * 1_000_003 + 12_345) % (2**63))
    out = {"eps": torch.randn((batch, *shape), generator=g),
           "t": sample_time(flow.time, batch, generator=g, mean=flow.time_mean, std=flow.time_std)}
    out["drop"] = torch.rand(batch, generator=g) < class_dropout
    if posterior:
        out["post"] = torch.randn((batch, *shape), generator=g)
    return out


# ------------------------------------------------------------------------------------------------------ the step
class TrainingStep:
    """Loss of one micro-batch: flow-matching MSE on the velocity plus ``lam`` x the alignment loss."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, encoders: list, codec, num_classes: int,
                 grid: tuple[int, int]) -> None:
        self.cfg, self.model, self.encoders, self.codec = cfg, model, encoders, codec
        self.num_classes, self.grid = num_classes, grid

    def targets(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen encoders on the clean uint8 images (no grad, eval mode), optionally spatially normalised."""
        out = []
        with torch.no_grad():
            for enc in self.encoders:
                z = enc.encode(images)["patch"].float()
                if self.cfg.method.spatial_norm:
                    z = spatial_normalize(z, gamma=self.cfg.method.gamma)
                out.append(z)
        return out

    def model_input(self, images: torch.Tensor, moments: torch.Tensor | None,
                    post: torch.Tensor | None) -> torch.Tensor:
        """The clean model-space input: stored VAE moments -> a posterior sample (noise ``post``), normalised by
        the codec's latent statistics (as the authors do each step); otherwise the codec encodes the images."""
        with torch.no_grad():
            if moments is None:
                return self.codec.encode(images).float()
            if post is None:
                raise ValueError("stored VAE moments need posterior noise (use a latent codec, not identity)")
            mean, logvar = moments.float().chunk(2, dim=1)
            return self.codec.stats.normalize(mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * post)

    def losses(self, images: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
               drop: torch.Tensor, autocast, moments: torch.Tensor | None = None,
               post: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.model_input(images, moments, post)
        x_t, v_target = interpolate(self.cfg.flow.path, x, eps, t)
        y = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        zs = self.targets(images) if (self.cfg.method.align and self.encoders) else []
        with autocast:
            v, preds = self.model(x_t, t, y)
        loss_v = F.mse_loss(v.float(), v_target)
        if zs:
            loss_a = torch.stack([alignment_loss(p, z) for p, z in zip(preds, zs)]).mean()
        else:
            loss_a = torch.zeros((), device=x.device)
        return loss_v + self.cfg.method.lam * loss_a, loss_v, loss_a


# ------------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}.pt"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # fewer GPUs than when saved
            log.warning("could not restore CUDA RNG states (different GPU count); data/noise order is unaffected")


def _stats_dict(codec) -> dict[str, Any] | None:
    stats = getattr(codec, "stats", None)
    return None if stats is None else {"scale": list(stats.scale), "bias": list(stats.bias), "source": stats.source}


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


# ------------------------------------------------------------------------------------------------------ loop
def _autocast(cfg: TrainConfig, device: torch.device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _write_run_header(cfg: TrainConfig, run_dir: Path, info: DistInfo) -> str:
    from results.provenance import now_iso, provenance

    h = config_hash(cfg)
    existing = run_dir / "config.yaml"
    if existing.is_file():
        old = load_config(TrainConfig, load_yaml(existing))
        if config_hash(old) != h:
            raise ConfigError(f"{run_dir} already holds a run with a different config (hash {config_hash(old)} vs "
                              f"{h}); use a new run directory, or the same config to resume")
    dump_config(cfg, existing)
    atomic_write_text(run_dir / "config_hash", h + "\n")
    prov = {**provenance(), "config_hash": h, "seed": cfg.seed, "world_size": info.world_size,
            "device": str(info.device), "torch": torch.__version__, "started_at": now_iso()}
    prov_path = run_dir / "provenance.json"
    history = json.loads(prov_path.read_text()).get("sessions", []) if prov_path.is_file() else []
    prov["sessions"] = history + [{"started_at": prov["started_at"], "git_commit": prov["git_commit"],
                                   "world_size": info.world_size, "host": prov["host"]}]
    atomic_write_json(prov_path, prov, indent=2)
    return h


def train(cfg: TrainConfig, run_dir: str | Path, *, max_steps: int | None = None) -> dict[str, Any]:
    """Train (or resume from the run dir's last checkpoint) up to ``cfg.steps`` (or ``max_steps``, if smaller).

    Returns ``{"run_dir", "step", "checkpoint", "config_hash", "loss", "loss_v", "loss_align"}`` (last logged).
    """
    import encoders as enc_registry

    run_dir = Path(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device)
    device = info.device
    if cfg.batch_size % (info.world_size * cfg.grad_accum):
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by world size {info.world_size} x "
                          f"grad_accum {cfg.grad_accum}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    stop = min(cfg.steps, max_steps) if max_steps is not None else cfg.steps

    dataset = open_train_dataset(cfg)
    image_size = int(dataset.image_size)
    num_classes = int(dataset.num_classes)
    codec = build_codec(cfg.data.codec, device, stats=cfg.data.latent_stats or getattr(dataset, "latent_stats", None))
    torch.manual_seed(cfg.seed)  # model init is identical on every rank
    encoders = ([enc_registry.get_encoder(n, weights=cfg.encoder.weights, device=device,
                                         bf16=cfg.encoder.bf16 and device.type == "cuda") for n in cfg.encoder.names]
                if cfg.method.align else [])
    patch = cfg.model.patch_size or parse_size(cfg.model.size)[1] or 2
    dims = _encoder_dims_and_check(encoders, codec, image_size, patch, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, image_size=image_size, num_classes=num_classes, codec=codec,
                        encoder_dims=dims).to(device)
    meta = {"image_size": image_size, "num_classes": num_classes, "encoder_dims": dims, "grid": list(model.sit.grid),
            "dataset": getattr(dataset, "id", cfg.data.spec), "codec": getattr(codec, "id", cfg.data.codec),
            "latent_stats": _stats_dict(codec)}
    ema = deepcopy(model.sit).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay, eps=cfg.optim.eps)

    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        h = _write_run_header(cfg, run_dir, info)
    else:
        h = config_hash(cfg)
    barrier()

    start = 0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)  # RNG states must stay CPU tensors
        if state.get("config_hash") != h:
            raise ConfigError(f"checkpoint {ckpt} was written by config {state.get('config_hash')}, not {h}")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
        log.info("resumed %s from step %d (%s)", run_dir, start, ckpt.name)
        if info.is_main:
            _truncate_log(run_dir / "log.jsonl", start)
    n_params = sum(p.numel() for p in model.sit.parameters())
    log.info("SiT %s: %.2fM params, grid %s, %s, world %d, device %s", cfg.model.size, n_params / 1e6,
             model.sit.grid, cfg.method.name, info.world_size, device)

    ddp = model
    if info.distributed:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd = torch.compile(ddp) if cfg.compile else ddp
    stepper = TrainingStep(cfg, fwd, encoders, codec, num_classes, model.sit.grid)
    autocast = _autocast(cfg, device)
    x_shape = (codec.channels, image_size // codec.downsample, image_size // codec.downsample)
    latent = hasattr(codec, "stats")  # a VAE codec: stored moments are sampled with seeded posterior noise
    local = cfg.batch_size // info.world_size
    micro = local // cfg.grad_accum

    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_StepBatches(len(dataset), cfg.batch_size, cfg.seed, start, stop, info.rank,
                                            info.world_size),
        collate_fn=collate, num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    last: dict[str, Any] = {}
    tick, images_seen = time.perf_counter(), 0
    step = start
    model.train()
    with PreemptionSave() as preempt:
        for batch in progress(loader, desc=f"train {run_dir.name}", total=stop - start, unit="step"):
            sl = slice(info.rank * local, (info.rank + 1) * local)
            draws = {k: v[sl].to(device) for k, v in step_noise(cfg.seed, step, cfg.batch_size, x_shape, cfg.flow,
                                                                 cfg.model.class_dropout, posterior=latent).items()}
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            moments = batch["moments"].to(device, non_blocking=True) if "moments" in batch else None
            warm = min(1.0, (step + 1) / cfg.optim.warmup_steps) if cfg.optim.warmup_steps else 1.0
            lr = cfg.optim.lr * warm
            for group in opt.param_groups:
                group["lr"] = lr
            sums = torch.zeros(4, device=device)
            for i in range(cfg.grad_accum):
                mb = slice(i * micro, (i + 1) * micro)
                sync = nullcontext() if (i == cfg.grad_accum - 1 or not info.distributed) else ddp.no_sync()
                with sync:
                    loss, loss_v, loss_a = stepper.losses(
                        images[mb], labels[mb], draws["eps"][mb], draws["t"][mb], draws["drop"][mb], autocast,
                        moments=None if moments is None else moments[mb], post=draws["post"][mb] if latent else None)
                    (loss / cfg.grad_accum).backward()
                sums[:3] += torch.stack([loss.detach(), loss_v.detach(), loss_a.detach()]) / cfg.grad_accum
            sums[3] = preempt.requested  # rides on the loss all-reduce: every rank saves at the same step
            sums = all_reduce_mean(sums)
            values = sums.tolist()
            if not all(math.isfinite(v) for v in values):
                good = latest_checkpoint(run_dir)
                raise NonFiniteLossError(
                    f"non-finite loss at step {step + 1} (loss {values[0]}, loss_v {values[1]}, loss_align "
                    f"{values[2]}); the run stopped without updating the model. Last good checkpoint: "
                    f"{good or 'none'}. Lower optim.lr, check the data/codec, or use precision=fp32.")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                       cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            _update_ema(ema, model.sit, cfg.ema_decay)
            step += 1
            images_seen += cfg.batch_size
            if step % cfg.log_every == 0 or step == stop:
                now = time.perf_counter()
                last = {"step": step, "loss": values[0], "loss_v": values[1], "loss_align": values[2],
                        "grad_norm": float(grad_norm), "images_per_s": images_seen / max(now - tick, 1e-9), "lr": lr}
                tick, images_seen = now, 0
                if info.is_main:
                    with open(run_dir / "log.jsonl", "a") as fh:
                        fh.write(json.dumps(last) + "\n")
                    log.info("step %d loss %.4f (v %.4f, align %.4f) %.1f img/s", step, *values[:3],
                             last["images_per_s"])
            if cfg.sample_every and step % cfg.sample_every == 0 and info.is_main:
                _save_grid(cfg, ema, codec, num_classes, run_dir, step, device)
            preempted = values[3] > 0
            if step % cfg.ckpt_every == 0 or step == stop or step in cfg.ckpt_keep or preempted:
                _save_checkpoint(model, ema, opt, cfg, run_dir, step, h, info, meta)
                if info.is_main:
                    _prune_checkpoints(cfg, run_dir)
            if preempted:
                preempt.hand_over()

    if start >= stop:
        log.info("%s is already at step %d (target %d): nothing to do", run_dir, start, stop)
    barrier()
    return {"run_dir": str(run_dir), "step": step, "checkpoint": str(latest_checkpoint(run_dir)),
            "config_hash": h, **{k: last[k] for k in ("loss", "loss_v", "loss_align") if k in last}}


class PreemptionSave:
    """Turns SIGUSR2 (submitit's preemption / time-out signal) and SIGTERM into a checkpoint at the end of the
    current step, then hands the signal to the handler installed before (submitit's requeue, or the default:
    terminate). Without it a preempted job loses up to ``ckpt_every`` steps."""

    SIGNALS = ("SIGUSR2", "SIGTERM")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionSave":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _note(self, signum: int, frame: Any) -> None:
        self.signum = signum
        log.warning("received %s: saving a checkpoint at the end of this step", signal.Signals(signum).name)

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    @property
    def requested(self) -> float:
        return 0.0 if self.signum is None else 1.0

    def hand_over(self) -> None:
        """Deliver the noted signal to the previous handler; if that returns, keep watching."""
        signum, self.signum = self.signum, None
        if signum is None:  # another rank was signalled: it hands over, this one saved with it
            return
        previous = self._previous.get(signum)
        self._restore()
        if callable(previous):
            previous(signum, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)
        self.__enter__()


def kept_checkpoint(cfg: TrainConfig, step: int) -> bool:
    """Whether the checkpoint of ``step`` is kept for good (else it is a resume point, removed once a newer
    checkpoint exists): the final step, the ``ckpt_keep`` steps and multiples of ``ckpt_keep_every``; every
    checkpoint when neither is set."""
    if cfg.ckpt_keep_every is None and not cfg.ckpt_keep:
        return True
    return (step == cfg.steps or step in cfg.ckpt_keep
            or (cfg.ckpt_keep_every is not None and step % cfg.ckpt_keep_every == 0))


def _prune_checkpoints(cfg: TrainConfig, run_dir: Path) -> None:
    """Remove resume-only checkpoints older than the newest one (a SiT-XL/2 checkpoint is about 11 GB)."""
    ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    for path in ckpts[:-1]:
        step = int(path.stem.split("_")[1])
        if not kept_checkpoint(cfg, step):
            path.unlink(missing_ok=True)


def _save_checkpoint(model: Denoiser, ema: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, run_dir: Path,
                     step: int, h: str, info: DistInfo, meta: dict[str, Any]) -> None:
    if info.is_main:
        atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                            "step": step, "data_position": step * cfg.batch_size, "rng": _rng_state(),
                            "config_hash": h, "world_size": info.world_size, "meta": meta},
                           checkpoint_path(run_dir, step))
    barrier()


def _save_grid(cfg: TrainConfig, ema: nn.Module, codec, num_classes: int, run_dir: Path, step: int,
               device: torch.device) -> Path:
    from study.sample import sample_images, save_grid

    n = cfg.grid.n
    labels = torch.arange(n) % num_classes
    images = sample_images(ema, labels, seeds=list(range(n)), base_seed=cfg.seed, codec=codec, path=cfg.flow.path,
                           mode=cfg.grid.mode, num_steps=cfg.grid.num_steps, cfg_scale=cfg.grid.cfg_scale,
                           device=device)
    return save_grid(images, run_dir / "samples" / f"grid_step_{step:07d}.png")
