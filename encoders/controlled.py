"""Controlled encoders: tokens composed from a student's predicted class and object mask (catalog ``controlled:``).

The miniature needs encoders whose global information (linear-probe accuracy) and spatial structure (LDS, CDS,
SRSS, RMSC) vary independently; trained encoders move both together. A controlled entry fixes the rule that maps
"which class, and where is the object" to tokens (:class:`encoders.spec.Controlled`), and a small trained student
(the entry's timm ViT with a class head and a mask head) supplies the class and the mask from the image alone, so
the encoder is an ordinary ``encode(images)`` like any other and the SiT can predict its tokens from ``x_t``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import Controlled

__all__ = ["ControlledNet", "compose_vectors"]


def compose_vectors(rule: Controlled, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(O, B, C [groups, dim], group_of_class [classes])``: seeded random unit vectors (object, background, one
    per class group) and the class -> group map (contiguous blocks of a seeded class permutation)."""
    g = torch.Generator().manual_seed(rule.seed)
    v = torch.randn(rule.groups + 2, dim, generator=g, device="cpu")
    v = v / v.norm(dim=1, keepdim=True)
    perm = torch.randperm(rule.classes, generator=g, device="cpu")
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(rule.classes, device="cpu")
    return v[0], v[1], v[2:], (rank * rule.groups) // rule.classes


class ControlledNet(nn.Module):
    """The student (``vit`` + ``class_head`` on the CLS token + ``mask_head`` on each patch token) and the rule.

    ``forward(x) -> (patch [B, T, D], cls [B, D])``. The class enters as the argmax (hard): soft probabilities would
    leak within-group class information that a linear probe reads (measured in the prototype: LP 0.89 instead of
    0.70 with 5 groups). The composing vectors are buffers rebuilt from the rule, not stored weights.
    """

    def __init__(self, vit: nn.Module, rule: Controlled, prefix_tokens: int = 1) -> None:
        super().__init__()
        dim = int(vit.num_features)
        self.vit, self.rule, self.prefix = vit, rule, prefix_tokens
        self.class_head = nn.Linear(dim, rule.classes)
        self.mask_head = nn.Linear(dim, 1)
        obj, bg, groups, group_of = compose_vectors(rule, dim)
        device = next(vit.parameters()).device  # the meta device when `encoders check` builds without weights
        self.register_buffer("object_vec", obj.to(device), persistent=False)
        self.register_buffer("background_vec", bg.to(device), persistent=False)
        self.register_buffer("class_vecs", groups[group_of].to(device), persistent=False)  # [classes, D]

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.vit.num_prefix_tokens)

    @property
    def num_features(self) -> int:
        """The token width (the student's: the composing vectors live in its space)."""
        return int(self.vit.num_features)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``[B, classes]`` and object-mask logits ``[B, T]`` (what the ``controlled`` recipe trains)."""
        tokens = self.vit.forward_features(x)
        return self.class_head(tokens[:, 0]), self.mask_head(tokens[:, self.prefix:]).squeeze(-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, mask_logits = self.heads(x)
        onehot = F.one_hot(logits.argmax(1), self.rule.classes).to(self.class_vecs.dtype)
        obj = self.object_vec + self.rule.gain * onehot @ self.class_vecs               # [B, D]
        if self.rule.kind == "global":
            patch = obj[:, None].expand(-1, mask_logits.shape[1], -1)
        else:
            m = torch.sigmoid(mask_logits)[..., None].to(obj.dtype)                    # [B, T, 1]
            patch = m * obj[:, None] + (1 - m) * self.background_vec
        return patch, obj
