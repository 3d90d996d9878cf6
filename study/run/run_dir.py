"""A training run's directory, and the one owner of what a checkpoint holds.

``RUN_DIR/`` holds ``config.yaml`` (the resolved :class:`~study.config.train.TrainConfig`) and ``config_hash``,
``provenance.json`` (git commit, versions, seeds, one entry per session with its target ``steps`` and
``ckpt_keep``), ``log.jsonl`` (one line per ``log_every`` steps), ``checkpoints/step_XXXXXXX.pt`` and ``samples/``
(preview sheets, sample shards).

A run's identity (:func:`run_hash`, the ``config_hash`` file and every checkpoint's ``config_hash``) is its config
without its length (:data:`LENGTH_FIELDS`: ``steps`` and which checkpoints are written and kept): raising ``steps``
resumes the same run from its newest checkpoint, lowering it leaves the run at its kept checkpoints, and every step
an earlier session kept (its target, its ``ckpt_keep``: the evaluated steps) stays kept.

A checkpoint is one atomically written ``torch.save`` dict with the keys ``model`` (SiT + projectors), ``ema`` (the
EMA SiT), ``optimizer``, ``step``, ``data_position``, ``rng`` (torch/numpy/python/CUDA states, as tensors and plain
values), ``config_hash``, ``world_size`` and ``meta`` (image size, classes, encoder widths, token grid, dataset and
codec ids, latent stats), plus, for REPA-E, ``repae`` (the tuned VAE and its config, the latent BN and its EMA, the
discriminator, their optimizers: :meth:`study.repae.RepaeParts.state_dict`), and ``digest``, the SHA-256 of the rest
(``study.run.checkpoint_file``: every read checks it and loads with ``weights_only=True``). Only this module reads or
writes those keys.

Faults: a damaged, truncated or empty checkpoint is never used. Resuming (:func:`resume_checkpoint`) moves a bad
one aside with a warning naming it and falls back to the newest good one; sampling and evaluation
(:func:`load_sampling_model`) refuse it with an error naming it. When a run starts, the temporary files a killed
writer left in it are removed, and ``log.jsonl`` is appended a whole line at a time and read tolerating a torn last
line (``study.common.append_jsonl``).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np
import torch
from torch import nn

from study.common import (append_jsonl, atomic_write_json, atomic_write_text, get_logger, read_jsonl,
                          remove_stale_temporaries)
from study.config import HASH_CONTEXT, ConfigError, TrainConfig, config_hash, dump_config, load_config, load_yaml
from study.models import SiT
from study.run.build import build_codec, build_sit_for
from study.run.checkpoint_file import (CorruptCheckpointError, check_checkpoint, move_aside, read_checkpoint,
                                       write_checkpoint)

__all__ = ["run_hash", "LENGTH_FIELDS", "checkpoint_path", "latest_checkpoint", "resume_checkpoint", "kept_checkpoint",
           "earlier_kept_steps", "prune_checkpoints", "save_checkpoint", "restore_checkpoint", "write_run_header",
           "truncate_log", "append_log", "read_config", "latent_stats_dict", "SamplingModel", "load_sampling_model"]

log = get_logger(__name__)


# ------------------------------------------------------------------------------------------------------ config
def read_config(run_dir: str | Path) -> TrainConfig:
    """The run's resolved training config (``RUN_DIR/config.yaml``), validated."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run directory (no config.yaml)")
    return load_config(TrainConfig, load_yaml(path))


#: TrainConfig fields that set how long a run trains and which checkpoints it writes and keeps, not its trajectory.
LENGTH_FIELDS = ("steps", "ckpt_every", "ckpt_keep", "ckpt_keep_every")


def run_hash(cfg: TrainConfig) -> str:
    """The run's identity: the hash of its config without :data:`LENGTH_FIELDS`."""
    return config_hash(cfg.model_dump(mode="json", exclude=set(LENGTH_FIELDS), context=HASH_CONTEXT))


def _trained(run_dir: Path) -> bool:
    """Whether the run has a checkpoint or a log line: something a different config would overwrite."""
    return latest_checkpoint(run_dir) is not None or bool((run_dir / "log.jsonl").is_file() and
                                                          (run_dir / "log.jsonl").stat().st_size)


def write_run_header(cfg: TrainConfig, run_dir: Path, *, world_size: int, device: str) -> str:
    """Write ``config.yaml``, ``config_hash`` (:func:`run_hash`) and the provenance (one entry per session);
    returns the hash. A directory that already holds another run (a config differing in more than its length) is
    an error (never overwritten), unless that run never trained (no checkpoint, no log line: a start that failed,
    e.g. on a config error, whose header is replaced). Temporary files a killed writer left are removed first."""
    from results.provenance import now_iso, provenance

    for directory in (run_dir, run_dir / "checkpoints"):
        remove_stale_temporaries(directory)
    h = run_hash(cfg)
    existing = run_dir / "config.yaml"
    if existing.is_file() and not _trained(run_dir):
        old = _config_or_none(run_dir)
        if old is None or run_hash(old) != h:
            log.warning("%s: replacing the config of a run that never trained (no checkpoint, no log line)", run_dir)
            (run_dir / "provenance.json").unlink(missing_ok=True)
            existing.unlink()
    if existing.is_file():
        old = read_config(run_dir)
        if run_hash(old) != h:
            diff = sorted(k for k in type(cfg).model_fields if k not in LENGTH_FIELDS and getattr(old, k) != getattr(cfg, k))
            raise ConfigError(f"{run_dir} already holds another run (hash {run_hash(old)} vs {h}; differing: "
                              f"{', '.join(diff)}); use a new run directory, or the same config to resume (only "
                              f"{', '.join(LENGTH_FIELDS)} may change)")
        if old.steps != cfg.steps:
            log.info("%s: target %d -> %d steps (same run)", run_dir, old.steps, cfg.steps)
    dump_config(cfg, existing)
    atomic_write_text(run_dir / "config_hash", h + "\n")
    prov = {**provenance(), "config_hash": h, "seed": cfg.seed, "world_size": world_size, "device": device,
            "torch": torch.__version__, "started_at": now_iso()}
    prov_path = run_dir / "provenance.json"
    history = json.loads(prov_path.read_text()).get("sessions", []) if prov_path.is_file() else []
    prov["sessions"] = history + [{"started_at": prov["started_at"], "git_commit": prov["git_commit"],
                                   "world_size": world_size, "host": prov["host"], "steps": cfg.steps,
                                   "ckpt_keep": list(cfg.ckpt_keep)}]
    atomic_write_json(prov_path, prov, indent=2)
    return h


def _config_or_none(run_dir: Path) -> TrainConfig | None:
    try:
        return read_config(run_dir)
    except (ConfigError, ValueError, OSError):
        return None


def append_log(run_dir: Path, row: Mapping[str, Any]) -> None:
    """Append one whole line to the run's ``log.jsonl`` (a full disk leaves no partial line)."""
    append_jsonl(Path(run_dir) / "log.jsonl", [row])


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint we resume from), and a torn last line."""
    if not path.is_file():
        return
    keep = [row for row in read_jsonl(path) if row.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in keep))


# ------------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}.pt"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint file (unchecked: :func:`resume_checkpoint` is the one to resume from)."""
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def resume_checkpoint(run_dir: str | Path, *, move_bad: bool = True) -> Path | None:
    """The newest checkpoint that reads back whole (its digest matches, it loads as tensors), or None. Each bad
    newer one is moved aside (``move_bad``: on the main rank only; other ranks skip it alike) with a one-line
    warning naming it. A checkpoint without a digest is an ``UnverifiedCheckpointError`` (opt in to trust it)."""
    for path in sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"), reverse=True):
        try:
            check_checkpoint(path)
        except FileNotFoundError:  # moved aside by the main rank meanwhile
            continue
        except CorruptCheckpointError as exc:
            if move_bad:
                move_aside(path, f"{exc}; resuming from an older checkpoint")
            continue
        return path
    return None


def kept_checkpoint(cfg: TrainConfig, step: int, earlier: Iterable[int] = ()) -> bool:
    """Whether the checkpoint of ``step`` is kept for good (else it is a resume point, removed once a newer
    checkpoint exists): the final step, the ``ckpt_keep`` steps, multiples of ``ckpt_keep_every`` and the
    ``earlier`` steps (what earlier sessions of the run kept: :func:`earlier_kept_steps`); every checkpoint when
    neither ``ckpt_keep`` nor ``ckpt_keep_every`` is set."""
    if cfg.ckpt_keep_every is None and not cfg.ckpt_keep:
        return True
    return (step == cfg.steps or step in cfg.ckpt_keep or step in set(earlier)
            or (cfg.ckpt_keep_every is not None and step % cfg.ckpt_keep_every == 0))


def earlier_kept_steps(run_dir: str | Path) -> set[int]:
    """The targets and ``ckpt_keep`` steps of every session the run's provenance records (a run extended from
    100 to 200 steps keeps its step-100 checkpoint, which its evaluations read)."""
    path = Path(run_dir) / "provenance.json"
    try:
        sessions = json.loads(path.read_text()).get("sessions", [])
    except (OSError, ValueError):
        return set()
    return {int(s) for sess in sessions for s in [sess.get("steps"), *(sess.get("ckpt_keep") or [])] if s is not None}


def prune_checkpoints(cfg: TrainConfig, run_dir: Path) -> None:
    """Remove resume-only checkpoints older than the newest one (a SiT-XL/2 checkpoint is about 11 GB)."""
    ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    earlier = earlier_kept_steps(run_dir)
    for path in ckpts[:-1]:
        if not kept_checkpoint(cfg, int(path.stem.split("_")[1]), earlier):
            path.unlink(missing_ok=True)


def _rng_state() -> dict[str, Any]:
    """The RNG states as tensors and plain values (what ``weights_only`` loading accepts)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    if isinstance(numpy, Mapping):
        numpy = (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                 numpy["cached_gaussian"])
    np.random.set_state(numpy)  # (an older checkpoint's is numpy's own tuple)
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # fewer GPUs than when saved
            log.warning("could not restore CUDA RNG states (different GPU count); data/noise order is unaffected")


def latent_stats_dict(codec) -> dict[str, Any] | None:
    """The codec's latent scale/bias as the checkpoint's ``meta`` records them (None for pixel space)."""
    stats = getattr(codec, "stats", None)
    return None if stats is None else {"scale": list(stats.scale), "bias": list(stats.bias), "source": stats.source}


def _latent_stats(meta: Mapping[str, Any]):
    st = meta.get("latent_stats")
    if not st:
        return None
    from study.data import LatentStats

    return LatentStats(tuple(st["scale"]), tuple(st["bias"]), st["source"])


def save_checkpoint(run_dir: Path, step: int, *, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer,
                    cfg: TrainConfig, config_hash: str, world_size: int, meta: Mapping[str, Any],
                    repae: Any = None) -> Path:
    """Write the checkpoint of ``step`` atomically with its digest (call on the main rank only); ``repae``: a
    REPA-E run's :class:`~study.repae.RepaeParts`."""
    path = checkpoint_path(run_dir, step)
    extra = {"repae": repae.state_dict()} if repae is not None else {}
    return write_checkpoint({"model": model.state_dict(), "ema": ema.state_dict(),
                             "optimizer": optimizer.state_dict(), "step": step,
                             "data_position": step * cfg.batch_size, "rng": _rng_state(), "config_hash": config_hash,
                             "world_size": world_size, "meta": dict(meta), **extra}, path)


def restore_checkpoint(path: Path, *, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer,
                       config_hash: str, repae: Any = None, also_accept: Iterable[str] = ()) -> int:
    """Load model, EMA, optimizer and RNG states (and a REPA-E run's VAE, BN, discriminator and their optimizers)
    from ``path`` (written by the same run: ``config_hash`` is its :func:`run_hash`; ``also_accept``: other hashes
    of it, e.g. the full config hash older checkpoints carry); returns its step. The file is checked first
    (``CorruptCheckpointError``)."""
    state = read_checkpoint(path)  # on the CPU: RNG states must stay CPU tensors
    if state.get("config_hash") not in (config_hash, *also_accept):
        raise ConfigError(f"checkpoint {path} was written by config {state.get('config_hash')}, not {config_hash}")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    if repae is not None:
        repae.load_state_dict(state["repae"])
    _set_rng_state(state["rng"])
    return int(state["step"])


# ------------------------------------------------------------------------------------------------------ sampling
class SamplingModel(NamedTuple):
    """A checkpoint's EMA SiT ready to sample from, with what sampling needs to know about it."""

    cfg: TrainConfig
    sit: SiT
    codec: Any
    meta: dict[str, Any]
    config_hash: str | None


def load_sampling_model(run_dir: str | Path, step: int, device: torch.device | str = "cpu") -> SamplingModel:
    """The EMA SiT of checkpoint ``step`` of ``run_dir`` (eval mode, on ``device``) and its codec; a damaged
    checkpoint is a ``CorruptCheckpointError`` naming it."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    ckpt = checkpoint_path(run_dir, step)
    if not ckpt.is_file():
        have = sorted(p.stem for p in (run_dir / "checkpoints").glob("step_*.pt"))
        raise FileNotFoundError(f"no checkpoint for step {step} in {run_dir}; available: {', '.join(have) or 'none'}")
    state = read_checkpoint(ckpt)
    meta = state["meta"]
    from study.repae import codec_from_checkpoint

    # REPA-E: decode with the run's tuned VAE and its EMA latent-BN statistics; otherwise the data's codec
    codec = codec_from_checkpoint(state, device) or build_codec(cfg.data.codec, device, stats=_latent_stats(meta))
    sit = build_sit_for(cfg, image_size=meta["image_size"], num_classes=meta["num_classes"], codec=codec)
    sit.load_state_dict(state["ema"])
    return SamplingModel(cfg, sit.to(device).eval(), codec, meta, state.get("config_hash"))
