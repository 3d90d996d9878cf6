"""study.objectives.align: the contract functions against their formulas, and what each projector mixes."""
import numpy as np
import pytest
import torch

from study.objectives import alignment_loss, build_projector, pool_tokens, spatial_normalize


def test_spatial_normalize_matches_formula():
    x = torch.randn(3, 20, 7, dtype=torch.float64) * 3 + 1.5
    a = x.numpy()
    for gamma in (1.0, 0.6, 0.0):
        want = (a - gamma * a.mean(1, keepdims=True)) / (a.std(1, ddof=1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(spatial_normalize(x, gamma=gamma).numpy(), want, rtol=1e-12, atol=1e-12)
    # gamma = 1: zero mean and (Bessel) unit std over tokens, per image and channel
    y = spatial_normalize(x)
    assert torch.allclose(y.mean(1), torch.zeros(3, 7, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(y.std(1), torch.ones(3, 7, dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        spatial_normalize(torch.randn(4, 5))


def test_alignment_loss_is_minus_mean_cosine():
    p, t = torch.randn(2, 9, 5), torch.randn(2, 9, 5)
    cos = (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1))
    assert torch.allclose(alignment_loss(p, t), -cos.mean(), atol=1e-6)
    assert torch.allclose(alignment_loss(p, 3 * p), torch.tensor(-1.0))
    assert torch.allclose(alignment_loss(p, -p), torch.tensor(1.0))
    with pytest.raises(ValueError, match="differ"):
        alignment_loss(p, t[:, :4])


@pytest.mark.parametrize("kind", ["mlp", "linear", "conv"])
def test_projector_shapes(kind):
    proj = build_projector(kind, 12, 5, hidden_dim=16, kernel_size=3)
    assert proj(torch.randn(2, 6 * 4, 12), (6, 4)).shape == (2, 24, 5)
    with pytest.raises(ValueError, match="does not hold"):
        proj(torch.randn(2, 24, 12), (5, 5))


def _changed_tokens(kind: str, kernel_size: int = 3) -> set[tuple[int, int]]:
    torch.manual_seed(0)
    h, w = 6, 6
    proj = build_projector(kind, 8, 4, hidden_dim=16, kernel_size=kernel_size)
    x = torch.randn(1, h * w, 8)
    x2 = x.clone()
    x2[0, 2 * w + 3] += 5.0  # perturb token (row 2, col 3)
    with torch.no_grad():
        diff = (proj(x2, (h, w)) - proj(x, (h, w))).abs().sum(-1)[0]
    return {divmod(i, w) for i in torch.nonzero(diff > 1e-6).flatten().tolist()}


def test_conv_projector_mixes_neighbours_mlp_does_not():
    assert _changed_tokens("conv") == {(r, c) for r in (1, 2, 3) for c in (2, 3, 4)}  # the 3x3 neighbourhood
    assert _changed_tokens("conv", kernel_size=1) == {(2, 3)}
    assert _changed_tokens("mlp") == {(2, 3)}
    assert _changed_tokens("linear") == {(2, 3)}


def test_projector_layouts_and_errors():
    mlp = build_projector("mlp", 10, 3, hidden_dim=7)
    assert [tuple(m.weight.shape) for m in mlp.net if hasattr(m, "weight")] == [(7, 10), (7, 7), (3, 7)]
    conv = build_projector("conv", 10, 3, kernel_size=5)
    assert conv.net.kernel_size == (5, 5) and conv.net.padding == (2, 2)
    with pytest.raises(ValueError, match="unknown projector kind"):
        build_projector("attention", 4, 4)
    with pytest.raises(ValueError, match="odd"):
        build_projector("conv", 4, 4, kernel_size=2)


def test_pool_tokens_averages_whole_cells_row_major():
    grid = torch.arange(16.0).reshape(4, 4)                      # token (r, c) holds 4r + c
    x = torch.stack([grid.flatten(), -grid.flatten()], -1)[None]   # [1, 16, 2]
    y = pool_tokens(x, 2)
    want = torch.tensor([[2.5, 4.5], [10.5, 12.5]]).flatten()      # the mean of each 2x2 cell, row-major
    assert y.shape == (1, 4, 2) and torch.equal(y[0, :, 0], want) and torch.equal(y[0, :, 1], -want)
    assert pool_tokens(x, 1) is x
    with pytest.raises(ValueError, match="divisible by 3"):
        pool_tokens(x, 3)
