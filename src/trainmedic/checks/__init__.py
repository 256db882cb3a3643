"""trainmedic.checks: the check registry and :func:`diagnose` (exposed as ``tm.diagnose``).

One file per category (``fit``, ``gradients``, ``activations``, ``data``, ``performance``, ``gan``); each
check is a small function registered with :func:`~trainmedic.checks.registry.check`.
"""

from __future__ import annotations

from .diagnose import diagnose, run_check
from .registry import CHECKS, REQUIREMENTS, Check, all_checks, check
from .render import render_diagnosis

__all__ = [
    "CHECKS",
    "REQUIREMENTS",
    "Check",
    "all_checks",
    "check",
    "diagnose",
    "render_diagnosis",
    "run_check",
]
