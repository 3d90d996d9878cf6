"""`repa-study analyze`: correlation tables, figures and an HTML report from the results store (and the paper)."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("analyze")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Results root (default: $REPA_STUDY_ROOT or runs/).")
@click.option("--reference", type=click.Choice(["paper"]), default=None,  # analysis.paper.PAPERS
              help="Add the paper's published numbers (27 encoders of Fig. 4, Tables 1-10; analysis.paper); alone, "
                   "no compute.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report directory (default: ROOT/reports/analysis).")
@click.option("--select", "select", multiple=True, metavar="COLUMN=VALUE",
              help="Keep generation rows with COLUMN=VALUE (e.g. step=100000, model=SiT-B/2, sweep=smoke); "
                   "COLUMN=* mixes its values on purpose; encoders.COLUMN=VALUE selects encoder rows. Repeatable.")
@click.option("--quality", default=None, help="Quality column when several exist: fid or fd_<extractor>.")
@click.option("--corr", "methods", multiple=True, type=click.Choice(["pearson", "spearman", "kendall"]),
              default=("pearson",), show_default=True, help="Correlation statistic(s). Repeatable.")
@click.option("--n-boot", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Bootstrap resamples of the secondary percentile interval (boot_low/boot_high; 0: none); the "
                   "headline 95% interval is Fisher z's.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the secondary bootstrap.")
@click.option("--no-strict", is_flag=True, help="Skip unreadable result files (with a warning) instead of failing.")
@click.option("--agreement", nargs=2, default=None, metavar="PROTOCOL_A PROTOCOL_B",
              help="Instead of the report: how well two FID protocols agree (e.g. screen-10k-sde50 adm-50k-sde250) "
                   "on the runs evaluated under both: Spearman/Kendall of the encoder rankings and the share of "
                   "REPA-vs-iREPA orderings kept, with intervals. Writes agreement_*.csv.")
def analyze_cmd(root: str | None, reference: str | None, out: str | None, select: tuple[str, ...],
                quality: str | None, methods: tuple[str, ...], n_boot: int, seed: int, no_strict: bool,
                agreement: tuple[str, str] | None) -> None:
    """Correlate generation quality with encoder metrics and write an HTML report (tables, figures)."""
    from analysis.report import analyze
    from results import ResultStore

    store = ResultStore(root)
    gen = store.read("generation", strict=not no_strict)
    if agreement:
        _agreement(gen, agreement, Path(out) if out else store.root / "reports" / f"agreement-{'-vs-'.join(agreement)}",
                   select, quality)
        return
    enc = store.read("encoders", strict=not no_strict)
    if gen.empty and reference is None:
        raise click.ClickException(f"no generation rows under {store.root}: run the study first (repa-study run), "
                                   f"point --root at a results root, or add --reference paper for the paper's data")
    out_dir = Path(out) if out else store.root / "reports" / "analysis"
    report = analyze(gen, enc, out_dir, reference=reference, select=list(select), quality=quality, methods=methods,
                     n_boot=n_boot, seed=seed)
    _print_summary(report)
    click.echo(f"report: {report / 'report.html'}")


def _agreement(gen, protocols: tuple[str, str], out_dir: Path, select: tuple[str, ...], quality: str | None) -> None:
    import json

    import pandas as pd

    from analysis.agreement import protocol_agreement
    from analysis.comparable import IncomparableRowsError, parse_select

    try:
        res = protocol_agreement(gen, *protocols, select=parse_select(list(select)), quality=(quality, quality))
    except (IncomparableRowsError, KeyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    res.points.to_csv(out_dir / "agreement_points.csv", index=False)
    res.encoders.to_csv(out_dir / "agreement_encoders.csv", index=False)
    res.methods.to_csv(out_dir / "agreement_methods.csv", index=False)
    (out_dir / "agreement.json").write_text(json.dumps(
        {"protocols": list(res.protocols), "quality": list(res.quality), "notes": res.notes,
         "encoders": res.encoders.to_dict(orient="records"),
         "methods": res.methods.to_dict(orient="records")}, indent=1, default=str))
    a, b = res.protocols
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 200):
        click.echo(f"agreement of {a} with {b}: " + "; ".join(res.notes))
        click.echo(f"\nencoder rankings ({res.columns[0]} vs {res.columns[1]}):")
        click.echo(res.encoders.round(3).to_string(index=False))
        if not res.methods.empty:
            click.echo("\nmethod orderings (same_order: share of encoders whose better method is the same):")
            click.echo(res.methods.round(3).to_string(index=False))
    click.echo(f"\nagreement tables: {out_dir}")


def _print_summary(report: Path) -> None:
    import pandas as pd

    table = pd.read_csv(report / "correlations.csv")
    if table.empty:
        return
    cols = [c for c in ("study", "train_method", "model", "x", "y", "method", "n", "r", "ci_low", "ci_high",
                        "ci_note", "published_r") if c in table.columns]
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 200):
        click.echo(table[cols].fillna({"ci_note": ""}).round(3).to_string(index=False))


def register(cli: click.Group) -> None:
    """Attach ``analyze`` to the root command."""
    cli.add_command(analyze_cmd)
