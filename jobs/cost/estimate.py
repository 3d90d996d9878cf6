"""What a sweep costs in GPU-hours, by stage, model size and encoder: a FLOP count divided by a stated throughput.

The estimate works from the planned jobs (:func:`jobs.plan.plan`), not from spec fields, so it follows whatever the
plan holds:

- **train**: per run (train jobs that differ only in their step target are one run: a continuation costs its extra
  steps), ``steps x batch_size x (3 x (SiT + projector forward) + frozen-encoder forward)`` per image, the three
  from forward + backward of the trained parts, the encoder forward only (it is frozen);
- **eval**: ``n_samples x num_steps x SiT forward`` (x2 with classifier-free guidance), the SD-VAE decoder on each
  sample (latent models), the extractor (InceptionV3) on each sample, and reference statistics once per sweep when
  the reference is a dataset rather than an ADM npz;
- **score**: the encoder over the scored split and, for the probe, over the train split, the spatial metrics' Gram
  matrices, and the probe's L-BFGS evaluations (``4 N D C`` FLOPs each, x2 for the CLS probe);
- **analyze**: a CPU job, 0 GPU-hours.

FLOPs come from :mod:`jobs.cost.flops` (counted on the meta device, shipped in ``jobs/cost/flops.json``). Each kind of work
runs at ``peak(GPU, precision) x MFU``: the precision the code uses today (training under bf16 autocast, the frozen
encoder, the sampler, Inception and scoring in fp32 or tf32) and a default MFU of 0.35 (``--mfu``), replaced by the
MFU measured by ``benchmarks/gpu_check.py`` on that GPU when its output is found (``benchmarks/results/<gpu>.json``
or ``--calibration``). Every assumption is listed in the result's ``assumptions``.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from jobs.plan import Job

__all__ = ["GPUS", "DEFAULT_MFU", "KINDS", "EstimateSettings", "Calibration", "load_calibration", "train_work",
           "sample_work", "estimate_jobs", "estimate_spec", "estimate_text", "summary_text", "CALIBRATION_DIR",
           "parse_precision", "check_budget",
           "IMAGENET_SPLITS"]

CALIBRATION_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
CALIBRATION_SCHEMA = "repa-study/gpu_check/1"


@dataclass(frozen=True)
class GpuSpec:
    name: str
    peak_tflops: dict[str, float]  # dense, no sparsity, per precision


# Vendor datasheet peaks (dense): H100 SXM5 and H200 SXM share the Hopper compute; A100 SXM4.
GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec("NVIDIA H100 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    "h200": GpuSpec("NVIDIA H200 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    "a100": GpuSpec("NVIDIA A100 SXM", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
}
DEFAULT_MFU = 0.35
PRECISIONS = ("bf16", "tf32", "fp32")

# kinds of work, each with its own throughput (MFU) and precision
KINDS = ("train", "target", "sample", "decode", "extract", "encode", "probe")
KIND_DOC = {
    "train": "SiT + projector forward and backward in training",
    "target": "frozen encoder forward in training (the alignment target)",
    "sample": "SiT forward in the sampler",
    "decode": "SD-VAE decoder on each sample",
    "extract": "FID extractor (InceptionV3) on samples and dataset references",
    "encode": "encoder forward and spatial-metric Gram matrices in scoring",
    "probe": "linear-probe L-BFGS evaluations",
}
# what the code runs today outside training (study/sampling/sample.py has no autocast and turns TF32 matmuls on with the run's
# tf32 setting, true in every preset, as DiT/SiT/REPA sample; cuDNN convolutions allow TF32 by default; the Inception
# extractor turns TF32 off; scoring's encoders run without bf16 unless asked; the probe is fp32)
DEFAULT_PRECISION = {"sample": "tf32", "decode": "tf32", "extract": "fp32", "encode": "fp32", "probe": "fp32"}

IMAGENET_SPLITS = {"train": 1_281_167, "val": 50_000}
IMAGENET_CLASSES = 1000
PROBE_EVALUATIONS = 800


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


# ------------------------------------------------------------------------------------------------ work units
Work = dict[tuple[str, str], float]  # (kind, precision) -> FLOPs


def _add(total: Work, part: Mapping[tuple[str, str], float], scale: float = 1.0) -> None:
    for key, flops in part.items():
        total[key] = total.get(key, 0.0) + scale * flops


def _prec_of(cfg_precision: str, tf32: bool) -> str:
    if cfg_precision in ("auto", "bf16"):
        return "bf16"  # auto = bf16 autocast on a GPU
    return "tf32" if tf32 else "fp32"


def _geometry(cfg: Any) -> dict[str, Any]:
    """Model-space geometry of a training config, without opening its dataset or loading the VAE."""
    from jobs.cost.flops import CODEC_GEOMETRY

    spec = str(cfg.data.spec)
    if cfg.data.image_size:
        image_size = int(cfg.data.image_size)
    elif spec.startswith("synthetic"):
        image_size = _synthetic(spec)["size"]
    else:
        image_size = 256  # folders are center-cropped to 256 by default; prepared data stores 256 px crops
    if cfg.data.codec not in CODEC_GEOMETRY:
        raise ValueError(f"no cost geometry for data.codec {cfg.data.codec!r} (known: {', '.join(CODEC_GEOMETRY)})")
    channels, down = CODEC_GEOMETRY[cfg.data.codec]
    return {"image_size": image_size, "input_size": image_size // down, "in_channels": channels,
            "num_classes": _num_classes(spec), "latent": cfg.data.codec == "sd-vae"}


def train_work(table: Any, *, size: str, input_size: int, in_channels: int, num_classes: int,
               patch_size: int | None, qk_norm: bool, encoders: Iterable[tuple[str, str]], align: bool,
               projector: str, hidden_dim: int, kernel_size: int, sit_precision: str,
               encoder_precision: str, extra_forwards: float = 0.0) -> Work:
    """FLOPs of one training image: 3 x (SiT + projectors forward) + each frozen encoder's forward, plus
    ``extra_forwards`` SiT forwards without grad (MeanFlow: see :func:`meanflow_forwards`)."""
    from study.config import is_jit_size, parse_jit_size
    from study.config import parse_size

    dims, name_patch = parse_jit_size(size) if is_jit_size(size) else parse_size(size)
    patch = patch_size or name_patch or (16 if is_jit_size(size) else 2)
    grid = (input_size // patch, input_size // patch)
    sit = table.sit(size, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                    patch_size=patch_size, qk_norm=qk_norm)
    trained, target = float(sit), 0.0
    if align:
        for name, weights in encoders:
            enc = table.encoder(name, weights)
            target += enc["flops"]
            trained += table.projector(projector, dims.hidden, enc["embed_dim"], grid=grid, hidden_dim=hidden_dim,
                                       kernel_size=kernel_size)
    work: Work = {("train", sit_precision): 3.0 * trained + extra_forwards * float(sit)}
    if target:
        work[("target", encoder_precision)] = target
    return work


def meanflow_forwards(meanflow: Any) -> float:
    """SiT forwards a MeanFlow step adds to flow matching's forward + backward: the JVP (counted as 2 forwards:
    primal and tangent, an assumption) and the guidance forwards of the folded CFG (1 with kappa 0, 2 with kappa >
    0, none without guidance)."""
    if meanflow is None:
        return 0.0
    guided = not (meanflow.omega == 1.0 and meanflow.kappa == 0.0)
    return 2.0 + (0.0 if not guided else (2.0 if meanflow.kappa > 0 else 1.0))


def sample_work(table: Any, *, size: str, input_size: int, in_channels: int, num_classes: int,
                patch_size: int | None, qk_norm: bool, num_steps: int, cfg_scale: float, latent: bool,
                extractor: str, precision: Mapping[str, str]) -> Work:
    """FLOPs of one evaluated sample: the sampler's forwards, the VAE decoder, the feature extractor."""
    sit = table.sit(size, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                    patch_size=patch_size, qk_norm=qk_norm)
    cfg_factor = 1.0 if cfg_scale == 1.0 else 2.0
    work: Work = {("sample", precision["sample"]): float(num_steps) * cfg_factor * sit}
    if latent:
        work[("decode", precision["decode"])] = float(table.sd_vae_decode(input_size))
    work[("extract", precision["extract"])] = float(_extractor_flops(table, extractor, num_classes))
    return work


def _extractor_flops(table: Any, extractor: str, num_classes: int) -> int:
    return table.inception() if extractor == "inception" else table.small_cnn(num_classes)


# ------------------------------------------------------------------------------------------------ datasets
def _synthetic(spec: str) -> dict[str, int]:
    from study.data import parse_synthetic_spec

    return parse_synthetic_spec(spec)


def _num_classes(dataset: str) -> int:
    return _synthetic(dataset)["classes"] if str(dataset).startswith("synthetic") else IMAGENET_CLASSES


def _split_size(dataset: str, split: str, limit: int | None) -> int:
    if str(dataset).startswith("synthetic"):
        n = _synthetic(dataset)["n"]
    else:
        n = IMAGENET_SPLITS.get(split, IMAGENET_SPLITS["val"])
    return min(n, limit) if limit else n


# ------------------------------------------------------------------------------------------------ calibration
@dataclass
class Calibration:
    """MFU measured on one GPU kind, per kind of work (records of benchmarks/gpu_check.py)."""

    path: str
    gpu: str
    device_name: str
    records: dict[str, list[dict[str, Any]]]  # kind -> [{mfu, model?, precision?, compile?, ...}]

    def mfu(self, kind: str, *, model: str | None = None, compile: bool | None = None,
            precision: str | None = None) -> tuple[float, str] | None:
        """The median measured MFU of the closest records (same model and compile flag, else same model, else all)."""
        group = {"target": "train"}.get(kind, kind)
        recs = [r for r in self.records.get(group, []) if r.get("mfu")]
        if precision is not None and group != "train":
            recs = [r for r in recs if r.get("precision") == precision] or recs
        if not recs:
            return None
        tiers = [("same model and compile", lambda r: r.get("model") == model and r.get("compile") == compile),
                 ("same model", lambda r: r.get("model") == model), ("all records", lambda r: True)]
        for label, keep in tiers:
            chosen = [r for r in recs if keep(r)]
            if chosen:
                how = label if model is not None else "all records"
                return statistics.median(r["mfu"] for r in chosen), f"measured ({how}, {len(chosen)} records)"
        return None  # pragma: no cover - the last tier keeps everything


def _record_mfu(rec: Mapping[str, Any], gpu: GpuSpec) -> float | None:
    """MFU of a record: images/s x seconds-at-peak per image (its work per precision over the peak)."""
    rate, work = rec.get("images_per_s"), rec.get("work")
    if not rate or not work:
        return None
    at_peak = sum(float(flops) / (gpu.peak_tflops[p] * 1e12) for p, flops in work.items() if p in gpu.peak_tflops)
    return rate * at_peak if at_peak > 0 else None


def load_calibration(gpu: str, path: str | Path | None = None) -> Calibration | None:
    """gpu_check output for ``gpu``: ``path``, else ``benchmarks/results/<gpu>.json`` (None when absent)."""
    explicit = path is not None
    file = Path(path) if explicit else CALIBRATION_DIR / f"{gpu}.json"
    if not file.is_file():
        if explicit:
            raise ValueError(f"calibration file {file} not found (write one with benchmarks/gpu_check.sh on that GPU)")
        return None
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"calibration file {file} is not JSON ({exc}); rerun benchmarks/gpu_check.sh") from None
    if data.get("schema") != CALIBRATION_SCHEMA:
        raise ValueError(f"{file}: schema {data.get('schema')!r}, expected {CALIBRATION_SCHEMA!r} (gpu_check output)")
    if data.get("dry_run"):
        raise ValueError(f"{file} is a --dry-run (CPU) output: its figures say nothing about a GPU")
    if data.get("gpu") != gpu:
        raise ValueError(f"{file} was measured on {data.get('gpu')!r} ({data.get('device_name')}), not {gpu!r}; "
                         f"pass --gpu {data.get('gpu')} or another calibration file")
    spec = GPUS[gpu]
    records: dict[str, list[dict[str, Any]]] = {}
    for kind in ("train", "sample", "decode", "extract", "encode"):
        rows = data.get(kind) or []
        rows = [rows] if isinstance(rows, dict) else rows
        kept = []
        for rec in rows:
            if rec.get("skipped") or rec.get("error"):
                continue
            mfu = _record_mfu(rec, spec)
            if mfu:
                kept.append({**rec, "mfu": mfu})
        records[kind] = kept
    return Calibration(str(file), gpu, str(data.get("device_name", "")), records)


class _Throughput:
    def __init__(self, settings: EstimateSettings, calibration: Calibration | None) -> None:
        self.gpu = GPUS[settings.gpu]
        self.default = settings.mfu if settings.mfu is not None else DEFAULT_MFU
        self.explicit_mfu = settings.mfu is not None
        self.calibration = calibration
        self.used: dict[str, dict[str, Any]] = {}

    def mfu(self, kind: str, precision: str, model: str | None = None, compile: bool | None = None) -> float:
        source = f"--mfu {self.default}" if self.explicit_mfu else f"default MFU {self.default}"
        mfu = self.default
        if self.calibration is not None and not self.explicit_mfu:
            hit = self.calibration.mfu(kind, model=model, compile=compile, precision=precision)
            if hit is not None:
                mfu, how = hit
                source = f"{how} in {self.calibration.path}"
        label = kind if model is None else f"{kind} {model}"
        peak = self.gpu.peak_tflops[precision]
        self.used.setdefault(f"{label} ({precision})", {
            "kind": kind, "what": KIND_DOC[kind], "model": model, "precision": precision, "peak_tflops": peak,
            "mfu": round(mfu, 4), "sustained_tflops": round(peak * mfu, 1), "source": source})
        return mfu

    def seconds(self, work: Work, model: str | None = None, compile: bool | None = None) -> float:
        total = 0.0
        for (kind, prec), flops in work.items():
            per_model = model if kind in ("train", "target", "sample") else None
            rate = self.gpu.peak_tflops[prec] * 1e12 * self.mfu(kind, prec, per_model, compile)
            total += flops / rate
        return total


# ------------------------------------------------------------------------------------------------ the estimate
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


def estimate_jobs(jobs: list[Job], settings: EstimateSettings | None = None, *, name: str | None = None,
                  table: Any = None) -> dict[str, Any]:
    """The estimate of ``jobs`` (a plan) as a JSON-able dict; see the module docstring."""
    from jobs.cost.flops import flop_table

    settings = settings or EstimateSettings()
    settings.check()
    table = table or flop_table()
    calibration = load_calibration(settings.gpu, settings.calibration) if settings.use_calibration else None
    thr = _Throughput(settings, calibration)
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
    target_paid: set[tuple[str, int]] = set()  # (group job, target): its shared encoder forward is counted once
    for key, members in runs.items():
        members.sort(key=lambda u: u.steps)
        first = members[0]
        cfg = _train_config(first, cfg_cache)
        geo = _geometry(cfg)
        model = first.job.model or cfg.model.size
        common = dict(size=cfg.model.size, input_size=geo["input_size"], in_channels=geo["in_channels"],
                      num_classes=geo["num_classes"], patch_size=cfg.model.patch_size, qk_norm=cfg.model.qk_norm)
        m = cfg.method
        per_image = train_work(table, **common, encoders=[(n, cfg.encoder.weights) for n in cfg.encoder.names],
                               align=m.align, projector=m.projector, hidden_dim=m.hidden_dim,
                               kernel_size=m.kernel_size, sit_precision=_prec_of(cfg.precision, cfg.tf32),
                               encoder_precision="bf16" if cfg.encoder.bf16 else ("tf32" if cfg.tf32 else "fp32"),
                               extra_forwards=meanflow_forwards(cfg.meanflow))
        if m.repae is not None:  # REPA-E: + the VAE, LPIPS, PatchGAN and the VAE's alignment pass
            from jobs.cost.repae import repae_train_flops

            trained = ("train", _prec_of(cfg.precision, cfg.tf32))
            sit = float(table.sit(**common))
            per_image[trained] += repae_train_flops(table, cfg, image_size=geo["image_size"], sit_flops=sit,
                                                    projector_flops=per_image[trained] / 3.0 - sit)
        per_image = {(k, settings.precision.get(k, p)): f for (k, p), f in per_image.items()}
        stops = [(first, settings.all_steps)] if settings.all_steps else [(u, u.steps) for u in members]
        done = 0
        for unit, target in stops:
            if target <= done:
                continue
            part = dict(per_image)
            if unit.group is not None:
                if (unit.group, target) in target_paid:  # a grouped run shares its group's encoder forward
                    part = {k: v for k, v in part.items() if k[0] != "target"}
                target_paid.add((unit.group, target))
            work: Work = {}
            _add(work, part, float(target - done) * cfg.batch_size)
            secs = thr.seconds(work, model=model, compile=cfg.compile)
            _book(hours, flops, by_model, by_encoder, "train", model, first.job.encoder, secs, work)
            done = target
        run_info[key] = {"common": common, "geo": geo, "model": model}
        by_model[model]["runs"] += 1
        by_model[model]["train_steps"] += done

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
        per_sample = sample_work(table, **info["common"], num_steps=int(fid["num_steps"]),
                                 cfg_scale=float(fid["cfg_scale"]), latent=info["geo"]["latent"],
                                 extractor=fid["extractor"], precision=prec)
        work = {}
        _add(work, per_sample, float(fid["n_samples"]))
        ref = fid.get("reference") or params.get("dataset")
        if not str(ref).endswith(".npz") and (str(ref), fid["extractor"]) not in refs_done:
            refs_done.add((str(ref), fid["extractor"]))
            n_ref = _split_size(str(ref), "train", None)
            ext = float(_extractor_flops(table, fid["extractor"], info["geo"]["num_classes"]))
            _add(work, {("extract", prec["extract"]): ext}, float(n_ref))
        secs = thr.seconds(work, model=info["model"])
        _book(hours, flops, by_model, by_encoder, "eval", info["model"], job.encoder, secs, work)

    # ---- scoring: encoder over the scored split (+ the train split for the probe), metrics, probe
    for job in (j for j in jobs if j.stage == "score"):
        p = _params(job)
        enc = table.encoder(job.encoder, p.get("encoder_weights", "pretrained"))
        n_eval = _split_size(p["dataset"], p.get("split", "val"), p.get("limit"))
        n_train = _split_size(p["dataset"], "train", p.get("limit")) if p.get("probe", True) else 0
        gram = 2.0 * enc["tokens"] ** 2 * enc["embed_dim"]
        work = {("encode", prec["encode"]): (n_eval + n_train) * float(enc["flops"]) + n_eval * gram}
        if n_train:
            probes = 2 if enc["has_cls"] else 1
            classes = _num_classes(p["dataset"])
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
        "assumptions": _assumptions(settings, thr, calibration, prec),
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


def _assumptions(settings: EstimateSettings, thr: _Throughput, calibration: Calibration | None,
                 prec: Mapping[str, str]) -> list[str]:
    gpu = GPUS[settings.gpu]
    peaks = ", ".join(f"{p} {v:g}" for p, v in gpu.peak_tflops.items())
    out = [
        f"GPU: {gpu.name}, dense peak TFLOP/s {peaks} (datasheet); sustained = peak x MFU per kind of work",
        (f"MFU: {thr.default} for every kind of work" + (" (--mfu)" if thr.explicit_mfu else
         " where no measurement exists (an assumption, not a measurement)")),
        (f"calibration: MFU measured by benchmarks/gpu_check.py in {calibration.path} ({calibration.device_name}) "
         "replaces the default for train, sample, decode, extract and encode where it has records"
         if calibration else f"calibration: none (no {CALIBRATION_DIR.name}/{settings.gpu}.json from "
                             "benchmarks/gpu_check.sh, or disabled)"),
        "FLOPs: torch.utils.flop_counter on the meta device (matmuls, convolutions, attention; element-wise ops, "
        "norms, the optimizer step and EMA are not counted), per image, from jobs/cost/flops.json",
        "train: steps x global batch x (3 x (SiT + projector forward) + frozen encoder forward), MeanFlow + 2 SiT "
        "forwards for the JVP (an assumption) + 1-2 for the folded CFG; GPU-hours do not "
        "depend on the GPU count (perfect data-parallel scaling, no communication or data-loading stalls)",
        "train, REPA-E runs (method.repae) add per image 3 x SD-VAE encoder + decoder, 3 x VGG16 (LPIPS), 6 x "
        "PatchGAN and 2 x (SiT up to the alignment depth + projector) forwards, at the SiT's precision "
        "(jobs/cost/repae.py)",
        "train precision: the SiT under bf16 autocast (precision auto on a GPU); the frozen encoder outside autocast "
        "(tf32 with the training's tf32: true, bf16 with encoder.bf16)",
        "train runs: jobs that differ only in their step target are one run (a continuation costs its extra steps); "
        "the runs of a grouped train job (executor.group_methods) share one encoder forward per step; periodic "
        "sample grids during training (16 images every sample_every steps) are not counted",
        f"eval: n_samples x num_steps SiT forwards (SDE and ODE both take num_steps forwards; x2 when cfg_scale != 1) "
        f"in {prec['sample']}, + SD-VAE decoder per sample ({prec['decode']}), + InceptionV3 at 299 px per sample "
        f"({prec['extract']}); ADM npz references cost nothing, a dataset reference is extracted once per sweep "
        "(its train split); precision/recall and Frechet distances are not counted",
        f"score: encoder forward ({prec['encode']}) over the scored split and the train split (the probe's "
        f"features), ImageNet sizes train {IMAGENET_SPLITS['train']:,} / val {IMAGENET_SPLITS['val']:,} for "
        "non-synthetic datasets (limit caps both), + one T x T x D Gram matrix per scored image",
        f"probe: {settings.probe_evaluations} L-BFGS loss+gradient evaluations per probe (4 N D C FLOPs each, N the "
        f"train images, C the classes; x2 with a CLS token), {prec['probe']}; an assumption: the code allows up "
        "to 7 fits x 375 evaluations",
        "analyze: CPU only, 0 GPU-hours",
    ]
    if settings.all_steps:
        out.append(f"--all-steps {settings.all_steps}: every training costed at {settings.all_steps} steps, "
                   "evaluations beyond it dropped and one at it added for every run that lacks it")
    if settings.precision:
        out.append("precision overrides: " + ", ".join(f"{k}={v}" for k, v in settings.precision.items()))
    return out


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


# ------------------------------------------------------------------------------------------------ text
def _h(x: float) -> str:
    if x == 0:
        return "0"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 1 else f"{x:.3f}" if x >= 0.01 else f"{x:.1e}"


def summary_text(est: Mapping[str, Any]) -> str:
    """A few lines: the total and the stages (what `sweep submit` prints first)."""
    s = est["by_stage"]
    cal = "calibrated" if est.get("calibration") else "uncalibrated"
    return (f"estimate ({est['gpu_name']}, {cal}): {_h(est['total_gpu_hours'])} GPU-hours = train "
            f"{_h(s['train'])} + eval {_h(s['eval'])} + score {_h(s['score'])} (repa-study sweep estimate for how)")


def estimate_text(est: Mapping[str, Any], top: int = 8) -> str:
    lines = [f"sweep {est['spec']}: {est['jobs']['train']} train jobs ({est['runs']} runs), {est['jobs']['eval']} "
             f"eval, {est['jobs']['score']} score, {est['jobs']['analyze']} analyze; GPU-hours on {est['gpu_name']}"
             + (f", every training at {est['all_steps']} steps" if est.get("all_steps") else "")]
    rows = [[m, _h(v["train"]), _h(v["eval"]), _h(v["total"]), str(v["runs"])] for m, v in est["by_model"].items()]
    s = est["by_stage"]
    rows.append(["scoring", "", "", _h(s["score"]), ""])
    rows.append(["total", _h(s["train"]), _h(s["eval"]), _h(est["total_gpu_hours"]), str(est["runs"])])
    head = ["model", "train", "eval", "total", "runs"]
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    fmt = "  ".join(f"{{:>{w}}}" if i else f"{{:<{w}}}" for i, w in enumerate(widths))
    lines += ["", fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    encs = list(est["by_encoder"].items())[:top]
    if encs:
        lines += ["", "most expensive encoders (train + eval + score): " + ", ".join(
            f"{e} {_h(v['total'])}" for e, v in encs)]
    if est.get("compare"):
        c = est["compare"]
        lines += ["", f"with every training at {c['all_steps']} steps: {_h(c['total_gpu_hours'])} GPU-hours; this plan "
                      f"is {c['ratio']:.3f} of it"]
    lines += ["", "throughput:"]
    for label, t in est["throughput"].items():
        lines.append(f"  {label}: {t['sustained_tflops']:g} TFLOP/s sustained = {t['peak_tflops']:g} peak x MFU "
                     f"{t['mfu']:g} ({t['source']})")
    lines += ["", "assumptions:", *(f"  - {a}" for a in est["assumptions"])]
    return "\n".join(lines)


def parse_precision(items: Iterable[str]) -> dict[str, str]:
    """``["sample=bf16", ...]`` -> ``{"sample": "bf16"}`` (checked by :meth:`EstimateSettings.check`)."""
    out = {}
    for item in items:
        kind, eq, prec = item.partition("=")
        if not eq:
            raise ValueError(f"--precision {item!r}: use KIND=DTYPE, e.g. sample=bf16")
        out[kind.strip()] = prec.strip()
    return out


def check_budget(spec: Any, max_gpu_hours: float | None, *, gpu: str = "h100") -> str:
    """The summary line `sweep submit` prints first; raises ValueError (nothing submitted) when the estimate
    exceeds ``max_gpu_hours``, or when there is a budget and the estimate cannot be made."""
    try:
        est = estimate_spec(spec, EstimateSettings(gpu=gpu))
    except Exception as exc:  # noqa: BLE001 - an estimate problem must not block a submission without a budget
        if max_gpu_hours is not None:
            raise ValueError(f"cannot estimate the sweep's cost ({type(exc).__name__}: {exc}), so --max-gpu-hours "
                             f"cannot be checked; nothing was submitted") from None
        return f"estimate unavailable ({type(exc).__name__}: {exc})"
    line = summary_text(est)
    if max_gpu_hours is not None and est["total_gpu_hours"] > max_gpu_hours:
        raise ValueError(f"{line}\nthe estimate exceeds --max-gpu-hours {max_gpu_hours:g}; nothing was submitted "
                         f"(lower the sweep, or raise the budget)")
    return line
