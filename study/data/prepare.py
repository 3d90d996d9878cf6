"""ImageNet preparation: center-cropped uint8 images and SD-VAE posterior moments, in resumable shards.

The sorted image listing of ``SRC/<split>`` is cut into shards of ``shard_size`` consecutive images; array task
``I`` of ``N`` writes the shards ``k`` with ``k % N == I`` (so any ``N`` covers every image exactly once). A shard is
written under a temporary name and renamed when complete: a killed task leaves no partial shard visible, and a
rerun skips finished shards. Every image is decoded on the way, and every one that does not decode is reported at
the end, all at once (their shards are not written; the others are). When every shard of a split exists, the
latent statistics are written (``latent_stats.json``); ``compute_latent_stats`` recomputes them on demand. Layout: :mod:`study.data.prepared`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from results.provenance import now_iso, provenance
from study.common import atomic_write_text, file_mode, get_logger, progress

from .codecs import SDVAECodec
from .dataset import DatasetError, collate
from .folder import FolderDataset, find_masks_dir, mask_files
from .prepared import FILES_NAME, PREPARED_FORMAT, read_manifest, shard_dir

__all__ = ["prepare_split", "compute_latent_stats", "parse_shard", "shards_of_task"]

log = get_logger(__name__)
_MATCH_KEYS = ("src", "listing", "num_images", "image_size", "shard_size", "classes", "codec")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) or ``"slurm"`` (from SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT)."""
    if text == "slurm":
        try:
            return (int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0)),
                    int(os.environ["SLURM_ARRAY_TASK_COUNT"]))
        except KeyError as exc:
            raise ValueError(f"--shard slurm needs a SLURM array task ({exc} is not set)") from None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/8) or 'slurm', got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need N >= 1 and 0 <= I < N")
    return i, n


def shards_of_task(num_shards: int, task: int, num_tasks: int) -> list[int]:
    return list(range(task, num_shards, num_tasks))


def _write_manifest(split_dir: Path, manifest: dict[str, Any]) -> None:
    path = split_dir / "manifest.json"
    if path.is_file():
        old = read_manifest(split_dir)
        diff = [k for k in _MATCH_KEYS if old.get(k) != manifest.get(k)]
        if diff:
            raise DatasetError(f"{split_dir} was prepared with different settings ({', '.join(diff)} differ); use "
                               f"another --out or delete {split_dir} to start over")
        if manifest.get("masks") is None or old.get("masks") == manifest["masks"]:
            return
        manifest = {**old, "masks": manifest["masks"]}  # a masks folder given later: point to it
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def _masks_entry(masks: str | Path | None, split: str, ds: FolderDataset) -> dict[str, str]:
    """The manifest's pointer to a masks folder (checked now, so a wrong path fails before any work); none when no
    mask matches an image of the split (ImageNet-S has val masks only: ``--split train --split val`` points val)."""
    if masks is None:
        return {}
    found = mask_files(find_masks_dir(masks, split), [(ds.class_names[label], p.stem) for p, label in ds.samples])
    if not any(found):
        log.warning("%s: no mask in %s matches an image of %s; the manifest does not point to it", split, masks,
                    ds.root / split)
        return {}
    return {"masks": str(Path(masks).expanduser().resolve())}


def _write_shard(split_dir: Path, k: int, arrays: dict[str, np.ndarray]) -> None:
    final = shard_dir(split_dir, k)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=split_dir))
    try:
        os.chmod(tmp, file_mode() | (file_mode() & 0o444) >> 2)  # mkdtemp's 0700, as the umask says (x where r)
        for name, arr in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as fh:
                np.save(fh, arr)
                fh.flush()
                os.fsync(fh.fileno())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Checked(torch.utils.data.Dataset):
    """The folder's items with an ``error`` entry: a blank image and the reason when the file does not decode, so
    one bad image does not stop the pass and every bad one is reported."""

    def __init__(self, ds: FolderDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return {**self.ds[index], "error": ""}
        except DatasetError as exc:
            size = self.ds.image_size
            return {"image": torch.zeros(3, size, size, dtype=torch.uint8), "label": self.ds.samples[index][1],
                    "mask": None, "error": str(exc)}


def prepare_split(src: str | Path, out: str | Path, split: str = "train", *, task: int = 0, num_tasks: int = 1,
                  shard_size: int = 1000, size: int = 256, batch_size: int = 64, codec: SDVAECodec | None = None,
                  workers: int = 0, masks: str | Path | None = None) -> dict[str, Any]:
    """Write this task's missing shards of ``split``; returns ``{"written", "skipped", "stats"}``.

    ``codec=None`` stores images only (no moments). ``masks``: an ImageNet-S style masks folder the manifest points
    to (for SRSS; may be given on a later run too). Everything else is deterministic, so tasks may run in any order
    and be rerun after a kill.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError("shard_size and batch_size must be >= 1")
    ds = FolderDataset(src, split, size=size)
    split_dir = Path(out).expanduser().resolve() / split
    split_dir.mkdir(parents=True, exist_ok=True)
    num_shards = -(-len(ds) // shard_size)
    codec_info = None
    if codec is not None:
        codec_info = {"id": f"sdvae:{codec.repo_id}", "repo_id": codec.repo_id, "channels": codec.channels,
                      "downsample": codec.downsample, "moments": "mean,logvar"}
    _write_manifest(split_dir, {
        "format": PREPARED_FORMAT, "split": split, "src": str(ds.root), "listing": ds.listing_hash,
        "num_images": len(ds), "image_size": size, "shard_size": shard_size, "num_shards": num_shards,
        "classes": ds.class_names, "codec": codec_info, "crop": "adm-center", "created": now_iso(),
        "provenance": provenance(), **_masks_entry(masks, split, ds),
    })
    if not (split_dir / FILES_NAME).is_file():
        atomic_write_text(split_dir / FILES_NAME, "".join(f"{p.relative_to(ds.root / split)}\n" for p, _ in ds.samples))
    mine = shards_of_task(num_shards, task, num_tasks)
    todo = [k for k in mine if not shard_dir(split_dir, k).is_dir()]
    skipped = sorted(set(mine) - set(todo))
    for stale in split_dir.glob(".shard-*.tmp-*"):  # left by a killed run of one of our shards
        if int(stale.name[7:12]) in todo:
            shutil.rmtree(stale, ignore_errors=True)
    log.info("%s/%s: %d images, %d shards; task %d/%d owns %d, %d already done", out, split, len(ds), num_shards,
             task, num_tasks, len(mine), len(skipped))
    total = sum(min(shard_size, len(ds) - k * shard_size) for k in todo)
    bad: list[str] = []
    with progress(total=total, desc=f"prepare {split}", unit="img") as bar:
        for k in todo:
            idx = list(range(k * shard_size, min(len(ds), (k + 1) * shard_size)))
            loader = DataLoader(Subset(_Checked(ds), idx), batch_size=batch_size, num_workers=workers,
                                collate_fn=collate)
            images, labels, moments, errors = [], [], [], []
            for batch in loader:
                errors += [e for e in batch["error"] if e]
                images.append(batch["image"].numpy())
                labels.append(batch["label"].numpy())
                if codec is not None:
                    moments.append(codec.moments(batch["image"]).cpu().numpy().astype(np.float32))
                bar.update(len(batch["label"]))
            if errors:  # not written: the listing (and so every index) must stay as it is
                bad += errors
                continue
            arrays = {"images": np.concatenate(images), "labels": np.concatenate(labels).astype(np.int64),
                      "index": np.asarray(idx, dtype=np.int64)}
            if codec is not None:
                arrays["moments"] = np.concatenate(moments)
            _write_shard(split_dir, k, arrays)
            log.debug("wrote shard %d (%d images)", k, len(idx))
    if bad:
        raise DatasetError(f"{len(bad)} image(s) of {ds.root / split} do not decode; their shards were not written "
                           f"(the others were). Replace or remove them, then prepare into a new --out (removing an "
                           f"image changes the listing):\n  " + "\n  ".join(bad[:50])
                           + (f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""))
    stats = None
    if codec is not None and all(shard_dir(split_dir, k).is_dir() for k in range(num_shards)):
        stats = compute_latent_stats(split_dir.parent, split)
    return {"written": todo, "skipped": skipped, "stats": stats, "num_shards": num_shards}


def compute_latent_stats(out: str | Path, split: str = "train") -> Path:
    """Per-channel mean and std of the posterior latents over every shard; writes ``latent_stats.json``.

    Exact for posterior samples z ~ N(mu, sigma^2): mean = E[mu], var = Var[mu] + E[sigma^2] (over images and
    positions). ``latents_bias`` = mean and ``latents_scale`` = 1/std, used as ``(z - bias) * scale``.
    """
    split_dir = Path(out).expanduser().resolve() / split
    m = read_manifest(split_dir)
    if m.get("codec") is None:
        raise DatasetError(f"{split_dir} was prepared without a VAE; there are no latents to summarise")
    missing = [k for k in range(m["num_shards"]) if not shard_dir(split_dir, k).is_dir()]
    if missing:
        raise DatasetError(f"cannot compute latent statistics: {len(missing)} shards of {split_dir} missing "
                           f"(first: {missing[:5]}); finish the prepare tasks first")
    c = int(m["codec"]["channels"])
    s_mu = torch.zeros(c, dtype=torch.float64)
    s_mu2, s_var = torch.zeros_like(s_mu), torch.zeros_like(s_mu)
    count = 0
    for k in progress(range(m["num_shards"]), desc="latent stats", unit="shard"):
        mom = torch.from_numpy(np.load(shard_dir(split_dir, k) / "moments.npy", mmap_mode="r")[:].astype(np.float64))
        mu, logvar = mom[:, :c], mom[:, c:]
        s_mu += mu.sum((0, 2, 3))
        s_mu2 += (mu * mu).sum((0, 2, 3))
        s_var += logvar.exp().sum((0, 2, 3))
        count += mu.shape[0] * mu.shape[2] * mu.shape[3]
    mean = s_mu / count
    var = s_mu2 / count - mean ** 2 + s_var / count
    std = var.clamp_min(1e-12).sqrt()
    path = split_dir / "latent_stats.json"
    atomic_write_text(path, json.dumps({
        "latents_scale": (1 / std).tolist(), "latents_bias": mean.tolist(), "latents_mean": mean.tolist(),
        "latents_std": std.tolist(), "num_images": m["num_images"], "codec": m["codec"]["id"],
        "note": "normalise as (z - latents_bias) * latents_scale; moments over posterior samples",
        "created": now_iso(),
    }, indent=2) + "\n")
    log.info("latent statistics of %s: mean %s std %s", split_dir, [round(x, 4) for x in mean.tolist()],
             [round(x, 4) for x in std.tolist()])
    return path
