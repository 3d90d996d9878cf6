"""The small-data feature extractor: deterministic training, caching, and Fréchet distances that see corruption."""
import numpy as np
import pytest
import torch
from fid_toy import ToyDataset, add_noise, box_blur, toy_images

import study.common.paths
import study.data
from study.evaluation import (ExtractorConfig, SyntheticExtractor, compute_statistics, extract_features, fd,
                              get_extractor, load_synthetic_extractor, metric_name, train_small_cnn)

SMALL = ExtractorConfig(n_train=512, epochs=4)


@pytest.fixture(scope="module")
def trained():
    images, labels = toy_images(512, seed=0)
    return images, labels, train_small_cnn(images, labels, 4, SMALL)


def test_training_is_deterministic():
    images, labels = toy_images(128, seed=0)
    cfg = ExtractorConfig(n_train=128, epochs=2)
    model = train_small_cnn(images, labels, 4, cfg)
    again = train_small_cnn(images, labels, 4, cfg)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    other = train_small_cnn(images, labels, 4, cfg.model_copy(update={"seed": 1}))
    assert not torch.equal(model.head.weight, other.head.weight)


def test_extractor_learns_the_classes(trained):
    images, labels, model = trained
    test_images, test_labels = toy_images(256, seed=3)
    assert float((model(test_images).argmax(1) == test_labels).float().mean()) > 0.9


def test_fd_grows_with_corruption(trained):
    ex = SyntheticExtractor(trained[2], "test")
    ref_images, _ = toy_images(2000, seed=1)
    samples, _ = toy_images(1000, seed=2)  # FD's sampling noise is ~tr(Σ)(1/n1 + 1/n2): keep n well above d=64
    ref = compute_statistics(extract_features(ex, [ref_images])["pool"], "x/pool")

    def fd_of(images):
        return fd(compute_statistics(extract_features(ex, [images])["pool"], "x/pool"), ref)

    clean = fd_of(samples)
    noisy = [fd_of(add_noise(samples, s)) for s in (25, 50, 100)]
    blurred = [fd_of(box_blur(samples, k)) for k in (5, 7, 9)]
    assert clean < noisy[0] < noisy[1] < noisy[2]
    assert clean < blurred[0] < blurred[1] < blurred[2]
    assert noisy[2] > 10 * clean and blurred[2] > 10 * clean


def test_features_accept_nchw_tensors_and_nhwc_arrays_in_any_batching(trained):
    ex = SyntheticExtractor(trained[2], "test")
    images, _ = toy_images(20, seed=4)
    a = extract_features(ex, [images])["pool"]
    b = extract_features(ex, [images[:7].permute(0, 2, 3, 1).numpy(), images[7:].permute(0, 2, 3, 1).numpy()])
    np.testing.assert_allclose(a, b["pool"], rtol=1e-5, atol=1e-6)
    assert a.shape == (20, SMALL.dim) and a.dtype == np.float32
    with pytest.raises(ValueError, match="uint8"):
        ex(images.float())


def test_cached_extractor_is_trained_once_and_reloaded(monkeypatch):
    calls = []

    def fake_open(spec, split="train", **kw):
        calls.append((spec, split))
        return ToyDataset(256, seed=0)

    monkeypatch.setattr(study.data, "open_dataset", fake_open, raising=False)
    cfg = ExtractorConfig(n_train=256, epochs=1)
    first = load_synthetic_extractor("toy", cfg)
    files = list((study.common.paths.cache_dir("extractors")).glob("synthetic-*.safetensors"))  # tensors only
    assert len(files) == 1 and first.id in files[0].name
    assert first.meta["dataset"] == "toy:n=256,size=32,seed=0" and "git_commit" in first.meta
    second = load_synthetic_extractor("toy", cfg)
    assert second.id == first.id
    x, _ = toy_images(8, seed=5)
    assert torch.equal(first(x)["pool"], second(x)["pool"])
    other = load_synthetic_extractor("toy", cfg.model_copy(update={"seed": 3}))
    assert other.id != first.id
    assert calls == [("toy", "train")] * 3


def test_names():
    assert metric_name("inception") == "fid"
    assert metric_name("synthetic") == "fd_synthetic"
    with pytest.raises(ValueError, match="unknown feature extractor 'vgg'"):
        get_extractor("vgg")
