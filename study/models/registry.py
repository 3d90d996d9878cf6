"""Which network a ``model.size`` builds: one name -> builder table, the way timm maps a model name to its entry.

The size name picks the family (``SiT-*``/``tiny``/``mini``/``smoke``: a SiT; ``JiT-*``: a JiT, see
:func:`study.config.resolve_size`); MeanFlow trains a family's MeanFlow network (a SiT with a second time input).
Training, sampling and the FLOP counts build through :func:`build_network`, so they build the same thing.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from study.config import resolve_size
from study.models.jit import build_jit
from study.models.meanflow_sit import build_meanflow_sit
from study.models.sit import build_sit

__all__ = ["BUILDERS", "MEANFLOW_BUILDERS", "build_network"]

#: family -> builder(size, *, input_size, in_channels, num_classes, patch_size, qk_norm)
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "sit": build_sit,
    "jit": lambda size, qk_norm=False, **kw: build_jit(size, **kw),  # a JiT always RMS-normalises q and k
}
#: family -> builder of its MeanFlow network (a second time input); families without one cannot train MeanFlow
MEANFLOW_BUILDERS: dict[str, Callable[..., nn.Module]] = {"sit": build_meanflow_sit}


def build_network(size: str, *, input_size: int, in_channels: int, num_classes: int, patch_size: int | None = None,
                  qk_norm: bool = False, meanflow: bool = False) -> nn.Module:
    """The network of ``size`` (MeanFlow's with ``meanflow``) for ``input_size`` px inputs of
    ``in_channels`` channels (model space: latents or pixels)."""
    family = resolve_size(size, patch_size).family
    table = MEANFLOW_BUILDERS if meanflow else BUILDERS
    if family not in table:
        raise ValueError(f"model.size {size!r} is a {family.upper()}, which has no MeanFlow network")
    return table[family](size, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                         patch_size=patch_size, qk_norm=qk_norm)
