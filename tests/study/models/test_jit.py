"""study.models.jit and study.objectives.xpred: the paper's parameter counts, shapes and the aligned block, rotary embeddings,
the x-prediction / v-loss identity, the Euler-50 sampler, and a short CPU training that lowers the loss."""
import pytest
import torch

from study.config import JIT_SIZES, PAPER_PARAMS_M, is_jit_size, parse_jit_size
from study.models.jit import apply_rope, build_jit, rope_2d
from study.objectives import xpred_inputs, xpred_loss, xpred_sample, xpred_velocity


@pytest.mark.parametrize("size", ["B", "L", "H"])
def test_paper_parameter_counts(size):
    # JiT paper: B/16 131M, L/16 459M, H/16 953M (256 px, 1000 classes); built on the meta device (no memory)
    with torch.device("meta"):
        model = build_jit(f"JiT-{size}/16", input_size=256, num_classes=1000)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - PAPER_PARAMS_M[size]) / PAPER_PARAMS_M[size] < 0.005, n
    assert model.grid == (16, 16)  # the encoders' grid


def test_size_names():
    assert parse_jit_size("JiT-B/16") == (JIT_SIZES["B"], 16) and JIT_SIZES["B"].align_depth == 4
    assert parse_jit_size("JiT-tiny") == (JIT_SIZES["tiny"], None)
    assert is_jit_size("JiT-L/16") and not is_jit_size("SiT-B/2") and not is_jit_size("tiny")
    with pytest.raises(ValueError, match="unknown JiT size"):
        parse_jit_size("JiT-G/16")
    with pytest.raises(ValueError, match="says patch 16"):
        build_jit("JiT-B/16", input_size=256, patch_size=8)


def _random_jit(size="JiT-tiny", input_size=32, **kw):
    torch.manual_seed(0)
    model = build_jit(size, input_size=input_size, patch_size=2, num_classes=10, **kw)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model


def test_forward_shapes_zero_init_and_aligned_image_tokens():
    torch.manual_seed(0)
    model = build_jit("JiT-tiny", input_size=32, patch_size=2, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    out, (h,) = model.forward_intermediates(x, torch.rand(2), torch.tensor([3, 10]), indices=[1])  # 10 = null
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # adaLN-Zero head
    assert h.shape == (2, 256, 96)  # image tokens only, in-context class tokens removed
    with pytest.raises(ValueError, match="expects inputs"):
        model(torch.randn(1, 3, 16, 16), torch.rand(1), torch.tensor([0]))


@pytest.mark.parametrize("depth", [1, 3])
def test_hidden_tokens_come_from_the_configured_block(depth):
    model = _random_jit()
    captured = []
    model.blocks[depth - 1].register_forward_hook(lambda m, i, o: captured.append(o))
    x, t, y = torch.randn(2, 3, 32, 32), torch.rand(2), torch.tensor([1, 2])
    out, (h,) = model.forward_intermediates(x, t, y, indices=[depth - 1])
    prefix = model.in_context_len if depth - 1 >= model.in_context_start else 0
    assert torch.equal(h, captured[0][:, prefix:]) and h.shape[1] == 256
    torch.testing.assert_close(out, model(x, t, y))
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, t, y, indices=[4])


def test_rotary_embedding_rotates_pairs_and_leaves_prefix_tokens():
    cos, sin = rope_2d(8, 4, prefix=2)
    assert cos.shape == (18, 8)
    x = torch.randn(1, 2, 18, 8)
    out = apply_rope(x, cos, sin)
    torch.testing.assert_close(out[:, :, :2], x[:, :, :2])  # in-context tokens: identity
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation keeps norms
    # token (row 0, col 1) vs (row 1, col 0): first half follows the row, second half the column
    cos0, _ = rope_2d(8, 4)
    assert torch.equal(cos0[1, :4], cos0[0, :4]) and not torch.equal(cos0[1, 4:], cos0[0, 4:])
    assert torch.equal(cos0[4, 4:], cos0[0, 4:]) and not torch.equal(cos0[4, :4], cos0[0, :4])


def test_xprediction_velocity_loss_identity():
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0.01, 0.3, 0.7, 1.0])
    x_t, v = xpred_inputs(x, eps, t, noise_scale=1.0, t_eps=0.05)
    torch.testing.assert_close(x_t, (1 - t.view(-1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1) * eps)
    torch.testing.assert_close(v[1:], (eps - x)[1:])  # above t_eps: the linear path's velocity
    x_pred = x + 0.1 * torch.randn(4, 3, 8, 8, generator=g)
    clamp = t.clamp_min(0.05).view(-1, 1, 1, 1)
    torch.testing.assert_close(xpred_loss(x_pred, x_t, v, t, 0.05), ((x_pred - x) / clamp).pow(2).mean())
    torch.testing.assert_close(xpred_velocity(x, x_t, t, 0.05), v)  # the perfect prediction gives the target
    x_t2, _ = xpred_inputs(x, eps, t, noise_scale=2.0)
    torch.testing.assert_close(x_t2[3], 2.0 * eps[3])  # noise scale: pure noise at t = 1 is 2 eps


def test_euler_50_sampler_and_heun():
    torch.set_num_threads(1)
    model = _random_jit("JiT-smoke", input_size=16).eval()
    labels = torch.tensor([0, 9])
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    calls = []

    def x_fn(z, t, y):
        calls.append(float(t[0]))
        return model(z, t, y)

    out = xpred_sample(x_fn, labels, noise, null=10, num_steps=50)
    assert out.shape == noise.shape and torch.isfinite(out).all() and len(calls) == 50
    assert calls[0] == 1.0 and abs(calls[-1] - 0.02) < 1e-9
    calls.clear()
    heun = xpred_sample(x_fn, labels, noise, null=10, num_steps=5, method="heun")
    assert len(calls) == 4 * 2 + 1 and torch.isfinite(heun).all()  # Heun steps, then a last Euler step
    guided = xpred_sample(x_fn, labels, noise, null=10, num_steps=3, cfg_scale=2.0)
    assert not torch.allclose(guided, xpred_sample(x_fn, labels, noise, null=10, num_steps=3))
    with pytest.raises(ValueError, match="sampler"):
        xpred_sample(x_fn, labels, noise, null=10, method="dpm")


def test_a_few_hundred_cpu_steps_lower_the_loss():
    torch.set_num_threads(1)
    from study.data import IdentityCodec, open_dataset

    data = open_dataset("synthetic:n=64,size=16,classes=4,seed=0", "train")
    images = torch.stack([torch.as_tensor(data[i]["image"]) for i in range(64)])
    labels = torch.tensor([int(data[i]["label"]) for i in range(64)])
    x_all = IdentityCodec().encode(images)
    torch.manual_seed(0)
    model = build_jit("JiT-smoke", input_size=16, patch_size=2, num_classes=4)  # 8x8 tokens: a fast CPU test
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        idx = torch.randint(0, 64, (16,), generator=g)
        x, y = x_all[idx], labels[idx]
        eps = torch.randn(x.shape, generator=g)
        t = torch.sigmoid(0.8 + 0.8 * torch.randn(16, generator=g))  # JiT's P_mean -0.8, P_std 0.8, our time
        x_t, v = xpred_inputs(x, eps, t)
        loss = xpred_loss(model(x_t, t, y), x_t, v, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.7 * first, (first, last)
