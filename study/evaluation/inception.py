"""ADM-compatible Inception features through torch-fidelity's ``inception-v3-compat`` (imported lazily).

torch-fidelity's InceptionV3 is the TF ``inception-2015-12-05`` graph that ADM's ``evaluator.py`` runs, with the
TF1 bilinear resize to 299 and ``(x-128)/128`` scaling. From one forward pass we take what ADM takes:

* ``pool``: ``pool_3`` (2048-d) for FID and precision/recall;
* ``spatial``: ``mixed_6/conv`` (= ``Mixed_6d.branch1x1``, 192x17x17 after ReLU), first 7 channels taken
  channels-last and flattened HWC to 2023-d, for sFID;
* ``logits``: ``pool_3 @ W`` without the bias (ADM's softmax graph multiplies by ``softmax/logits/MatMul``'s
  weight only), 1008-d, for the Inception Score.

Weights: ``weights-inception-2015-12-05-6726825d.pth`` from an explicit path, ``$REPA_STUDY_INCEPTION_WEIGHTS``, or
torch.hub's cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``). Missing and
offline (``REPA_STUDY_OFFLINE=1`` or no network) is one :class:`InceptionWeightsMissing` naming the file and where
to put it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from study.common import get_logger

__all__ = ["InceptionExtractor", "InceptionWeightsMissing", "WEIGHTS_FILE", "WEIGHTS_URL", "resolve_weights",
           "random_inception_state_dict", "SPATIAL_CHANNELS"]

_log = get_logger(__name__)

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
ENV_WEIGHTS = "REPA_STUDY_INCEPTION_WEIGHTS"
SPATIAL_CHANNELS = 7


class InceptionWeightsMissing(FileNotFoundError):
    """The TF-ported InceptionV3 weights are not on disk and cannot be downloaded."""


def _hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def _missing_message(reason: str) -> str:
    return (f"InceptionV3 weights {WEIGHTS_FILE} not available ({reason}).\n"
            f"  Download {WEIGHTS_URL}\n"
            f"  and put it at {_hub_weights_path()} (torch.hub's cache; set TORCH_HOME to use a shared one),\n"
            f"  or anywhere and point ${ENV_WEIGHTS} (or --inception-weights / weights_path=) at it.")


def resolve_weights(weights_path: str | Path | None = None, *, download: bool | None = None) -> Path:
    """The weights file to load: explicit path > ``$REPA_STUDY_INCEPTION_WEIGHTS`` > torch.hub cache (downloaded
    there when ``download`` and not ``REPA_STUDY_OFFLINE=1``)."""
    for candidate, source in ((weights_path, "given path"), (os.environ.get(ENV_WEIGHTS), f"${ENV_WEIGHTS}")):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise InceptionWeightsMissing(_missing_message(f"{source} {path} does not exist"))
            return path
    cached = _hub_weights_path()
    if cached.is_file():
        return cached
    if download is None:
        download = os.environ.get("REPA_STUDY_OFFLINE", "0") in ("0", "", "false", "no")
    if not download:
        raise InceptionWeightsMissing(_missing_message("offline, and not in the torch.hub cache"))
    try:
        _log.info("downloading %s to %s", WEIGHTS_URL, cached)
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(cached), progress=False)
    except Exception as exc:  # network errors come in many types
        raise InceptionWeightsMissing(_missing_message(f"download failed: {exc}")) from None
    return cached


def _import_torch_fidelity():
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as exc:  # ImportError, or torchvision's operator error on a mismatched CUDA build
        raise ImportError(
            f"the Inception feature extractor needs torch-fidelity (and a torchvision matching torch): {exc}. "
            "Install with `pip install torch-fidelity`, or use --extractor synthetic on small data.") from exc
    return FeatureExtractorInceptionV3


def _file_digest(path: Path, limit: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(limit))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:12]


class InceptionExtractor:
    """Callable: uint8 images ``[B,3,H,W]`` (any size; resized to 299 like TF) -> ``{"pool", "spatial", "logits"}``
    float32 tensors on CPU. ``id`` names the weights file content, for caches."""

    name = "inception"
    outputs = ("pool", "spatial", "logits")
    stats_prefix = "inception-v3-compat"

    def __init__(self, weights_path: str | Path | None = None, *, device: str | torch.device | None = None,
                 download: bool | None = None):
        cls = _import_torch_fidelity()
        self.weights_path = resolve_weights(weights_path, download=download)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = cls("inception-v3-compat", ["2048", "logits_unbiased"],
                         feature_extractor_weights_path=str(self.weights_path)).to(self.device)
        self._spatial: list[torch.Tensor] = []
        self.model.Mixed_6d.branch1x1.register_forward_hook(lambda _m, _i, out: self._spatial.append(out))
        self.id = f"{self.stats_prefix}-{_file_digest(self.weights_path)}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [B,3,H,W], got {images.dtype} {tuple(images.shape)}")
        self._spatial.clear()
        with _strict_fp32():
            pool, logits = self.model(images.to(self.device))
        spatial = self._spatial.pop()
        spatial = spatial.movedim(1, -1)[..., :SPATIAL_CHANNELS].reshape(spatial.shape[0], -1)
        return {"pool": pool.float().cpu(), "spatial": spatial.float().cpu(), "logits": logits.float().cpu()}


@contextlib.contextmanager
def _strict_fp32():
    """No TF32 in convolutions/matmuls while extracting (a candidate cause of ~1e-3 FID deltas vs TF)."""
    if not torch.cuda.is_available():
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def random_inception_state_dict(seed: int = 0, calibration_images: int = 16, size: int = 64) -> dict[str, Any]:
    """A random-init, BatchNorm-calibrated state dict of the same class, for OFFLINE TESTS AND TIMINGS ONLY.

    With BN running stats (0, 1) activations vanish through ~40 layers and every FID is ~0; one train-mode
    forward over random images sets cumulative BN statistics so features are non-degenerate. Numbers computed
    with these weights mean nothing.
    """
    cls = _import_torch_fidelity()
    torch.manual_seed(seed)
    with mock.patch.object(cls, "load_state_dict", lambda self, *a, **k: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}):
        model = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (calibration_images, 3, size, size), generator=g, dtype=torch.uint8)
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()
    return model.state_dict()
