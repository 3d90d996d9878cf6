"""ImageNet-style folder datasets: listing, class order, ADM crop, masks, and clear errors."""

import numpy as np
import pytest
import torch
from data_support import CLASSES, write_fake_imagenet
from PIL import Image

from study.data import DatasetError, collate, open_dataset
from study.data.folder import center_crop


@pytest.fixture
def imagenet(tmp_path):
    return write_fake_imagenet(tmp_path / "imagenet")


def test_folder_dataset_lists_sorted_classes_and_crops(imagenet):
    ds = open_dataset(str(imagenet), "train", size=32)
    assert len(ds) == 12 and ds.num_classes == 3 and ds.class_names == CLASSES
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    item = ds[5]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert item["label"] == 1 and item["mask"] is None and not ds.has_masks
    # the class colour of the top half survives the crop
    assert item["image"][0, :8].float().mean() == pytest.approx(80, abs=6)
    assert "train" in ds.id and "masks=none" in ds.id
    assert open_dataset(str(imagenet), "train").image_size == 256


def test_center_crop_matches_adm_geometry():
    img = Image.fromarray(np.arange(600 * 300 * 3, dtype=np.uint32).astype(np.uint8).reshape(300, 600, 3))
    out = center_crop(img, 64)
    assert out.size == (64, 64)
    # a bright vertical bar at the centre stays at the centre after the crop
    arr = np.zeros((300, 600, 3), dtype=np.uint8)
    arr[:, 295:305] = 255
    col = np.asarray(center_crop(Image.fromarray(arr), 64)).mean(axis=(0, 2))
    assert abs(int(np.argmax(col)) - 31.5) <= 1.5


def test_masks_are_aligned_and_recorded(imagenet):
    ds = open_dataset(str(imagenet), "val", size=32)
    assert ds.has_masks and "masks=" in ds.id and str(imagenet / "masks") in ds.id
    with_mask = [i for i in range(len(ds)) if ds.mask_paths[i] is not None]
    assert len(with_mask) == 3
    m = ds[with_mask[0]]["mask"]
    assert m.dtype == torch.bool and m.shape == (32, 32)
    assert m[16, 16] and not m[0, 0] and not m[1, 1]  # centre is fg; corner (ignore id 1000) is bg
    assert 0.15 < m.float().mean() < 0.45
    assert ds[1]["mask"] is None
    batch = collate([ds[0], ds[1]])
    assert batch["mask_valid"].tolist() == [True, False]


def test_explicit_masks_dir(imagenet, tmp_path):
    other = tmp_path / "imagenet-s"
    (imagenet / "masks" / "val").rename(other)
    ds = open_dataset(str(imagenet), "val", size=32, masks=other)
    assert ds.has_masks and str(other) in ds.id
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(str(imagenet), "val", masks=tmp_path / "nope")
    with pytest.raises(DatasetError, match="no mask matching"):
        open_dataset(str(imagenet), "train", masks=other)


def test_missing_dataset_errors_say_where_to_put_imagenet(tmp_path, imagenet):
    with pytest.raises(DatasetError, match=r"does not exist.*train/<wnid>/\*\.JPEG"):
        open_dataset(str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="no split folder 'test'"):
        open_dataset(str(imagenet), "test")
    (imagenet / "val" / CLASSES[1] / f"{CLASSES[1]}_val0.JPEG").unlink()
    (imagenet / "val" / CLASSES[1] / f"{CLASSES[1]}_val1.png").unlink()
    with pytest.raises(DatasetError, match="holds no images"):
        open_dataset(str(imagenet), "val")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no class folders"):
        open_dataset(str(empty))


def test_split_class_mismatch_is_an_error(imagenet):
    (imagenet / "val" / "n99999999").mkdir()
    with pytest.raises(DatasetError, match="different class folders"):
        open_dataset(str(imagenet), "train")


def test_unreadable_image_is_named(imagenet):
    bad = imagenet / "train" / CLASSES[0] / f"{CLASSES[0]}_train0.JPEG"
    bad.write_bytes(b"garbage")
    ds = open_dataset(str(imagenet), "train", size=32)
    with pytest.raises(DatasetError, match="cannot read image .*_train0.JPEG"):
        ds[0]
