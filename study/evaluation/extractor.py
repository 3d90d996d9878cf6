"""Pluggable feature extractors for generation metrics, and the small-data extractor trained on synthetic data.

An extractor is a callable ``uint8 [B,3,H,W] -> {"pool": [B,d], ...}`` (float32, CPU) with attributes ``name``
(``"inception"``, ``"synthetic"`` or ``"layout"``), ``id`` (weights + preprocessing, for caches), ``outputs`` (the
keys it returns) and ``stats_prefix`` (what statistics are labelled with, so statistics of different extractors are
never compared). ``get_extractor(name)`` builds one.

The synthetic extractor exists because no Inception-quality network is available offline for the embedded tiny
study: a small CNN, trained deterministically (fixed seed, one thread) to classify the synthetic dataset, cached
under ``cache_dir("extractors")`` as a safetensors file (tensors only: a file planted there cannot run code; a
damaged one is retrained). Its Fréchet distance is reported as ``fd_synthetic``, never as ``fid``.

Shipped weights: training is deterministic on one machine but chaotic across CPU instruction sets (AVX-512, AVX2,
scalar kernels round differently and 600 SGD steps amplify it). Measured on the same 256 samples: fd_synthetic 357
(AVX-512), 284 (AVX2), 493 (scalar), while the SiT that made them trains to the same numbers under AVX-512 and AVX2
(fd 348.0 both). So the embedded study's extractors are shipped in ``study/evaluation/weights/`` (trained once with
the default recipe): every machine measures with the same ruler. Another dataset or recipe trains its own.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from results import FD_PREFIX, FID
from study.common import atomic_path, cache_dir, cpu_threads, get_logger, progress
from study.config import EXTRACTORS, StrictModel, config_hash

__all__ = ["FeatureExtractor", "ExtractorConfig", "SmallCNN", "SyntheticExtractor", "train_small_cnn",
           "load_synthetic_extractor", "get_extractor", "extract_features", "iter_features", "metric_name",
           "SHIPPED_WEIGHTS", "find_trained", "save_trained"]

_log = get_logger(__name__)
_CODE_VERSION = 1  # bump when SmallCNN/training changes, so cached extractors are retrained
#: Extractor weights shipped with the package (see the module docstring), named like the cache files.
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


class FeatureExtractor(Protocol):
    name: str
    id: str
    outputs: tuple[str, ...]
    stats_prefix: str

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


def metric_name(extractor_name: str) -> str:
    """The results column of the Fréchet distance: ``fid`` for Inception only, ``fd_<name>`` otherwise."""
    return FID if extractor_name == "inception" else f"{FD_PREFIX}{extractor_name}"


class ExtractorConfig(StrictModel):
    """Training recipe of the synthetic extractor (part of its cache key)."""

    n_train: int = 2048
    input_size: int = 32
    width: int = 32
    dim: int = 64
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


def network_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images -> [-1, 1] floats at ``size`` x ``size`` (bilinear, antialiased): the small-data CNNs' input."""
    x = images.float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


class SmallCNN(nn.Module):
    """Three conv stages (stride-2 downsampling) + global average pool -> ``dim`` features -> class logits."""

    def __init__(self, num_classes: int, width: int = 32, dim: int = 64, input_size: int = 32):
        super().__init__()
        self.input_size = input_size
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, dim, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(dim, num_classes)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return network_input(images, self.input_size)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.preprocess(images)).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_small_cnn(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    cfg: ExtractorConfig | None = None) -> SmallCNN:
    """Train :class:`SmallCNN` on uint8 images ``[N,3,H,W]``; bit-identical for identical inputs and config."""
    cfg = cfg or ExtractorConfig()
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images [N,3,H,W], got {images.dtype} {tuple(images.shape)}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    with cpu_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = SmallCNN(num_classes, cfg.width, cfg.dim, cfg.input_size)
        x = model.preprocess(images)  # once: resizing every epoch would dominate
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(cfg.seed)
        model.train()
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(x), generator=g)
            total = 0.0
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                xb = x[idx]
                flip = torch.rand(len(idx), generator=g) < 0.5  # horizontal flips: cheap, deterministic
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                loss = F.cross_entropy(model.head(model.body(xb).mean(dim=(2, 3))), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            _log.debug("synthetic extractor epoch %d: loss %.4f", epoch, total / len(x))
    model.eval().requires_grad_(False)
    return model


class SyntheticExtractor:
    """A trained :class:`SmallCNN` as a feature extractor (``pool`` = its ``dim``-d features); the base of the other
    small-data extractors (a network with ``features``, an id ``<name>-<key>``)."""

    name = "synthetic"
    outputs = ("pool",)

    def __init__(self, model: nn.Module, key: str, meta: dict[str, Any] | None = None):
        self.model = model.eval()
        self.id = f"{self.name}-{key}"
        self.stats_prefix = self.id
        self.meta = meta or {}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [B,3,H,W], got {images.dtype} {tuple(images.shape)}")
        return {"pool": self.model.features(images).float()}


def _cache_key(dataset_id: str, cfg: ExtractorConfig) -> str:
    return config_hash({"dataset": dataset_id, "cfg": cfg.model_dump(), "v": _CODE_VERSION})


def _dataset_tensors(dataset: Any, limit: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    n = min(len(dataset), limit)
    items = [dataset[i] for i in range(n)]
    images = torch.stack([torch.as_tensor(it["image"]) for it in items])
    labels = torch.tensor([int(it["label"]) for it in items])
    return images, labels, int(dataset.num_classes)


def load_synthetic_extractor(dataset: str | Any = "synthetic", cfg: ExtractorConfig | None = None,
                             *, retrain: bool = False) -> SyntheticExtractor:
    """The extractor for ``dataset`` (a spec for ``study.data.open_dataset`` or an ImageDataset), trained on its
    train split on first use and cached under ``cache_dir("extractors")`` with its recipe and provenance."""
    cfg = cfg or ExtractorConfig()
    if isinstance(dataset, str):
        from study.data import open_dataset

        dataset = open_dataset(dataset, "train")
    key = _cache_key(str(dataset.id), cfg)
    filename = f"synthetic-{key}.safetensors"
    found = find_trained(filename, lambda k: SmallCNN(k, cfg.width, cfg.dim, cfg.input_size), retrain=retrain)
    if found is not None:
        return SyntheticExtractor(found[0], key, found[1])
    from results.provenance import now_iso, provenance

    images, labels, num_classes = _dataset_tensors(dataset, cfg.n_train)
    _log.info("training the synthetic feature extractor on %d images of %s (cached as %s)", len(images),
              dataset.id, filename)
    model = train_small_cnn(images, labels, num_classes, cfg)
    with torch.no_grad():
        acc = float((model(images).argmax(1) == labels).float().mean())
    meta = {"dataset": str(dataset.id), "config": cfg.model_dump(), "train_accuracy": acc,
            "created_at": now_iso(), **provenance()}
    save_trained(filename, model, num_classes, meta)
    return SyntheticExtractor(model, key, meta)


def find_trained(filename: str, build: Callable[[int], nn.Module], *,
                 retrain: bool = False) -> tuple[nn.Module, dict[str, Any]] | None:
    """A trained extractor network and its metadata: the shipped file ``filename`` (first, so that an extractor
    cached by an older version on this machine never replaces the common ruler), else
    ``cache_dir("extractors")/filename``; None when neither loads (or ``retrain``): the caller trains it.
    ``build(num_classes)`` makes the untrained network the tensors load into."""
    if retrain:
        return None
    for path in (SHIPPED_WEIGHTS / filename, cache_dir("extractors") / filename):
        if path.is_file() and (found := _read_trained(path, build)) is not None:
            if path.parent == SHIPPED_WEIGHTS:
                _log.info("feature extractor: the shipped weights %s (the same on every machine)", filename)
            return found
    return None


def save_trained(filename: str, model: nn.Module, num_classes: int, meta: dict[str, Any]) -> Path:
    """Write a trained extractor network to ``cache_dir("extractors")/filename`` (atomic; safetensors)."""
    from safetensors.torch import save_file

    path = cache_dir("extractors") / filename
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"num_classes": str(num_classes), "meta": json.dumps(meta, default=str)})
    return path


def _read_trained(path: Path, build: Callable[[int], nn.Module]) -> tuple[nn.Module, dict[str, Any]] | None:
    """The network in ``path``, or None (with a warning) when the file does not load: it is then trained again."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as fh:
            info = fh.metadata() or {}
        model = build(int(info["num_classes"]))
        model.load_state_dict(load_file(str(path)))
        return model.eval().requires_grad_(False), json.loads(info["meta"])
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: whatever the reader says, retrain
        _log.warning("cached extractor %s does not load (%s: %s); training it again", path, type(exc).__name__,
                     str(exc).splitlines()[0][:200] if str(exc) else "")
        return None


def get_extractor(name: str, *, dataset: str | Any = "synthetic", weights_path: str | Path | None = None,
                  device: str | None = None) -> FeatureExtractor:
    """``"inception"`` (torch-fidelity InceptionV3, ADM protocol), ``"synthetic"`` (small CNN for ``dataset``) or
    ``"layout"`` (the layout-sensitive CNN for the synthetic shapes, :mod:`study.evaluation.layout`)."""
    if name == "inception":
        from study.evaluation.inception import InceptionExtractor

        return InceptionExtractor(weights_path, device=device)
    if name == "synthetic":
        return load_synthetic_extractor(dataset)
    if name == "layout":
        from study.evaluation.layout import load_layout_extractor

        return load_layout_extractor(dataset)
    raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def _to_nchw(batch: Any) -> torch.Tensor:
    if not isinstance(batch, torch.Tensor):
        arr = np.asarray(batch)
        batch = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    x = batch
    if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:  # NHWC (ADM npz) -> NCHW
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def iter_features(extractor: FeatureExtractor, batches: Iterable[Any], *, total: int | None = None,
                  desc: str = "features") -> Iterator[dict[str, np.ndarray]]:
    """Run ``extractor`` over batches of uint8 images (NCHW tensors, or NHWC arrays as in ADM npz files), yielding
    each batch's outputs as float32 numpy arrays, with a progress bar counting images."""
    with progress(desc=desc, total=total, unit="img") as bar:
        for batch in batches:
            x = _to_nchw(batch)
            feats = extractor(x)
            yield {k: feats[k].numpy().astype(np.float32, copy=False) for k in extractor.outputs}
            bar.update(len(x))


def extract_features(extractor: FeatureExtractor, batches: Iterable[Any], *, total: int | None = None,
                     desc: str = "features") -> dict[str, np.ndarray]:
    """:func:`iter_features`, concatenated."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in extractor.outputs}
    for feats in iter_features(extractor, batches, total=total, desc=desc):
        for k in out:
            out[k].append(feats[k])
    if not any(out.values()):
        raise ValueError("no images to extract features from")
    return {k: np.concatenate(v) for k, v in out.items()}
