"""Count the FLOPs the cost model needs and write them to jobs/cost/flops.json (what `repa-study sweep estimate` reads).

Every catalog entry at full size, SiT-S/B/L/XL on SD-VAE latents of 256 px (32x32x4, 1000 classes), the projectors
of the shipped methods for every (SiT width, encoder width) pair, the SD-VAE encoder (256 px) and decoder and
InceptionV3; all on the meta device (no memory, no weights), with torch.utils.flop_counter. Prints the time each
group took.

    .venv/bin/python benchmarks/count_flops.py            # rewrite jobs/cost/flops.json
    .venv/bin/python benchmarks/count_flops.py --check    # count again and compare with the shipped file
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import encoders
from jobs.cost import FLOPS_FILE, FlopTable
from study.config import parse_size

SIT_SIZES = ("SiT-S/2", "SiT-B/2", "SiT-L/2", "SiT-XL/2")
PROJECTORS = (("mlp", 2048, 3), ("conv", 2048, 3), ("conv", 2048, 1))  # repa, irepa, irepa-released


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(FLOPS_FILE))
    ap.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    table = FlopTable(path=None)  # count everything afresh
    t0 = time.perf_counter()
    for size in SIT_SIZES:
        table.sit(size, input_size=32, in_channels=4, num_classes=1000)
    t_sit = time.perf_counter() - t0
    t0 = time.perf_counter()
    dims = set()
    for name in encoders.list_encoders():
        dims.add(table.encoder(name)["embed_dim"])
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for size in SIT_SIZES:
        hidden = parse_size(size)[0].hidden
        for dim in sorted(dims):
            for kind, width, kernel in PROJECTORS:
                table.projector(kind, hidden, dim, grid=(16, 16), hidden_dim=width, kernel_size=kernel)
    table.sd_vae_encode(256)
    table.sd_vae_decode(32)
    table.inception()
    t_rest = time.perf_counter() - t0
    print(f"# SiT sizes: {t_sit:.1f} s; {len(encoders.list_encoders())} encoders: {t_enc:.1f} s; projectors, "
          f"SD-VAE, Inception: {t_rest:.1f} s (torch {torch.__version__}, 1 thread, meta device)")
    if args.check:
        shipped = json.loads(FLOPS_FILE.read_text())["entries"]
        diff = {k: (shipped.get(k), v) for k, v in table.entries.items() if shipped.get(k) != v}
        print(json.dumps(diff, indent=1) if diff else "shipped jobs/cost/flops.json is up to date")
        return 1 if diff else 0
    print(f"wrote {table.save(args.out)} ({len(table.entries)} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
