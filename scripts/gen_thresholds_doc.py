"""Write docs/thresholds.md from the threshold dataclasses (their end-of-line comments are the docs)."""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import fields
from pathlib import Path

from trainmedic.data.thresholds import AuditThresholds
from trainmedic.settings import Thresholds


def rows(cls: type) -> list[str]:
    src = inspect.getsource(cls)
    comments: dict[str, str] = {}
    for m in re.finditer(r"^\s+(\w+): [^=]+=\s*\(?\s*([^#\n]*?)\s*#\s*(.+)$", src, re.M):
        comments[m.group(1)] = m.group(3).strip()
    for m in re.finditer(r"^\s+(\w+): [^=]+= \(\n\s+[^#\n]+#\s*(.+)$", src, re.M):
        comments.setdefault(m.group(1), m.group(2).strip())
    out = []
    for f in fields(cls):
        out.append(
            f"| `{f.name}` | `{f.default!r}` | `TRAINMEDIC_{f.name.upper()}` | {comments.get(f.name, '')} |"
        )
    return out


def main() -> None:
    lines = [
        "# Thresholds",
        "",
        "Every threshold is a named setting. Priority, lowest first: the default below, `[tool.trainmedic]` in",
        "the nearest `pyproject.toml`, the environment variable, the `thresholds=` argument",
        "(`tm.diagnose(run, thresholds={...})`, `tm.watch(..., thresholds=...)`, `tm.audit(..., thresholds=...)`).",
        "Each finding reports the values it used in its evidence.",
        "",
        "```toml",
        "[tool.trainmedic]",
        "min_accuracy = 0.7",
        "explode_ratio = 50",
        "```",
        "",
        "## Training checks (`trainmedic.settings.Thresholds`)",
        "",
        "| name | default | environment | meaning |",
        "|---|---|---|---|",
        *rows(Thresholds),
        "",
        "## Data audit (`trainmedic.data.thresholds.AuditThresholds`)",
        "",
        "`imbalance_ratio` is shared with the training checks.",
        "",
        "| name | default | environment | meaning |",
        "|---|---|---|---|",
        *rows(AuditThresholds),
        "",
    ]
    text = "\n".join(lines)
    target = Path(__file__).resolve().parents[1] / "docs" / "thresholds.md"
    if "--check" in sys.argv:
        sys.exit(0 if target.read_text() == text else 1)
    target.write_text(text)


if __name__ == "__main__":
    main()
