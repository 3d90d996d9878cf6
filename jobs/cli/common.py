"""What several command groups share: the ``--root`` option and a plain-text table."""
from __future__ import annotations

import click

ROOT_OPTION = click.option("--root", type=click.Path(file_okay=False), default=None,
                           help="results root (default: $REPA_STUDY_ROOT or ./runs)")


def text_table(rows: list[dict], columns: list[str]) -> str:
    """``rows`` as left-aligned text columns under a header (``(no rows)`` when empty)."""
    if not rows:
        return "(no rows)"
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*columns), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in cells])
