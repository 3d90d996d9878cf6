"""encoders.Encoder's precision work: with ``bf16`` the matmul/conv weights are stored in bf16 once, giving what bf16
autocast gave when it cast them on every call; ``encode`` runs under inference mode yet returns ordinary tensors."""

import pytest
import torch

import encoders


@pytest.mark.parametrize("name", ["dinov2-vit-b", "webssl-vit-dino1b"])  # timm, transformers
def test_bf16_weights_equal_autocast_casts(name):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    stored = encoders.get_encoder(name, weights="tiny", bf16=True)
    assert any(p.dtype == torch.bfloat16 for p in stored.model.parameters())
    assert any(p.dtype == torch.float32 for p in stored.model.parameters())  # norms, tokens, embeddings
    plain = encoders.get_encoder(name, weights="tiny")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # the previous bf16 path
        ref = plain._forward(plain.preprocess(images))[0].float()
    out = stored.encode(images)["patch"]
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_encode_returns_tensors_a_backward_may_save():
    enc = encoders.get_encoder("dinov2-vit-b", weights="tiny")
    z = enc.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))["patch"]
    assert not z.is_inference()
    p = torch.randn(z.shape, requires_grad=True)
    (p * z).sum().backward()  # an inference tensor would refuse to be saved for backward
    assert torch.equal(p.grad, z)


def test_compile_falls_back_to_eager_when_it_fails(monkeypatch):
    enc = encoders.get_encoder("dinov2-vit-b", weights="tiny")
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    want = enc.encode(images)["patch"]

    def broken(fn, **kwargs):
        def call(x):
            raise RuntimeError("cannot trace")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        got = enc.compile().encode(images)["patch"]
    assert torch.equal(got, want) and enc._run == enc._forward
