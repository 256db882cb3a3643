"""CLI commands of this package, added to the main ``trainmedic`` app by :func:`register`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``trainmedic report``."""

    @app.command("report")
    def report_command(
        run_dirs: list[Path] = typer.Argument(
            ..., help="One run directory, or several to compare side by side."
        ),
        output: Path = typer.Option(Path("report.html"), "--output", "-o", help="The HTML file to write."),
        png: Path | None = typer.Option(
            None, "--png", help="Also write every figure as a PNG into this directory."
        ),
        title: str | None = typer.Option(None, "--title", help="Page title (default: the run names)."),
    ) -> None:
        """Write one offline HTML report (no network, no scripts) for one run or several runs side by side."""
        from .build import report

        path = report([str(d) for d in run_dirs], output=output, png_dir=png, title=title)
        size = path.stat().st_size
        typer.echo(f"wrote {path} ({size / 1024:.0f} KiB)" + (f"; figures as PNG in {png}" if png else ""))
