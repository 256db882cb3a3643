"""CLI commands of this package, added to the main ``trainmedic`` app by :func:`register`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``trainmedic report`` and ``trainmedic serve``."""

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
        static: bool = typer.Option(
            False, "--static", help="No script at all: the static figures only (no zoom, hover or smoothing)."
        ),
    ) -> None:
        """Write one offline HTML report (interactive charts, no network) for one run or several side by side."""
        from .build import report

        path = report(
            [str(d) for d in run_dirs], output=output, png_dir=png, title=title, interactive=not static
        )
        size = path.stat().st_size
        typer.echo(f"wrote {path} ({size / 1024:.0f} KiB)" + (f"; figures as PNG in {png}" if png else ""))

    @app.command("serve")
    def serve_command(
        run_dirs: list[Path] = typer.Argument(
            ..., help="One run directory, or several to overlay side by side (may still be training)."
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
        port: int = typer.Option(8000, "--port", "-p", help="Port to listen on (0: any free port)."),
        interval: float = typer.Option(2.0, "--interval", help="Seconds between the page's live updates."),
        title: str | None = typer.Option(None, "--title", help="Page title (default: the run names)."),
    ) -> None:
        """Serve the report on localhost and refresh it while the run trains (reads SQLite read-only)."""
        import time

        from .serve import serve

        server = serve([str(d) for d in run_dirs], host=host, port=port, interval_s=interval, title=title)
        typer.echo(f"serving {len(run_dirs)} run(s) at {server.url} (Ctrl-C to stop)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"warning: bound to {host}: anyone who can reach this address can read the report")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            typer.echo("stopped")
        finally:
            server.stop()
