"""Test-wide settings: offline, quiet, few threads, and a private results root per test session."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("REPA_STUDY_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Every test gets its own results root, project cache and weights folder, so tests never see each other's
    files."""
    base = tmp_path_factory.mktemp("repa")
    monkeypatch.setenv("REPA_STUDY_ROOT", str(base / "runs"))
    monkeypatch.setenv("REPA_STUDY_CACHE", str(base / "cache"))
    monkeypatch.setenv("REPA_STUDY_WEIGHTS", str(base / "weights"))  # local encoders' pretrained weights too
    yield
