"""The ``trainmedic`` command line: thin typed commands that hand off to plain functions.

Each package adds its own commands through ``<package>/commands.py:register(app)``; a
:class:`~trainmedic.errors.TrainmedicError` becomes one red line and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from .errors import TrainmedicError

app = typer.Typer(
    name="trainmedic",
    help="Watch a deep-learning training run, diagnose what goes wrong, and fix it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Watch a deep-learning training run, diagnose what goes wrong, and fix it."""


def _register_all() -> None:
    from .checks import commands as checks_commands
    from .data import commands as data_commands
    from .metrics import commands as metrics_commands
    from .remedies import commands as remedies_commands
    from .report import commands as report_commands
    from .store import commands as store_commands

    for mod in (
        store_commands,
        checks_commands,
        report_commands,
        remedies_commands,
        data_commands,
        metrics_commands,
    ):
        mod.register(app)


_register_all()


@app.command("demo")
def demo(
    out: str = typer.Option(
        "trainmedic-demo", "--out", "-o", help="Directory for the runs, the model and the report."
    ),
    budget: int = typer.Option(5, help="Training runs autofix may spend, the faulty baseline included."),
) -> None:
    """Train a faulty model on bundled data, diagnose it, fix it, and write the report."""
    from .demo import run_demo

    run_demo(out, budget=budget)


@app.command("version")
def version() -> None:
    """Print the trainmedic version."""
    from . import __version__

    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except TrainmedicError as e:
        # the message quotes user text (paths, names): escaped, so "[/x]" in a path prints as itself
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
