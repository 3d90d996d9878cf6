"""Codecs: identity round trip, SD-VAE codec on a tiny random AutoencoderKL, latent stats, grid checks."""
import json

import pytest
import torch
from data_support import tiny_vae

from study.data import (GridMismatchError, IdentityCodec, LatentStats, SDVAECodec, check_token_grid, get_codec,
                        latents_from_moments, to_uint8, token_grid)
from study.data.synthetic import make_synthetic


def test_identity_round_trip_is_lossless():
    images, _, _ = make_synthetic(4, size=32, cache=False)
    codec = IdentityCodec()
    x = codec.encode(images)
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(codec.decode(x, rounding="round"), images)
    floor = codec.decode(x)  # the sample convention: never above the level, at most one below (float error)
    assert ((images.int() - floor.int()) >= 0).all() and ((images.int() - floor.int()) <= 1).all()
    assert codec.channels == 3 and codec.downsample == 1 and codec.id == "identity"
    with pytest.raises(ValueError, match="uint8"):
        codec.encode(images.float())


def test_to_uint8_floor_is_the_authors_convention_round_the_nearest_level():
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 2.0])
    scaled = [0.0, 0.0, 0.1275, 127.5, 191.25, 254.8725, 255.0, 255.0]  # clamp(127.5 * (x + 1), 0, 255)
    assert to_uint8(x).tolist() == [0, 0, 0, 127, 191, 254, 255, 255] == [int(v) for v in scaled]
    assert to_uint8(x, "round").tolist() == [0, 0, 0, 128, 191, 255, 255, 255]
    # on a uniform spread of values the floor convention is half a grey level darker on average
    u = torch.linspace(-1, 1, 100_001)
    gap = to_uint8(u, "round").double().mean() - to_uint8(u, "floor").double().mean()
    assert abs(gap - 0.5) < 0.01
    with pytest.raises(ValueError, match="rounding"):
        to_uint8(x, "ceil")


def test_sdvae_codec_shapes_and_normalisation():
    images, _, _ = make_synthetic(2, size=64, cache=False)
    vae = tiny_vae()
    codec = SDVAECodec("tiny-test", vae=vae)
    assert codec.channels == 4 and codec.downsample == 8
    z = codec.encode(images)
    assert z.shape == (2, 4, 8, 8)
    mean = vae.encode(images.float() / 127.5 - 1).latent_dist.mean
    torch.testing.assert_close(z, mean * 0.18215)  # default: REPA's single factor, bias 0
    out = codec.decode(z)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.uint8
    with torch.no_grad():
        pixels = vae.decode(z / 0.18215).sample
    assert torch.equal(out, to_uint8(pixels, "floor")) and torch.equal(codec.decode(z, rounding="round"),
                                                                     to_uint8(pixels, "round"))

    stats = LatentStats((1.0, 2.0, 3.0, 4.0), (0.1, -0.2, 0.3, 0.0), "test")
    codec2 = SDVAECodec("tiny-test", vae=vae, stats=stats)
    z2 = codec2.encode(images)
    expected = (mean - torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 4, 1, 1)) * torch.tensor([1.0, 2, 3, 4]).view(
        1, 4, 1, 1)
    torch.testing.assert_close(z2, expected)
    torch.testing.assert_close(stats.denormalize(z2), mean)
    assert codec.id != codec2.id and codec.id.startswith("sdvae:tiny-test")


def test_moments_and_posterior_samples():
    images, _, _ = make_synthetic(2, size=64, cache=False)
    codec = SDVAECodec("tiny-test", vae=tiny_vae())
    mom = codec.moments(images)
    assert mom.shape == (2, 8, 8, 8)
    stats = LatentStats.default()
    torch.testing.assert_close(latents_from_moments(mom, stats, sample=False), codec.encode(images))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    s1 = latents_from_moments(mom, stats, generator=g1)
    assert torch.equal(s1, latents_from_moments(mom, stats, generator=g2))
    assert not torch.equal(s1, latents_from_moments(mom, stats, sample=False))


def test_latent_stats_files(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"latents_scale": [1, 2, 3, 4], "latents_bias": [0, 0, 1, 1]}))
    stats = LatentStats.load(path)
    assert stats.scale == (1.0, 2.0, 3.0, 4.0) and stats.bias == (0.0, 0.0, 1.0, 1.0)
    pt = tmp_path / "sdvae-ft-mse-f8d4-latents-stats.pt"  # the authors' format: [1,C,1,1] tensors
    torch.save({"latents_scale": torch.ones(1, 4, 1, 1) * 0.2, "latents_bias": torch.zeros(1, 4, 1, 1)}, pt)
    assert LatentStats.load(pt).scale == pytest.approx((0.2,) * 4)
    codec = SDVAECodec("tiny-test", vae=tiny_vae(), stats=path)
    assert codec.stats.scale == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(FileNotFoundError, match="data prepare --stats"):
        LatentStats.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="channels"):
        LatentStats((1.0,), (0.0,)).normalize(torch.zeros(1, 4, 2, 2))


def test_missing_weights_error_names_repo_and_paths(monkeypatch, tmp_path):
    from encoders.build import MissingWeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("REPA_STUDY_WEIGHTS", str(tmp_path / "weights"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    codec = SDVAECodec()
    with pytest.raises(MissingWeightsError) as info:
        codec.encode(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    msg = str(info.value)
    assert "stabilityai/sd-vae-ft-mse" in msg and str(tmp_path / "weights") in msg and "huggingface-cli" in msg


def test_sdvae_loads_a_local_diffusers_folder(tmp_path, monkeypatch):
    vae = tiny_vae(seed=3)
    vae.save_pretrained(tmp_path / "weights" / "org" / "vae")
    monkeypatch.setenv("REPA_STUDY_WEIGHTS", str(tmp_path / "weights"))
    images, _, _ = make_synthetic(1, size=64, cache=False)
    by_repo = SDVAECodec("org/vae").encode(images)           # $REPA_STUDY_WEIGHTS/<repo id>
    by_dir = SDVAECodec(str(tmp_path / "weights" / "org" / "vae")).encode(images)  # explicit folder
    torch.testing.assert_close(by_repo, SDVAECodec("x", vae=vae).encode(images))
    torch.testing.assert_close(by_dir, by_repo)


def test_token_grid_and_mismatch_error():
    assert token_grid(IdentityCodec(), 64, 4) == (16, 16)
    sd = SDVAECodec("tiny-test", vae=tiny_vae())
    assert token_grid(sd, 256, 2) == (16, 16)
    assert check_token_grid(sd, 256, 2, 16) == (16, 16)
    assert check_token_grid(IdentityCodec(), 64, 4, (16, 16)) == (16, 16)
    with pytest.raises(GridMismatchError, match=r"SiT grid 8x8 \(image 64 px, codec /1, patch 8\) != encoder grid "
                                                r"16x16.*patch size 4"):
        check_token_grid(IdentityCodec(), 64, 8, 16)
    with pytest.raises(GridMismatchError, match="not divisible by the SiT patch size"):
        token_grid(IdentityCodec(), 30, 4)
    with pytest.raises(GridMismatchError, match="downsampling /8"):
        token_grid(sd, 100, 2)


def test_get_codec():
    assert isinstance(get_codec("identity"), IdentityCodec)
    assert isinstance(get_codec("sdvae", vae=tiny_vae()), SDVAECodec)
    with pytest.raises(ValueError, match="unknown codec"):
        get_codec("vqgan")
