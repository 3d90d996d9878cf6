"""What training methods together saves: the same runs trained one by one (``study.training.loop.train``) vs in one group
(``study.training.loop.train_group``: one data pipeline and one frozen-encoder forward per step for all of them).

Both sides run the real training loop on the synthetic data into fresh temporary run directories (checkpoints only
at the end), so the figure includes data loading, the encoder forward, every run's SiT step, logging and saving.

    .venv/bin/python benchmarks/train_group.py --threads 1                          # tiny stand-in encoder
    .venv/bin/python benchmarks/train_group.py --threads 1 --weights random --encoder dinov2-vit-b   # full-size ViT-B
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from study.config import load_train_config
from study.training import train, train_group


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="SiT size (tiny, smoke, SiT-B/2 with --patch-size 2, ...)")
    ap.add_argument("--encoder", default="dinov2-vit-b")
    ap.add_argument("--weights", default="tiny", choices=["tiny", "random"],
                    help="tiny: the small stand-in; random: the entry at full size, random-init")
    ap.add_argument("--methods", nargs="+", default=["repa", "irepa"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    overrides = [f"model.size={args.model}", f"encoder.name={args.encoder}", f"encoder.weights={args.weights}",
                 f"steps={args.steps}", f"batch_size={args.batch}", f"ckpt_every={args.steps}", "sample_every=0",
                 f"log_every={args.steps}", f"threads={args.threads}", f"device={args.device}",
                 "method.hidden_dim=256", f"data.spec=synthetic:n={max(256, 4 * args.batch)},size=32,classes=10,seed=0"]
    cfgs = [load_train_config("tiny", [f"method={m}", *overrides]) for m in args.methods]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train(cfgs[0], tmp / "warm", max_steps=2)  # imports, dataset cache, encoder build: not timed
        t0 = time.perf_counter()
        for i, cfg in enumerate(cfgs):
            train(cfg, tmp / f"alone{i}")
        alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_group(cfgs, [tmp / f"group{i}" for i in range(len(cfgs))])
        grouped = time.perf_counter() - t0
    per = 1000 / args.steps
    print(f"# {' + '.join(args.methods)}, SiT {args.model}, encoder {args.encoder} ({args.weights}), batch "
          f"{args.batch}, {args.steps} steps, {args.threads} thread(s)")
    print(f"one by one : {alone:7.2f} s  ({alone * per:7.1f} ms per step of all runs)")
    print(f"grouped    : {grouped:7.2f} s  ({grouped * per:7.1f} ms per step of all runs)")
    print(f"saving     : {100 * (1 - grouped / alone):6.1f} %")


if __name__ == "__main__":
    main()
