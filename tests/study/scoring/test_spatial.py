"""Spatial metrics: closed-form grids, a brute-force reference, invariances, SRSS NaN rules, chunking."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from study.scoring.spatial import cds, lds, masks_to_grid, resolve_grid, rmsc, spatial_metrics, srss, summarize


def _positions(h: int, w: int) -> np.ndarray:
    return np.array([(i, j) for i in range(h) for j in range(w)])


def _reference(feats: torch.Tensor, masks: torch.Tensor | None, h: int, w: int, far=6, dmax=8, near=1) -> dict:
    """Pair-by-pair loops over one image at a time, straight from the definitions (float64)."""
    pos = _positions(h, w)
    out = {"lds": [], "cds": [], "rmsc": [], "srss": []}
    for b in range(feats.shape[0]):
        x = feats[b].double().numpy()
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        t = len(xn)
        by_d: dict[int, list[float]] = {}
        for a in range(t):
            for c in range(t):
                if a != c:
                    d = int(abs(pos[a] - pos[c]).sum())
                    by_d.setdefault(d, []).append(float(xn[a] @ xn[c]))
        far_vals = [k for d, v in by_d.items() if d >= far for k in v]
        out["lds"].append(np.mean(by_d[1]) - np.mean(far_vals))
        ds = [d for d in range(1, dmax + 1) if d in by_d]
        out["cds"].append(-np.polyfit(ds, [np.mean(by_d[d]) for d in ds], 1)[0])
        out["rmsc"].append(math.sqrt(np.mean(((xn - xn.mean(0)) ** 2).sum(1))))
        if masks is not None:
            fg = masks[b].numpy()
            scores = []
            for a in np.flatnonzero(fg):
                dist = abs(pos - pos[a]).sum(1)
                p = [xn[a] @ xn[c] for c in range(t) if fg[c] and 1 <= dist[c] <= near]
                n = [xn[a] @ xn[c] for c in range(t) if not fg[c] and dist[c] >= far]
                if p and n:
                    scores.append(np.mean(p) - np.mean(n))
            ok = fg.sum() >= 2 and (~fg).sum() >= 1 and scores
            out["srss"].append(np.mean(scores) if ok else np.nan)
    return {k: np.array(v) for k, v in out.items() if v}


def _pair_counts(h: int, w: int) -> dict[int, int]:
    pos = _positions(h, w)
    d = abs(pos[:, None] - pos[None]).sum(-1)
    values, counts = np.unique(d[d > 0], return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def test_constant_tokens_have_no_structure():
    feats = torch.randn(1, 1, 8).expand(3, 256, 8).contiguous()
    m = spatial_metrics(feats)
    for key in ("lds", "cds", "rmsc"):
        assert torch.allclose(m[key], torch.zeros(3), atol=1e-6), key


def test_orthogonal_tokens():
    # one-hot tokens: every pair has K = 0, and the mean token is 1/T in each of T coordinates
    feats = torch.eye(64)[None].repeat(2, 1, 1)
    m = spatial_metrics(feats)
    assert torch.allclose(m["lds"], torch.zeros(2), atol=1e-7)
    assert torch.allclose(m["cds"], torch.zeros(2), atol=1e-7)
    assert torch.allclose(m["rmsc"], torch.full((2,), math.sqrt(1 - 1 / 64)), atol=1e-6)


def test_checkerboard_closed_form():
    # tokens +e / -e by the parity of i + j: K(d) = (-1)^d for every pair at Manhattan distance d
    h = w = 16
    sign = torch.tensor([1.0 if (i + j) % 2 == 0 else -1.0 for i in range(h) for j in range(w)])
    feats = (sign[:, None] * torch.tensor([0.6, 0.8, 0.0]))[None]
    counts = _pair_counts(h, w)
    far_mean = sum((-1) ** d * n for d, n in counts.items() if d >= 6) / sum(n for d, n in counts.items() if d >= 6)
    assert lds(feats).item() == pytest.approx(-1.0 - far_mean, abs=1e-6)
    # slope of (-1)^d on d = 1..8: sum (d - 4.5)(-1)^d / sum (d - 4.5)^2 = 4 / 42
    assert cds(feats).item() == pytest.approx(-4 / 42, abs=1e-6)
    assert cds(feats, dmax=2).item() == pytest.approx(-2.0, abs=1e-6)  # g(1) = -1, g(2) = 1
    assert rmsc(feats).item() == pytest.approx(1.0, abs=1e-6)  # mean token is 0, every token has norm 1


def test_rotating_tokens_on_a_single_row():
    # a 1 x 40 grid (non-square) of unit vectors at angle theta * j: K at distance d is cos(theta d)
    theta, w = 0.1, 40
    ang = theta * torch.arange(w, dtype=torch.float64)
    feats = torch.stack([ang.cos(), ang.sin()], dim=-1)[None]
    counts = {d: 2 * (w - d) for d in range(1, w)}
    far_mean = sum(math.cos(theta * d) * n for d, n in counts.items() if d >= 6) / sum(
        n for d, n in counts.items() if d >= 6)
    assert lds(feats, grid=(1, w)).item() == pytest.approx(math.cos(theta) - far_mean, abs=1e-6)
    ds = np.arange(1, 9)
    assert cds(feats, grid=(1, w)).item() == pytest.approx(-np.polyfit(ds, np.cos(theta * ds), 1)[0], abs=1e-6)


def test_srss_closed_form_and_scale_invariance():
    h = w = 16
    fg = torch.zeros(h, w, dtype=torch.bool)
    fg[4:10, 3:9] = True
    fg = fg.reshape(1, -1)
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    orth = torch.where(fg[0, :, None], e1, e2)[None]
    opposite = torch.where(fg[0, :, None], e1, -e1)[None]
    assert srss(orth, fg).item() == pytest.approx(1.0, abs=1e-6)  # positives K = 1, negatives K = 0
    assert srss(opposite, fg).item() == pytest.approx(2.0, abs=1e-6)  # negatives K = -1
    scale = torch.rand(1, h * w, 1) * 100 + 0.01
    noisy = torch.randn(2, h * w, 32)
    masks = torch.rand(2, h * w) > 0.6
    a = spatial_metrics(noisy, masks)
    b = spatial_metrics(noisy * scale, masks)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-6, rtol=1e-5)
    assert srss(orth * scale, fg).item() == pytest.approx(1.0, abs=1e-6)


def test_srss_nan_rules():
    h = w = 8
    feats = torch.randn(5, h * w, 16)
    masks = torch.zeros(5, h * w, dtype=torch.bool)
    masks[0, 10] = True                      # one foreground token
    masks[1] = True                          # no background
    masks[2, [0, 2]] = True                  # two FG tokens, neither has a FG 4-neighbour
    masks[3, [27, 28]] = True                # a FG pair with BG at d >= 6: defined
    masks[4, :] = True
    masks[4, 0] = False                      # a single BG token, at d >= 6 from the far corner's anchors: defined
    out = srss(feats, masks)
    assert torch.isnan(out[:3]).all()
    assert torch.isfinite(out[3:]).all()
    # BG present but closer than `far` to every FG anchor -> no valid anchor -> NaN
    small = torch.zeros(1, 9, dtype=torch.bool)
    small[0, :4] = True
    assert torch.isnan(srss(torch.randn(1, 9, 4), small, far=6)).all()
    # dataset-level: nanmean and counts
    s = summarize({"srss": out, "lds": torch.zeros(5)})
    assert s["n_srss"] == 2 and s["srss"] == pytest.approx(float(out[3:].mean()), rel=1e-6)
    assert s["n_lds"] == 5


@pytest.mark.parametrize("grid", [(4, 6), (5, 5), (3, 7)])
def test_matches_pairwise_reference(grid):
    torch.manual_seed(0)
    h, w = grid
    base = torch.randn(3, 1, 8)
    feats = base + 0.7 * torch.randn(3, h * w, 8)  # some shared direction: K varies with the pair
    masks = torch.rand(3, h * w) > 0.5
    masks[:, :2] = True
    out = spatial_metrics(feats, masks, grid=grid, far=3, dmax=5)
    ref = _reference(feats, masks, h, w, far=3, dmax=5)
    for key in ("lds", "cds", "rmsc", "srss"):
        np.testing.assert_allclose(out[key].numpy(), ref[key], atol=1e-5, err_msg=key)


def test_non_square_grid_needs_grid_argument():
    feats = torch.randn(2, 24, 4)
    with pytest.raises(ValueError, match="square"):
        spatial_metrics(feats)
    with pytest.raises(ValueError, match="holds"):
        spatial_metrics(feats, grid=(5, 5))
    assert spatial_metrics(feats, grid=(4, 6))["lds"].shape == (2,)
    assert resolve_grid(256) == (16, 16)


def test_chunking_gives_identical_results():
    torch.manual_seed(1)
    feats = torch.randn(7, 64, 24)
    masks = torch.rand(7, 64) > 0.5
    whole = spatial_metrics(feats, masks)
    for chunk in (1, 3):
        parts = spatial_metrics(feats, masks, chunk_size=chunk)
        for key in whole:
            torch.testing.assert_close(parts[key], whole[key], atol=1e-6, rtol=0, equal_nan=True)
    tiny_budget = spatial_metrics(feats, masks, max_bytes=1)  # one image per chunk
    for key in whole:
        torch.testing.assert_close(tiny_budget[key], whole[key], atol=1e-6, rtol=0, equal_nan=True)


def test_single_metrics_agree_with_spatial_metrics():
    torch.manual_seed(2)
    feats = torch.randn(3, 100, 16) + torch.randn(3, 1, 16)
    masks = torch.rand(3, 100) > 0.5
    both = spatial_metrics(feats, masks)
    torch.testing.assert_close(lds(feats), both["lds"])
    torch.testing.assert_close(cds(feats), both["cds"])
    torch.testing.assert_close(rmsc(feats), both["rmsc"])
    torch.testing.assert_close(srss(feats, masks), both["srss"])
    assert "srss" not in spatial_metrics(feats)
    assert set(both) == {"lds", "cds", "srss", "rmsc"}


def test_masks_on_grid_shapes_and_pixel_downsampling():
    pixels = torch.zeros(1, 64, 64, dtype=torch.bool)
    pixels[0, 5, 40] = True  # one pixel marks its whole 4x4 cell (any-pixel rule)
    tokens = masks_to_grid(pixels, (16, 16))
    assert tokens.shape == (1, 256) and tokens.sum() == 1 and tokens[0, 1 * 16 + 10]
    feats = torch.randn(1, 256, 8)
    grid_masks = tokens.reshape(1, 16, 16)
    torch.testing.assert_close(srss(feats, grid_masks), srss(feats, tokens), equal_nan=True)
    with pytest.raises(ValueError, match="masks must be"):
        srss(feats, torch.ones(1, 100, dtype=torch.bool))


def test_bad_feature_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        spatial_metrics(torch.randn(256, 8))
    assert spatial_metrics(torch.randn(0, 16, 4))["lds"].shape == (0,)


def test_rmsc_is_accurate_for_nearly_constant_tokens():
    # the fast identity mean|x̂|^2 - |x̄|^2 cancels here; the result must still match a float64 computation
    torch.manual_seed(3)
    feats = torch.randn(4, 1, 64) + 1e-3 * torch.randn(4, 256, 64)
    x = feats.double()
    xn = x / x.norm(dim=-1, keepdim=True)
    expected = (xn - xn.mean(1, keepdim=True)).pow(2).sum(-1).mean(1).sqrt()
    got = spatial_metrics(feats)["rmsc"].double()
    assert (expected < 1e-2).all()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
