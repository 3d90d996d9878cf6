"""Encoder variants: ``NAME@key=value`` names that change how an entry's tokens are post-processed.

``@clsmix=ALPHA``  the paper's CLS-mixing experiment (iREPA section 2, Fig. 3c): ``patch + alpha * cls``.
``@clsmixc=ALPHA`` the authors' code form (``DINOv2MixedEncoder``): ``(1 - alpha) * patch + alpha * cls``, the same
                   direction per token as ``clsmix`` with alpha' = alpha / (1 - alpha).
"""
from __future__ import annotations

from dataclasses import dataclass

VARIANT_KEYS = {"clsmix": "additive", "clsmixc": "convex"}


@dataclass(frozen=True)
class Variant:
    base: str
    clsmix: float | None = None
    clsmix_form: str = "additive"

    @property
    def suffix(self) -> str:
        if self.clsmix is None:
            return ""
        key = "clsmix" if self.clsmix_form == "additive" else "clsmixc"
        return f"@{key}={self.clsmix:g}"


def parse_variant(name: str) -> Variant:
    """Split ``'dinov2-vit-b@clsmix=0.5'`` into the base entry name and its validated options."""
    base, *options = name.split("@")
    if not options:
        return Variant(base)
    if len(options) > 1:
        raise ValueError(f"{name!r}: at most one variant option is supported (e.g. {base}@clsmix=0.5)")
    key, sep, raw = options[0].partition("=")
    if key not in VARIANT_KEYS or not sep:
        raise ValueError(f"{name!r}: unknown variant {options[0]!r}; use {base}@clsmix=ALPHA (paper: patch + "
                         f"alpha*cls) or {base}@clsmixc=ALPHA (code: (1-alpha)*patch + alpha*cls)")
    try:
        alpha = float(raw)
    except ValueError:
        raise ValueError(f"{name!r}: ALPHA must be a number, got {raw!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name!r}: ALPHA must be within [0, 1] (the paper uses 0 to 0.5), got {alpha}")
    return Variant(base, clsmix=alpha, clsmix_form=VARIANT_KEYS[key])
