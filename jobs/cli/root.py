"""The ``repa-study`` command: the top floor of the project, which nothing imports.

Each command group (or top-level command) lives in ``jobs/cli/<name>.py`` and attaches itself through
``register(cli)``.
"""
from __future__ import annotations

import linecache
import logging
from pathlib import Path

import click

from study.common import setup_logging

# One module per command group (or top-level command); jobs/cli/common.py holds what several share.
COMMAND_MODULES = ("encoders", "data", "train", "evaluate", "sweep", "results", "analyze", "run")


_OUR_PACKAGES = {"encoders", "study", "jobs", "results", "analysis"}
_REPO = Path(__file__).resolve().parents[2]


def _raised_on_purpose(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc`` is a ``raise`` statement in one of our packages: a check of ours
    that refused bad input with a message (e.g. ``raise FileNotFoundError("no checkpoint for step 3 ...")``), as
    opposed to an error that happened while our code (or a library) was computing something."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    try:
        package = path.relative_to(_REPO).parts[0]
    except ValueError:
        return False
    return package in _OUR_PACKAGES and linecache.getline(str(path), tb.tb_lineno).lstrip().startswith("raise")


def _is_user_error(exc: BaseException) -> bool:
    """Our own exception types (ConfigError, DatasetError, MissingWeightsError, ...) and whatever our code raises on
    purpose carry actionable messages; anything else is a bug and keeps its traceback."""
    return type(exc).__module__.split(".")[0] in _OUR_PACKAGES or _raised_on_purpose(exc)


class _Root(click.Group):
    """Every sub-command's own errors become one ``Error:`` line (exit 1); DEBUG logging keeps the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own (usage errors exit 2): already what the user should see
        except Exception as exc:
            if _is_user_error(exc) and not logging.getLogger("repa_study").isEnabledFor(logging.DEBUG):
                raise click.ClickException(str(exc)) from exc
            raise


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--log-level", default=None, help="DEBUG, INFO (default) or WARNING; also REPA_STUDY_LOG.")
@click.version_option(package_name="repa-study")
def cli(log_level: str | None) -> None:
    """repa-study: the iREPA encoder study (REPA/iREPA training, FID, spatial metrics) at cluster scale.

    With no cluster and no GPU, `repa-study run` runs the embedded default: a tiny study on synthetic data.
    """
    setup_logging(log_level)


def _register_all() -> None:
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"jobs.cli.{name}")
        module.register(cli)


_register_all()


def main() -> None:
    cli(standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main()
