"""A terminal summary of a :class:`~trainmedic.findings.Diagnosis` (rich), reusable by other commands."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..findings import Diagnosis, Finding, Severity

STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "green"}


def _where(f: Finding) -> str:
    parts = []
    if f.split:
        parts.append(f.split)
    if f.epoch is not None:
        parts.append(f"epoch {f.epoch}")
    if f.step is not None:
        parts.append(f"step {f.step}")
    if f.layer:
        parts.append(f.layer)
    return ", ".join(parts)


def render_diagnosis(
    diagnosis: Diagnosis,
    console: Console | None = None,
    *,
    show_skipped: bool = True,
    max_remedies: int = 3,
    compact_info: bool = False,
) -> None:
    """Print the diagnosis: one panel per finding (worst first), then what was skipped and why.

    ``compact_info`` prints healthy observations (severity info) as one dim line each instead of a panel.
    """
    console = console or Console()
    sig = diagnosis.signals or {}
    # every user string (run name, split, messages, evidence) is escaped or a Text: never read as markup
    head = f"[bold]{escape(diagnosis.run or 'run')}[/]"
    if sig.get("steps") is not None:
        head += f"  {sig.get('steps')} steps, {sig.get('epochs', 0)} epochs"
    if sig.get("judged_split"):
        head += f", judged on [bold]{escape(str(sig['judged_split']))}[/]"
    console.print(head)
    if diagnosis.no_data and not diagnosis.problems:
        console.print(
            f"[bold red]no data[/]: {len(diagnosis.skipped)} checks skipped; the run stored nothing to judge "
            "(no steps, evaluations or per-layer statistics), so it is not called healthy"
        )
    elif diagnosis.healthy:
        console.print("[bold green]healthy[/]: no warnings or errors")
    for f in diagnosis.findings:
        if compact_info and f.severity is Severity.INFO:
            line = Text(f"  ok  {f.code}", style="green")
            line.append(f"  {f.message}" + (f" [{f.split}]" if f.split else ""), style="dim")
            console.print(line)
            continue
        style = STYLE[f.severity]
        body = Text()
        body.append(f.message + "\n")
        where = _where(f)
        if where:
            body.append(f"where: {where}\n", style="dim")
        body.append(f"confidence {f.confidence:.0%}, source {f.source}\n", style="dim")
        for i, r in enumerate(f.remedies[:max_remedies], 1):
            auto = " (auto)" if r.auto else ""
            body.append(f"  {i}. {r.title}{auto}", style="bold")
            body.append(f" [{r.code}]" + (f" — {r.why}" if r.why else "") + "\n")
        console.print(
            Panel(
                body,
                title=f"[{style}]{f.severity.value.upper()}[/] {escape(f.code)}: {escape(f.title)}",
                title_align="left",
                border_style=style,
            )
        )
    if show_skipped and diagnosis.skipped:
        t = Table(title="skipped checks", show_header=True, header_style="dim", box=None)
        t.add_column("check")
        t.add_column("reason", style="dim")
        for s in diagnosis.skipped:
            t.add_row(Text(s.code), Text(s.reason))
        console.print(t)
    n_err = sum(f.severity is Severity.ERROR for f in diagnosis.findings)
    n_warn = sum(f.severity is Severity.WARNING for f in diagnosis.findings)
    tail = f"{n_err} error(s), {n_warn} warning(s), {len(diagnosis.findings) - n_err - n_warn} info"
    console.print(tail + (f"; no data: {len(diagnosis.skipped)} checks skipped" if diagnosis.no_data else ""))
