"""Synthetic shapes: determinism, masks, balance, sizes, caching, and open_dataset on synthetic specs."""
import numpy as np
import pytest
import torch

from study.common import cache_dir
from study.data import DatasetError, collate, open_dataset
from study.data.synthetic import NUM_PARAMS, SHAPES, make_synthetic, render_synthetic, split_seed


def test_same_seed_same_bytes_different_seed_differs():
    a = make_synthetic(20, size=32, seed=3, cache=False)
    b = make_synthetic(20, size=32, seed=3, cache=False)
    c = make_synthetic(20, size=32, seed=4, cache=False)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    assert a[0].dtype == torch.uint8 and a[1].dtype == torch.int64 and a[2].dtype == torch.bool


def test_prefix_stable_and_same_scene_at_two_sizes():
    small = make_synthetic(10, size=32, seed=1, cache=False)
    big = make_synthetic(25, size=32, seed=1, cache=False)
    assert torch.equal(small[0], big[0][:10]) and torch.equal(small[1], big[1][:10])
    hi = make_synthetic(10, size=128, seed=1, cache=False)
    # The same scene: the 128 px mask average-pooled to 32 px agrees with the 32 px mask almost everywhere.
    pooled = torch.nn.functional.avg_pool2d(hi[2].float()[:, None], 4)[:, 0] > 0.5
    assert (pooled == small[2]).float().mean() > 0.97


@pytest.mark.parametrize("size", [32, 256])
def test_shapes_and_sizes(size):
    images, labels, masks = make_synthetic(10, size=size, seed=0, cache=False)
    assert images.shape == (10, 3, size, size)
    assert labels.shape == (10,)
    assert masks.shape == (10, size, size)
    frac = masks.float().mean(dim=(1, 2))
    assert (frac > 0.02).all() and (frac < 0.8).all()


def test_mask_is_exactly_the_drawn_object():
    rng = np.random.default_rng(0)
    params = rng.random((30, NUM_PARAMS))
    labels = np.arange(30) % len(SHAPES)
    image, mask, background = render_synthetic(params, labels, 64, 10, return_background=True)
    outside = ~mask[:, None].expand_as(image)
    assert torch.equal(image[outside], background[outside])
    differs = (image != background).any(dim=1)  # [B,H,W]
    assert differs[mask].float().mean() > 0.95  # foreground pixels differ from the background there
    # and the object is brighter/more saturated than the background on average
    fg = image.float().amax(1)[mask].mean()
    bg = image.float().amax(1)[~mask].mean()
    assert fg > bg + 40


def test_labels_balanced_and_follow_shape():
    _, labels, _ = make_synthetic(200, size=32, num_classes=10, seed=0, cache=False)
    assert torch.bincount(labels, minlength=10).tolist() == [20] * 10
    _, labels, _ = make_synthetic(205, size=32, num_classes=20, seed=0, cache=False)
    counts = torch.bincount(labels, minlength=20)
    assert counts.max() - counts.min() <= 1


def test_labels_are_learnable_from_pixels():
    """A nearest-class-mean classifier on mask shape statistics beats chance by far: labels live in the image."""
    images, labels, masks = make_synthetic(400, size=32, seed=0, cache=False)
    # rotation-invariant features: radial profile of the mask around its centroid + fill variance
    feats = []
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    for img, m in zip(images, masks):
        w = m.float()
        cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
        r = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        scale = (w * r).sum() / w.sum()
        hist = torch.histc((r / scale)[m], bins=8, min=0, max=2.5) / w.sum()
        inside = img.float()[:, m]
        feats.append(torch.cat([hist, inside.std(1) / 64, (w.sum() / (scale ** 2 * 10))[None]]))
    feats = torch.stack(feats)
    train, test = slice(0, 300), slice(300, 400)
    means = torch.stack([feats[train][labels[train] == k].mean(0) for k in range(10)])
    pred = torch.cdist(feats[test], means).argmin(1)
    assert (pred == labels[test]).float().mean() > 0.5  # chance is 0.1


def test_cache_written_atomically_and_reused(monkeypatch):
    first = make_synthetic(12, size=32, seed=5)
    files = list(cache_dir("synthetic").glob("*.npz"))
    assert len(files) == 1 and "n12-s32-c10-seed5" in files[0].name
    assert not list(cache_dir("synthetic").glob(".*tmp"))
    import study.data.synthetic as synth

    monkeypatch.setattr(synth, "_generate", lambda *a, **k: pytest.fail("cache not used"))
    again = make_synthetic(12, size=32, seed=5)
    for x, y in zip(first, again):
        assert torch.equal(x, y)


def test_corrupt_cache_is_regenerated():
    first = make_synthetic(6, size=32, seed=2)
    (path,) = cache_dir("synthetic").glob("*.npz")
    path.write_bytes(b"not a zip")
    again = make_synthetic(6, size=32, seed=2)
    assert torch.equal(first[0], again[0])


def test_bad_parameters_are_clear():
    with pytest.raises(ValueError, match="n >= 1"):
        make_synthetic(0)
    with pytest.raises(ValueError, match="size"):
        make_synthetic(4, size=4)


def test_open_dataset_synthetic_splits_and_items():
    train = open_dataset("synthetic:n=40,size=32,classes=4,seed=0", "train")
    val = open_dataset("synthetic:n=40,size=32,classes=4,seed=0", "val")
    assert len(train) == 40 and train.num_classes == 4 and train.image_size == 32 and train.has_masks
    assert train.id != val.id and "val" in val.id
    assert not torch.equal(train.images, val.images)
    item = train[3]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert isinstance(item["label"], int) and 0 <= item["label"] < 4
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.bool
    images, labels, _ = make_synthetic(40, 32, 4, split_seed(0, "train"))
    assert torch.equal(train.images, images)
    assert train.labels.tolist() == labels.tolist()


def test_open_dataset_defaults_and_size_kwarg():
    ds = open_dataset("synthetic:n=8", size=48)
    assert ds.image_size == 48 and ds[0]["image"].shape == (3, 48, 48)
    assert open_dataset("synthetic:n=8,size=32", size=32).image_size == 32
    with pytest.raises(DatasetError, match="conflicts"):
        open_dataset("synthetic:n=8,size=32", size=64)


@pytest.mark.parametrize("spec", ["synthetic:n=x", "synthetic:foo=1", "synthetic:n"])
def test_bad_synthetic_specs(spec):
    with pytest.raises(DatasetError, match="synthetic"):
        open_dataset(spec)


def test_collate_batches_with_dataloader():
    ds = open_dataset("synthetic:n=10,size=32")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].shape == (4,)
    assert batch["mask"].shape == (4, 32, 32) and "mask_valid" not in batch
    items = [dict(ds[0], mask=None), ds[1]]
    mixed = collate(items)
    assert mixed["mask_valid"].tolist() == [False, True] and not mixed["mask"][0].any()
    assert collate([dict(ds[0], mask=None)])["mask"] is None
