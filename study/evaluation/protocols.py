"""Named FID protocols: the sampler and metric settings that make two generation-quality numbers comparable.

A protocol fixes the feature extractor, the number of samples, the sampler (mode, steps), the guidance scale and
the sampler's matmul precision (TF32 unless it says ``precision``).
The sample seed, the batch size and the reference batch are not part of it: seeds are a source of noise, not of a
different measurement, the batch size does not change the samples, and the reference is checked on its own
(``reference``/``ref_id`` columns, :mod:`analysis.comparable`).

A spec names a protocol (``fid: {protocol: adm-50k-sde250, reference: ...}``) or gives the settings; either way each
generation row records ``protocol``: the registered name whose settings it matches, else a derived name such as
``synthetic-256-sde20``. So a cheap screen and the paper's protocol are never confused, and
``repa-study analyze --agreement A B`` can compare them on the runs evaluated under both.
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["PROTOCOLS", "PROTOCOL_FIELDS", "protocol_settings", "protocol_name", "row_protocol", "DEFAULT_PRECISION"]

#: The FidSettings fields a protocol fixes.
PROTOCOL_FIELDS = ("extractor", "n_samples", "mode", "num_steps", "cfg_scale")

PROTOCOLS: dict[str, dict[str, Any]] = {
    # The paper's: 50K samples, ADM suite (Inception), SDE Euler-Maruyama 250 steps, no guidance (science.md
    # part I sec. 6 and part II sec. 5.1; the authors' result files end in cfg1.0-seed0-modesde-steps250).
    "adm-50k-sde250": {"extractor": "inception", "n_samples": 50_000, "mode": "sde", "num_steps": 250,
                       "cfg_scale": 1.0, "precision": "tf32"},
    # The paper's guided numbers: Tables 4/7/8 "w/ CFG", CFG 2.0 with 250 steps (Table 7's caption).
    "adm-50k-sde250-cfg2": {"extractor": "inception", "n_samples": 50_000, "mode": "sde", "num_steps": 250,
                            "cfg_scale": 2.0, "precision": "tf32"},
    # Ours, not the paper's: a screen at about 1/25 of the sampling cost (5x fewer samples, 5x fewer steps).
    # Its numbers are NOT the paper's FIDs (fewer samples bias FID upward); validate the ranking it gives
    # against adm-50k-sde250 on a subset first: `repa-study analyze --agreement screen-10k-sde50 adm-50k-sde250`.
    "screen-10k-sde50": {"extractor": "inception", "n_samples": 10_000, "mode": "sde", "num_steps": 50,
                         "cfg_scale": 1.0, "precision": "tf32"},
    # Ours, not the paper's: the paper's protocol with the sampler's matmuls under bf16 autocast instead of TF32
    # (about half the sampling cost on an H100 by the estimate). Never the default; validate it on a subset first:
    # `repa-study analyze --agreement adm-50k-sde250-bf16 adm-50k-sde250`.
    "adm-50k-sde250-bf16": {"extractor": "inception", "n_samples": 50_000, "mode": "sde", "num_steps": 250,
                            "cfg_scale": 1.0, "precision": "bf16"},
}
#: The sampler precision of settings that do not name one (every protocol above but the -bf16 one).
DEFAULT_PRECISION = "tf32"


def protocol_settings(name: str) -> dict[str, Any]:
    """The settings of a registered protocol; a clear error for an unknown name."""
    try:
        return dict(PROTOCOLS[name])
    except KeyError:
        raise ValueError(f"unknown FID protocol {name!r}; registered protocols: {', '.join(PROTOCOLS)} (or leave "
                         f"protocol unset and give the settings: {', '.join(PROTOCOL_FIELDS)})") from None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def protocol_name(settings: Mapping[str, Any]) -> str:
    """The registered protocol whose settings ``settings`` has, else a name derived from them
    (``<extractor>-<n_samples>-<mode><num_steps>[-cfg<scale>]``)."""
    missing = [k for k in PROTOCOL_FIELDS if k not in settings]
    if missing:
        raise KeyError(f"protocol_name: settings lack {missing}")
    precision = settings.get("precision") or DEFAULT_PRECISION
    for name, fixed in PROTOCOLS.items():
        if (all(_same(settings[k], v) for k, v in fixed.items() if k != "precision")
                and precision == fixed.get("precision", DEFAULT_PRECISION)):
            return name
    cfg = float(settings["cfg_scale"])
    name = f"{settings['extractor']}-{int(settings['n_samples'])}-{settings['mode']}{int(settings['num_steps'])}"
    name = name if cfg == 1.0 else f"{name}-cfg{cfg:g}"
    return name if precision == DEFAULT_PRECISION else f"{name}-{precision}"


def row_protocol(row: Mapping[str, Any]) -> str:
    """The protocol of a ``generation`` row, from what it records was really measured (samples rounded to uint8
    otherwise than the authors'/ADM ``floor`` get a ``-<rounding>`` suffix: another protocol)."""
    precision = row.get("sampler_precision")
    name = protocol_name({"extractor": row["extractor"], "n_samples": row["n_samples"], "mode": row["sampler_mode"],
                          "num_steps": row["sampler_steps"], "cfg_scale": row["cfg_scale"],
                          "precision": precision if isinstance(precision, str) else None})  # (NaN: older rows)
    rounding = row.get("sample_rounding") or "floor"
    return name if rounding == "floor" else f"{name}-{rounding}"
