"""A layout-sensitive extractor for the Fréchet distance on the synthetic shapes (``fd_layout``).

Why: the small-data ``synthetic`` extractor pools a weak classifier over every position, so its Fréchet distance
cannot see where an object is or what outline it has: moving every object to the centre barely changes it, and a
generator that paints colour blobs scores as well as one that draws shapes (issue 20). REPA's question is about
spatial structure, so the miniature needs a generation metric that sees it.

``LayoutCNN``: four conv stages (32 -> 16 -> 8 -> 4 px, BatchNorm + ReLU) with two training heads: the shape class
from the feature vector, and the object's mask on the 8x8 grid (so the trunk must know where the object is and how
large). The FD features (``pool``) are the last stage's global average (what the object is) concatenated with a
4x4 map of a narrow 1x1 bottleneck (where it is): a moved or scrambled object changes the second part even when the
first is unchanged. It trains deterministically (seeded init and data order, one thread) on a fresh draw of the
same generator, disjoint from the study's splits, and is cached like the ``synthetic`` extractor (safetensors: a
planted file cannot run code; a damaged one is trained again); the embedded study's one is shipped, for the same
reason (training is chaotic across CPU instruction sets). ``benchmarks/layout_sensitivity.py`` measures both
extractors on real, centred, patch-shuffled and blob images.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from study.common import cpu_threads, get_logger
from study.config import StrictModel, config_hash
from study.evaluation.extractor import SyntheticExtractor, find_trained, network_input, save_trained

__all__ = ["LayoutConfig", "LayoutCNN", "LayoutExtractor", "train_layout_cnn", "load_layout_extractor",
           "layout_training_set"]

_log = get_logger(__name__)
_CODE_VERSION = 1  # bump when LayoutCNN or its training changes, so cached extractors are retrained
_DRAW_CODE = 0x1A7  # the extractor's draw of the generator: disjoint from the train/val/test splits' seeds


class LayoutConfig(StrictModel):
    """Training recipe of the layout extractor (part of its cache key). The defaults: 96 % top-1 on held-out shapes
    in about 50 s on one CPU thread (measured, benchmarks/layout_sensitivity.py)."""

    n_train: int = 16384  # freshly rendered: no overfitting, no augmentation needed
    epochs: int = 2
    batch_size: int = 128
    lr: float = 3e-3
    width: int = 32
    dim_global: int = 64
    spatial_ch: int = 8
    mask_weight: float = 1.0
    seed: int = 0


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class LayoutCNN(nn.Module):
    """uint8 images -> ``features`` (the FD vector: global part + 4x4 spatial part) and class logits; a mask head on
    the 8x8 stage for training."""

    input_size = 32

    def __init__(self, num_classes: int, width: int = 32, dim_global: int = 64, spatial_ch: int = 8):
        super().__init__()
        w = width
        self.stem = nn.Sequential(_block(3, w, 1), _block(w, w, 1))                 # 32x32
        self.s2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w, 1))       # 16x16
        self.s3 = nn.Sequential(_block(2 * w, 3 * w, 2), _block(3 * w, 3 * w, 1))   # 8x8
        self.s4 = _block(3 * w, dim_global, 2)                                      # 4x4
        self.bottleneck = nn.Conv2d(dim_global, spatial_ch, 1)
        self.mask_head = nn.Conv2d(3 * w, 1, 1)
        self.dim = dim_global + spatial_ch * 16
        self.head = nn.Linear(self.dim, num_classes)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [B,3,H,W], got {images.dtype} {tuple(images.shape)}")
        return network_input(images, self.input_size)

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h8 = self.s3(self.s2(self.stem(x)))
        return h8, self.s4(h8)

    def _features(self, h4: torch.Tensor) -> torch.Tensor:
        return torch.cat([h4.mean(dim=(2, 3)), self.bottleneck(h4).flatten(1)], dim=1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(self._trunk(self.preprocess(images))[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_layout_cnn(images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, num_classes: int,
                     cfg: LayoutConfig | None = None) -> LayoutCNN:
    """Train :class:`LayoutCNN` on uint8 ``images [N,3,H,W]``, ``labels [N]`` and pixel ``masks [N,H,W]``;
    bit-identical for identical inputs and config on one machine."""
    cfg = cfg or LayoutConfig()
    if len(images) < cfg.batch_size:
        raise ValueError(f"the layout extractor needs at least batch_size={cfg.batch_size} images, got {len(images)}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    with cpu_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LayoutCNN(num_classes, cfg.width, cfg.dim_global, cfg.spatial_ch)
        x = model.preprocess(images)
        cells = F.adaptive_avg_pool2d(masks.float()[:, None], (8, 8))  # the object's share of each 8x8 cell
        steps = cfg.epochs * (len(x) // cfg.batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
        g = torch.Generator().manual_seed(cfg.seed)
        model.train()
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(x), generator=g)
            for i in range(0, len(x) - cfg.batch_size + 1, cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                h8, h4 = model._trunk(x[idx])
                loss_class = F.cross_entropy(model.head(model._features(h4)), labels[idx])
                loss_mask = F.binary_cross_entropy_with_logits(model.mask_head(h8), cells[idx])
                loss = loss_class + cfg.mask_weight * loss_mask
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            _log.info("layout extractor epoch %d/%d: class loss %.3f, mask loss %.3f", epoch + 1, cfg.epochs,
                      float(loss_class.detach()), float(loss_mask.detach()))
    return model.eval().requires_grad_(False)


class LayoutExtractor(SyntheticExtractor):
    """A trained :class:`LayoutCNN` as a feature extractor (``pool``: its layout-aware feature vector)."""

    name = "layout"

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The shape class of each image (for class-match checks of conditional samples)."""
        return self.model(images).argmax(1)


def layout_training_set(dataset: Any, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(images, labels, masks, num_classes)``: a fresh draw of ``n`` images of the generator behind ``dataset``
    (a :class:`study.data.SyntheticDataset`), disjoint from its train/val/test splits."""
    from study.data import make_synthetic

    _require_synthetic(dataset)
    draw = int(np.random.SeedSequence([int(dataset.base_seed), _DRAW_CODE, int(seed)]).generate_state(1)[0])
    images, labels, masks = make_synthetic(n, dataset.image_size, dataset.num_classes, draw, cache=False)
    return images, labels, masks, int(dataset.num_classes)


def _require_synthetic(dataset: Any) -> None:
    from study.data import DatasetError, SyntheticDataset

    if not isinstance(dataset, SyntheticDataset):
        raise DatasetError(f"the layout extractor is for the synthetic shapes (it trains on their masks); "
                           f"{getattr(dataset, 'id', dataset)} is not synthetic: use the inception extractor")


def _cache_key(dataset: Any, cfg: LayoutConfig) -> str:
    generator = str(dataset.id).split(":")[0]  # synthetic-v<GENERATOR_VERSION>
    spec = {"generator": generator, "size": dataset.image_size, "classes": dataset.num_classes,
            "seed": dataset.base_seed}
    return config_hash({"layout": spec, "cfg": cfg.model_dump(), "v": _CODE_VERSION})


def load_layout_extractor(dataset: str | Any = "synthetic", cfg: LayoutConfig | None = None,
                          *, retrain: bool = False) -> LayoutExtractor:
    """The layout extractor for the synthetic ``dataset`` (a spec or a SyntheticDataset), trained on first use on
    a fresh draw of its generator and cached under ``cache_dir("extractors")`` with its recipe and provenance."""
    cfg = cfg or LayoutConfig()
    if isinstance(dataset, str):
        from study.data import open_dataset

        dataset = open_dataset(dataset, "train")
    _require_synthetic(dataset)
    key = _cache_key(dataset, cfg)
    filename = f"layout-{key}.safetensors"
    found = find_trained(filename, lambda k: LayoutCNN(k, cfg.width, cfg.dim_global, cfg.spatial_ch),
                         retrain=retrain)
    if found is not None:
        return LayoutExtractor(found[0], key, found[1])
    from results.provenance import now_iso, provenance

    images, labels, masks, num_classes = layout_training_set(dataset, cfg.n_train, cfg.seed)
    _log.info("training the layout feature extractor on %d fresh images of %s (about a minute on one thread; "
              "cached as %s)", len(images), dataset.id, filename)
    model = train_layout_cnn(images, labels, masks, num_classes, cfg)
    held_out = layout_training_set(dataset, 1024, cfg.seed + 1)
    with torch.no_grad():
        acc = float((model(held_out[0]).argmax(1) == held_out[1]).float().mean())
    _log.info("layout extractor: %.1f %% top-1 on 1024 held-out images", 100 * acc)
    meta = {"dataset": str(dataset.id), "config": cfg.model_dump(), "held_out_accuracy": acc,
            "created_at": now_iso(), **provenance()}
    save_trained(filename, model, num_classes, meta)
    return LayoutExtractor(model, key, meta)
