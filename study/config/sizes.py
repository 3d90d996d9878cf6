"""SiT size names and their dimensions (no torch, so configs validate sizes without loading a model).

Sizes (DiT): S = 12 blocks x 384 wide x 6 heads, B = 12 x 768 x 12, L = 24 x 1024 x 16, XL = 28 x 1152 x 16. ``tiny``,
``mini`` (the miniature study's) and ``smoke`` are small custom sizes for the embedded CPU study and the tests. ``align_depth`` is REPA's default
block for the alignment (4 for S and B, 8 for L and XL): a property of the method's recipe per size, used only when
the method names no depth of its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SiTSize", "SIZES", "parse_size"]


@dataclass(frozen=True)
class SiTSize:
    depth: int
    hidden: int
    heads: int
    align_depth: int  # REPA's default block after which the hidden tokens are aligned


SIZES: dict[str, SiTSize] = {
    "S": SiTSize(12, 384, 6, 4),
    "B": SiTSize(12, 768, 12, 4),
    "L": SiTSize(24, 1024, 16, 8),
    "XL": SiTSize(28, 1152, 16, 8),
    "tiny": SiTSize(4, 96, 4, 2),
    "mini": SiTSize(4, 64, 2, 2),
    "smoke": SiTSize(2, 32, 2, 1),
}

_NAME = re.compile(r"^(?:SiT-)?(S|B|L|XL|tiny|mini|smoke)(?:/(\d+))?$")


def parse_size(name: str) -> tuple[SiTSize, int | None]:
    """``"SiT-B/2"`` -> (B's dimensions, patch 2); ``"tiny"`` -> (tiny, None: the patch comes from the config)."""
    m = _NAME.match(name.strip())
    if not m:
        raise ValueError(f"unknown SiT size {name!r}; use one of SiT-S/2, SiT-B/2, SiT-L/2, SiT-XL/2, tiny, mini, smoke "
                         "(a /P suffix sets the patch size)")
    return SIZES[m.group(1)], (int(m.group(2)) if m.group(2) else None)
