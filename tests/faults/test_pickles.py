"""Fault (issue 19, case 1): a pickle planted where the project reads weights (the extractor cache, a weight override
in $REPA_STUDY_WEIGHTS, an upstream raw checkpoint) never runs: those files are read as tensors only. (Run
checkpoints, for resume and sampling: test_checkpoints.py.)"""
from __future__ import annotations

import pytest
import torch
from fault_support import plant_pickle

import encoders
from study.evaluation import ExtractorConfig, load_synthetic_extractor

SMALL = ExtractorConfig(n_train=64, epochs=1, width=8, dim=8)
DATA = "synthetic:n=64,size=32,classes=4,seed=0"


def test_a_planted_extractor_cache_never_runs(tmp_path):
    from study.common import cache_dir

    marker = tmp_path / "payload-ran"
    first = load_synthetic_extractor(DATA, SMALL)
    cached = sorted(p for p in cache_dir("extractors").iterdir() if not p.name.startswith("."))
    assert cached
    for path in cached:  # replace whatever the cache holds, and what an older release named it
        plant_pickle(path, marker)
        plant_pickle(path.with_suffix(".pt"), marker)
    try:
        again = load_synthetic_extractor(DATA, SMALL)  # a damaged cache is trained again, never unpickled
    finally:
        assert not marker.exists(), "reading the extractor cache ran a planted pickle"
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    torch.testing.assert_close(first(images)["pool"], again(images)["pool"])


@pytest.mark.parametrize("name, file", [("mocov3-vit-b", "vit-b-300ep.pth.tar"), ("mini-sup", "mini-sup.pth"),
                                        ("webssl-vit-dino300m", "webssl-vit-dino300m.pth")])
def test_a_planted_weight_file_never_runs(tmp_path, name, file):
    """An upstream raw checkpoint (timm+ckpt), a local override of a locally trained and of a transformers entry."""
    marker = tmp_path / "payload-ran"
    plant_pickle(encoders.weights_dir() / file, marker)
    try:
        with pytest.raises(encoders.UnsafeWeightsError, match="builtins.exec"):
            encoders.get_encoder(name, weights="pretrained")
    finally:
        assert not marker.exists(), f"building {name} ran a planted pickle"
