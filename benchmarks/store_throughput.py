"""Results-store throughput: P processes each write F files of R rows, then one full read (union + dedupe).

    .venv/bin/python benchmarks/store_throughput.py [--procs 16] [--files 50] [--rows 1]

Prints write time, files per second, read time and rows read. Runs in a temporary directory.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time

from results import ResultStore


def _writer(root: str, worker: int, files: int, rows: int) -> None:
    store = ResultStore(root)
    for i in range(files):
        store.write("generation", [{"job_id": f"w{worker}-{i}", "step": s, "fid": float(s), "encoder": "e"}
                                   for s in range(rows)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--rows", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        ctx = mp.get_context("fork")
        t0 = time.perf_counter()
        procs = [ctx.Process(target=_writer, args=(root, w, args.files, args.rows)) for w in range(args.procs)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        t_write = time.perf_counter() - t0
        n_files = args.procs * args.files
        t0 = time.perf_counter()
        df = ResultStore(root).read("generation")
        t_read = time.perf_counter() - t0
        print(f"write: {n_files} files by {args.procs} processes in {t_write:.2f} s ({n_files / t_write:.0f} files/s)")
        print(f"read:  {len(df)} rows from {n_files} files in {t_read:.2f} s ({n_files / t_read:.0f} files/s)")


if __name__ == "__main__":
    main()
