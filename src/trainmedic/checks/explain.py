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
    return "\n".join(head + _model_section()) + "\n".join(
        explain_markdown(code, level=2) for code in all_checks()
    )


NOISE_MODELS: tuple[tuple[str, str], ...] = (
    (
        "accuracy gaps (overfitting, train/test mismatch)",
        "the gap must exceed 2 standard errors of the difference of two binomial accuracies at the splits' "
        "sizes (never below one sample's resolution), besides the gap threshold",
    ),
    (
        "held-out loss rise (overfitting)",
        "the rise above the best epoch must exceed 1.5x the loss noise: the larger of its standard error "
        "(per-sample losses spread about twice their mean, over sqrt(n)) and the move of one confidently "
        "wrong sample (2 ln C / n)",
    ),
    (
        "still improving (underfitting, stopped too early)",
        "the held-out accuracy gain over the last third of the epochs must exceed max(3 points, 3 standard "
        "errors of a difference), and the last epoch's gain max(1 point, 2 standard errors); with only two "
        "evaluations the one gain must exceed max(5 points, 4 standard errors of a difference) while the "
        "per-step loss still falls (a line fitted to its last half slopes down by more than 3 standard errors "
        "of its slope and by at least 5% of its level)",
    ),
    (
        "loss curve (inefficient learning)",
        "the per-step loss is judged in 20 windows; a window mean's noise is the within-window std over "
        "sqrt(window length) (mini-batch noise); oscillation and lasting damage must exceed 3 sqrt(2) of it, "
        "and a plateau is a stall only if it is not a floor (the model did not learn)",
    ),
    (
        "class counts (data imbalance)",
        "the count ratio must hold at its one-sided 95% lower bound under Poisson sampling noise; minority "
        "recall must be 20 points (10 points when it is below 70%) and 1.64 standard errors (from the "
        "minority support) below majority recall, with the minority predicted fewer times than it occurs "
        "beyond Poisson noise, to count as harm",
    ),
    (
        "gradient norms (exploding gradient)",
        "3 of 5 consecutive steps above `explode_ratio` x the running median of the previous 200 steps, and "
        "the loss must rise 1.2x after the onset; a run whose loss comes back is not damaged",
    ),
)


def _model_section() -> list[str]:
    from .verdict import EXPLAINS, SYMPTOMS

    out = [
        "## How a diagnosis decides: symptoms and causes",
        "",
        "A practitioner calls something a problem when training is harmed, then looks for why; the diagnosis "
        "works the same way.",
        "",
        "- **Symptoms** are outcomes, a problem by themselves; each warning names its symptom in its message "
        "and in `evidence.symptom`: " + "; ".join(f"`{c}` — {s}" for c, s in SYMPTOMS.items()) + ".",
        "- **Causes** explain symptoms. A cause is a warning or error only when a symptom it can explain is "
        "present; its message then starts with `explains <symptom> (...) — because ...` and "
        "`evidence.explains` lists the symptom codes. A cause without harm is an `info` note "
        "(`evidence.demoted_from` keeps the severity it would have had): "
        + "; ".join(f"`{c}` explains {', '.join(f'`{x}`' for x in v)}" for c, v in EXPLAINS.items())
        + ". `data_imbalance` can show its own harm (minority classes recalled worse than majority ones "
        "beyond sampling noise, or predictions piled into a few classes). `exploding_gradient` is a symptom "
        "when the loss suffered lastingly and a note when the run recovered.",
        "- **The data's noise floor.** When `underfitting` finds the run at the data's noise floor (it learned "
        "far above chance, training and held-out accuracy agree within noise and stopped moving, no bottleneck "
        "layer, a usual step and weight decay), `low_accuracy`, `low_recall` and `low_precision` are `info` notes: "
        "the model does on held-out data what it does on its own training data, which is what the data allows.",
        "- **Root cause first.** `nonfinite` and `exploding_gradient` are judged first; per-layer statistics "
        "recorded from the first non-finite value or damaging (error) explosion on are left out of the other "
        "checks (they describe the wreckage: a huge last-layer gradient, dead units after a NaN).",
        "- **One verdict per code.** The post-hoc check over the whole run decides. A live alarm (raised while "
        "training, where live treatment may act on it) is attached to the verdict as evidence, or, when the "
        "post-hoc check does not confirm it, kept as an `info` note (`live alarm not confirmed: ...`). The live "
        "exploding-gradient alarm is itself confirmed before it is raised: a burst (`explode_ratio` x the running "
        "median for 3 of 5 steps) becomes an error only when the norm stays above the threshold for 10 of the next "
        "20 observed steps or a value turns non-finite; a burst the norm comes back from is an `info` note, which "
        "never stops training under `raise_on`.",
        '- **Treatment named.** When the live treatment (`treat="safe"`) lowered the learning rate, skipped '
        "updates or stopped the run, the outcome findings (`inefficient_learning`, `underfitting`, `low_*`, "
        "`overfitting`) say so, with the actions in their evidence.",
        "- **Reproducible.** Checks read recorded values only; the recording cadence is a function of the step "
        "(see docs/architecture.md), so the same seeded run gets the same verdict.",
        "",
        "### Noise models",
        "",
    ]
    out += [f"- **{what}**: {how}." for what, how in NOISE_MODELS]
    return [*out, ""]


AUDIT_SIDE = ("label_noise", "data_leakage", "low_data_quality")
