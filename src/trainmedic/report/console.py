"""A terminal view while training: a progress bar with step, loss and the latest metrics, and one-line alerts.

Opt-in (``tm.watch(..., progress=True)``). Cheap by construction: :meth:`LiveConsole.on_log` only stores the
latest values and checks a clock; the screen is redrawn at most ``refresh_per_second`` times (no background
thread). When the output is not a terminal (CI logs, a redirected file) there is no bar: one plain line per
evaluation and per alert, so logs stay readable and free of cursor codes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..findings import Finding

SEVERITY_STYLE = {"error": "bold red", "warning": "bold yellow", "info": "cyan"}
DEFAULT_METRICS = ("accuracy", "f1_macro", "map_50", "loss")


def _num(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3e}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4g}"


class LiveConsole:
    """Progress bar and alerts for a watched run; feed it from the recorder's ``log``/``evaluate``/finding calls.

    Args:
        total_steps: steps expected in the run (``None``: the bar shows activity without an end).
        console: where to draw (default: a rich console on stderr).
        refresh_per_second: the most redraws per second (default 10).
        metrics: evaluation metrics shown after the loss, in this order, when present.
        description: the bar's label.
    """

    def __init__(
        self,
        total_steps: int | None = None,
        *,
        console: Console | None = None,
        refresh_per_second: float = 10.0,
        metrics: tuple[str, ...] = DEFAULT_METRICS,
        description: str = "training",
    ) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self.interactive = bool(self.console.is_terminal and not self.console.is_dumb_terminal)
        self.min_interval = 1.0 / refresh_per_second if refresh_per_second > 0 else 0.1
        self.metrics = metrics
        self.step = 0
        self.scalars: dict[str, float] = {}
        self.evals: dict[str, tuple[int | None, dict[str, float]]] = {}
        self.alerts = 0
        self.refreshes = 0
        self.closed = False
        self._last_draw = 0.0
        self._dirty = False
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self.interactive:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=30),
                TextColumn("step {task.completed:>7.0f}" + ("/{task.total:.0f}" if total_steps else "")),
                TextColumn("{task.fields[status]}", markup=False),  # split/metric names are user text
                TimeElapsedColumn(),
                console=self.console,
                auto_refresh=False,  # we redraw ourselves, throttled: no thread, no cost between redraws
                transient=False,
            )
            self._task = self._progress.add_task(description, total=total_steps, status="")
            self._progress.start()

    # ---- feeding -----------------------------------------------------------------------------------
    def on_log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Latest per-step values; cheap enough to call every step."""
        self.step = int(step)
        self.scalars.update(scalars)
        self._dirty = True
        self._maybe_draw()

    def on_evaluate(self, split: str, epoch: int | None, scalars: Mapping[str, float]) -> None:
        """Metrics of one split at the end of an epoch: shown on the bar (or printed as a line off a TTY)."""
        self.evals[str(split)] = (epoch, {k: float(v) for k, v in scalars.items()})
        if not self.interactive:
            self.console.print(
                Text(f"epoch {epoch} {split}: {self._metric_text(self.evals[str(split)][1])}"),
                soft_wrap=True,
                highlight=False,
            )
            return
        self._dirty = True
        self._maybe_draw(force=True)

    def on_finding(self, finding: Finding) -> None:
        """One line above the bar, coloured by severity; the message is cut to the terminal width."""
        self.alerts += 1
        sev = finding.severity.value
        where = f" at step {finding.step}" if finding.step is not None else ""
        line = Text()
        line.append(
            f"{'!' if sev == 'error' else '⚠' if sev == 'warning' else 'i'} {sev}: ",
            style=SEVERITY_STYLE.get(sev, ""),
        )
        line.append(f"{finding.code}{where}: ", style="bold")
        line.append(finding.message)
        if self.interactive:
            line.no_wrap = True
            line.overflow = "ellipsis"
            assert self._progress is not None
            self._progress.console.print(line)
            self._maybe_draw(force=True)
        else:
            self.console.print(line, soft_wrap=True, highlight=False)

    def close(self) -> None:
        """Draw the final state and release the terminal. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        if self._progress is not None:
            self._draw()
            self._progress.stop()
        else:
            loss = self.scalars.get("loss")
            tail = f", loss {_num(loss)}" if loss is not None else ""
            self.console.print(
                Text(f"done: {self.step} steps{tail}, {self.alerts} alert(s)"), highlight=False
            )

    def __enter__(self) -> LiveConsole:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- drawing -----------------------------------------------------------------------------------
    def _metric_text(self, values: Mapping[str, float]) -> str:
        parts = [f"{k} {_num(values[k])}" for k in self.metrics if k in values]
        return " ".join(parts) if parts else "no metrics"

    def status(self) -> str:
        """The text right of the bar: loss, then the newest metrics per split."""
        parts = []
        loss = self.scalars.get("loss")
        if loss is not None:
            parts.append(f"loss {_num(loss)}")
        for split, (_, values) in self.evals.items():
            shown = [f"{k} {_num(values[k])}" for k in self.metrics if k in values and k != "loss"][:2]
            if shown:
                parts.append(f"{split} " + " ".join(shown))
        if self.alerts:
            parts.append(f"alerts {self.alerts}")
        return " · ".join(parts)

    def _maybe_draw(self, force: bool = False) -> None:
        if self._progress is None or not self._dirty:
            return
        now = time.monotonic()
        if force or now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        if self._progress is None or self._task is None:
            return
        self._dirty = False
        self.refreshes += 1
        self._progress.update(self._task, completed=self.step + 1, status=self.status())
        self._progress.refresh()
