"""CLI commands of the checks package: ``diagnose``, ``checks``, ``explain``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from ..errors import TrainmedicError
from ..findings import parse_fail_on


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""

    @app.command("diagnose")
    def diagnose_cmd(
        run_dir: Path = typer.Argument(..., help="The run directory to diagnose."),
        json_out: bool = typer.Option(
            False, "--json", help="Print the Diagnosis as JSON (schema_version inside)."
        ),
        fail_on: str = typer.Option(
            None,
            "--fail-on",
            help="Exit 1 when a finding at or above this level exists: warning or error. A run with no data "
            "(nothing recorded, every check skipped) fails too, unless --allow-no-data.",
        ),
        allow_no_data: bool = typer.Option(
            False, "--allow-no-data", help="With --fail-on: let a run with no data pass the gate."
        ),
        verbose: bool = typer.Option(
            False, "--verbose", "-v", help="Show healthy observations (info) in full, not as one line each."
        ),
    ) -> None:
        """Diagnose a recorded training run."""
        from . import diagnose
        from .render import render_diagnosis

        parse_fail_on(fail_on)  # a bad level is an error before any work
        d = diagnose(run_dir)
        if json_out:
            typer.echo(d.to_json())
        else:
            render_diagnosis(d, Console(), compact_info=not verbose)
        if d.fails(fail_on, allow_no_data=allow_no_data):
            raise typer.Exit(1)

    @app.command("checks")
    def checks_cmd() -> None:
        """List the registered checks: code, what they need, their thresholds."""
        from .registry import all_checks

        t = Table(title="trainmedic checks")
        t.add_column("code", style="bold", no_wrap=True)
        t.add_column("title")
        t.add_column("requires")
        t.add_column("thresholds")
        t.add_column("remedies", style="dim")
        for c in all_checks().values():
            req = list(c.requires) + ([" | ".join(c.requires_any)] if c.requires_any else [])
            t.add_row(c.code, c.title, ", ".join(req), ", ".join(c.thresholds) or "-", ", ".join(c.remedies))
        Console().print(t)

    @app.command("explain")
    def explain_cmd(
        code: str = typer.Argument(None, help="A problem code, e.g. exploding_gradient."),
        all_: bool = typer.Option(False, "--all", help="Explain every check."),
        markdown: bool = typer.Option(
            False, "--markdown", help="Print raw markdown (e.g. for docs/checks.md)."
        ),
    ) -> None:
        """Explain a check: what it detects, why it matters, evidence, thresholds, remedies."""
        from .explain import explain_markdown, markdown_all

        if all_:
            text = markdown_all()
        elif code is None:
            raise TrainmedicError("`CODE` is required (e.g. trainmedic explain overfitting), or pass --all")
        else:
            text = explain_markdown(code)
        if markdown:
            typer.echo(text)
        else:
            Console().print(Markdown(text))
