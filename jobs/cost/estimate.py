"""What a sweep costs in GPU-hours, by stage, model size and encoder: a FLOP count divided by a stated throughput.

The estimate works from the planned jobs (:func:`jobs.plan.plan`), not from spec fields, so it follows whatever the
plan holds:

- **train**: per run (train jobs that differ only in their step target are one run: a continuation costs its extra
  steps), ``steps x batch_size x`` the work of one training image (:func:`jobs.cost.work.train_image_work`:
  ``3 x (SiT + projector forward) + frozen-encoder forward``, the three from forward + backward of the trained
  parts, the encoder forward only (it is frozen); REPA-E's VAE, LPIPS and discriminator; the SD-VAE encoder for a
  latent run on data without stored moments);
- **eval**: ``n_samples x num_steps x SiT forward`` (x2 with classifier-free guidance), the SD-VAE decoder on each
  sample (latent models), the extractor (InceptionV3) on each sample, and reference statistics once per sweep when
  the reference is a dataset rather than an ADM npz;
- **score**: the encoder over the scored split and, for the probe, over the train split, the spatial metrics' Gram
  matrices, and the probe's L-BFGS evaluations (``4 N D C`` FLOPs each, x2 for the CLS probe);
- **analyze**: a CPU job, 0 GPU-hours.

FLOPs come from :mod:`jobs.cost.flops` (counted on the meta device, shipped in ``jobs/cost/flops.json``). Each kind
of work runs at ``peak(GPU, precision) x MFU`` (:mod:`jobs.cost.throughput`): the precision the code uses today
(training under bf16 autocast, the frozen encoder, the sampler, Inception and scoring in fp32 or tf32) and a default
MFU of 0.35 (``--mfu``), replaced by the MFU measured by ``benchmarks/gpu_check.py`` on that GPU when its output is
found (``jobs/cost/calibration/<gpu>.json`` or ``--calibration``). Every assumption is listed in the result's
``assumptions``.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from jobs.cost.assumptions import assumptions, fixed_assumptions
from jobs.cost.calibration import load_calibration
from jobs.cost.fixed import FixedStep, trained_params
from jobs.cost.flops import flop_table
from jobs.cost.gpus import GPUS, PRECISIONS
from jobs.cost.targets import TargetCosts
from jobs.cost.throughput import Throughput
from jobs.cost.work import (DEFAULT_PRECISION, KINDS, Work, add_work, extractor_flops, geometry,
                            num_classes, sample_work, sit_args, split_size, stored_latents, train_image_work)
from jobs.plan import Job

__all__ = ["EstimateSettings", "parse_precision", "estimate_jobs", "estimate_spec"]

PROBE_EVALUATIONS = 800
#: The ``by_model`` row of the encoder-target cache passes (``repa-study data encode``): no model trains there.
CACHE_PASSES = "target caches (data encode)"


@dataclass
class EstimateSettings:
    """How to turn FLOPs into GPU-hours. ``precision`` overrides a kind's precision, e.g. ``{"sample": "bf16"}``."""

    gpu: str = "h100"
    mfu: float | None = None            # None: DEFAULT_MFU where nothing was measured
    calibration: str | Path | None = None  # None: CALIBRATION_DIR/<gpu>.json when present
    use_calibration: bool = True
    all_steps: int | None = None        # cost every training as if its target were this many steps
    probe_evaluations: int = PROBE_EVALUATIONS
    precision: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.gpu not in GPUS:
            raise ValueError(f"unknown GPU {self.gpu!r}; use one of {', '.join(GPUS)}")
        if self.mfu is not None and not 0.0 < self.mfu <= 1.0:
            raise ValueError(f"--mfu must lie in (0, 1], got {self.mfu}")
        if self.all_steps is not None and self.all_steps < 1:
            raise ValueError(f"--all-steps must be >= 1, got {self.all_steps}")
        if self.probe_evaluations < 1:
            raise ValueError(f"probe evaluations must be >= 1, got {self.probe_evaluations}")
        for kind, prec in self.precision.items():
            if kind not in KINDS or prec not in PRECISIONS:
                raise ValueError(f"precision override {kind}={prec}: use KIND=DTYPE with KIND in {', '.join(KINDS)} "
                                 f"and DTYPE in {', '.join(PRECISIONS)}")


def parse_precision(items: Iterable[str]) -> dict[str, str]:
    """``["sample=bf16", ...]`` -> ``{"sample": "bf16"}`` (checked by :meth:`EstimateSettings.check`)."""
    out = {}
    for item in items:
        kind, eq, prec = item.partition("=")
        if not eq:
            raise ValueError(f"--precision {item!r}: use KIND=DTYPE, e.g. sample=bf16")
        out[kind.strip()] = prec.strip()
    return out


# ------------------------------------------------------------------------------------------------ runs
_RUN_KEYS_IGNORED = ("steps", "ckpt_keep", "target", "targets")


def _params(job: Job) -> dict[str, Any]:
    """A job's stage inputs as a plain dict (typed params or a mapping)."""
    return _dump(job.params)


def _run_key(params: Mapping[str, Any]) -> str:
    """What names a training run apart from its step target (continuations of one run share it)."""
    ident = {k: v for k, v in params.items() if k not in _RUN_KEYS_IGNORED and "step" not in k}
    return json.dumps(ident, sort_keys=True, default=str)


@dataclass
class _Unit:
    """One training of a train job: the job itself, or one member run of a grouped job (``executor.group_methods``:
    ``params.runs``, one encoder forward per step for the whole group)."""

    id: str
    job: Job
    params: Any                 # TrainParams (or a mapping)
    steps: int
    group: str | None = None    # the group job's id for members of a grouped job

    @property
    def key(self) -> str:
        return _run_key(_dump(self.params))


def _dump(p: Any) -> dict[str, Any]:
    return p.model_dump(mode="json") if hasattr(p, "model_dump") else dict(p)


def _units(job: Job) -> list[_Unit]:
    runs = getattr(job.params, "runs", None)
    if runs is None and isinstance(job.params, Mapping):
        runs = job.params.get("runs")
    if runs:
        return [_Unit(mid, job, tp, int(_dump(tp).get("steps") or job.steps or 0), group=job.job_id)
                for mid, tp in runs.items()]
    return [_Unit(job.job_id, job, job.params, int(_dump(job.params).get("steps") or job.steps or 0))]


def _run_of(job: Job, train_of: Mapping[str, str]) -> str | None:
    """The run an eval job evaluates: its params' ``train_job`` (a member id for grouped runs), else a dependency."""
    member = _params(job).get("train_job")
    if member in train_of:
        return train_of[member]
    return next((train_of[d] for d in job.depends_on if d in train_of), None)


def _train_config(unit: "_Unit", cache: dict[str, Any]) -> Any:
    """The training config the run will train with (its params' ``config()``, what jobs.tasks trains)."""
    try:
        key = json.dumps(_dump(unit.params), sort_keys=True, default=str)
        if key not in cache:
            cache[key] = unit.params.config()
    except (AttributeError, KeyError, ValueError) as exc:
        raise ValueError(f"cannot cost train job {unit.job.job_id} ({unit.job.label}): its training config does "
                         f"not load ({type(exc).__name__}: {exc})") from None
    return cache[key]


def _precision(settings: EstimateSettings) -> dict[str, str]:
    return {**DEFAULT_PRECISION, **{k: v for k, v in settings.precision.items() if k in DEFAULT_PRECISION}}


# ------------------------------------------------------------------------------------------------ the estimate
def estimate_jobs(jobs: list[Job], settings: EstimateSettings | None = None, *, name: str | None = None,
                  table: Any = None) -> dict[str, Any]:
    """The estimate of ``jobs`` (a plan) as a JSON-able dict; see the module docstring."""
    settings = settings or EstimateSettings()
    settings.check()
    table = table or flop_table()
    calibration = load_calibration(settings.gpu, settings.calibration) if settings.use_calibration else None
    thr = Throughput(GPUS[settings.gpu], settings.mfu, calibration)
    prec = _precision(settings)
    hours: dict[str, float] = defaultdict(float)
    flops: dict[str, float] = defaultdict(float)
    by_model: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_encoder: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts = defaultdict(int)
    cfg_cache: dict[str, Any] = {}

    # ---- training: runs (a run's jobs differ only in their step target) and the steps each job adds
    runs: dict[str, list[_Unit]] = defaultdict(list)
    train_of: dict[str, str] = {}  # train job id or group member id -> run key
    for job in jobs:
        counts[job.stage] += 1
        if job.stage == "train":
            for unit in _units(job):
                runs[unit.key].append(unit)
                train_of[unit.id] = unit.key
                train_of.setdefault(job.job_id, unit.key)
    run_info: dict[str, dict[str, Any]] = {}
    latent_data: dict[str, bool | None] = {}  # dataset of a latent run (not REPA-E) -> stored_latents
    target_paid: set[tuple[str, int]] = set()  # (group job, target): its shared encoder forward is counted once
    fixed = FixedStep(GPUS[settings.gpu])
    fixed_hours, fixed_seen = 0.0, {}  # model -> (ms per step per GPU, GPUs, parts) for the assumptions
    targets = TargetCosts(table, thr)
    for key, members in runs.items():
        members.sort(key=lambda u: u.steps)
        first = members[0]
        cfg = _train_config(first, cfg_cache)
        geo = geometry(cfg)
        model = _dump(first.params).get("model") or first.job.model or cfg.model.size  # (a member's own model)
        stored = None
        if geo["latent"] and cfg.method.repae is None:  # (REPA-E's VAE encodes every image: in its own work)
            stored = latent_data[str(cfg.data.spec)] = stored_latents(str(cfg.data.spec), cfg.data.split)
        per_image = train_image_work(table, cfg, geo, encodes_images=stored is False)
        per_image = {(k, settings.precision.get(k, p)): f for (k, p), f in per_image.items()}
        dims = [int(table.encoder(n, cfg.encoder.weights)["embed_dim"]) for n in cfg.encoder.names] \
            if cfg.method.align else []
        params, ema_params = trained_params(cfg, geo, dims)
        gpus = max(1, first.job.resources.gpus * first.job.resources.nodes)
        step_s = fixed.seconds(params, ema_params, cfg.grad_accum, gpus) * gpus  # GPU-seconds per step
        fixed_seen.setdefault(model, (1e3 * step_s / gpus, gpus, fixed.parts(params, ema_params, cfg.grad_accum, gpus),
                                      params))
        cached = cfg.method.align and cfg.encoder.targets == "cache"
        stops = [(first, settings.all_steps)] if settings.all_steps else [(u, u.steps) for u in members]
        done = 0
        for unit, target in stops:
            if target <= done:
                continue
            n_images = float(target - done) * cfg.batch_size
            shared = unit.group is not None and (unit.group, target) in target_paid
            if unit.group is not None:
                target_paid.add((unit.group, target))
            target_work = {k: v for k, v in per_image.items() if k[0] == "target"}
            rest = {k: v for k, v in per_image.items() if k[0] != "target"}
            work: Work = {}
            add_work(work, rest if (shared or cached) else per_image, n_images)
            secs = thr.seconds(work, model=model, compile=cfg.compile) + step_s * (target - done)
            if cfg.method.align:  # what the targets cost online, and what a cached run reads per second
                online = {k: v * n_images for k, v in target_work.items()}
                step_wall = (thr.seconds({k: v * cfg.batch_size for k, v in rest.items()}, model=model,
                                         compile=cfg.compile) + step_s) / gpus
                targets.add_run(cfg, first.job.encoder or model, target_work,
                                0.0 if shared else thr.seconds(online, model=model, compile=cfg.compile), step_wall)
            fixed_hours += step_s * (target - done) / 3600
            _book(hours, flops, by_model, by_encoder, "train", model, first.job.encoder, secs, work)
            done = target
        run_info[key] = {"common": sit_args(cfg, geo), "geo": geo, "model": model}
        by_model[model]["runs"] += 1
        by_model[model]["train_steps"] += done
    for p in targets.used_passes():  # each encoder-target cache is written once (`repa-study data encode`)
        _book(hours, flops, by_model, by_encoder, "train", CACHE_PASSES, p["label"], p["seconds"], p["work"])

    # ---- evaluation: per sample, with the geometry of the run it evaluates
    evals = [j for j in jobs if j.stage == "eval"]
    if settings.all_steps:
        evals = _evals_at(evals, train_of, run_info, settings.all_steps)
        counts["eval"] = len(evals)
    refs_done: set[tuple[str, str]] = set()
    for job in evals:
        key = _run_of(job, train_of)
        if key is None:
            raise ValueError(f"eval job {job.job_id} evaluates no train job of this plan; cannot cost it")
        info, params = run_info[key], _params(job)
        fid = params["fid"]
        eprec = {**prec, "sample": settings.precision.get("sample") or fid.get("precision") or prec["sample"]}
        per_sample = sample_work(table, **info["common"], num_steps=int(fid["num_steps"]),
                                 cfg_scale=float(fid["cfg_scale"]), latent=info["geo"]["latent"],
                                 extractor=fid["extractor"], precision=eprec)
        work = {}
        add_work(work, per_sample, float(fid["n_samples"]))
        ref = fid.get("reference") or params.get("dataset")
        if not str(ref).endswith(".npz") and (str(ref), fid["extractor"]) not in refs_done:
            refs_done.add((str(ref), fid["extractor"]))
            n_ref = split_size(str(ref), "train", None)
            ext = float(extractor_flops(table, fid["extractor"], info["geo"]["num_classes"]))
            add_work(work, {("extract", prec["extract"]): ext}, float(n_ref))
        secs = thr.seconds(work, model=info["model"])
        _book(hours, flops, by_model, by_encoder, "eval", info["model"], job.encoder, secs, work)

    # ---- scoring: encoder over the scored split (+ the train split for the probe), metrics, probe
    for job in (j for j in jobs if j.stage == "score"):
        p = _params(job)
        enc = table.encoder(job.encoder, p.get("encoder_weights", "pretrained"))
        n_eval = split_size(p["dataset"], p.get("split", "val"), p.get("limit"))
        n_train = split_size(p["dataset"], "train", p.get("limit")) if p.get("probe", True) else 0
        gram = 2.0 * enc["tokens"] ** 2 * enc["embed_dim"]
        work = {("encode", prec["encode"]): (n_eval + n_train) * float(enc["flops"]) + n_eval * gram}
        if n_train:
            probes = 2 if enc["has_cls"] else 1
            classes = num_classes(p["dataset"])
            work[("probe", prec["probe"])] = (probes * settings.probe_evaluations * 4.0 * n_train * enc["embed_dim"]
                                              * classes)
        secs = thr.seconds(work)
        _book(hours, flops, None, by_encoder, "score", None, job.encoder, secs, work)

    total = sum(hours.values())
    by_stage = {s: hours.get(s, 0.0) for s in ("train", "eval", "score", "analyze")}
    models = {m: {"train": v.get("train", 0.0), "eval": v.get("eval", 0.0),
                  "total": v.get("train", 0.0) + v.get("eval", 0.0), "runs": int(v.get("runs", 0)),
                  "train_steps": int(v.get("train_steps", 0))} for m, v in by_model.items()}
    encs = {e: {**{s: v.get(s, 0.0) for s in ("train", "eval", "score")}, "total": sum(v.values())}
            for e, v in sorted(by_encoder.items(), key=lambda kv: -sum(kv[1].values()))}
    return {
        "spec": name, "gpu": settings.gpu, "gpu_name": GPUS[settings.gpu].name,
        "total_gpu_hours": total, "by_stage": by_stage, "by_model": models, "by_encoder": encs,
        "jobs": {s: counts.get(s, 0) for s in ("train", "eval", "score", "analyze")}, "runs": len(runs),
        "flops": {s: flops.get(s, 0.0) for s in ("train", "eval", "score")},
        "all_steps": settings.all_steps,
        "throughput": thr.used,
        "calibration": calibration.path if calibration else None,
        "flops_counted_now": list(getattr(table, "counted", [])),
        "fixed": {"train_gpu_hours": fixed_hours,
                  "per_step": {m: {"ms_per_gpu": ms, "gpus": g, "params": n, **{k: 1e3 * v for k, v in parts.items()}}
                               for m, (ms, g, parts, n) in fixed_seen.items()}},
        "targets": targets.summary(),
        "assumptions": assumptions(settings, thr, calibration, prec, latent_data) + fixed_assumptions(
            settings, fixed_seen, targets),
    }


def _book(hours, flops, by_model, by_encoder, stage: str, model: str | None, encoder: str | None, secs: float,
          work: Work) -> None:
    h = secs / 3600.0
    hours[stage] += h
    flops[stage] += sum(work.values())
    if by_model is not None and model is not None:
        by_model[model][stage] += h
    if encoder is not None:
        by_encoder[encoder][stage] += h


def _evals_at(evals: list[Job], train_of: dict[str, str], run_info: dict[str, dict[str, Any]],
              steps: int) -> list[Job]:
    """With every run at ``steps``: the planned evaluations up to it, plus one at ``steps`` where a run lacks it."""
    kept = [j for j in evals if (j.steps or 0) <= steps]
    have = {(_run_of(j, train_of), j.steps, json.dumps(_params(j)["fid"], sort_keys=True)) for j in kept}
    extra = []
    for job in evals:
        key = _run_of(job, train_of)
        sig = (key, steps, json.dumps(_params(job)["fid"], sort_keys=True))
        if key is not None and sig not in have:
            have.add(sig)
            extra.append(job.model_copy(update={"steps": steps, "job_id": f"{job.job_id}@{steps}"}))
    return kept + extra


def estimate_spec(spec: Any, settings: EstimateSettings | None = None, *,
                  compare_all_steps: int | None = None) -> dict[str, Any]:
    """:func:`estimate_jobs` of ``plan(spec)``; with ``compare_all_steps`` N also ``compare``: the same plan with
    every training at N steps (``total_gpu_hours``, ``by_stage``) and ``ratio`` = this total / that one."""
    import dataclasses

    from jobs.plan import plan

    settings = settings or EstimateSettings()
    jobs = plan(spec)
    est = estimate_jobs(jobs, settings, name=spec.name)
    if compare_all_steps:
        other = estimate_jobs(jobs, dataclasses.replace(settings, all_steps=compare_all_steps), name=spec.name)
        est["compare"] = {"all_steps": compare_all_steps, "total_gpu_hours": other["total_gpu_hours"],
                          "by_stage": other["by_stage"],
                          "ratio": est["total_gpu_hours"] / other["total_gpu_hours"] if other["total_gpu_hours"]
                          else None}
    return est


