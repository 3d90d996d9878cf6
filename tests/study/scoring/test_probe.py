"""Linear probe: near 100 % on separable features, chance on shuffled labels, deterministic, L2 chosen on hold-out."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from study.scoring import linear_probe

CLASSES, DIM = 5, 24


def _blobs(n: int, seed: int, spread: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.arange(n) % CLASSES
    x = centres[y] + spread * torch.randn(n, DIM, generator=g)
    # badly scaled, offset features: the z-scoring must undo this
    scale = torch.logspace(-3, 3, DIM)
    return ((x + 50) * scale).numpy().astype(np.float16), y.numpy()


def test_separable_features_reach_full_accuracy():
    xt, yt = _blobs(300, 0)
    xv, yv = _blobs(150, 1)
    res = linear_probe(xt, yt, xv, yv, device="cpu")
    assert res.top1 >= 0.98
    assert res.n_train == 300 and res.n_val == 150 and res.num_classes == CLASSES and res.dim == DIM
    assert set(res.holdout_top1) == {1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6}
    assert res.l2 == max(k for k, v in res.holdout_top1.items() if v == max(res.holdout_top1.values()))


def test_shuffled_labels_give_chance():
    xt, yt = _blobs(400, 2)
    xv, yv = _blobs(400, 3)
    rng = np.random.default_rng(0)
    res = linear_probe(xt, rng.permutation(yt), xv, yv, device="cpu")
    assert abs(res.top1 - 1 / CLASSES) < 0.08  # 400 val images: chance 0.2, binomial sd 0.02


def test_deterministic_given_a_seed():
    xt, yt = _blobs(200, 4, spread=3.0)
    xv, yv = _blobs(100, 5, spread=3.0)
    a = linear_probe(xt, yt, xv, yv, device="cpu", seed=3)
    b = linear_probe(xt, yt, xv, yv, device="cpu", seed=3)
    assert a.top1 == b.top1 and a.holdout_top1 == b.holdout_top1 and a.l2 == b.l2
    assert 0.3 < a.top1 < 1.0  # overlapping blobs: a real, imperfect score


def test_chunked_loss_matches_one_chunk():
    xt, yt = _blobs(120, 6, spread=2.0)
    xv, yv = _blobs(60, 7, spread=2.0)
    whole = linear_probe(xt, yt, xv, yv, device="cpu", l2_values=(1e-2,), dtype=torch.float64)
    chunked = linear_probe(xt, yt, xv, yv, device="cpu", l2_values=(1e-2,), chunk_rows=17, dtype=torch.float64)
    assert whole.top1 == chunked.top1 and whole.holdout_top1 == chunked.holdout_top1


def test_bad_inputs_are_clear():
    x, y = _blobs(20, 8)
    with pytest.raises(ValueError, match="same D"):
        linear_probe(x, y, x[:, :5], y, device="cpu")
    with pytest.raises(ValueError, match="differ in length"):
        linear_probe(x, y[:5], x, y, device="cpu")
    with pytest.raises(ValueError, match="num_classes"):
        linear_probe(x, y, x, y, num_classes=2, device="cpu")
    with pytest.raises(ValueError, match="holdout"):
        linear_probe(x, y, x, y, holdout=0.0, device="cpu")
