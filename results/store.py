"""The results store: one parquet file per write, atomically published, unioned on read.

Layout under the results root (``ResultStore(root)``, default ``$REPA_STUDY_ROOT`` or ``runs/``)::

    ROOT/tables/<table>/<job_id or "rows">-<time>-<pid>-<uuid>.parquet   one file per ``write`` call
    ROOT/jobs/<job_id>/                                                   run directories (``run_dir``)
    ROOT/collected/<table>.parquet                                        compacted copies (``compact``)

Why one file per write: hundreds of jobs on a shared filesystem write at once. Each writes its own file under a
hidden temporary name in the same directory and publishes it with ``os.replace`` (atomic on POSIX), so readers
never see a partial file and writers never interleave. ``read`` unions every published file.

Re-runs: each table has key columns (``results.schema.TABLE_KEYS``); on read, rows sharing a key keep only the
latest write (by ``written_at``, then file name). A re-run job therefore replaces its rows instead of duplicating them.

Schema versions: every row carries ``schema_version``. Older files are upgraded on read through ``UPGRADES`` (e.g.
the renamed columns of version 2); a file from a newer version is an error that says so.

Corrupted files: ``read(table)`` (``strict=True``) raises :class:`CorruptResultError` that names every unreadable
file and how many files were fine; ``read(table, strict=False)`` logs a warning naming them and returns the rest.

Temporary files: ``.<final name>.<host>.<pid>.tmp``. A writer removes its own on any error (``write``, ``compact``);
one left by a killed writer is removed when a store first writes to that directory: at once when its writer (same
host) is gone, after an hour otherwise (another host's writer cannot be checked).
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from results.provenance import now_iso, provenance
from results.schema import JOB_HASH, RUN_HASH, TABLE_KEYS, TABLES

__all__ = ["ResultStore", "CorruptResultError", "StoreError", "SCHEMA_VERSION", "UPGRADES", "default_root"]

SCHEMA_VERSION = 2


def _rename(**columns: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame.rename(columns=columns)


#: Upgrades of old files: ``UPGRADES[table][v]`` turns a version-``v`` frame into version ``v + 1``.
UPGRADES: dict[str, dict[int, Callable[[pd.DataFrame], pd.DataFrame]]] = {
    # 2: one name per hash. ``config_hash`` held the evaluated run's hash in generation rows and the writing job's
    # own hash in the others
    "generation": {1: _rename(config_hash=RUN_HASH)},
    "encoders": {1: _rename(config_hash=JOB_HASH)},
    "runs": {1: _rename(config_hash=JOB_HASH)},
}

_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_TEMPORARY = re.compile(r"^\.(?P<final>.+?)(?:\.(?P<host>[^.]+)\.(?P<pid>\d+))?\.tmp$")
_STALE_AFTER_S = 3600.0
_HOST = socket.gethostname().split(".")[0] or "host"
_log = logging.getLogger("repa_study.results.store")  # stdlib only: results imports nothing of ours


class StoreError(ValueError):
    """Bad input to the store (unknown table name, unusable rows); nothing was written."""


class CorruptResultError(RuntimeError):
    """One or more parquet files of a table cannot be read; ``.files`` lists them, ``.readable`` counts the rest."""

    def __init__(self, table: str, bad: Sequence[tuple[Path, str]], readable: int):
        self.files = [p for p, _ in bad]
        self.readable = readable
        lines = [f"results table {table!r}: {len(bad)} unreadable file(s) (and {readable} readable):"]
        lines += [f"  {p}: {why}" for p, why in bad]
        lines.append("Move or delete the file(s) named above and re-run the job(s) that wrote them, "
                     "or read the rest with ResultStore.read(table, strict=False) / `results show --no-strict`.")
        super().__init__("\n".join(lines))


def _temporary(final: Path) -> Path:
    return final.with_name(f".{final.name}.{_HOST}.{os.getpid()}.tmp")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove_stale_temporaries(directory: Path) -> None:
    """Remove what killed writers left in ``directory`` (see the module docstring), with a warning each."""
    if not directory.is_dir():
        return
    now = time.time()
    for path in directory.iterdir():
        m = _TEMPORARY.match(path.name)
        if m is None:
            continue
        try:
            mine = m["host"] == _HOST and m["pid"] is not None
            if mine and (int(m["pid"]) == os.getpid() or not _gone(int(m["pid"]))):
                continue
            if not mine and now - path.stat().st_mtime < _STALE_AFTER_S:
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        _log.warning("removed %s, a temporary file left by a writer that stopped", path)


def default_root() -> Path:
    """``$REPA_STUDY_ROOT`` if set, else ``runs`` in the working directory."""
    return Path(os.environ.get("REPA_STUDY_ROOT") or "runs")


def _to_frame(rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows.copy()
    if isinstance(rows, Mapping):
        return pd.DataFrame([dict(rows)])
    rows = list(rows)
    if not all(isinstance(r, Mapping) for r in rows):
        raise StoreError("rows must be a DataFrame, a dict, or a list of dicts")
    return pd.DataFrame([dict(r) for r in rows])


class ResultStore:
    """Read and write the results tables under one results root (see the module docstring)."""

    _swept: set[Path] = set()  # directories whose stale temporaries this process removed already

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    # ------------------------------------------------------------------ layout
    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    def table_dir(self, table: str) -> Path:
        self._check_table(table)
        return self.tables_dir / table

    def run_dir(self, job_id: str) -> Path:
        """The directory a job keeps its files in (checkpoints, samples, logs); not created here."""
        return self.root / "jobs" / job_id

    def tables(self) -> list[str]:
        """Names of the tables that have at least one file."""
        if not self.tables_dir.is_dir():
            return []
        return sorted(p.name for p in self.tables_dir.iterdir() if p.is_dir() and any(self._files_in(p)))

    def files(self, table: str) -> list[Path]:
        """The published parquet files of ``table`` (temporary files are never listed)."""
        return sorted(self._files_in(self.table_dir(table)))

    @staticmethod
    def _files_in(directory: Path) -> Iterable[Path]:
        if not directory.is_dir():
            return []
        return (p for p in directory.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))

    @staticmethod
    def _check_table(table: str) -> None:
        if not isinstance(table, str) or not _TABLE_NAME.match(table):
            raise StoreError(f"invalid table name {table!r}: use lower-case letters, digits and '_' "
                             f"(known tables: {', '.join(TABLES)})")

    # ------------------------------------------------------------------ write
    def write(self, table: str, rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> Path:
        """Write ``rows`` as one new parquet file of ``table`` (atomically) and return its path.

        Missing provenance columns (git commit, host, python, package versions) are filled in; ``schema_version``
        and ``written_at`` are set. Columns already present are kept as given.
        """
        directory = self.table_dir(table)
        df = _to_frame(rows)
        if df.empty:
            raise StoreError(f"refusing to write an empty set of rows to table {table!r}")
        if any(not isinstance(c, str) for c in df.columns):
            raise StoreError(f"column names must be strings, got {list(df.columns)!r}")
        for key, value in provenance().items():
            if key not in df.columns:
                df[key] = value
        df["schema_version"] = SCHEMA_VERSION
        df["written_at"] = now_iso()
        df["written_ns"] = time.time_ns()
        try:
            arrow = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StoreError(f"rows for table {table!r} cannot be stored as parquet: {exc}") from exc

        directory.mkdir(parents=True, exist_ok=True)
        self._sweep(directory)
        label = "rows"
        if "job_id" in df.columns and df["job_id"].nunique(dropna=True) == 1:
            label = _SAFE.sub("_", str(df["job_id"].dropna().iloc[0]))[:80] or "rows"
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{label}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        final = directory / name
        tmp = _temporary(final)
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(arrow, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        return final

    # ------------------------------------------------------------------ read
    def read(self, table: str, *, strict: bool = True, dedupe: bool = True) -> pd.DataFrame:
        """All rows of ``table`` from every file, upgraded to the current schema, latest write per key.

        Returns an empty frame when the table has no files. ``strict=False`` skips unreadable files with a
        warning instead of raising :class:`CorruptResultError`; ``dedupe=False`` keeps superseded rows too.
        """
        frames, bad = [], []
        files = self.files(table)
        for path in files:
            try:
                frame = pq.read_table(path).to_pandas()
            except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
                bad.append((path, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
                continue
            frame["source_file"] = path.name
            frames.append(self._upgrade(table, frame, path))
        if bad:
            err = CorruptResultError(table, bad, readable=len(frames))
            if strict:
                raise err
            _log.warning("%s", err)
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True, sort=False)
        if dedupe:
            df = self._dedupe(table, df)
        return df.reset_index(drop=True)

    @staticmethod
    def _upgrade(table: str, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
        version = int(frame["schema_version"].iloc[0]) if "schema_version" in frame.columns and len(frame) else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path} was written with results schema version {version}, newer than this "
                             f"repa-study's {SCHEMA_VERSION}: upgrade repa-study to read it")
        steps = UPGRADES.get(table, {})
        while version < SCHEMA_VERSION:
            if version in steps:
                frame = steps[version](frame)
            version += 1
        frame["schema_version"] = SCHEMA_VERSION
        return frame

    @staticmethod
    def _dedupe(table: str, df: pd.DataFrame) -> pd.DataFrame:
        keys = [k for k in TABLE_KEYS.get(table, ()) if k in df.columns]
        if not keys or "job_id" not in keys:
            return df
        order = [c for c in ("written_ns", "source_file") if c in df.columns]
        df = df.sort_values(order, kind="stable") if order else df
        # null keys compare equal here, which is what we want: two anonymous writes of the same thing supersede
        return df.drop_duplicates(subset=keys, keep="last").sort_index()

    # ------------------------------------------------------------------ compaction
    def compact(self, table: str, out_dir: str | Path | None = None,
                job_ids: Iterable[str] | None = None) -> Path | None:
        """Write the deduplicated table (only ``job_ids``' rows when given) as one parquet file
        (``out_dir/<table>.parquet``, default ``ROOT/collected``); None when there are no rows.

        The per-job files are left in place, so compaction can be repeated at any time.
        """
        df = self.read(table)
        if job_ids is not None and "job_id" in df.columns:
            df = df[df["job_id"].isin(set(job_ids))]
        if df.empty:
            return None
        out_dir = Path(out_dir) if out_dir is not None else self.root / "collected"
        out_dir.mkdir(parents=True, exist_ok=True)
        self._sweep(out_dir)
        final = out_dir / f"{table}.parquet"
        tmp = _temporary(final)
        try:
            df.to_parquet(tmp, index=False)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    @classmethod
    def _sweep(cls, directory: Path) -> None:
        key = directory.resolve()
        if key not in cls._swept:
            _remove_stale_temporaries(directory)
            cls._swept.add(key)
