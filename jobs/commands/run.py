"""`repa-study run`: the embedded default, end to end (plan and run the smoke sweep locally, analyze, summarize)."""
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
@click.option("--spec", "spec_name", default="smoke", show_default=True,
              help="sweep spec to run locally (a shipped name or a YAML path)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a spec value, e.g. --set steps=50 --set 'encoders=[dinov2-vit-b]'")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="results root (default: $REPA_STUDY_ROOT or ./runs)")
@click.option("--workers", type=int, default=None, help="jobs at once (default: the spec's executor.local_workers)")
@click.option("--executor", type=click.Choice(["local", "debug"]), default="local", show_default=True,
              help="local: background processes with dependencies; debug: in this process, one after another")
def run_cmd(spec_name: str, overrides: tuple[str, ...], root: str | None, workers: int | None,
            executor: str) -> None:
    """Run the embedded default study end to end on this machine (no cluster, no GPU, no downloads).

    Plans the smoke sweep (tiny random-init encoder stand-ins and a CLS-mix variant, a tiny SiT trained with REPA
    and iREPA on synthetic data, the small-data Frechet distance, spatial metrics and linear probes), runs it on
    the local executor, analyzes it, then prints where the report is and a summary table. Re-running it resumes:
    finished jobs are skipped.
    """
    from jobs.plan import plan
    from jobs.spec import load_spec
    from jobs.submit import submit_sweep, sweep_status
    from jobs.commands.sweep import status_text
    from results import ResultStore

    extra = list(overrides) + ([f"executor.local_workers={workers}"] if workers else [])
    spec = load_spec(spec_name, extra)
    store = ResultStore(root)
    jobs = plan(spec)
    click.echo(f"repa-study run: sweep {spec.name!r} ({spec.description or 'no description'})\n"
               f"  {len(jobs)} jobs on the {executor} executor, results in {store.root.resolve()}", err=True)
    t0 = time.perf_counter()
    sub = submit_sweep(spec, store.root, executor=executor, wait=True)
    elapsed = time.perf_counter() - t0
    click.echo("")
    click.echo(summary_text(store, jobs))
    report = _report_path(store, jobs)
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
