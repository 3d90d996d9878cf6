"""Linear probe on cached features: z-scored features, L2-regularised multinomial logistic regression.

Protocol (docs/scoring.md; ../reference evaluation.md section 4.2, "option A"):

1. standardise every feature with the mean and std of the training features (the fixed ``BatchNorm1d(affine=False)``
   of MAE-style probes);
2. hold out ``holdout`` (10 %) of train, seeded; fit full-batch L-BFGS (strong-Wolfe line search) for each L2 strength
   in ``l2_values``, from the strongest to the weakest, each warm-started from the previous solution;
3. pick the strength with the best held-out top-1 (ties: the stronger), refit on all of train, report val top-1.

The loss and gradient are accumulated over row chunks, so the features can stay fp16 on the device and only
``chunk_rows x C`` logits exist at a time. Everything is deterministic given ``seed`` (zero init, seeded hold-out).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from study.common import cpu_threads, get_logger, resolve_device

__all__ = ["ProbeResult", "linear_probe", "DEFAULT_L2"]

log = get_logger(__name__)

DEFAULT_L2 = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass
class ProbeResult:
    top1: float
    l2: float
    holdout_top1: dict[float, float] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    num_classes: int = 0
    dim: int = 0
    iterations: int = 0
    seconds: float = 0.0


class _Problem:
    """Rows of features on the device (fp16 unless given in float64/32) standardised chunk by chunk."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor, chunk_rows: int):
        self.x, self.y, self.mu, self.sd, self.chunk = x, y, mu, sd, chunk_rows

    def __len__(self) -> int:
        return self.x.shape[0]

    def chunks(self):
        for s in range(0, len(self), self.chunk):
            xb = (self.x[s:s + self.chunk].to(self.mu.dtype) - self.mu) / self.sd
            yield xb, self.y[s:s + self.chunk]


def _stats(x: torch.Tensor, chunk_rows: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std (float64 accumulation); constant features get std 1."""
    n = x.shape[0]
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    sq = torch.zeros_like(total)
    for s in range(0, n, chunk_rows):
        xb = x[s:s + chunk_rows].to(torch.float64)
        total += xb.sum(0)
        sq += (xb * xb).sum(0)
    mu = total / n
    var = (sq / n - mu * mu).clamp_min(0)
    sd = var.sqrt()
    sd = torch.where(sd > 1e-8 * mu.abs().clamp_min(1.0), sd, torch.ones_like(sd))
    return mu.to(dtype), sd.to(dtype)


def _fit(problem: _Problem, num_classes: int, l2: float, init: tuple[torch.Tensor, torch.Tensor] | None,
         max_iter: int, dtype: torch.dtype) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    d = problem.x.shape[1]
    dev = problem.x.device
    w = torch.zeros(d, num_classes, dtype=dtype, device=dev) if init is None else init[0].clone()
    b = torch.zeros(num_classes, dtype=dtype, device=dev) if init is None else init[1].clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)
    n = len(problem)
    evals = 0

    def closure() -> torch.Tensor:
        nonlocal evals
        evals += 1
        opt.zero_grad(set_to_none=False)
        total = torch.zeros((), dtype=dtype, device=dev)
        for xb, yb in problem.chunks():
            loss = F.cross_entropy(xb @ w + b, yb, reduction="sum") / n
            loss.backward()
            total += loss.detach()
        reg = 0.5 * l2 * (w * w).sum()
        reg.backward()
        return total + reg.detach()

    opt.step(closure)
    return (w.detach(), b.detach()), evals


@torch.no_grad()
def _top1(problem: _Problem, params: tuple[torch.Tensor, torch.Tensor]) -> float:
    w, b = params
    correct = 0
    for xb, yb in problem.chunks():
        correct += int(((xb @ w + b).argmax(1) == yb).sum())
    return correct / max(1, len(problem))


@contextlib.contextmanager
def _threads_for(work: float, device: torch.device):
    """One CPU thread for tiny problems: thread hand-offs cost more than the arithmetic (10x on a busy machine)."""
    if device.type != "cpu" or work > 5e7 or torch.get_num_threads() == 1:
        yield
        return
    with cpu_threads(1):
        yield


def linear_probe(train_x, train_y, val_x, val_y, *, num_classes: int | None = None,
                 l2_values: Sequence[float] = DEFAULT_L2, holdout: float = 0.1, max_iter: int = 300, seed: int = 0,
                 device: str | torch.device | None = "auto", chunk_rows: int = 131072,
                 dtype: torch.dtype = torch.float32) -> ProbeResult:
    """Top-1 accuracy on ``val`` of a linear classifier fit on ``train`` (arrays ``[N, D]``, labels ``[N]``).

    Inputs may be numpy arrays (memory-mapped fp16 is fine) or tensors; they are moved to ``device`` once, in fp16
    when given in fp16. ``max_iter`` bounds the L-BFGS iterations per L2 value.
    """
    started = time.perf_counter()
    dev = resolve_device(device)
    if not l2_values:
        raise ValueError("l2_values must name at least one L2 strength")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must lie in (0, 1), got {holdout}")

    def tensor(a, kind: str) -> torch.Tensor:
        t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a, copy=True))
        if kind == "y":
            return t.to(dev, torch.int64)
        return t.to(dev) if t.dtype in (torch.float16, torch.float32, torch.float64) else t.to(dev, dtype)

    xt, yt, xv, yv = tensor(train_x, "x"), tensor(train_y, "y"), tensor(val_x, "x"), tensor(val_y, "y")
    if xt.ndim != 2 or xv.ndim != 2 or xt.shape[1] != xv.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D; got train {tuple(xt.shape)}, val "
                         f"{tuple(xv.shape)}")
    if len(xt) != len(yt) or len(xv) != len(yv):
        raise ValueError(f"features and labels differ in length: train {len(xt)} vs {len(yt)}, val {len(xv)} vs "
                         f"{len(yv)}")
    if len(xt) < 2 or len(xv) < 1:
        raise ValueError(f"the probe needs at least 2 train and 1 val images, got {len(xt)} and {len(xv)}")
    if yt.min() < 0 or yv.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    classes = int(max(int(yt.max()), int(yv.max())) + 1)
    num_classes = num_classes or classes
    if num_classes < classes:
        raise ValueError(f"num_classes={num_classes} but labels go up to {classes - 1}")

    with _threads_for(float(len(xt)) * xt.shape[1] * num_classes, dev):
        return _probe(xt, yt, xv, yv, num_classes, l2_values, holdout, max_iter, seed, chunk_rows, dtype, started)


def _probe(xt, yt, xv, yv, num_classes, l2_values, holdout, max_iter, seed, chunk_rows, dtype, started) -> ProbeResult:
    dev = xt.device
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(xt), generator=gen).to(dev)
    n_hold = min(len(xt) - 1, max(1, int(round(holdout * len(xt)))))
    hold_idx, fit_idx = order[:n_hold].sort().values, order[n_hold:].sort().values

    mu_fit, sd_fit = _stats(xt[fit_idx], chunk_rows, dtype)
    fit = _Problem(xt[fit_idx], yt[fit_idx], mu_fit, sd_fit, chunk_rows)
    held = _Problem(xt[hold_idx], yt[hold_idx], mu_fit, sd_fit, chunk_rows)
    scores: dict[float, float] = {}
    params, iters = None, 0
    for l2 in sorted(l2_values, reverse=True):
        params, n = _fit(fit, num_classes, float(l2), params, max_iter, dtype)
        iters += n
        scores[float(l2)] = _top1(held, params)
        log.debug("probe l2=%g: held-out top-1 %.4f (%d evaluations)", l2, scores[float(l2)], n)
    best = max(scores.values())
    chosen = max(l2 for l2, acc in scores.items() if acc == best)  # ties: the stronger regularisation

    mu, sd = _stats(xt, chunk_rows, dtype)
    full = _Problem(xt, yt, mu, sd, chunk_rows)
    params, n = _fit(full, num_classes, chosen, None, max_iter, dtype)
    iters += n
    top1 = _top1(_Problem(xv, yv, mu, sd, chunk_rows), params)
    return ProbeResult(top1=top1, l2=chosen, holdout_top1=scores, n_train=len(xt), n_val=len(xv),
                       num_classes=num_classes, dim=int(xt.shape[1]), iterations=iters,
                       seconds=round(time.perf_counter() - started, 3))
