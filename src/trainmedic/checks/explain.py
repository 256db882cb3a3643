"""``trainmedic explain CODE``: what a check detects, why it matters, its evidence, thresholds and remedies.

Fixed sections, like ``ruff rule CODE``; :func:`markdown_all` renders every check for ``docs/checks.md``.
"""

from __future__ import annotations

from ..codes import PROBLEMS, REMEDIES
from ..errors import TrainmedicError
from ..settings import Thresholds
from .registry import REQUIREMENTS, Check, all_checks

SECTIONS = ("What it detects", "Why it matters", "Evidence", "Requires", "Thresholds", "Remedies")


def get_check(code: str) -> Check:
    checks = all_checks()
    if code not in checks:
        known = ", ".join(sorted(checks))
        hint = f"; {code!r} is judged by the data audit (trainmedic audit)" if code in PROBLEMS else ""
        raise TrainmedicError(f"`CODE` must be a problem code with a check ({known}); got {code!r}{hint}")
    return checks[code]


def explain_markdown(code: str, level: int = 1) -> str:
    c = get_check(code)
    t = Thresholds()
    h = "#" * level
    lines = [f"{h} `{c.code}` — {c.title}", "", PROBLEMS[c.code].meaning, ""]
    lines += [f"{h}# What it detects", "", c.what, ""]
    lines += [f"{h}# Why it matters", "", c.why, ""]
    lines += [f"{h}# Evidence", "", c.evidence, ""]
    req = [f"- {REQUIREMENTS[r]}" for r in c.requires]
    if c.requires_any:
        req.append("- at least one of: " + "; ".join(REQUIREMENTS[r] for r in c.requires_any))
    lines += [f"{h}# Requires", "", *(req or ["- nothing beyond the run directory"]), ""]
    lines += [f"{h}# Thresholds", ""]
    if c.thresholds:
        lines += [
            f"- `{name}` = {getattr(t, name)!r} (env `TRAINMEDIC_{name.upper()}`)" for name in c.thresholds
        ]
    else:
        lines.append("- none: any occurrence counts")
    lines += ["", f"{h}# Remedies", ""]
    for r in c.remedies:
        rc = REMEDIES[r]
        lines.append(f"- `{r}` — {rc.title}{' (auto)' if rc.auto else ''}: {rc.what_it_does}")
    lines.append("")
    return "\n".join(lines)


def markdown_all() -> str:
    head = [
        "# Checks",
        "",
        "Generated from the check registry by `trainmedic explain --all --markdown`; do not edit by hand.",
        "Thresholds are fields of `trainmedic.Thresholds` (override with `tm.diagnose(run, thresholds={...})`,",
        "`[tool.trainmedic]` in `pyproject.toml` or `TRAINMEDIC_<NAME>`); every finding reports the values it used.",
        "Remedies are listed in their default order; each finding ranks them for its own case.",
        "",
        "Not covered by a training-run check (judged by the data audit, `trainmedic audit`): "
        + ", ".join(f"`{c}`" for c in sorted(AUDIT_SIDE)),
        "",
    ]
    return "\n".join(head) + "\n".join(explain_markdown(code, level=2) for code in all_checks())


AUDIT_SIDE = ("label_noise", "data_leakage", "low_data_quality")
