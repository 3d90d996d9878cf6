"""`repa-study results show`: inspect the results store."""
from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.cli.common import ROOT_OPTION, text_table


@click.group("results")
def results_group() -> None:
    """Inspect the results store."""


@results_group.command("show")
@ROOT_OPTION
@click.option("--table", "table", default=None, help="generation, encoders or runs (default: list the tables)")
@click.option("--json", "as_json", is_flag=True, help="print rows as JSON records")
@click.option("--columns", default=None, help="comma-separated columns to show")
@click.option("--no-strict", is_flag=True, help="skip unreadable files (with a warning) instead of failing")
def show_cmd(root: str | None, table: str | None, as_json: bool, columns: str | None, no_strict: bool) -> None:
    """Show a results table (all files, latest row per key), or list the tables."""
    import pandas as pd

    from results import ResultStore

    store = ResultStore(root)
    if table is None:
        names = store.tables()
        listing = [{"table": t, "files": len(store.files(t))} for t in names]
        click.echo(json.dumps(listing) if as_json else (text_table(listing, ["table", "files"])
                                                        if listing else f"no tables under {store.root}"))
        return
    df = store.read(table, strict=not no_strict)
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise click.ClickException(f"no column(s) {missing} in table {table!r}; "
                                       f"columns: {', '.join(map(str, df.columns))}")
        df = df[wanted]
    if as_json:
        click.echo(df.to_json(orient="records", indent=1, date_format="iso"))
    elif df.empty:
        click.echo(f"table {table!r} has no rows under {Path(store.root)}")
    else:
        hide = {"versions", "python", "written_ns", "source_file", "schema_version"}
        with pd.option_context("display.max_columns", 30, "display.width", 200):
            click.echo(df[[c for c in df.columns if c not in hide or columns]].to_string(index=False))



def register(cli: click.Group) -> None:
    cli.add_command(results_group)
