"""Typed configuration: YAML in, validated pydantic objects out.

Every config class derives from :class:`StrictModel`, so an unknown key is an error (never a silent default).
``load_config`` merges a YAML file (or dict) with ``key.sub=value`` overrides from the command line and validates
the result; ``config_hash`` gives the stable id that names runs and jobs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "StrictModel", "ConfigError", "load_yaml", "load_config", "parse_overrides", "apply_overrides",
    "config_hash", "dump_config", "HASH_CONTEXT",
]

#: The serialisation context of a dump that is hashed: a config whose serialised form changed on purpose (a renamed
#: key) writes its old form under it, so the hashes of configs written before stay what they were.
HASH_CONTEXT = {"hash": True}


class StrictModel(BaseModel):
    """Base of every config object: unknown keys are rejected, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ConfigError(ValueError):
    """A configuration could not be read or did not validate; the message names the file and the key."""


M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["train.steps=100", "method.lam=0.5"]`` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.steps=100)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = value
    return out


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = apply_overrides(out[key], value)
        else:
            out[key] = value
    return out


def _format_validation_error(exc: ValidationError, where: str) -> str:
    lines = [f"invalid configuration{(' in ' + where) if where else ''}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; allowed keys are the fields of this section)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_config(
    model: type[M],
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> M:
    """Validate ``source`` (a YAML path or a mapping), with overrides applied, into ``model``."""
    where = ""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        data = load_yaml(source)
        where = str(source)
    extra = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    data = apply_overrides(data, extra)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, where)) from None


def config_hash(cfg: BaseModel | Mapping[str, Any], length: int = 12) -> str:
    """A stable hash of a config's resolved values (key order and formatting do not matter)."""
    data = cfg.model_dump(mode="json", context=HASH_CONTEXT) if isinstance(cfg, BaseModel) else cfg
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def dump_config(cfg: BaseModel, path: str | Path) -> Path:
    """Write a resolved config as YAML (atomically), so a run directory records exactly what ran."""
    from study.common import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
