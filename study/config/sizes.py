"""Model size names and their dimensions (no torch, so configs validate sizes without loading a model), and the one
rule that turns ``model.size`` (+ ``model.patch_size``) into a family, its dimensions and a patch.

- **SiT** (DiT's sizes): S = 12 blocks x 384 wide x 6 heads, B = 12 x 768 x 12, L = 24 x 1024 x 16, XL = 28 x 1152 x
  16. ``tiny``, ``mini`` (the miniature study's) and ``smoke`` are small custom sizes for the embedded CPU study and
  the tests. Names: ``SiT-B/2``, ``tiny``, ... (default patch 2).
- **JiT** (the released ``model_jit.py``): B/16 = 12 blocks x 768 x 12 heads, bottleneck 128, in-context tokens from
  block 4; L/16 = 24 x 1024 x 16, bottleneck 128, from block 8; H/16 = 32 x 1280 x 16, bottleneck 256, from block 10;
  32 in-context class tokens each; ``JiT-tiny`` and ``JiT-smoke`` for the CPU tests (default patch 16).

``align_depth`` is the block after which the hidden tokens are aligned when the method names none: REPA's recipe per
size (4 for S and B, 8 for L and XL; see docs/training.md, "JiT", for the JiT's).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["SiTSize", "SIZES", "parse_size", "JiTSize", "JIT_SIZES", "PAPER_PARAMS_M", "parse_jit_size",
           "is_jit_size", "ModelSize", "resolve_size"]


@dataclass(frozen=True)
class SiTSize:
    depth: int
    hidden: int
    heads: int
    align_depth: int  # REPA's default block after which the hidden tokens are aligned


@dataclass(frozen=True)
class JiTSize:
    depth: int
    hidden: int
    heads: int
    bottleneck: int
    in_context_len: int
    in_context_start: int  # 0-based block before which the in-context class tokens are prepended
    align_depth: int       # default block (1-based) after which the image tokens are aligned


SIZES: dict[str, SiTSize] = {
    "S": SiTSize(12, 384, 6, 4),
    "B": SiTSize(12, 768, 12, 4),
    "L": SiTSize(24, 1024, 16, 8),
    "XL": SiTSize(28, 1152, 16, 8),
    "tiny": SiTSize(4, 96, 4, 2),
    "mini": SiTSize(4, 64, 2, 2),
    "smoke": SiTSize(2, 32, 2, 1),
}
JIT_SIZES: dict[str, JiTSize] = {
    "B": JiTSize(12, 768, 12, 128, 32, 4, 4),
    "L": JiTSize(24, 1024, 16, 128, 32, 8, 8),
    "H": JiTSize(32, 1280, 16, 256, 32, 10, 8),
    "tiny": JiTSize(4, 96, 4, 16, 4, 1, 2),
    "smoke": JiTSize(2, 32, 2, 8, 2, 1, 1),
}
# Parameter counts in millions as the JiT paper lists them (256 px, patch 16, 1000 classes); a test compares.
PAPER_PARAMS_M = {"B": 131, "L": 459, "H": 953}

_SIT_NAME = re.compile(r"^(?:SiT-)?(S|B|L|XL|tiny|mini|smoke)(?:/(\d+))?$")
_JIT_NAME = re.compile(r"^JiT-(B|L|H|tiny|smoke)(?:/(\d+))?$")
_DEFAULT_PATCH = {"sit": 2, "jit": 16}


def parse_size(name: str) -> tuple[SiTSize, int | None]:
    """``"SiT-B/2"`` -> (B's dimensions, patch 2); ``"tiny"`` -> (tiny, None: the patch comes from the config)."""
    m = _SIT_NAME.match(name.strip())
    if not m:
        raise ValueError(f"unknown SiT size {name!r}; use one of SiT-S/2, SiT-B/2, SiT-L/2, SiT-XL/2, tiny, mini, "
                         "smoke (a /P suffix sets the patch size)")
    return SIZES[m.group(1)], (int(m.group(2)) if m.group(2) else None)


def is_jit_size(name: str) -> bool:
    """Whether ``model.size`` names a JiT (``JiT-B/16``, ``JiT-tiny``...) rather than a SiT."""
    return bool(_JIT_NAME.match(str(name).strip()))


def parse_jit_size(name: str) -> tuple[JiTSize, int | None]:
    """``"JiT-B/16"`` -> (B's dimensions, patch 16); ``"JiT-tiny"`` -> (tiny, None: the patch comes from the config)."""
    m = _JIT_NAME.match(str(name).strip())
    if not m:
        raise ValueError(f"unknown JiT size {name!r}; use one of JiT-B/16, JiT-L/16, JiT-H/16, JiT-tiny, JiT-smoke "
                         "(a /P suffix sets the patch size)")
    return JIT_SIZES[m.group(1)], (int(m.group(2)) if m.group(2) else None)


@dataclass(frozen=True)
class ModelSize:
    """A ``model.size`` resolved: which network, its dimensions, and its patch."""

    family: Literal["sit", "jit"]
    dims: SiTSize | JiTSize
    patch: int


def resolve_size(name: str, patch_size: int | None = None) -> ModelSize:
    """The one patch rule: ``patch_size`` (``model.patch_size``), else the name's ``/P``, else the family's default
    (2 for a SiT, 16 for a JiT); a ``patch_size`` that contradicts the name's ``/P`` is an error."""
    family = "jit" if str(name).strip().startswith("JiT") else "sit"  # so a misspelt JiT size says "unknown JiT"
    dims, name_patch = parse_jit_size(name) if family == "jit" else parse_size(name)
    if patch_size is not None and name_patch is not None and patch_size != name_patch:
        raise ValueError(f"model.size {name!r} says patch {name_patch} but model.patch_size is {patch_size}; "
                         "set one of them")
    return ModelSize(family, dims, patch_size or name_patch or _DEFAULT_PATCH[family])
