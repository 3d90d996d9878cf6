"""Where the project keeps derived files (synthetic data, feature caches, extractor weights, reference stats)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$REPA_STUDY_CACHE`` (default ``~/.cache/repa-study``) joined with ``parts``; created on demand."""
    root = Path(os.environ.get("REPA_STUDY_CACHE") or Path.home() / ".cache" / "repa-study")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
