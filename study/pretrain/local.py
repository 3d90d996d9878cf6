"""Train the catalog's ``source: local`` encoders (the miniature's): tiny ViTs on synthetic shapes, cached.

An entry's ``pretrain`` section is the whole recipe (:class:`encoders.spec.Pretrain`); the weights land in
:func:`encoders.local_weights_path` (keyed by the entry's fingerprint) and are written atomically under a file
lock, so concurrent jobs that need the same encoder train it once. Training is deterministic: seeded init, a
seeded data order, and one CPU thread (the same bytes whatever the machine's core count).

- ``supervised``: cross-entropy from the CLS token and from the mean patch token (two linear heads), so the patch
  tokens carry the class: much global information;
- ``mim``: SimMIM-style masked patch prediction: a learned mask token replaces ``mask_ratio`` of the patch
  embeddings, a linear head predicts the masked patches' pixels: local structure, no labels;
- ``controlled``: the student of a controlled entry (:mod:`encoders.controlled`): cross-entropy of its class head
  on the CLS token plus binary cross-entropy of its mask head against each patch token's object fraction (the
  dataset's masks pooled to the token grid); the heads are kept, the entry's tokens are composed from them;
- ``none``: nothing to train (the seeded random init is the encoder).

Pretraining logs (INFO) which encoders it trains and by what recipe, then ``step/total, loss, elapsed, left`` about
ten times per encoder (at most 30 s apart); :func:`pretrain_missing`'s worker processes log at the caller's level,
so ``repa-study run`` shows their progress.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import encoders
from encoders.spec import EncoderSpec, Pretrain
from study.common import atomic_path, cpu_threads, get_logger, setup_logging
from study.data import open_dataset

__all__ = ["pretrain_encoder", "pretrain_missing", "ensure_pretrained", "load_encoder", "needs_pretraining"]

log = get_logger(__name__)

#: Progress lines per pretraining (plus the first step's), and at most this many seconds between two.
PROGRESS_LINES = 10
PROGRESS_SECONDS = 30.0


def needs_pretraining(name: str, weights: str = "pretrained") -> bool:
    """Whether ``get_encoder(name, weights)`` needs weights this project trains (a local entry, not yet trained)."""
    spec = encoders.get_spec(name)
    return weights == "pretrained" and spec.trained_here and not encoders.local_weights_file(spec).is_file()


def ensure_pretrained(name: str, weights: str = "pretrained") -> None:
    """Train ``name``'s weights first if it is a local entry that has none yet (a no-op for every other entry)."""
    if needs_pretraining(name, weights):
        pretrain_encoder(name)


def load_encoder(name: str, weights: str = "pretrained", device: str | torch.device = "cpu", *,
                 bf16: bool = False) -> encoders.Encoder:
    """``encoders.get_encoder`` after :func:`ensure_pretrained`: how the study's stages get an encoder."""
    ensure_pretrained(name, weights)
    return encoders.get_encoder(name, weights=weights, device=device, bf16=bf16)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # another job training the same entry: wait for it, then reuse its file
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pretrain_encoder(name: str, *, force: bool = False, steps: int | None = None) -> Path:
    """Train the local entry ``name`` by its recipe and save its weights; returns the weight file.

    An existing file is kept unless ``force``. ``steps`` overrides the recipe's length (tests); such weights are
    not saved where the pipeline looks (the returned path is a sibling with the step count in its name).
    """
    spec = encoders.get_spec(name)
    if spec.pretrain is None:
        raise ValueError(f"encoder {spec.name!r} has source {spec.source!r}: only `source: local` entries are "
                         "trained by this project (the others load published weights)")
    recipe = spec.pretrain
    path = encoders.local_weights_path(spec)
    if steps is not None:
        recipe = recipe.model_copy(update={"steps": int(steps)})
        path = path.with_name(f"{path.stem}-steps{int(steps)}{path.suffix}")
    if recipe.recipe == "none":
        raise ValueError(f"encoder {spec.name!r} has recipe 'none': its random init is the encoder, nothing to train")
    with _locked(path):
        if path.is_file() and not force:
            log.info("encoder %s: pretrained weights found at %s", spec.name, path)
            return path
        log.info("encoder %s: pretraining by its %s recipe, %d steps of batch %d on %s (lr %g, seed %d, one CPU "
                 "thread)", spec.name, recipe.recipe, recipe.steps, recipe.batch_size, recipe.data, recipe.lr,
                 recipe.seed)
        started = time.perf_counter()
        with cpu_threads(1), torch.random.fork_rng(devices=[]):
            state, last = _train(spec, recipe)
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"encoder": spec.name, "fingerprint": spec.fingerprint(),
                                                 "recipe": recipe.model_dump_json(), "final_loss": f"{last:.6f}"})
        log.info("encoder %s: %s pretraining, %d steps in %.0f s (final loss %.4f) -> %s", spec.name, recipe.recipe,
                 recipe.steps, time.perf_counter() - started, last, path)
    return path


class _Heads(nn.Module):
    """The recipe's training-only parts (dropped after pretraining)."""

    def __init__(self, recipe: Pretrain, dim: int, num_classes: int, patch_pixels: int):
        super().__init__()
        if recipe.recipe == "supervised":
            self.cls_head = nn.Linear(dim, num_classes)
            self.patch_head = nn.Linear(dim, num_classes)
        elif recipe.recipe == "mim":
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.normal_(self.mask_token, std=0.02)
            self.pixel_head = nn.Linear(dim, patch_pixels)


def _tokens(vit: nn.Module, x: torch.Tensor, heads: _Heads, mask: torch.Tensor | None) -> torch.Tensor:
    """The ViT's final tokens (prefix included), with masked patch embeddings replaced by the mask token."""
    t = vit.patch_embed(x)
    if mask is not None:
        t = torch.where(mask[..., None], heads.mask_token.to(t.dtype).expand_as(t), t)
    t = vit._pos_embed(t)
    t = vit.norm_pre(vit.patch_drop(t))
    return vit.norm(vit.blocks(t))


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def _train(spec: EncoderSpec, recipe: Pretrain) -> tuple[dict[str, torch.Tensor], float]:
    data = open_dataset(recipe.data, split="train")
    images, labels = data.images, data.labels
    if recipe.recipe == "controlled":
        if not data.has_masks:
            raise ValueError(f"pretraining {spec.name}: the controlled recipe learns object masks, and {recipe.data} "
                             "has none (use a synthetic: dataset)")
        # each token's object fraction: the pixel masks averaged over the token cells
        fractions = F.adaptive_avg_pool2d(data.masks.float()[:, None], spec.grid).flatten(1)
    torch.manual_seed(recipe.seed)
    vit = encoders.build_model(spec, "random")  # the entry's seeded init
    vit.train().requires_grad_(True)
    prep = encoders.Encoder(spec, vit, "random")  # its preprocessing (resize + normalisation)
    prefix, p = spec.prefix_tokens, spec.patch_size
    heads = _Heads(recipe, int(vit.num_features), data.num_classes, p * p * 3)
    params = list(vit.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = max(1, recipe.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / recipe.steps))))
    rng = np.random.default_rng(recipe.seed)
    order: list[int] = []
    last = float("nan")
    report = _Progress(spec.name, recipe.steps)
    for step in range(recipe.steps):
        if len(order) < recipe.batch_size:
            order += rng.permutation(len(images)).tolist()
        idx, order = order[:recipe.batch_size], order[recipe.batch_size:]
        x = prep.preprocess(images[idx])
        if recipe.recipe == "controlled":
            logits, mask_logits = vit.heads(x)
            loss = (F.cross_entropy(logits, labels[idx])
                    + F.binary_cross_entropy_with_logits(mask_logits, fractions[idx]))
        elif recipe.recipe == "supervised":
            y = labels[idx]
            tokens = _tokens(vit, x, heads, None)
            loss = (F.cross_entropy(heads.cls_head(tokens[:, 0]), y)
                    + F.cross_entropy(heads.patch_head(tokens[:, prefix:].mean(1)), y))
        else:
            grid = spec.grid * spec.grid
            mask = torch.from_numpy(rng.random((len(idx), grid)) < recipe.mask_ratio)
            tokens = _tokens(vit, x, heads, mask)
            pred = heads.pixel_head(tokens[:, prefix:])
            loss = F.mse_loss(pred[mask], _patchify(x, p)[mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        last = float(loss.detach())
        if not np.isfinite(last):
            raise FloatingPointError(f"pretraining {spec.name} diverged at step {step} (loss {last}); lower "
                                     f"pretrain.lr in encoders/catalog.yaml")
        report(step + 1, last)
    state = {k: v.detach().contiguous().clone() for k, v in vit.state_dict().items()}
    return state, last


class _Progress:
    """Log lines ``step/total, loss, elapsed, left`` after the first step, every ``total / PROGRESS_LINES`` steps,
    at most ``PROGRESS_SECONDS`` apart, and at the end: plain lines, which read well from parallel worker
    processes and in a log file (a progress bar needs a terminal of its own)."""

    def __init__(self, name: str, total: int):
        self.name, self.total = name, total
        self.every = max(1, total // PROGRESS_LINES)
        self.started = self.last_line = time.perf_counter()

    def __call__(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        if step not in (1, self.total) and step % self.every and now - self.last_line < PROGRESS_SECONDS:
            return
        self.last_line = now
        elapsed = now - self.started
        left = elapsed / step * (self.total - step)
        log.info("pretrain %s: step %d/%d (%d%%), loss %.4f, %.0f s elapsed, about %.0f s left", self.name, step,
                 self.total, 100 * step // self.total, loss, elapsed, left)


def pretrain_missing(names: list[str], workers: int = 1) -> list[str]:
    """Train, ``workers`` at a time (one process and one thread each), the local entries among ``names`` (variants
    resolve to their base) that have no weights yet; returns the entries trained."""
    todo, files = [], set()
    for name in names:  # one per weight file: controlled entries that share a student train it once
        spec = encoders.get_spec(name)
        path = encoders.local_weights_path(spec)
        if path not in files and needs_pretraining(name):
            files.add(path)
            todo.append(spec.name)
    if todo:
        log.info("pretraining %d local encoder(s) that have no weights yet: %s (%d at a time, one CPU thread each)",
                 len(todo), ", ".join(todo), min(max(workers, 1), len(todo)))
    if len(todo) <= 1 or workers <= 1:
        for name in todo:
            pretrain_encoder(name)
        return todo
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # the workers start bare (spawn): give them this process's log level, so their progress reaches stderr
    level = logging.getLogger("repa_study").getEffectiveLevel()
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=setup_logging, initargs=(level,)) as pool:
        list(pool.map(pretrain_encoder, todo))
    return todo
