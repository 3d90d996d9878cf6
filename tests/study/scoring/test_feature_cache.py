"""Feature cache: contents, keys, atomic chunks, resuming after an interrupted extraction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import study.scoring.feature_cache as features
from study.scoring import FeatureSet, extract_encoder_features, masks_to_grid, spatial_metrics

DATA = "synthetic:n=24,size=32,classes=4"
ENCODER = "dinov2-vit-b"


@pytest.fixture(scope="module")
def encoder():
    from encoders import get_encoder

    return get_encoder(ENCODER, weights="tiny")


def _extract(enc, tmp_path, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("chunk_size", 8)
    return extract_encoder_features(enc, DATA, "train", cache_root=tmp_path / "cache", device="cpu", **kw)


def test_contents_match_a_direct_encode(encoder, tmp_path):
    from study.data import open_dataset

    fs = _extract(encoder, tmp_path)
    ds = open_dataset(DATA, "train")
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])
    out = encoder.encode(images)
    assert fs.n == 24 and fs.mean.dtype == np.float16 and fs.mean.shape == (24, encoder.embed_dim)
    np.testing.assert_allclose(fs.mean, out["patch"].mean(1).half().numpy(), atol=1e-3)
    np.testing.assert_allclose(fs.cls, out["cls"].half().numpy(), atol=1e-3)
    np.testing.assert_array_equal(fs.labels, [it["label"] for it in items])
    token_masks = masks_to_grid(torch.stack([it["mask"] for it in items]), (16, 16))
    ref = spatial_metrics(out["patch"], token_masks)
    for key in ("lds", "cds", "rmsc", "srss"):
        np.testing.assert_allclose(fs.metrics[key], ref[key].numpy(), atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(fs.fg_tokens, token_masks.sum(1).numpy())
    assert fs.meta["masks"].startswith("dataset:synthetic") and fs.meta["num_tokens"] == 256
    assert isinstance(fs.mean, np.memmap) or isinstance(getattr(fs.mean, "base", None), np.memmap)
    assert not (fs.path / "chunks").exists()


def test_interrupted_extraction_resumes_to_the_same_result(encoder, tmp_path, monkeypatch):
    reference = _extract(encoder, tmp_path / "clean")

    real_save = features._save_chunk
    saved = []

    def crash_after_two(path, arrays):
        if len(saved) == 2:
            raise KeyboardInterrupt("simulated kill")
        real_save(path, arrays)
        saved.append(path)

    monkeypatch.setattr(features, "_save_chunk", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        _extract(encoder, tmp_path / "killed")
    directory = saved[0].parent.parent
    assert sorted(p.name for p in (directory / "chunks").iterdir()) == ["000000.npz", "000001.npz"]
    assert not (directory / "meta.json").exists()
    with pytest.raises(FileNotFoundError, match="not a complete feature cache"):
        FeatureSet.load(directory)

    monkeypatch.setattr(features, "_save_chunk", real_save)
    calls = []
    real_encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda images: calls.append(len(images)) or real_encode(images))
    resumed = _extract(encoder, tmp_path / "killed")
    assert sum(calls) == 8  # only the third chunk was computed
    for name in ("mean", "cls", "labels", "fg_tokens"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name), err_msg=name)
    for key in reference.metrics:
        np.testing.assert_array_equal(resumed.metrics[key], reference.metrics[key], err_msg=key)


def test_cache_hit_and_keys(encoder, tmp_path, monkeypatch):
    first = _extract(encoder, tmp_path)
    monkeypatch.setattr(encoder, "encode", lambda images: pytest.fail("a cache hit must not encode"))
    again = _extract(encoder, tmp_path)
    assert again.path == first.path
    monkeypatch.undo()
    subset = _extract(encoder, tmp_path, limit=10)
    assert subset.path != first.path and subset.n == 10
    # the subset is a seeded random choice kept in dataset order: its labels are a subsequence of the full set's
    again_subset = _extract(encoder, tmp_path, limit=10)
    np.testing.assert_array_equal(again_subset.labels, subset.labels)


def test_changed_encoder_entry_never_reuses_features(tmp_path):
    import encoders
    from encoders import Encoder, get_spec

    spec = get_spec(ENCODER)
    key = encoders.cache_key(ENCODER, "tiny")
    assert key == Encoder(spec, None, "tiny").cache_key
    assert encoders.cache_key(f"{ENCODER}@clsmix=0.5", "tiny") != key
    assert encoders.cache_key(ENCODER, "pretrained") != key
    base = {"encoder": ENCODER, "dataset": "d", "split": "val", "limit": None}
    assert features.feature_cache_dir({**base, "cache_key": key}, tmp_path) != features.feature_cache_dir(
        {**base, "cache_key": key.replace(spec.fingerprint(), "0" * 12)}, tmp_path)


def test_bad_inputs_are_clear(tmp_path):
    import encoders

    with pytest.raises(TypeError, match="dataset spec"):
        extract_encoder_features(ENCODER, 3, weights="tiny", cache_root=tmp_path)
    with pytest.raises(ValueError, match="no CLS token|CLS mixing"):
        encoders.cache_key(_no_cls_entry() + "@clsmix=0.5", "tiny")


def _no_cls_entry() -> str:
    from encoders import load_catalog

    return next(name for name, spec in load_catalog().items() if spec.cls_index is None)


def test_empty_dataset_is_an_error(tmp_path):
    class Empty:
        id = "empty"

        def __len__(self):
            return 0

        def __getitem__(self, i):
            raise IndexError(i)

    with pytest.raises(ValueError, match="no images"):
        extract_encoder_features(ENCODER, Empty(), weights="tiny", cache_root=tmp_path)


def test_random_init_encoders_are_the_same_in_every_build():
    from encoders import get_encoder

    def build_encoder(name, weights):
        return get_encoder(name, weights=weights)

    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_encoder(ENCODER, "tiny").encode(images)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    torch.manual_seed(456)
    b = build_encoder(f"{ENCODER}@clsmix=0", "tiny").encode(images)
    torch.testing.assert_close(a["patch"], b["patch"])
    torch.testing.assert_close(a["cls"], b["cls"])


def test_bf16_features_are_cached_apart_from_fp32(tmp_path):
    fp32 = extract_encoder_features(ENCODER, "synthetic:n=16,size=32,classes=4,seed=0", "train", weights="tiny",
                            batch_size=8, cache_root=tmp_path)
    bf16 = extract_encoder_features(ENCODER, "synthetic:n=16,size=32,classes=4,seed=0", "train", weights="tiny",
                            batch_size=8, cache_root=tmp_path, bf16=True)
    assert fp32.path != bf16.path and bf16.meta["cache_key"].endswith("|bf16")
    assert np.allclose(np.asarray(fp32.mean, dtype=np.float32), np.asarray(bf16.mean, dtype=np.float32), atol=0.1)
