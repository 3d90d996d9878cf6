"""study.objectives.flow: paths, velocity targets, the score from a velocity, time sampling."""
import math

import pytest
import torch

from study.objectives import interpolate, path_coefficients, sample_time, score_from_velocity, velocity_to_eps_x0


def test_linear_path_is_sit_interpolant():
    x, eps, t = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2), torch.rand(4)
    x_t, v = interpolate("linear", x, eps, t)
    tb = t.view(-1, 1, 1, 1)
    assert torch.allclose(x_t, (1 - tb) * x + tb * eps)
    assert torch.allclose(v, eps - x)


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_velocity_is_time_derivative_and_inverts(path):
    x, eps = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    x_t, v = interpolate(path, x, eps, t)
    h = 1e-6
    num = (interpolate(path, x, eps, t + h)[0] - interpolate(path, x, eps, t - h)[0]) / (2 * h)
    assert torch.allclose(v, num, atol=1e-6)
    eps_hat, x_hat = velocity_to_eps_x0(path, v, x_t, t)
    assert torch.allclose(eps_hat, eps) and torch.allclose(x_hat, x)
    _, s, _, _ = path_coefficients(path, t)
    assert torch.allclose(score_from_velocity(path, v, x_t, t), -eps / s.view(-1, 1))


def test_lognormal_time_follows_the_path():
    # REPA's loss: sigma = exp(n), n ~ N(0, 1); t = sigma / (1 + sigma) (linear), 2 / pi * atan(sigma) (cosine)
    n = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    sigma = n.exp()

    def draw(path):
        return sample_time("lognormal", 1000, generator=torch.Generator().manual_seed(3), path=path)

    assert torch.allclose(draw("linear"), sigma / (1 + sigma), atol=1e-6)
    assert torch.equal(draw("linear"), sample_time("lognormal", 1000, generator=torch.Generator().manual_seed(3)))
    cosine = draw("cosine")
    assert torch.allclose(cosine, 2 / math.pi * torch.atan(sigma), atol=1e-6)
    assert not torch.allclose(cosine, draw("linear"), atol=1e-3)
    # in both cases exp(n) is the draw's noise-to-signal ratio sigma_t / alpha_t on its path
    for path, t in (("linear", draw("linear")), ("cosine", cosine)):
        alpha, sig, _, _ = path_coefficients(path, t.double())
        assert torch.allclose(sig / alpha, sigma.double(), rtol=1e-4)
    # uniform times do not depend on the path
    assert torch.equal(sample_time("uniform", 5, generator=torch.Generator().manual_seed(1), path="cosine"),
                       sample_time("uniform", 5, generator=torch.Generator().manual_seed(1)))


def test_linear_score_matches_repa_formula():
    # REPA's get_score_from_velocity (linear): (reverse_alpha_ratio * v - x_t) / var with ratio = (1 - t) / -1,
    # var = t^2 - ratio * t
    v, x_t, t = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64), \
        torch.tensor([0.3, 0.7], dtype=torch.float64)
    ratio = ((1 - t) / -1).view(-1, 1)
    var = t.view(-1, 1) ** 2 - ratio * t.view(-1, 1)
    assert torch.allclose(score_from_velocity("linear", v, x_t, t), (ratio * v - x_t) / var)


def test_time_sampling():
    g = torch.Generator().manual_seed(0)
    u = sample_time("uniform", 10000, generator=g)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.02
    ln = sample_time("lognormal", 10000, generator=g, mean=0.0, std=1.0)
    assert 0 < ln.min() and ln.max() < 1 and abs(ln.median() - 0.5) < 0.03
    assert torch.logit(ln).std().item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="unknown time sampling"):
        sample_time("beta", 3)
    with pytest.raises(ValueError, match="unknown path"):
        sample_time("lognormal", 3, path="vp")
    with pytest.raises(ValueError, match="unknown path"):
        path_coefficients("vp", torch.rand(2))
    assert math.isclose(path_coefficients("cosine", torch.tensor(1.0))[1].item(), 1.0)
