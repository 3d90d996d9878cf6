"""study.objectives.meanflow and study.models.meanflow_sit: the JVP target, r = t reduces to flow matching, CFG folding, the
(r, t) sampling, adaptive weighting and the 1-/few-NFE sampler."""
import pytest
import torch

from study.config import MeanFlowSection
from study.models import MeanFlowSiT, build_meanflow_sit, build_sit
from study.objectives import interpolate
from study.objectives.meanflow import (adaptive_weight, guided_velocity, meanflow_loss, meanflow_sample, meanflow_step,
                                       meanflow_target, sample_time_pair)


def _random_net(dtype=torch.float32, seed=0) -> MeanFlowSiT:
    """A smoke-size MeanFlow SiT with every weight random (adaLN-Zero would make u identically 0)."""
    torch.manual_seed(seed)
    net = build_meanflow_sit("smoke", input_size=8, in_channels=3, num_classes=4, patch_size=2)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return net.to(dtype).eval()


def test_jvp_target_equals_finite_difference_target():
    torch.set_num_threads(1)
    net = _random_net(torch.float64)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    v_g = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64)
    r = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)  # the last one has r = t
    y = torch.tensor([0, 3, 4])

    def u_fn(zz, tt, rr):
        return net(zz, tt, y, rr)

    target = meanflow_target(u_fn, z, r, t, v_g.float()).double()
    h = 1e-3  # the time embedding computes in float32, so a smaller step drowns in its rounding
    with torch.no_grad():  # d/dt u(z + t v_g, t, r): move z along v_g and t forward, r fixed
        du_dt = (u_fn(z + h * v_g, t + h, r) - u_fn(z - h * v_g, t - h, r)) / (2 * h)
    fd_target = v_g - (t - r).clamp(0, 1).reshape(-1, 1, 1, 1) * du_dt
    assert du_dt.abs().max() > 1e-2  # the derivative is far from trivial on this random net
    # agreement to ~1e-4 of the derivative's scale: the float32 time embedding limits the t-direction difference
    assert float((target - fd_target).abs().max()) < 1e-4 * float(du_dt.abs().max())
    assert torch.equal(target[2].float(), v_g[2].float())  # r = t: the target is v_g itself


def test_r_equal_t_reduces_to_flow_matching():
    torch.set_num_threads(1)
    net = _random_net()
    g = torch.Generator().manual_seed(2)
    x, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.rand(4, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    plain = MeanFlowSection(norm_p=0.0)  # no adaptive weighting, no guidance
    loss, mse, u = meanflow_step(lambda z, tt, yy, r: (net(z, tt, yy, r), net(z, tt, yy, r)), net, x, eps, t, t,
                                 y, torch.zeros(4, dtype=torch.bool), plain)
    x_t, v = interpolate("linear", x, eps, t)
    u_fm = net(x_t, t, y)  # the instantaneous velocity (r = t, h = 0)
    torch.testing.assert_close(u, u_fm)
    fm = torch.nn.functional.mse_loss(u_fm, v)
    torch.testing.assert_close(mse, fm)
    torch.testing.assert_close(loss, fm * x[0].numel())  # sum over dimensions, mean over the batch
    # adaptive weighting divides each sample's squared error by (sq + c) ** p
    weighted, _ = meanflow_loss(u_fm, v, MeanFlowSection(norm_p=1.0, norm_eps=0.01))
    sq = (u_fm - v).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(weighted, (sq / (sq.detach() + 0.01)).mean())
    assert torch.equal(adaptive_weight(sq, 0.0, 0.01), torch.ones(4))


def test_loss_gradient_flows_only_through_the_prediction():
    net = _random_net()
    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    t, r = torch.tensor([0.8, 0.7]), torch.tensor([0.1, 0.7])
    y = torch.tensor([1, 2])
    net.train()
    loss, _, _ = meanflow_step(lambda z, tt, yy, r: (net(z, tt, yy, r), []), net, x, eps, r, t, y,
                               torch.zeros(2, dtype=torch.bool), MeanFlowSection())
    loss.backward()
    assert net.h_embed.mlp[0].weight.grad is not None and torch.isfinite(loss)


def test_guided_velocity_folds_cfg_into_the_target():
    g = torch.Generator().manual_seed(4)
    v, z = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([0.2, 0.5, 0.9])
    y = torch.tensor([1, 2, 3])
    drop = torch.tensor([False, False, True])
    cond, uncond = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)

    def v_fn(zz, tt, yy):
        return torch.where((yy == 5).reshape(-1, 1, 1, 1), uncond, cond)

    assert guided_velocity(v, z, t, y, drop, v_fn, 5, MeanFlowSection()) is v  # omega 1, kappa 0: no guidance
    s = MeanFlowSection(omega=1.0, kappa=0.5, guidance_interval=(0.0, 0.6))
    assert s.effective_scale == 2.0
    v_g = guided_velocity(v, z, t, y, drop, v_fn, 5, s)
    want = 1.0 * v + (1 - 1.0 - 0.5) * uncond + 0.5 * cond
    torch.testing.assert_close(v_g[:2], want[:2])
    torch.testing.assert_close(v_g[2], v[2])  # dropped label (and outside the interval): plain v
    s0 = MeanFlowSection(omega=2.0)
    torch.testing.assert_close(guided_velocity(v, z, t, y, torch.zeros(3, dtype=torch.bool), v_fn, 5, s0),
                               uncond + 2.0 * (v - uncond))


def test_time_pairs():
    g = torch.Generator().manual_seed(5)
    r, t = sample_time_pair(400, MeanFlowSection(), generator=g)
    assert r.shape == t.shape == (400,) and bool((t >= r).all()) and bool(((t > 0) & (t < 1)).all())
    assert int((r == t).sum()) == 300  # 75 % with r = t, exactly as the reference code counts
    _, t_u = sample_time_pair(400, MeanFlowSection(time="uniform", equal_fraction=0.0), generator=g)
    assert float(t_u.mean()) > 0.5  # the max of two uniforms
    again = sample_time_pair(400, MeanFlowSection(), generator=torch.Generator().manual_seed(5))
    assert torch.equal(again[0], r) and torch.equal(again[1], t)


def test_one_and_few_nfe_sampling():
    net = _random_net()
    y = torch.tensor([0, 1])
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))

    def u_fn(z, t, r):
        return net(z, t, y, r)

    one = meanflow_sample(u_fn, noise, num_steps=1)
    with torch.no_grad():
        want = noise - net(noise, torch.ones(2), y, torch.zeros(2))
    torch.testing.assert_close(one, want)
    four = meanflow_sample(u_fn, noise, num_steps=4)
    assert four.shape == noise.shape and torch.isfinite(four).all() and not torch.allclose(four, one)
    with pytest.raises(ValueError, match="num_steps"):
        meanflow_sample(u_fn, noise, num_steps=0)


def test_meanflow_sit_is_a_sit_with_a_second_time_input():
    torch.manual_seed(0)
    net = build_meanflow_sit("smoke", input_size=8, in_channels=3, num_classes=4, patch_size=2)
    plain = build_sit("smoke", input_size=8, in_channels=3, num_classes=4, patch_size=2)
    extra = set(net.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("h_embed.") for k in extra)
    assert set(plain.state_dict()) <= set(net.state_dict())  # a SiT checkpoint's keys all exist here
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    z, t, y = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7]), torch.tensor([1, 4])
    u_inst, (h,) = net.forward_intermediates(z, t, y, indices=[0])
    torch.testing.assert_close(u_inst, net(z, t, y, t))  # r omitted = r = t
    assert not torch.allclose(u_inst, net(z, t, y, torch.zeros(2)))
    assert h.shape == (2, 16, 32)
