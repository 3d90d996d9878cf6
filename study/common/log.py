"""Logging with levels and progress bars, shared by every stage.

``REPA_STUDY_LOG`` (DEBUG, INFO, WARNING) sets the level; ``REPA_STUDY_PROGRESS=0`` turns progress bars off
(they are also off when stderr is not a terminal, unless forced with ``REPA_STUDY_PROGRESS=1``).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_CONFIGURED = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners and CLIs swap it after set-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root ``repa_study`` logger once (idempotent); ``level`` overrides the environment."""
    global _CONFIGURED
    level = level or os.environ.get("REPA_STUDY_LOG", "INFO")
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    root = logging.getLogger("repa_study")
    root.setLevel(level)
    if not _CONFIGURED:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
        _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    """A child of the ``repa_study`` logger, e.g. ``get_logger(__name__)``."""
    return logging.getLogger(f"repa_study.{name}")


def progress_enabled() -> bool:
    flag = os.environ.get("REPA_STUDY_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", **kwargs) -> Iterator[T]:
    """A tqdm progress bar that honours ``REPA_STUDY_PROGRESS``; use as an iterator or context manager."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(),
                dynamic_ncols=True, leave=False, **kwargs)
