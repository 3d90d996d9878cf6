"""The masks SRSS needs: the check a sweep runs before submitting score jobs, and the warning when SRSS is empty."""
from __future__ import annotations

import logging
import math

import pytest
from data_support import write_fake_imagenet

from study.scoring import AUTHORS_MIN_FRACTION, check_masks, extract_encoder_features, score_encoder, spatial_summary

DATA = "synthetic:n=30,size=32,classes=3"


def test_check_counts_the_images_srss_keeps(tmp_path):
    """On synthetic data (exact masks) the check's count is the number of images SRSS averages over."""
    every = check_masks(DATA, "val")
    assert every.ok and (every.n_images, every.n_masked) == (30, 30) and every.n_kept == 30
    authors = check_masks(DATA, "val", min_fraction=AUTHORS_MIN_FRACTION, limit=20)
    assert authors.ok and authors.n_images == 20 and 0 < authors.n_kept < 20
    fs = extract_encoder_features("dinov2-vit-b", DATA, "val", weights="tiny", device="cpu", cache_root=tmp_path)
    assert fs.meta["num_tokens"] == 256  # the 16 x 16 grid the check counts on
    assert check_masks(DATA, "val", min_fraction=0.25).n_kept == spatial_summary(fs, 0.25)["n_srss"]
    none = check_masks(DATA, "val", min_fraction=0.5)
    assert not none.ok and "lower scoring.min_mask_fraction" in none.problem


def test_check_says_when_srss_would_be_empty(tmp_path):
    bare = write_fake_imagenet(tmp_path / "bare", per_class=(1, 2), masks=False)
    check = check_masks(str(bare), "val")
    assert not check.ok and check.n_images == 6 and check.n_masked == 0 and "SRSS will be empty" in check.problem
    src = write_fake_imagenet(tmp_path / "imagenet", per_class=(1, 2), masks=True)
    masks = check_masks(str(bare), "val", src / "masks", count=False)  # the same file names: masks given apart
    assert masks.ok and masks.n_masked == 3 and masks.n_kept is None
    assert "3 of 6 scored images have a mask" in masks.summary()
    away = check_masks("/no/such/imagenet", "val", "/no/such/masks")
    assert away.ok and away.n_images is None and "not on this machine" in away.summary()


def test_score_warns_when_srss_is_empty(tmp_path):
    bare = write_fake_imagenet(tmp_path / "bare", per_class=(1, 1), masks=False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # what reaches the logger, whatever handlers other tests left on its parents
    logger = logging.getLogger("repa_study.study.scoring.score")
    logger.addHandler(handler)
    try:
        row = score_encoder("dinov2-vit-b", str(bare), probe=False, weights="tiny", device="cpu",
                            cache_root=tmp_path / "features")
    finally:
        logger.removeHandler(handler)
    assert math.isnan(row["srss"]) and row["n_srss"] == 0 and row["image_size"] == 256
    assert any("SRSS of dinov2-vit-b" in r.getMessage() and "has no masks" in r.getMessage() for r in records)


def test_prepared_masks_score_like_the_source_folder(tmp_path, fraction=AUTHORS_MIN_FRACTION):
    from study.data import prepare_split

    src = write_fake_imagenet(tmp_path / "imagenet", per_class=(1, 2), masks=True)
    prepare_split(src, tmp_path / "prepared", "val", size=256, masks=src / "masks")  # a folder's default size
    kw = dict(probe=False, weights="tiny", device="cpu", cache_root=tmp_path / "f", srss_min_fraction=fraction)
    folder = score_encoder("dinov2-vit-b", str(src), **kw)
    prepared = score_encoder("dinov2-vit-b", str(tmp_path / "prepared"), **kw)
    assert folder["n_srss"] == 3 and folder["mask_source"] != "none" and prepared["mask_source"] != "none"
    for key in ("n_srss", "srss", "lds"):
        assert prepared[key] == pytest.approx(folder[key], abs=1e-6), key
