"""`repa-study analyze`: correlation tables, figures and an HTML report from the results store (and the paper)."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("analyze")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Results root (default: $REPA_STUDY_ROOT or runs/).")
@click.option("--reference", type=click.Choice(["paper"]), default=None,
              help="Add the paper's published numbers (27 encoders of Fig. 4, Tables 1-10); alone, no compute.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report directory (default: ROOT/reports/analysis).")
@click.option("--select", "select", multiple=True, metavar="COLUMN=VALUE",
              help="Keep generation rows with COLUMN=VALUE (e.g. step=100000, model=SiT-B/2, sweep=smoke); "
                   "COLUMN=* mixes its values on purpose; encoders.COLUMN=VALUE selects encoder rows. Repeatable.")
@click.option("--quality", default=None, help="Quality column when several exist: fid or fd_<extractor>.")
@click.option("--corr", "methods", multiple=True, type=click.Choice(["pearson", "spearman", "kendall"]),
              default=("pearson",), show_default=True, help="Correlation statistic(s). Repeatable.")
@click.option("--n-boot", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Bootstrap resamples for the 95% interval (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--no-strict", is_flag=True, help="Skip unreadable result files (with a warning) instead of failing.")
def analyze_cmd(root: str | None, reference: str | None, out: str | None, select: tuple[str, ...],
                quality: str | None, methods: tuple[str, ...], n_boot: int, seed: int, no_strict: bool) -> None:
    """Correlate generation quality with encoder metrics and write an HTML report (tables, figures)."""
    from analysis.report import analyze
    from results import ResultStore

    store = ResultStore(root)
    gen = store.read("generation", strict=not no_strict)
    enc = store.read("encoders", strict=not no_strict)
    if gen.empty and reference is None:
        raise click.ClickException(f"no generation rows under {store.root}: run the study first (repa-study run), "
                                   f"point --root at a results root, or add --reference paper for the paper's data")
    out_dir = Path(out) if out else store.root / "reports" / "analysis"
    report = analyze(gen, enc, out_dir, reference=reference, select=list(select), quality=quality, methods=methods,
                     n_boot=n_boot, seed=seed)
    _print_summary(report)
    click.echo(f"report: {report / 'report.html'}")


def _print_summary(report: Path) -> None:
    import pandas as pd

    table = pd.read_csv(report / "correlations.csv")
    if table.empty:
        return
    cols = [c for c in ("study", "train_method", "model", "x", "y", "method", "n", "r", "ci_low", "ci_high",
                        "published_r") if c in table.columns]
    with pd.option_context("display.width", 140, "display.max_columns", 20, "display.max_rows", 200):
        click.echo(table[cols].round(3).to_string(index=False))


def register(cli: click.Group) -> None:
    """Attach ``analyze`` to the root command."""
    cli.add_command(analyze_cmd)
