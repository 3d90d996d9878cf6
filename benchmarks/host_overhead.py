"""The training loop's host work per step at ImageNet scale, before and after issue 18 (CPU, no GPU needed).

What is timed is the main process's own time per step outside the model: getting the step's batch from the
DataLoader (and, before, drawing the data order on the way: the sampler runs in the main process), the step's random
draws, and handing them to the device. The GPU step is simulated by a sleep (``--gpu-ms``, default 60 ms: about a
SiT-XL/2 step at 32 images per GPU on an H100), which releases the CPU as a GPU kernel queue would; the host overhead
of a step is its wall time minus that sleep. With a sync every step (the loop before issue 18) the GPU idles for
exactly that long. On a shared, loaded machine the wall time also holds the time the main thread waited for a
core, so the main thread's CPU time (``time.thread_time``) is printed too, split into: drawing the data order (the
sampler runs in the main process), the step's draws and their hand-off to the device (``draws_and_handoff``), and
the DataLoader's transport of the batch from its worker (the rest of ``next``: unpickling, shared-memory handles),
which both pipelines pay and which a GPU run's pin-memory thread takes off the main thread. ``after`` emulates that
thread by default (:class:`PinThread`; ``--no-pin-thread``: the main thread does it, as in CPU training); for
``before`` the figure without the transport (``main_cpu_ms_without_transport``) is what its main thread keeps on a
GPU node (its sampler ran in the main thread whatever the pin thread did).

- before: ``StepBatches`` drew a permutation of the 1,281,167 images on every step (in the main process), and every
  run of a group drew its global batch's noise, times, label dropout and posterior noise in the main process;
- after: ``StepData`` (``study.training``): the permutation once per epoch, the draws made once per distinct spec of
  the group in the DataLoader workers with the batch, arriving pinned; the loop looks them up (``step_noise(...,
  drawn=...)``).

The dataset is a stand-in with a prepared ImageNet's size and latent geometry (1,281,167 items: a label and SD-VAE
moments [8, 32, 32]) that returns preallocated tensors, so reading and moving images (the DataLoader's own work,
the same before and after) does not enter the figure.

    .venv/bin/python benchmarks/host_overhead.py [--steps 40] [--workers 2] [--runs 1 2] [--gpu-ms 60]
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import threading
import time

import torch

N_IMAGES = 1_281_167
BATCH = 256
SHAPE = (4, 32, 32)


class FakePrepared(torch.utils.data.Dataset):
    """A prepared ImageNet's items without the disk: a label and moments float32 [8, 32, 32] (a 1-pixel image)."""

    def __init__(self) -> None:
        self.image = torch.zeros(3, 1, 1, dtype=torch.uint8)
        self.moments = torch.zeros(8, 32, 32)
        self.image_size, self.num_classes, self.id = 256, 1000, "fake-prepared"

    def __len__(self) -> int:
        return N_IMAGES

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image, "label": i % 1000, "mask": None, "moments": self.moments}


class OldStepBatches(torch.utils.data.Sampler):
    """The sampler before issue 18: a fresh permutation of the dataset on every step."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int) -> None:
        self.n, self.batch, self.seed, self.start, self.stop = n, batch, seed, start, stop
        self.cpu_ms: list[float] = []

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        per_epoch = self.n // self.batch
        for step in range(self.start, self.stop):
            c = time.thread_time()
            epoch, k = divmod(step, per_epoch)
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
            idx = torch.randperm(self.n, generator=g)[k * self.batch:(k + 1) * self.batch].tolist()
            self.cpu_ms.append((time.thread_time() - c) * 1e3)  # the main process's (the sampler runs there)
            yield idx


def _objective():
    from study.config import FlowSection
    from study.objectives import FlowMatching

    return FlowMatching(FlowSection())


def before(steps: int, runs: int, workers: int, gpu_ms: float) -> list[dict[str, float]]:
    from study.data import collate
    from study.training import step_noise

    flow = _objective()
    sampler = OldStepBatches(N_IMAGES, BATCH, 0, 0, steps)
    loader = torch.utils.data.DataLoader(FakePrepared(), batch_sampler=sampler, collate_fn=collate,
                                         num_workers=workers)
    out, step = [], 0
    it = iter(loader)
    while True:
        t0, c0, n_idx = time.perf_counter(), time.thread_time(), len(sampler.cpu_ms)
        try:
            batch = next(it)
        except StopIteration:
            break
        t1, c1 = time.perf_counter(), time.thread_time()
        idx_ms = sum(sampler.cpu_ms[n_idx:])  # data order drawn in this next() (the sampler runs ahead)
        for _ in range(runs):  # every run drew its own global batch's draws in the main process
            draws = step_noise(0, step, BATCH, SHAPE, flow, 0.1, posterior=True)
            _ = {k: v[:BATCH].to("cpu", non_blocking=True) for k, v in draws.items()}
        _ = batch["image"].to("cpu", non_blocking=True), batch["moments"].to("cpu", non_blocking=True)
        t2, c2 = time.perf_counter(), time.thread_time()
        time.sleep(gpu_ms / 1e3)  # the GPU step
        out.append({"wall": (t2 - t0) * 1e3, "cpu": (c2 - c0) * 1e3, "index": idx_ms,
                    "transport": (c1 - c0) * 1e3 - idx_ms, "own": (c2 - c1) * 1e3})
        step += 1
    return out


class PinThread:
    """What a GPU run's DataLoader pin-memory thread does, emulated on the CPU: it takes each batch from the workers
    (unpickling, shared-memory handles), copies its tensors into buffers reused from step to step (CUDA's caching
    host allocator) and frees the workers' shared memory, all off the main thread, which gets ready batches."""

    def __init__(self, it, depth: int = 2) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.ring: list[dict] = [{} for _ in range(depth + 2)]
        threading.Thread(target=self._run, args=(it,), daemon=True).start()

    def _copy(self, x, slot: dict, key):
        if isinstance(x, torch.Tensor):
            buf = slot.get(key)
            if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
                buf = slot[key] = torch.empty_like(x)
            return buf.copy_(x)
        if isinstance(x, dict):
            return {k: self._copy(v, slot, (key, k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(self._copy(v, slot, (key, i)) for i, v in enumerate(x))
        return x

    def _run(self, it) -> None:
        for n, batch in enumerate(it):
            self.queue.put(self._copy(batch, self.ring[n % len(self.ring)], "batch"))
            del batch
        self.queue.put(None)

    def __iter__(self):
        while (batch := self.queue.get()) is not None:
            yield batch


def after(steps: int, runs: int, workers: int, gpu_ms: float, pin_thread: bool) -> list[dict[str, float]]:
    from study.training import DrawSpec, StepData, step_noise
    from study.training.batches import unpack_draws

    flow = _objective()
    spec = DrawSpec.of(SHAPE, flow, 0.1, True)
    specs = list(dict.fromkeys([spec] * runs))  # REPA and iREPA draw alike: one spec
    data = StepData(FakePrepared(), BATCH, 0, 0, 1, specs)
    loader = data.loader(0, steps, num_workers=workers, pin_memory=False)
    out, step = [], 0
    it = iter(PinThread(iter(loader))) if pin_thread else iter(loader)
    while True:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            batch = next(it)
        except StopIteration:
            break
        t1, c1 = time.perf_counter(), time.thread_time()
        drawn = [unpack_draws(p.to("cpu", non_blocking=True), layout) for p, layout in batch["draws"]]
        for _ in range(runs):  # what _optimizer_step does per run
            draws = step_noise(0, step, BATCH, SHAPE, flow, 0.1, posterior=True, drawn=drawn[specs.index(spec)])
            _ = {k: v.to("cpu", non_blocking=True) for k, v in draws.items()}
        _ = batch["image"].to("cpu", non_blocking=True), batch["moments"].to("cpu", non_blocking=True)
        del batch, drawn, draws, _  # (freeing the batch: the transport's, counted there)
        t2, c2 = time.perf_counter(), time.thread_time()
        time.sleep(gpu_ms / 1e3)
        out.append({"wall": (t2 - t0) * 1e3, "cpu": (c2 - c0) * 1e3, "index": 0.0,  # the order: in the workers
                    "transport": (c1 - c0) * 1e3, "own": (c2 - c1) * 1e3})
        step += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8, help="first steps left out (worker start-up)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--gpu-ms", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-pin-thread", dest="pin_thread", action="store_false",
                    help="after: the main thread takes the batches from the workers itself (CPU training)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for workers in args.workers:
        for runs in args.runs:
            for name, fn in (("before", before), ("after", after)):
                rows = (before(args.steps, runs, workers, args.gpu_ms) if name == "before" else
                        after(args.steps, runs, workers, args.gpu_ms, args.pin_thread))[args.warmup:]
                med = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
                print(json.dumps({"pipeline": name, "runs": runs, "workers": workers, "steps": len(rows),
                                  "wall_ms_median": med["wall"], "main_cpu_ms_median": med["cpu"],
                                  "main_cpu_ms_min": round(min(r["cpu"] for r in rows), 3),
                                  "data_order_cpu_ms": med["index"], "draws_and_handoff_cpu_ms": med["own"],
                                  "loader_transport_cpu_ms": med["transport"],
                                  "main_cpu_ms_without_transport": round(med["index"] + med["own"], 3),
                                  "pin_thread": name == "after" and args.pin_thread, "gpu_ms": args.gpu_ms,
                                  "loadavg": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
