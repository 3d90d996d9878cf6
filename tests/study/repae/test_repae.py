"""REPA-E pieces on a tiny random AutoencoderKL: where each loss's gradient goes, the latent BatchNorm (training
vs running statistics, used at decoding), LPIPS/discriminator loading, and the tuned VAE's save/load round trip."""
import pytest
import torch

from study.config import OptimSection
from study.data import LatentStats, to_uint8
from study.models import build_sit
from study.objectives import build_projector
from study.repae import (LPIPS, LatentBatchNorm, PatchDiscriminator, RepaeParts, RepaeSection, build_discriminator,
                         codec_from_checkpoint, export_tuned_vae, frozen_call, update_bn_ema)
from study.run import Denoiser

torch.set_num_threads(1)
CLASSES, DIM = 4, 8


def section(**kw):
    base = dict(vae_weights="tiny", perceptual_weight=0.0, disc_weights="random")
    return RepaeSection(**{**base, **kw})


def denoiser(seed=0):
    torch.manual_seed(seed)
    sit = build_sit("smoke", input_size=16, in_channels=4, num_classes=CLASSES, patch_size=1)
    return Denoiser(sit, [build_projector("mlp", sit.hidden, DIM, hidden_dim=16)], depth=1)


def batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randint(0, 256, (b, 3, 32, 32), generator=g, dtype=torch.uint8),
            "labels": torch.randint(0, CLASSES, (b,), generator=g), "eps": torch.randn(b, 4, 16, 16, generator=g),
            "t": torch.rand(b, generator=g), "drop": torch.rand(b, generator=g) < 0.5,
            "post": torch.randn(b, 4, 16, 16, generator=g), "targets": [torch.randn(b, 256, DIM, generator=g)]}


def run_losses(parts, model, step=0, **kw):
    stepper = parts.stepper(lam=0.5, path="linear", num_classes=CLASSES, model=model, denoiser=model)
    parts.train()
    b = batch(**kw)
    from contextlib import nullcontext

    return stepper.losses(b["images"], b["labels"], b["eps"], b["t"], b["drop"], b["post"], b["targets"], step,
                          nullcontext())


def grads(loss, params):
    return torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)


def nonzero(gs):
    return [g is not None and bool(g.abs().sum() > 0) for g in gs]


def test_gradients_reach_the_vae_from_the_alignment_loss_only():
    parts = RepaeParts(section(recon_weight=0.0, kl_weight=0.0, disc_weight=0.0), optim=OptimSection(),
                       init_stats=None)
    model = denoiser()
    out = run_losses(parts, model)
    enc = list(parts.vae.encoder.parameters()) + list(parts.vae.quant_conv.parameters())
    dec = list(parts.vae.decoder.parameters()) + list(parts.vae.post_quant_conv.parameters())
    # the diffusion (and the SiT's own alignment) loss: SiT yes, VAE never
    assert all(g is None for g in grads(out.loss_v, parts.vae.parameters()))
    assert all(g is None for g in grads(out.sit, parts.vae.parameters()))
    assert any(nonzero(grads(out.loss_v, model.sit.parameters())))
    # the VAE's alignment loss: the VAE encoder yes (not the decoder: the SiT sees z), the SiT and projector never
    assert all(nonzero(grads(out.vae_align, [p for p in enc if p.dim() > 1])))
    assert all(g is None for g in grads(out.vae_align, dec))
    assert all(g is None for g in grads(out.vae_align, model.parameters()))
    # with every other VAE term off, the VAE's gradient in the summed loss is exactly vae_lam x the alignment's
    total = grads(out.total, enc)
    align = grads(out.vae_align, enc)
    for gt, ga in zip(total, align):
        torch.testing.assert_close(gt, 1.5 * ga)


def test_reconstruction_and_gan_terms_move_the_vae_and_discriminator_apart():
    parts = RepaeParts(section(vae_lam=0.0), optim=OptimSection(), init_stats=None)
    out = run_losses(parts, denoiser())
    dec = list(parts.vae.decoder.parameters())
    assert any(nonzero(grads(out.vae, dec)))  # reconstruction + GAN reach the decoder
    assert all(g is None for g in grads(out.vae, parts.disc.parameters()))  # the generator term freezes D
    assert all(g is None for g in grads(out.disc, parts.vae.parameters()))  # D sees recon.detach()
    assert any(nonzero(grads(out.disc, parts.disc.parameters())))
    assert float(out.parts["gan"]) != 0.0 and float(out.parts["rec"]) > 0


def test_gan_terms_start_at_disc_start():
    parts = RepaeParts(section(disc_start=5), optim=OptimSection(), init_stats=None)
    before, after = run_losses(parts, denoiser(), step=4), run_losses(parts, denoiser(), step=5)
    assert float(before.disc.detach()) == 0.0 and float(before.parts["gan"]) == 0.0
    assert float(after.disc.detach()) > 0.0 and float(after.parts["gan"]) != 0.0


def test_frozen_call_passes_gradient_to_inputs_not_parameters():
    lin = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    frozen_call(lin, x).sum().backward()
    assert x.grad is not None and lin.weight.grad is None


def test_latent_bn_training_vs_running_statistics():
    bn = LatentBatchNorm(4, momentum=0.1)
    bn.init_from_stats(LatentStats((0.5,) * 4, (1.0,) * 4, "t"))
    assert torch.allclose(bn.running_var, torch.full((4,), 4.0)) and torch.allclose(bn.running_mean, torch.ones(4))
    z = torch.randn(8, 4, 5, 5) * 3 + 2
    out = bn.train()(z)  # batch statistics
    assert out.mean().abs() < 1e-4 and abs(out.var(unbiased=False).item() - 1) < 1e-2
    assert torch.allclose(bn.running_mean, 0.9 + 0.1 * z.mean((0, 2, 3)))
    frozen = bn.normalize_frozen(z)  # running statistics, whatever the mode, no update
    rm = bn.running_mean.clone()
    expect = (z - rm.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    torch.testing.assert_close(frozen, expect)
    torch.testing.assert_close(bn.running_mean, rm)
    st = bn.latent_stats()
    torch.testing.assert_close(torch.tensor(st.scale), bn.running_var.rsqrt())
    torch.testing.assert_close(torch.tensor(st.bias), bn.running_mean)


def test_bn_ema_averages_the_running_statistics():
    bn, ema = LatentBatchNorm(2), LatentBatchNorm(2)
    bn.train()(torch.randn(4, 2, 3, 3) + 5)
    update_bn_ema(ema, bn, 0.9)
    torch.testing.assert_close(ema.running_mean, 0.1 * bn.running_mean)
    torch.testing.assert_close(ema.running_var, 0.9 + 0.1 * bn.running_var)
    assert int(ema.num_batches_tracked) == int(bn.num_batches_tracked) == 1


def test_sampling_decodes_with_the_tuned_vae_and_ema_bn_statistics(tmp_path):
    parts = RepaeParts(section(), optim=OptimSection(), init_stats=None)
    out = run_losses(parts, denoiser())
    out.total.backward()
    parts.clip_and_step()  # the VAE moves away from its initial weights
    parts.update_ema(0.5)
    state = {"step": 1, "repae": parts.state_dict()}
    codec = codec_from_checkpoint(state)
    assert codec_from_checkpoint({"step": 1}) is None  # any other method: the data's frozen codec
    ema = parts.ema_bn
    torch.testing.assert_close(torch.tensor(codec.stats.scale), ema.running_var.rsqrt())
    torch.testing.assert_close(torch.tensor(codec.stats.bias), ema.running_mean)
    assert codec.stats.scale != parts.bn.latent_stats().scale  # the EMA BN, not the live one
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        raw = x / torch.tensor(codec.stats.scale).view(1, -1, 1, 1) + ema.running_mean.view(1, -1, 1, 1)
        expect = to_uint8(parts.vae.decode(raw).sample)
    assert torch.equal(codec.decode(x), expect)
    # the tuned VAE round-trips through save/load: a fresh run's parts and a diffusers export decode the same
    again = RepaeParts(section(), optim=OptimSection(), init_stats=None)
    again.load_state_dict(state["repae"])
    assert torch.equal(again.codec().decode(x), codec.decode(x))
    folder = export_tuned_vae(state, tmp_path / "vae")
    from diffusers import AutoencoderKL

    loaded = AutoencoderKL.from_pretrained(folder)
    for k, v in parts.vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    st = LatentStats.load(folder / "latent_stats.json")
    assert st.scale == codec.stats.scale and st.bias == codec.stats.bias


def test_lpips_random_stand_in_and_real_weight_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("REPA_STUDY_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from encoders import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=r"vgg\.pth.*perceptual_weight=0"):
        LPIPS("pretrained")
    torch.manual_seed(0)
    ref = LPIPS("random")
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    assert torch.allclose(ref(a, a), torch.zeros(2)) and (ref(a, b) > 0).all()
    # the real loading path: the heads file (linK.model.1.weight) and torchvision's VGG16 (features.N.*)
    d = tmp_path / "w" / "lpips"
    d.mkdir(parents=True)
    torch.save({k: v for k, v in ref.state_dict().items() if k.startswith("lin")}, d / "vgg.pth")
    with pytest.raises(MissingWeightsError, match="vgg16-397923af"):
        LPIPS("pretrained")
    torch.save({f"features.{k}": v for k, v in ref.features.state_dict().items()}
               | {"classifier.0.weight": torch.zeros(1)}, d / "vgg16-397923af.pth")
    loaded = LPIPS("pretrained")
    torch.testing.assert_close(loaded(a, b), ref(a, b))


def test_discriminator_checkpoint_format_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("REPA_STUDY_WEIGHTS", str(tmp_path))
    from encoders import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="sdvae-f8d4-discriminator-ckpt.pt"):
        build_discriminator("pretrained")
    torch.manual_seed(0)
    d = PatchDiscriminator()
    assert [k for k in d.state_dict() if k.endswith("weight")][:3] == ["main.0.weight", "main.2.weight",
                                                                       "main.3.weight"]
    path = tmp_path / "REPA-E" / "sdvae" / "sdvae-f8d4-discriminator-ckpt.pt"
    path.parent.mkdir(parents=True)
    torch.save(d.state_dict(), path)
    again = build_discriminator("pretrained")
    x = torch.randn(2, 3, 32, 32)
    d.eval(), again.eval()
    torch.testing.assert_close(again(x)[0], d(x)[0])
    assert again(x)[0].shape == (2, 1, 2, 2)


def test_projections_only_stops_at_the_alignment_depth_with_the_same_projections(monkeypatch):
    model = denoiser()
    b = batch()
    x, t, y = b["eps"], b["t"], b["labels"]
    v, full = model(x, t, y)
    ran = []
    for i, block in enumerate(model.sit.blocks):
        monkeypatch.setattr(block, "forward", (lambda f, i: lambda *a: ran.append(i) or f(*a))(block.forward, i))
    none, early = model(x, t, y, projections_only=True)
    assert none is None and ran == [0]  # the smoke SiT aligns after block 1 of 2: block 2 never runs
    torch.testing.assert_close(early[0], full[0])
    (hidden,) = model.sit.forward_intermediates(x, t, y, indices=[0], intermediates_only=True)
    assert hidden.shape == (4, 256, model.sit.hidden)


def test_a_decoding_codec_leaves_the_training_vae_in_training_mode():
    parts = RepaeParts(section(), optim=OptimSection(), init_stats=None)
    parts.train()
    parts.codec()
    assert parts.vae.training
