"""`repa-study run`: the embedded default, end to end (plan and run the miniature sweep locally, analyze, summarize)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click


def summary_text(store, jobs) -> str:
    """The end-of-run table: quality per encoder x method at each evaluated step, then the encoder scores."""
    import pandas as pd

    from analysis.comparable import quality_columns
    from analysis.display import for_display

    ids = {j.job_id for j in jobs}
    out = []
    gen = store.read("generation")
    if not gen.empty and "job_id" in gen.columns:
        gen = gen[gen["job_id"].isin(ids)]
    quality = next(iter(quality_columns(gen)), None)  # the summary shows fid, else the first fd_<extractor>
    if quality:
        table = gen.pivot_table(index=["encoder", "model", "step"], columns="method", values=quality, aggfunc="mean")
        with pd.option_context("display.width", 200, "display.max_rows", 200, "display.float_format", "{:.3f}".format):
            out += [f"Generation quality ({quality}, lower is better) per encoder, model, step and method:",
                    table.to_string(), ""]
    enc = store.read("encoders")
    if not enc.empty and "job_id" in enc.columns:
        enc = enc[enc["job_id"].isin(ids)]
    cols = [c for c in ("encoder", "lds", "cds", "srss", "rmsc", "lp_top1") if c in enc.columns]
    if not enc.empty and cols:
        with pd.option_context("display.width", 200, "display.float_format", "{:.4f}".format):
            out += ["Encoder scores (spatial metrics, linear-probe top-1 in %):",
                    for_display(enc[cols]).sort_values("encoder").to_string(index=False), ""]
    return "\n".join(out) if out else "(no result rows)"


def findings_text(report: Path | None) -> str:
    """The report's findings (``summary.json`` beside the HTML report), one bullet each."""
    import json

    summary = report.parent / "summary.json" if report is not None else None
    if summary is None or not summary.is_file():
        return ""
    found = json.loads(summary.read_text()).get("findings") or []
    return ("Findings at this scale:\n" + "\n".join(f"  - {f}" for f in found) + "\n") if found else ""


def _shipped_encoders(names: list[str]) -> list[str]:
    """The local entries among ``names`` (variants resolve to their base) that load the package's weights."""
    import encoders

    bases = dict.fromkeys(encoders.get_spec(n).name for n in names)
    return [b for b in bases if encoders.uses_shipped_weights(encoders.get_spec(b))]


def _report_path(store, jobs) -> Path | None:
    analyze = [j.job_id for j in jobs if j.stage == "analyze"]
    runs = store.read("runs")
    if not analyze or runs.empty or "report" not in runs.columns:
        return None
    rows = runs[runs["job_id"].isin(analyze) & runs["report"].notna()]
    if rows.empty:
        return None
    path = Path(str(rows["report"].iloc[-1]))
    html = sorted(path.glob("*.html")) if path.is_dir() else []
    return html[0] if html else path


@click.command("run")
@click.argument("spec_arg", metavar="[SPEC]", required=False)
@click.option("--spec", "spec_name", default=None,
              help="sweep spec to run locally (a shipped name or a YAML path; default: mini-quick)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a spec value, e.g. --set steps=50 --set 'encoders=[dinov2-vit-b]'")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="results root (default: $REPA_STUDY_ROOT or ./runs)")
@click.option("--workers", type=int, default=None, help="jobs at once (default: the spec's executor.local_workers)")
@click.option("--executor", type=click.Choice(["local", "debug"]), default="local", show_default=True,
              help="local: background processes with dependencies; debug: in this process, one after another")
def run_cmd(spec_arg: str | None, spec_name: str | None, overrides: tuple[str, ...], root: str | None,
            workers: int | None, executor: str) -> None:
    """Run the embedded default study end to end on this machine (no cluster, no GPU, no downloads).

    SPEC (or --spec) is a shipped sweep name or a YAML path; default ``mini-quick``, the study in miniature within
    12 minutes on 2 CPU cores: tiny encoders pretrained on synthetic shapes (supervised, masked-patch, random init,
    CLS-mixing variants; their weights ship with the package), a tiny SiT trained vanilla, with REPA and with
    iREPA, two seeds, the small-data Frechet distance, spatial metrics and linear probes: a pipeline demo that
    cannot separate the paper's two hypotheses. ``mini`` (44 minutes measured) can: eight controlled encoders whose LP
    and spatial metrics vary independently beside the trained ones, three seeds, an 8x8 token grid, 800 steps and
    the layout-sensitive Frechet distance. It pretrains the sweep's local encoders that have no weights, runs the jobs on the
    local executor, analyzes them, then prints the findings, a summary table and where the report is. ``smoke`` is
    the 3-minute pipeline check.
    Re-running resumes: finished jobs are skipped.
    """
    from jobs.cli.sweep import status_text
    from jobs.plan import plan
    from jobs.spec import load_spec
    from jobs.submit import submit_sweep, sweep_status
    from results import ResultStore
    from study.pretrain import pretrain_missing

    if spec_arg and spec_name and spec_arg != spec_name:
        raise click.UsageError(f"two specs given ({spec_arg!r} and --spec {spec_name!r}): give one")
    extra = list(overrides) + ([f"executor.local_workers={workers}"] if workers else [])
    spec = load_spec(spec_arg or spec_name or "mini-quick", extra)
    store = ResultStore(root)
    jobs = plan(spec)
    click.echo(f"repa-study run: sweep {spec.name!r} ({spec.description or 'no description'})\n"
               f"  {len(jobs)} jobs on the {executor} executor, results in {store.root.resolve()}", err=True)
    t0 = time.perf_counter()
    if spec.encoder_weights == "pretrained":
        names = list(spec.encoders) + [e for ext in spec.extend for e in ext.encoders or ()]
        trained = pretrain_missing(names, workers=spec.executor.local_workers)
        if trained:
            click.echo(f"  pretrained {', '.join(trained)} in {time.perf_counter() - t0:.0f} s", err=True)
        shipped = _shipped_encoders(names)
        if shipped:
            click.echo(f"  {', '.join(shipped)}: the weights shipped with the package (the ones the README's figures "
                       f"were measured with; `repa-study encoders pretrain NAME --force` trains your own)", err=True)
    sub = submit_sweep(spec, store.root, executor=executor, wait=True)
    elapsed = time.perf_counter() - t0
    click.echo("")
    click.echo(summary_text(store, jobs))
    report = _report_path(store, jobs)
    click.echo(findings_text(report))
    click.echo(f"Report: {report}" if report else "Report: none (the analysis did not finish)")
    click.echo(f"Finished in {elapsed / 60:.1f} min: {len(jobs) - len(sub.failed)} of {len(jobs)} jobs done"
               f" ({len(sub.skipped_done)} were already done).")
    if sub.failed:
        click.echo(status_text(sweep_status(spec, store.root)), err=True)
        click.echo(f"{len(sub.failed)} job(s) failed; fix the cause and run the same command again to resume.",
                   err=True)
        sys.exit(1)


def register(cli: click.Group) -> None:
    cli.add_command(run_cmd)
