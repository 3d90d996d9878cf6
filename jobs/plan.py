"""Expand a sweep spec into jobs with stable ids.

A job id is ``config_hash`` of what determines the job's result (its stage, inputs and settings; never its
resources or the executor), so the same spec always gives the same ids, a changed value that matters gives a new
id, and a resubmission recognises the jobs that already finished. A training's id leaves out its length (its
target ``steps`` and kept steps): raising the target resumes the same run, and its evaluations keep their ids.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_serializer, model_validator

import encoders
from encoders import EncoderWeights
from jobs.spec import FidSettings, Resources, SweepSpec
from results import NO_ENCODER
from study.config import StrictModel, TrainConfig, build_train_config, config_hash, default_base, method_aligns

__all__ = ["Job", "plan", "plan_table", "TrainParams", "TrainGroupParams", "EvalParams", "ScoreParams",
           "AnalyzeParams", "training_runs"]


# ---------------------------------------------------------------------------------------------- stage inputs
class TrainParams(StrictModel):
    """What determines a training run's trajectory (hashed into its job id) and its length (``steps``, the
    ``ckpt_keep`` steps: not hashed, so raising a target resumes the same run); :meth:`config` is its typed
    training config."""

    NOT_HASHED: ClassVar[Any] = {"steps", "ckpt_keep"}

    dataset: str
    encoder: str
    encoder_weights: EncoderWeights
    model: str
    model_size: str
    model_overrides: list[str]
    method: str
    base: str
    seed: int
    steps: int
    train_overrides: list[str]
    ckpt_keep: list[int]

    def config(self) -> TrainConfig:
        """The sweep point's training config: the base preset, the method, this point's values, the sweep's
        overrides, then the model size's (``study.config.train.build_train_config``)."""
        return build_train_config(
            self.method, self.model_size, self.encoder, steps=self.steps, seed=self.seed, data=self.dataset,
            base=self.base, overrides=[f"encoder.weights={self.encoder_weights}", f"ckpt_keep={self.ckpt_keep}",
                                       *self.train_overrides, *self.model_overrides])


class TrainGroupParams(StrictModel):
    """Several trainings in one job (``executor.group_methods``): member job id -> its inputs. Each member keeps
    its own run directory (``ROOT/jobs/<member id>``), state and evaluations; the group shares the data pipeline
    and the encoder forward (``study.training.loop.train_group``)."""

    NOT_HASHED: ClassVar[Any] = {"runs": {"__all__": TrainParams.NOT_HASHED}}
    runs: dict[str, TrainParams] = Field(..., min_length=2)


class EvalParams(StrictModel):
    """An evaluation: (run, step, FID settings); the protocol's name is a label of the settings, not hashed."""

    NOT_HASHED: ClassVar[Any] = {"fid": {"protocol"}}
    train_job: str
    step: int
    dataset: str
    fid: FidSettings


class ScoreParams(StrictModel):
    """An encoder's scoring (``study.scoring.score_encoder``). ``masks`` and ``srss_min_fraction`` are left out of
    dumps (so of the id) at their defaults: a score job that passes neither keeps the id it had before they
    existed."""

    encoder: str
    encoder_weights: EncoderWeights
    dataset: str
    split: str
    limit: int | None
    probe: bool
    masks: str | None = None
    srss_min_fraction: float = 0.0

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler):
        data = handler(self)
        if data.get("masks", 0) is None:
            data.pop("masks")
        if data.get("srss_min_fraction") == 0.0:
            data.pop("srss_min_fraction")
        return data


class AnalyzeParams(StrictModel):
    sweep: str
    inputs: list[str]
    reference: str | None


PARAMS: dict[str, type[StrictModel]] = {"train": TrainParams, "eval": EvalParams, "score": ScoreParams,
                                        "analyze": AnalyzeParams}


def _params_model(stage: str, params: dict[str, Any]) -> type[StrictModel]:
    return TrainGroupParams if stage == "train" and "runs" in params else PARAMS[stage]


class Job(StrictModel):
    job_id: str
    stage: Literal["train", "eval", "score", "analyze"]
    encoder: str | None = None
    model: str | None = None
    method: str | None = None
    seed: int | None = None
    steps: int | None = Field(None, description="training steps (train) or the evaluated step (eval)")
    depends_on: list[str] = Field(default_factory=list)
    params: TrainParams | TrainGroupParams | EvalParams | ScoreParams | AnalyzeParams = Field(
        ..., description="the stage's inputs (what the id hashes, but for their NOT_HASHED fields)")
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="before")
    @classmethod
    def _params_of_stage(cls, data: Any) -> Any:
        """Parse ``params`` as the model of this job's stage (never as another stage's)."""
        if isinstance(data, dict) and isinstance(data.get("params"), dict) and data.get("stage") in PARAMS:
            data = {**data, "params": _params_model(data["stage"], data["params"]).model_validate(data["params"])}
        return data

    @property
    def label(self) -> str:
        parts = [self.stage, self.encoder, self.model, self.method,
                 None if self.seed is None else f"seed{self.seed}", None if self.steps is None else f"{self.steps}"]
        return " ".join(str(p) for p in parts if p is not None)


def _job(stage: str, params: StrictModel, resources: Resources, **fields: Any) -> Job:
    identity = params.model_dump(mode="json", exclude=getattr(params, "NOT_HASHED", None))
    job_id = f"{stage}-{config_hash({'stage': stage, **identity})}"
    return Job(job_id=job_id, stage=stage, params=params, resources=resources, **fields)


def training_runs(spec: SweepSpec) -> list[tuple[str, str, str, int, int, list[int]]]:
    """Every run of the spec once: ``(model, encoder, method, seed, target steps, evaluated steps)``.

    A method that aligns to no encoder (``vanilla``) has one run per model and seed, its encoder
    :data:`results.NO_ENCODER`. The grid ``models x encoders x methods x seeds`` trains to ``steps`` and evaluates ``eval_steps``; each
    ``extend`` entry raises the target of the runs it selects (the highest wins) and adds its eval steps; an entry's
    encoders or methods outside the spec's lists add runs, evaluated at ``eval_steps`` and its own.
    """
    runs: dict[tuple[str, str, str, int], tuple[int, set[int]]] = {}
    aligns = {m: method_aligns(m) for m in [*spec.methods, *(m for ext in spec.extend for m in ext.methods or ())]}
    for model in spec.models:
        for encoder in spec.encoders:
            for method in spec.methods:
                for seed in spec.seeds:
                    key = (model, encoder if aligns[method] else NO_ENCODER, method, seed)
                    runs[key] = (spec.steps, set(spec.eval_steps))
    for ext in spec.extend:
        for model in ext.models or spec.models:
            for encoder in ext.encoders or spec.encoders:
                for method in ext.methods or spec.methods:
                    for seed in spec.seeds:
                        key = (model, encoder if aligns[method] else NO_ENCODER, method, seed)
                        steps, evals = runs.get(key, (spec.steps, set(spec.eval_steps)))
                        runs[key] = (max(steps, ext.steps), evals | set(ext.eval_steps))
    # the spec's model order first (one SLURM array per model and stage), then insertion order
    order = {m: i for i, m in enumerate(spec.models)}
    keys = sorted(runs, key=lambda k: order[k[0]])
    return [(*k, runs[k][0], sorted(runs[k][1])) for k in keys]


def _scoring_encoders(spec: SweepSpec) -> list[str]:
    chosen = spec.scoring.encoders
    if chosen == "trained":
        return list(spec.encoders)
    if chosen == "all":
        # the catalog's published encoders (local ones are the miniature's, trained for synthetic data)
        known = [n for n, s in encoders.load_catalog().items() if s.source != "local"]
        # the catalog's entries plus any trained variants (e.g. NAME@clsmix=A) not already listed
        return list(known) + [e for e in spec.encoders if e not in known]
    return list(chosen)


def plan(spec: SweepSpec) -> list[Job]:
    """All jobs of the sweep, in stage order (train, eval, score, analyze)."""
    trains: list[Job] = []
    evals: list[Job] = []
    for model_name, encoder, method, seed, steps, eval_steps in training_runs(spec):
        size = spec.models[model_name]
        params = TrainParams(
            dataset=spec.dataset, encoder=encoder, encoder_weights=spec.encoder_weights,
            model=model_name, model_size=size.size or model_name,
            model_overrides=list(size.train_overrides), method=method,
            base=spec.train_base or default_base(spec.dataset), seed=seed, steps=steps,
            train_overrides=list(spec.train_overrides) + (["encoder.targets=cache"] if encoder in spec.cached_targets
                                                          else []), ckpt_keep=eval_steps)
        train = _job("train", params, size.train, encoder=encoder, model=model_name,
                     method=method, seed=seed, steps=steps)
        trains.append(train)
        for step in eval_steps:
            ident = EvalParams(train_job=train.job_id, step=step, dataset=spec.dataset, fid=spec.fid)
            evals.append(_job("eval", ident, size.eval, encoder=encoder, model=model_name,
                              method=method, seed=seed, steps=step, depends_on=[train.job_id]))
    if spec.executor.group_methods:
        trains, evals = _group_methods(trains, evals, sizes=spec.executor.group_sizes)
    scores: list[Job] = []
    if spec.scoring.enabled:
        for encoder in _scoring_encoders(spec):
            ident = ScoreParams(encoder=encoder, encoder_weights=spec.encoder_weights,
                                dataset=spec.scoring.dataset or spec.dataset, split=spec.scoring.split,
                                limit=spec.scoring.limit, probe=spec.scoring.probe, masks=spec.scoring.masks,
                                srss_min_fraction=spec.scoring.min_mask_fraction)
            scores.append(_job("score", ident, spec.scoring.resources, encoder=encoder))
    jobs = trains + evals + scores
    if spec.analyze.enabled:
        upstream = sorted(j.job_id for j in evals + scores)
        ident = AnalyzeParams(sweep=spec.name, inputs=upstream, reference=spec.analyze.reference)
        jobs.append(_job("analyze", ident, spec.analyze.resources, depends_on=upstream))
    ids = [j.job_id for j in jobs]
    if len(set(ids)) != len(ids):  # pragma: no cover - would mean two identical jobs in one spec
        raise RuntimeError("plan produced duplicate job ids; the spec lists the same job twice")
    return jobs


def _group_methods(trains: list[Job], evals: list[Job], *, sizes: bool = False) -> tuple[list[Job], list[Job]]:
    """One train job per (model, encoder, seed, target steps) holding its methods' trainings (a group trains to
    one target); with ``sizes`` one per (encoder, seed, target) for every model size, on the resources of its
    largest member. Evaluations keep their ids (they name the member run) and wait for the group job."""
    groups: dict[tuple[Any, ...], list[Job]] = {}
    for job in trains:
        groups.setdefault((None if sizes else job.model, job.encoder, job.seed, job.steps), []).append(job)
    out, carrier = [], {}
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        first = members[0]
        biggest = max(members, key=lambda m: (m.resources.gpus * m.resources.nodes, m.resources.mem_gb)).resources
        models = list(dict.fromkeys(m.model for m in members))
        group = _job("train", TrainGroupParams(runs={m.job_id: m.params for m in members}), biggest,
                     encoder=first.encoder, model="+".join(models) if len(models) > 1 else first.model,
                     method="+".join(dict.fromkeys(m.method for m in members)), seed=first.seed, steps=first.steps)
        out.append(group)
        carrier.update({m.job_id: group.job_id for m in members})
    evals = [e.model_copy(update={"depends_on": [carrier.get(d, d) for d in e.depends_on]}) for e in evals]
    return out, evals


def plan_table(jobs: list[Job]) -> list[dict[str, Any]]:
    """The JSON-able summary `sweep plan --json` prints: one object per job."""
    return [{"job_id": j.job_id, "stage": j.stage, "encoder": j.encoder, "model": j.model, "method": j.method,
             "seed": j.seed, "steps": j.steps, "depends_on": j.depends_on,
             "resources": j.resources.model_dump()} for j in jobs]
