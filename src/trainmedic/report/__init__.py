"""trainmedic.report: one offline HTML report per run (or several runs side by side), PNG export, live console.

``tm.report(run_dir, output="report.html")`` reads only what the run stored; the live console
(:class:`~trainmedic.report.console.LiveConsole`) is imported lazily because it is only used while training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .build import report

if TYPE_CHECKING:  # pragma: no cover
    from .console import LiveConsole

__all__ = ["LiveConsole", "report"]


def __getattr__(name: str) -> Any:
    if name == "LiveConsole":
        from .console import LiveConsole

        return LiveConsole
    raise AttributeError(f"module 'trainmedic.report' has no attribute {name!r}")
