"""The ``repa-study`` command (``jobs.cli.root``): the top floor of the project, which nothing imports."""
from jobs.cli.root import cli, main

__all__ = ["cli", "main"]
