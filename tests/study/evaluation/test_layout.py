"""The layout-sensitive extractor (fd_layout): it learns the shapes and where they are, its Fréchet distance sees a
scrambled layout that the small-data extractor barely notices, and it is deterministic, cached and safe to load."""
import pytest
import torch

import study.common.paths
from study.data import DatasetError, SyntheticDataset, open_dataset
from study.evaluation import (ExtractorConfig, LayoutConfig, LayoutExtractor, SyntheticExtractor, compute_statistics,
                              extract_features, fd, get_extractor, load_layout_extractor, metric_name, train_layout_cnn,
                              train_small_cnn)
from study.evaluation.layout import layout_training_set

SPEC = "synthetic:n=2048,size=32,classes=10,seed=0"  # the miniature's data
SMALL = LayoutConfig(n_train=4096, epochs=3, batch_size=32)  # about 88 % top-1 (the default: 96 %)


def shuffle_quadrants(images: torch.Tensor) -> torch.Tensor:
    """Every image cut into its 2x2 quadrants, put back in a fixed non-identity order: local content kept, the
    layout scrambled."""
    b, c, h, w = images.shape
    tiles = images.reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5).reshape(b, 4, c, h // 2, w // 2)
    tiles = tiles[:, [3, 2, 0, 1]]
    return tiles.reshape(b, 2, 2, c, h // 2, w // 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


@pytest.fixture(scope="module")
def data():
    return SyntheticDataset(2048, 32, 10, 0, "train"), SyntheticDataset(512, 32, 10, 0, "val")


@pytest.fixture(scope="module")
def layout(data):
    images, labels, masks, classes = layout_training_set(data[0], SMALL.n_train)
    return LayoutExtractor(train_layout_cnn(images, labels, masks, classes, SMALL), "test")


def test_training_draw_is_fresh_and_reproducible(data):
    train, _ = data
    images, labels, masks, classes = layout_training_set(train, 64)
    again = layout_training_set(train, 64)
    assert torch.equal(images, again[0]) and torch.equal(labels, again[1]) and torch.equal(masks, again[2])
    assert classes == 10 and images.shape == (64, 3, 32, 32) and masks.shape == (64, 32, 32)
    assert not any(torch.equal(images[0], train.images[i]) for i in range(len(train)))  # not the study's images
    assert not torch.equal(images, layout_training_set(train, 64, seed=1)[0])


def test_learns_the_shapes(layout, data):
    _, val = data
    assert float((layout.predict(val.images) == val.labels).float().mean()) > 0.8


def test_fd_sees_a_scrambled_or_moved_layout_the_small_extractor_barely_sees(layout, data):
    """Each FD relative to the reference features' total variance tr(Σ), so extractors of different widths compare:
    held-out real images stay near 0; scrambled quadrants and objects rolled by a quarter of the image are far for
    the layout extractor and several times nearer for the small classifier (measured: 0.90 and 0.72 of tr(Σ)
    against 0.19 and 0.13 with the default recipes, benchmarks/layout_sensitivity.py)."""
    train, val = data
    small = SyntheticExtractor(train_small_cnn(train.images, train.labels, 10, ExtractorConfig()), "test")

    def relative(ex):
        ref = compute_statistics(extract_features(ex, [train.images])["pool"], "x/pool")

        def fd_of(images):
            return fd(compute_statistics(extract_features(ex, [images])["pool"], "x/pool"), ref) / ref.sigma.trace()

        rolled = val.images.roll(shifts=(8, 8), dims=(-2, -1))
        return fd_of(val.images), fd_of(shuffle_quadrants(val.images)), fd_of(rolled)

    (real, scrambled, rolled), (_, small_scrambled, small_rolled) = relative(layout), relative(small)
    assert real < 0.05 and scrambled > 0.3 and rolled > 0.3, (real, scrambled, rolled)
    assert scrambled > 2 * small_scrambled and rolled > 2 * small_rolled, (scrambled, small_scrambled, rolled,
                                                                            small_rolled)


def test_training_is_deterministic(data):
    images, labels, masks, classes = layout_training_set(data[0], 256)
    cfg = LayoutConfig(n_train=256, epochs=1, batch_size=64)
    a = train_layout_cnn(images, labels, masks, classes, cfg)
    b = train_layout_cnn(images, labels, masks, classes, cfg)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    other = train_layout_cnn(images, labels, masks, classes, cfg.model_copy(update={"seed": 1}))
    assert not torch.equal(a.head.weight, other.head.weight)


def test_cached_once_reloaded_and_a_damaged_file_retrained(caplog):
    cfg = LayoutConfig(n_train=256, epochs=1, batch_size=64)
    first = load_layout_extractor(SPEC, cfg)
    files = list(study.common.paths.cache_dir("extractors").glob("layout-*.safetensors"))
    assert len(files) == 1 and first.id in files[0].name
    assert first.meta["dataset"].startswith("synthetic-v") and "held_out_accuracy" in first.meta
    second = load_layout_extractor(open_dataset(SPEC, "train"), cfg)
    x = open_dataset(SPEC, "val").images[:8]
    assert second.id == first.id and torch.equal(first(x)["pool"], second(x)["pool"])
    files[0].write_bytes(b"\x00" * 64)
    third = load_layout_extractor(SPEC, cfg)
    assert "does not load" in caplog.text and torch.equal(third(x)["pool"], first(x)["pool"])


def test_names_and_the_registry():
    assert metric_name("layout") == "fd_layout"
    ex = get_extractor("layout", dataset=SPEC)
    assert ex.name == "layout" and ex.outputs == ("pool",) and ex.id.startswith("layout-")


def test_refuses_data_without_the_generator(tmp_path):
    with pytest.raises(DatasetError, match="synthetic shapes.*inception"):
        load_layout_extractor(object(), LayoutConfig())


def test_the_embedded_studys_extractors_are_shipped(monkeypatch):
    """Both extractors of the miniature's data load from the package without training (their training is chaotic
    across CPU instruction sets, so every machine must measure with the same weights); another recipe trains."""
    import study.evaluation.extractor as small_module
    import study.evaluation.layout as layout_module

    def refuse(*args, **kwargs):
        raise AssertionError("trained instead of loading the shipped weights")

    monkeypatch.setattr(small_module, "train_small_cnn", refuse)
    monkeypatch.setattr(layout_module, "train_layout_cnn", refuse)
    for name in ("synthetic", "layout"):
        ex = get_extractor(name, dataset=SPEC)
        assert (small_module.SHIPPED_WEIGHTS / f"{ex.id}.safetensors").is_file(), name
    assert get_extractor("layout", dataset=SPEC).meta["held_out_accuracy"] > 0.9
    with pytest.raises(AssertionError, match="trained instead"):
        load_layout_extractor(SPEC, LayoutConfig(seed=1))
