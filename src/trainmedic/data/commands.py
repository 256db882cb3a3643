"""CLI commands of this package, added to the main ``trainmedic`` app by :func:`register`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import typer

from ..errors import TrainmedicError
from ..findings import Diagnosis, parse_fail_on


def load_table(path: Path, label_column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(X, y)`` from ``.npz`` (arrays ``X`` and ``y``) or ``.csv`` (label column: named, ``label``, or last)."""
    if not path.is_file():
        raise TrainmedicError(f"`{path}` must be an existing .npz or .csv file; got no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            x_key = next((k for k in ("X", "x") if k in keys), None)
            y_key = next((k for k in (label_column, "y", "labels") if k and k in keys), None)
            if x_key is None or y_key is None:
                raise TrainmedicError(f"`{path}` must hold arrays `X` and `y`; got {sorted(keys)}")
            return np.asarray(z[x_key]), np.asarray(z[y_key])
    if suffix == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            raise TrainmedicError(f"`{path}` must be a CSV with a header and rows; got an empty file")
        header, body = rows[0], rows[1:]
        try:
            [float(v) for v in header]
            header, body = [f"col{i}" for i in range(len(rows[0]))], rows
        except ValueError:
            pass
        if label_column is not None:
            if label_column not in header:
                raise TrainmedicError(
                    f"`--label-column` must name a column of {path}; got {label_column!r}, columns {header}"
                )
            j = header.index(label_column)
        else:
            j = header.index("label") if "label" in header else len(header) - 1
        try:
            table = np.array(
                [[float(v) if v.strip() else np.nan for v in r] for r in body if r], dtype=np.float64
            )
        except ValueError as e:
            raise TrainmedicError(f"`{path}` must contain only numbers; got {e}") from None
        if table.ndim != 2 or table.shape[1] != len(header):
            raise TrainmedicError(f"`{path}` rows must all have {len(header)} values; got ragged rows")
        return np.delete(table, j, axis=1), table[:, j]
    raise TrainmedicError(f"`{path}` must be a .npz or .csv file; got {suffix or 'no extension'}")


def print_table(diagnosis: Diagnosis) -> None:
    """A rich table of the findings, worst first."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colour = {"info": "green", "warning": "yellow", "error": "red"}
    table = Table(title="trainmedic audit", show_lines=False)
    for col in ("severity", "code", "split", "message", "remedies"):
        table.add_column(col, overflow="fold")
    for f in diagnosis.findings:
        sev = f.severity.value
        table.add_row(  # user text (split names, messages quoting data) is escaped, never markup
            f"[{colour[sev]}]{sev}[/]",
            escape(f.code),
            escape(f.split or ""),
            escape(f.message),
            escape(", ".join(r.code for r in f.remedies)),
        )
    console = Console()
    console.print(table)
    verdict = (
        "healthy"
        if diagnosis.healthy
        else f"{len(diagnosis.problems)} problem(s), worst: {diagnosis.worst().value}"
    )
    console.print(verdict)


def register(app: typer.Typer) -> None:
    """Add ``trainmedic audit``."""

    @app.command("audit")
    def audit_command(
        train: Path = typer.Argument(..., help="Training split: .npz (arrays X, y) or .csv."),
        val: Path | None = typer.Option(None, "--val", help="Validation split, same format."),  # noqa: UP007
        test: Path | None = typer.Option(None, "--test", help="Test split, same format."),  # noqa: UP007
        label_column: str | None = typer.Option(
            None, "--label-column", help="CSV label column (default `label`, else last)."
        ),  # noqa: UP007
        as_json: bool = typer.Option(False, "--json", help="Print the Diagnosis as JSON."),
        fail_on: str | None = typer.Option(
            None, "--fail-on", help="Exit 1 when a finding is at least this severe: warning|error."
        ),  # noqa: UP007
        label_check: str = typer.Option(
            "auto", "--label-check", help="auto (subsample large data), full or off."
        ),
    ) -> None:
        """Audit dataset splits: balance, leakage, label noise, shift, quality, sufficiency."""
        from .audit import audit

        parse_fail_on(fail_on)  # a bad level is an error before any work
        parts = [load_table(p, label_column) if p is not None else None for p in (train, val, test)]
        diagnosis = audit(parts[0], parts[1], parts[2], label_check=label_check, progress=False)  # type: ignore[arg-type]
        if as_json:
            typer.echo(diagnosis.to_json())
        else:
            print_table(diagnosis)
        if diagnosis.fails(fail_on):
            raise typer.Exit(1)
