"""CLI commands for this stage (see jobs/cli.py)."""
from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Attach this module's commands to the root command (filled in as the stage lands)."""
