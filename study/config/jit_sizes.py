"""JiT size names and their dimensions (no torch, so configs validate sizes without loading a model).

Sizes (the released ``model_jit.py``): B/16 = 12 blocks x 768 x 12 heads, bottleneck 128, in-context tokens from
block 4; L/16 = 24 x 1024 x 16, bottleneck 128, from block 8; H/16 = 32 x 1280 x 16, bottleneck 256, from block 10;
32 in-context class tokens each. ``tiny`` and ``smoke`` are small custom sizes for the CPU tests. ``align_depth`` is
the block the alignment reads when the method names none (see docs/training.md, "JiT").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["JiTSize", "JIT_SIZES", "PAPER_PARAMS_M", "parse_jit_size", "is_jit_size"]


@dataclass(frozen=True)
class JiTSize:
    depth: int
    hidden: int
    heads: int
    bottleneck: int
    in_context_len: int
    in_context_start: int  # 0-based block before which the in-context class tokens are prepended
    align_depth: int       # default block (1-based) after which the image tokens are aligned


JIT_SIZES: dict[str, JiTSize] = {
    "B": JiTSize(12, 768, 12, 128, 32, 4, 4),
    "L": JiTSize(24, 1024, 16, 128, 32, 8, 8),
    "H": JiTSize(32, 1280, 16, 256, 32, 10, 8),
    "tiny": JiTSize(4, 96, 4, 16, 4, 1, 2),
    "smoke": JiTSize(2, 32, 2, 8, 2, 1, 1),
}

# Parameter counts in millions as the JiT paper lists them (256 px, patch 16, 1000 classes); a test compares.
PAPER_PARAMS_M = {"B": 131, "L": 459, "H": 953}

_NAME = re.compile(r"^JiT-(B|L|H|tiny|smoke)(?:/(\d+))?$")


def is_jit_size(name: str) -> bool:
    """Whether ``model.size`` names a JiT (``JiT-B/16``, ``JiT-tiny``...) rather than a SiT."""
    return bool(_NAME.match(str(name).strip()))


def parse_jit_size(name: str) -> tuple[JiTSize, int | None]:
    """``"JiT-B/16"`` -> (B's dimensions, patch 16); ``"JiT-tiny"`` -> (tiny, None: the patch comes from the config)."""
    m = _NAME.match(str(name).strip())
    if not m:
        raise ValueError(f"unknown JiT size {name!r}; use one of JiT-B/16, JiT-L/16, JiT-H/16, JiT-tiny, JiT-smoke "
                         "(a /P suffix sets the patch size)")
    return JIT_SIZES[m.group(1)], (int(m.group(2)) if m.group(2) else None)
