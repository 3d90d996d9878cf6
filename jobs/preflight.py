"""Preflight: check what a sweep's jobs will need before any of them is queued, and report every problem at once.

``sweep submit`` runs :func:`preflight` on the jobs it is about to submit and refuses, writing nothing, when it finds
a problem (:class:`PreflightError`); ``sweep check SPEC`` prints the same report for the whole plan without
submitting. What is checked, offline and without reading the data:

- every training config builds (``train_overrides``, model sizes, methods: what each train job will load);
- every encoder a training aligns to or the scoring scores has its pretrained weights on disk
  (``encoders.find_weights``; a ``source: local`` entry not trained yet is trained by the jobs themselves);
- the SD-VAE of latent trainings is on disk, and a dataset without stored latents is flagged (each step then
  encodes its images);
- every dataset opens: the training data, the scoring splits (and the train split for the probe), an FID reference
  given as a dataset; an image folder is checked without listing its images (``verify_images=True``: every image
  is decoded, a first-open pass that reports every corrupt one);
- the FID reference is readable, finite and of the extractor's shapes, and Inception's weights are on disk;
- the masks the scoring needs (:func:`mask_problems`).
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from jobs.executors import SubmitError
from jobs.plan import Job, TrainGroupParams, TrainParams
from jobs.spec import SweepSpec, scoring_mask_check

__all__ = ["PreflightReport", "PreflightError", "preflight", "mask_problems"]


@dataclasses.dataclass
class PreflightReport:
    """``problems`` stop a submission; ``warnings`` are printed; ``checked`` says what was looked at."""

    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    checked: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [f"checked: {', '.join(self.checked)}" if self.checked else "checked: nothing (no job to submit)"]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.problems:
            lines += [f"{len(self.problems)} problem(s); nothing was submitted:"] + [f"  - {p}" for p in self.problems]
        else:
            lines.append("no problems found")
        return "\n".join(lines)


class PreflightError(SubmitError):
    """The preflight found problems: nothing was written or submitted; ``.report`` lists them all."""

    def __init__(self, report: PreflightReport):
        self.report = report
        super().__init__(report.text())


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}" if text else type(exc).__name__


def _trainings(jobs: Iterable[Job]) -> list[tuple[str, TrainParams]]:
    """(label, params) of every training the jobs run, a group's members each."""
    out = []
    for job in jobs:
        if job.stage != "train":
            continue
        if isinstance(job.params, TrainGroupParams):
            out += [(f"{mid} ({p.model} {p.encoder} {p.method} seed{p.seed})", p) for mid, p in job.params.runs.items()]
        else:
            out.append((f"{job.job_id} ({job.label})", job.params))
    return out


def _configs(jobs: list[Job], report: PreflightReport) -> list:
    """Every training config, built as the train jobs will build them; one problem per distinct error."""
    cfgs, failed = [], defaultdict(list)
    for label, params in _trainings(jobs):
        try:
            cfgs.append(params.config())
        except Exception as exc:  # noqa: BLE001 - ConfigError, ValidationError, ValueError: all are the job's end
            failed[_first_line(exc)].append(label)
    for error, labels in failed.items():
        more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
        report.problems.append(f"{len(labels)} training config(s) do not load ({', '.join(labels[:3])}{more}): "
                               f"{error}")
    if cfgs or failed:
        report.checked.append(f"{len(cfgs) + sum(map(len, failed.values()))} training configs")
    return cfgs


def _encoders(cfgs: list, jobs: list[Job], report: PreflightReport) -> None:
    import encoders

    wanted = {(name, cfg.encoder.weights) for cfg in cfgs if cfg.method.align and cfg.encoder.targets == "online"
              for name in cfg.encoder.names}
    wanted |= {(j.params.encoder, j.params.encoder_weights) for j in jobs if j.stage == "score"}
    pretrained = sorted({encoders.get_spec(n).name for n, w in wanted if w == "pretrained"})
    for name in pretrained:
        spec = encoders.get_spec(name)
        found = encoders.find_weights(spec)
        if spec.source == "local" and spec.trained_here:
            if not found.found:
                report.warnings.append(f"encoder {name} is not trained here yet: the first job that needs it trains "
                                       f"it (`repa-study encoders pretrain {name}` does it now)")
        elif not found.found:
            report.problems.append(f"encoder {name}: no pretrained weights on this machine (looked for {found.where})"
                                   f"; `repa-study encoders check --weights {name}` says where they go")
    if pretrained:
        report.checked.append(f"weights of {len(pretrained)} encoder(s)")


def _target_caches(cfgs: list, report: PreflightReport) -> None:
    """The encoder-target caches that trainings with ``encoder.targets=cache`` read instead of running the encoder
    (written beforehand by ``repa-study data encode``; no sweep stage writes them)."""
    from study.data import TargetCacheError, open_target_caches

    wanted = {(cfg.data.spec, cfg.data.split, tuple(cfg.encoder.names), cfg.encoder.weights, cfg.encoder.bf16)
              for cfg in cfgs if cfg.method.align and cfg.encoder.targets == "cache"}
    for spec, split, names, weights, bf16 in sorted(wanted):
        if not str(spec).startswith("synthetic") and not Path(spec).expanduser().exists():
            continue  # the dataset check reports a missing dataset
        try:
            open_target_caches(spec, split, list(names), weights, bf16)
        except TargetCacheError as exc:
            report.problems.append(str(exc))
    if wanted:
        report.checked.append(f"{len(wanted)} encoder-target cache set(s)")


def _vae(cfgs: list, report: PreflightReport) -> None:
    """The SD-VAE that latent trainings (and their evaluations' decoding) load, and whether the data stores
    latents."""
    latent = [cfg for cfg in cfgs if cfg.data.codec not in ("identity", "pixel") and cfg.method.repae is None]
    if not latent:
        return
    from huggingface_hub import try_to_load_from_cache

    import encoders
    from study.data import SDVAECodec, stored_latents

    repo = SDVAECodec().repo_id
    local = encoders.weights_dir() / repo
    cached = (isinstance(try_to_load_from_cache(repo, "config.json"), str)
              and any(isinstance(try_to_load_from_cache(repo, f), str)
                      for f in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")))
    if not (local.is_dir() or cached):
        report.problems.append(f"the SD-VAE {repo} (data.codec={latent[0].data.codec}) is not on this machine: "
                               f"run `huggingface-cli download {repo}` where there is internet and copy the HF cache, "
                               f"or put the diffusers folder at {local}")
    for spec in sorted({cfg.data.spec for cfg in latent}):
        if stored_latents(spec) is False:
            report.warnings.append(f"dataset {spec} stores no SD-VAE latents: every training step encodes its images "
                                   f"with the VAE (`repa-study data prepare` stores them once)")
    report.checked.append("the SD-VAE")


def _open(spec: str, split: str, what: str, report: PreflightReport, verify: bool) -> bool | None:
    """Open ``spec``'s ``split`` (without reading images unless ``verify``); whether it has masks, None if not."""
    from study.data import DatasetError, check_dataset, open_dataset, verify_images

    try:
        has_masks = check_dataset(spec, split)
    except (DatasetError, ValueError, OSError) as exc:
        report.problems.append(f"{what} {spec} ({split}): {exc}")
        return None
    if verify and not spec.startswith("synthetic") and hasattr(ds := open_dataset(spec, split), "samples"):
        bad = verify_images(p for p, _ in ds.samples)
        if bad:
            listed = "; ".join(f"{p}: {why}" for p, why in bad[:20])
            report.problems.append(f"{what} {spec} ({split}): {len(bad)} image(s) do not decode: {listed}"
                                   + (f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""))
    return has_masks


def mask_problems(spec: SweepSpec, score_jobs: list[Job], has_masks: dict[tuple[str, str], bool | None],
                  report: PreflightReport) -> None:
    """The masks the scoring needs: SRSS reads foreground masks of the scored split. A sweep naming them
    (``scoring.masks``) must find them, with images that meet ``scoring.min_mask_fraction``: a problem otherwise.
    Without the setting, the scored data's own masks serve (synthetic data carries them; an image folder's
    ``masks/``), and none means SRSS is empty: a warning."""
    if not score_jobs:
        return
    if spec.scoring.masks:
        check = scoring_mask_check(spec, count=False)
        if not check.ok:
            report.problems.append(f"scoring masks: {check.problem} ({check.summary()})")
        elif check.n_images is None:
            report.warnings.append(check.summary())
        else:
            report.checked.append("scoring masks")
        return
    for job in score_jobs:
        p = job.params
        if has_masks.get((p.dataset, p.split)) is False:
            report.warnings.append(f"scoring dataset {p.dataset} ({p.split}) has no masks: SRSS will be empty "
                                   f"(set scoring.masks to ImageNet-S masks, or put them at "
                                   f"{Path(p.dataset) / 'masks'})")
            return


def _datasets(spec: SweepSpec, cfgs: list, jobs: list[Job], report: PreflightReport, verify: bool) -> None:
    needed: dict[tuple[str, str], str] = {}
    for cfg in cfgs:
        needed.setdefault((cfg.data.spec, cfg.data.split), "training dataset")
    scores = [j for j in jobs if j.stage == "score"]
    for job in scores:
        needed.setdefault((job.params.dataset, job.params.split), "scoring dataset")
        if job.params.probe:
            needed.setdefault((job.params.dataset, "train"), "scoring dataset (probe)")
    has_masks = {key: _open(key[0], key[1], what, report, verify) for key, what in needed.items()}
    if needed:
        report.checked.append(f"{len(needed)} dataset split(s)" + (" (every image decoded)" if verify else ""))
    mask_problems(spec, scores, has_masks, report)


def _references(jobs: list[Job], report: PreflightReport) -> None:
    from study.evaluation import check_reference

    refs = {(j.params.fid.reference or j.params.dataset, j.params.fid.extractor) for j in jobs if j.stage == "eval"}
    for ref, extractor in sorted(refs):
        report.problems += check_reference(ref, extractor)
    if refs:
        report.checked.append(f"{len(refs)} FID reference(s)")


def preflight(spec: SweepSpec, jobs: list[Job] | None = None, *, verify_images: bool = False) -> PreflightReport:
    """Check what ``jobs`` (default: the whole plan) will need (see the module docstring); writes nothing."""
    from jobs.plan import plan

    jobs = plan(spec) if jobs is None else jobs
    report = PreflightReport()
    cfgs = _configs(jobs, report)
    _encoders(cfgs, jobs, report)
    _target_caches(cfgs, report)
    _vae(cfgs, report)
    _datasets(spec, cfgs, jobs, report, verify_images)
    _references(jobs, report)
    return report
