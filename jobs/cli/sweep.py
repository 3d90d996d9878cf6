"""`repa-study sweep plan|estimate|check|submit|status|cancel|collect`: plan, check, submit and follow a sweep."""
from __future__ import annotations

import json
import sys
from collections import Counter

import click

from jobs.cli.common import ROOT_OPTION, text_table
from jobs.states import PROBLEMS, RUNNING, STATUS_ORDER

SET_OPTION = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="override a spec value, e.g. --set steps=100 --set executor.local_workers=2")


def _load(spec: str, overrides: tuple[str, ...]):
    from jobs.spec import load_spec

    return load_spec(spec, overrides)


def status_text(rows: list[dict], show_all: bool = False) -> str:
    """A stage x state count table, then the jobs that need attention (or every job with ``show_all``)."""
    states = list(STATUS_ORDER)
    counts = Counter((r["stage"], r["state"]) for r in rows)
    seen = [s for s in states if any(k[1] == s for k in counts)] + sorted({k[1] for k in counts} - set(states))
    summary = []
    for stage in ("train", "eval", "score", "analyze"):
        n = sum(v for k, v in counts.items() if k[0] == stage)
        if n:
            summary.append({"stage": stage, **{s: counts.get((stage, s), 0) for s in seen}, "total": n})
    out = [text_table(summary, ["stage", *seen, "total"])]
    detail = rows if show_all else [r for r in rows if r["state"] in (*PROBLEMS, RUNNING)]
    if detail:
        out += ["", text_table(detail, ["state", "stage", "label", "job_id", "attempt", "scheduler_id", "log", "error"])]
    return "\n".join(out)


@click.group("sweep")
def sweep_group() -> None:
    """Plan, submit, watch, cancel and collect a sweep (a YAML spec; `smoke` and `paper` are shipped)."""


@sweep_group.command("plan")
@click.argument("spec")
@SET_OPTION
@click.option("--json", "as_json", is_flag=True, help="print the jobs as a JSON list")
def plan_cmd(spec: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Expand SPEC into jobs with stable ids (nothing is submitted)."""
    from jobs.plan import plan, plan_table

    jobs = plan(_load(spec, overrides))
    rows = plan_table(jobs)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(text_table([{**r, "deps": len(r["depends_on"])} for r in rows],
                      ["job_id", "stage", "encoder", "model", "method", "seed", "steps", "deps"]))
    counts = Counter(r["stage"] for r in rows)
    click.echo(f"\n{len(rows)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in ("train", "eval", "score", "analyze")))
    for stage, what in (("train", "training targets"), ("eval", "evaluated steps")):
        steps = Counter(r["steps"] for r in rows if r["stage"] == stage)
        if steps:
            click.echo(f"{what}: " + ", ".join(f"{n} x {s}" for s, n in sorted(steps.items())))


@sweep_group.command("estimate")
@click.argument("spec")
@SET_OPTION
@click.option("--gpu", type=click.Choice(["h100", "a100", "h200"]), default="h100", show_default=True)
@click.option("--mfu", type=float, default=None, help="sustained fraction of peak for every kind of work (default "
              "0.35, or what benchmarks/gpu_check.py measured on --gpu)")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="gpu_check output to calibrate with (default: jobs/cost/calibration/<gpu>.json when present)")
@click.option("--no-calibration", is_flag=True, help="ignore measured figures; use the default MFU")
@click.option("--all-steps", type=int, default=None, metavar="N",
              help="cost every training at N steps (e.g. 400000), to compare with the planned targets")
@click.option("--compare-all-steps", type=int, default=None, metavar="N",
              help="also cost the plan with every training at N steps and print the ratio (JSON: compare)")
@click.option("--precision", "precision", multiple=True, metavar="KIND=DTYPE",
              help="e.g. --precision sample=bf16 (kinds: train, target, vae-encode, sample, decode, extract, "
              "encode, probe)")
@click.option("--probe-evals", type=int, default=800, show_default=True,
              help="L-BFGS evaluations assumed per linear probe")
@click.option("--json", "as_json", is_flag=True, help="print the estimate as one JSON object")
def estimate_cmd(spec: str, overrides: tuple[str, ...], gpu: str, mfu: float | None, calibration: str | None,
                 no_calibration: bool, all_steps: int | None, compare_all_steps: int | None,
                 precision: tuple[str, ...], probe_evals: int, as_json: bool) -> None:
    """GPU-hours of SPEC per stage, model size and encoder, from counted FLOPs and a stated throughput."""
    from jobs.cost import EstimateSettings, estimate_spec, estimate_text, parse_precision

    settings = EstimateSettings(gpu=gpu, mfu=mfu, calibration=calibration, use_calibration=not no_calibration,
                                all_steps=all_steps, probe_evaluations=probe_evals,
                                precision=parse_precision(precision))
    est = estimate_spec(_load(spec, overrides), settings, compare_all_steps=compare_all_steps)
    click.echo(json.dumps(est, indent=1) if as_json else estimate_text(est))


@sweep_group.command("check")
@click.argument("spec")
@SET_OPTION
@click.option("--verify-images", is_flag=True, help="also decode every image of the image folders the jobs read (a "
              "first-open pass: every corrupt file reported now, not when a training first draws it)")
@click.option("--json", "as_json", is_flag=True, help="print {ok, problems, warnings, checked} as JSON")
def check_cmd(spec: str, overrides: tuple[str, ...], verify_images: bool, as_json: bool) -> None:
    """Check what SPEC's jobs need before submitting it: every training config builds, every encoder has its
    weights on disk, the datasets open, the FID reference is readable and of the right shapes, the scoring's masks.
    The same checks `sweep submit` runs (on the jobs it submits); nothing is written. Exit status 1 on a problem."""
    from jobs.preflight import preflight

    report = preflight(_load(spec, overrides), verify_images=verify_images)
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "problems": report.problems, "warnings": report.warnings,
                               "checked": report.checked}, indent=1))
    else:
        click.echo(report.text())
    if not report.ok:
        sys.exit(1)


@sweep_group.command("submit")
@click.argument("spec")
@SET_OPTION
@ROOT_OPTION
@click.option("--executor", type=click.Choice(["slurm", "local", "debug"]), default=None,
              help="default: the spec's executor.kind")
@click.option("--slurm-partition", default=None)
@click.option("--slurm-account", default=None)
@click.option("--slurm-qos", default=None)
@click.option("--slurm-constraint", default=None)
@click.option("--wait", is_flag=True, help="block until every job ends; exit status 1 if any failed")
@click.option("--max-gpu-hours", type=float, default=None,
              help="refuse (submit nothing) when the sweep's estimate exceeds this many GPU-hours")
@click.option("--gpu", type=click.Choice(["h100", "a100", "h200"]), default="h100", show_default=True,
              help="GPU the estimate assumes")
@click.option("--trust-empty-queue", is_flag=True, help="squeue lists no job at all: believe it, and resubmit the "
              "jobs recorded as queued (default: leave them alone and warn)")
@click.option("--no-preflight", is_flag=True, help="skip the checks of `sweep check` (not recommended)")
def submit_cmd(spec: str, overrides: tuple[str, ...], root: str | None, executor: str | None,
               slurm_partition: str | None, slurm_account: str | None, slurm_qos: str | None,
               slurm_constraint: str | None, wait: bool, max_gpu_hours: float | None, gpu: str,
               trust_empty_queue: bool, no_preflight: bool) -> None:
    """Submit SPEC's unfinished jobs (finished ones are skipped, unfinished trainings resume).

    The sweep's estimate (`sweep estimate`) is printed first; with --max-gpu-hours a larger one is refused. The
    jobs' inputs are checked first (`sweep check`): on any problem nothing is written or submitted."""
    from jobs.cost import check_budget
    from jobs.submit import submit_sweep, sweep_status

    cfg = _load(spec, overrides)
    click.echo(check_budget(cfg, max_gpu_hours, gpu=gpu))
    slurm = {"partition": slurm_partition, "account": slurm_account, "qos": slurm_qos,
             "constraint": slurm_constraint, "trust_empty_queue": trust_empty_queue}
    sub = submit_sweep(cfg, root, executor=executor, slurm=slurm, wait=wait, check=not no_preflight)
    click.echo(f"sweep {sub.sweep}: {len(sub.jobs)} jobs, {len(sub.skipped_done)} already done, "
               f"{len(sub.skipped_active)} still queued, {len(sub.submitted)} submitted ({sub.executor})")
    if sub.final is not None:
        click.echo(status_text(sweep_status(cfg, root)))
        if sub.failed:
            click.echo(f"{len(sub.failed)} job(s) did not finish", err=True)
            sys.exit(1)


@sweep_group.command("status")
@click.argument("spec")
@SET_OPTION
@ROOT_OPTION
@click.option("--all", "show_all", is_flag=True, help="list every job, not only those needing attention")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(spec: str, overrides: tuple[str, ...], root: str | None, show_all: bool, as_json: bool) -> None:
    """Stages and states (done, running, pending, failed with log path and last error line)."""
    from jobs.submit import sweep_status

    rows = sweep_status(_load(spec, overrides), root)
    click.echo(json.dumps(rows, indent=1) if as_json else status_text(rows, show_all))


@sweep_group.command("cancel")
@click.argument("spec")
@SET_OPTION
@ROOT_OPTION
def cancel_cmd(spec: str, overrides: tuple[str, ...], root: str | None) -> None:
    """Cancel SPEC's queued and running jobs (scancel, or stop the local driver)."""
    from jobs.submit import cancel_sweep

    ids = cancel_sweep(_load(spec, overrides), root)
    click.echo(f"cancelled {len(ids)} job(s)")


@sweep_group.command("collect")
@click.argument("spec")
@SET_OPTION
@ROOT_OPTION
def collect_cmd(spec: str, overrides: tuple[str, ...], root: str | None) -> None:
    """Write one compacted parquet per table (SPEC's rows) plus a summary, under ROOT/collected/NAME."""
    from jobs.submit import collect_sweep

    for name, path in collect_sweep(_load(spec, overrides), root).items():
        click.echo(f"{name}: {path}")


def register(cli: click.Group) -> None:
    cli.add_command(sweep_group)
