"""Symptoms and causes: a cause is a problem only when it explains a symptom that is present.

The checks judge each code on its own numbers. This module then applies what a practitioner does: an
*outcome* (a symptom — not learning, stopped too early, numerically broken, not generalizing, poor classes,
unstable) is a problem by itself; a *cause* (initialization, dead or saturated units, vanishing gradients,
imbalance, too little data) is a warning only when one of the symptoms it can explain is there, and then
its message says which. A cause with no harm to show becomes an ``info`` note: still in the JSON and the
report, never a warning.

It also applies "root cause first": after the first non-finite value or a damaging explosion, per-layer
statistics describe the wreckage (see :attr:`Context.break_step`, which the per-layer checks honour), and
a live alarm that the post-hoc check does not confirm turns into a note (one verdict per code).
"""

from __future__ import annotations

from ..findings import Finding, Severity

# What each symptom code is about, named in the finding's message and evidence.
SYMPTOMS: dict[str, str] = {
    "nonfinite": "numerically broken",
    "exploding_gradient": "unstable",
    "underfitting": "not learning",
    "inefficient_learning": "learning too slowly",
    "overfitting": "not generalizing",
    "train_test_mismatch": "train and held-out disagree",
    "low_accuracy": "poor accuracy",
    "low_precision": "poor classes",
    "low_recall": "poor classes",
    "mode_collapse": "GAN not learning the data",
    "discriminator_overpowering": "GAN not learning",
}

# Cause code -> the symptom codes it can explain. A cause is a warning only beside one of them.
EXPLAINS: dict[str, tuple[str, ...]] = {
    "bad_initialization": (
        "nonfinite",
        "exploding_gradient",
        "underfitting",
        "inefficient_learning",
        "low_accuracy",
    ),
    "gradient_masking": (
        "nonfinite",
        "underfitting",
        "inefficient_learning",
        "low_accuracy",
        "low_recall",
        "low_precision",
    ),
    "vanishing_gradient": ("underfitting", "inefficient_learning", "low_accuracy"),
    "data_imbalance": ("low_recall", "low_precision", "low_accuracy"),
    "insufficient_data": ("overfitting",),
}

# Data-audit causes (found before or beside training) -> the symptoms of the run they can explain. In a run's
# diagnosis, with a held-out split to show the outcome, they are warnings only beside one of them: labels that
# a checking model disputes, or inputs a nearest-neighbour vote cannot read, did no harm to a model that
# learned the task anyway. Leakage is not here: its harm is an evaluation that looks better than it is.
AUDIT_EXPLAINS: dict[str, tuple[str, ...]] = {
    "label_noise": (
        "overfitting",
        "underfitting",
        "train_test_mismatch",
        "low_accuracy",
        "low_precision",
        "low_recall",
    ),
    "low_data_quality": (
        "underfitting",
        "inefficient_learning",
        "low_accuracy",
        "low_precision",
        "low_recall",
    ),
    "data_imbalance": ("low_recall", "low_precision", "low_accuracy"),
    "insufficient_data": ("overfitting", "underfitting", "low_accuracy"),
}

# exploding_gradient is both: a symptom when the loss suffered lastingly, a cause of a non-finite run.


def _short(msg: str, n: int = 140) -> str:
    return msg if len(msg) <= n else msg[: n - 1].rstrip() + "…"


def apply_symptoms_and_causes(findings: list[Finding], outcomes_judged: bool = False) -> list[Finding]:
    """Name the symptom in every symptom finding; demote causes without a present symptom to ``info``.

    ``outcomes_judged``: the run has a held-out evaluation, so the data audit's causes are judged by harm too.
    """
    _at_noise_floor(findings)
    present = {f.code: f for f in findings if f.is_problem and f.code in SYMPTOMS and f.source != "audit"}
    for f in findings:
        if f.source == "audit" and outcomes_judged and f.is_problem and f.code in AUDIT_EXPLAINS:
            _judge_audit_cause(f, present)
            continue
        if f.code in SYMPTOMS and f.is_problem:
            f.evidence.setdefault("symptom", SYMPTOMS[f.code])
            if not f.message.startswith(SYMPTOMS[f.code]):
                f.message = f"{SYMPTOMS[f.code]}: {f.message}"
        if f.code not in EXPLAINS or f.source == "audit":
            continue
        explained = [c for c in EXPLAINS[f.code] if c in present and present[c] is not f]
        if not f.is_problem:
            continue
        own = f.evidence.get("harm")
        if own and not explained:
            f.evidence["explains"] = ["poor classes"]
            f.message = f"explains poor classes ({own}) — because {f.message}"
        elif explained:
            sym = present[explained[0]]
            f.evidence["explains"] = explained
            f.message = (
                f"explains {SYMPTOMS[sym.code]} ({sym.code}: {_short(sym.message.removeprefix(SYMPTOMS[sym.code] + ': '))})"
                f" — because {f.message}"
            )
        else:
            f.evidence["explains"] = []
            f.evidence["demoted_from"] = f.severity.value
            f.severity = Severity.INFO
            f.message = (
                f"{f.message}; no harm seen (the run shows none of the symptoms this would explain: "
                f"{', '.join(EXPLAINS[f.code])}), so this is a note, not a problem"
            )
    return findings


# Measurements of poor performance that the data's noise floor accounts for (see `underfitting`).
AT_FLOOR = ("low_accuracy", "low_recall", "low_precision")


def _at_noise_floor(findings: list[Finding]) -> None:
    """Poor accuracy or poor classes at the data's noise floor are notes: when the underfitting check found
    the run at the floor (it learned far above chance, training and held-out accuracy agree within noise and
    stopped moving, no bottleneck layer, a usual step and weight decay), the model does on held-out data what it
    does on its own training data, so the low values are what the data allows, not a training problem."""
    floor = next(
        (
            f
            for f in findings
            if f.code == "underfitting"
            and not f.is_problem
            and f.evidence.get("noise_floor")
            and f.source != "audit"
        ),
        None,
    )
    if floor is None:
        return
    for f in findings:
        if f.code in AT_FLOOR and f.is_problem and f.source != "audit":
            f.evidence["demoted_from"] = f.severity.value
            f.evidence["noise_floor"] = floor.evidence["noise_floor"]
            f.severity = Severity.INFO
            f.message = (
                f"{f.message}; at the data's noise floor ({floor.evidence['noise_floor']}), so this is what the "
                "data allows: a note, not a training problem"
            )


def _judge_audit_cause(f: Finding, present: dict[str, Finding]) -> None:
    explained = [c for c in AUDIT_EXPLAINS[f.code] if c in present]
    f.evidence["explains"] = explained
    if explained:
        sym = present[explained[0]]
        f.message = f"explains {SYMPTOMS[sym.code]} ({sym.code}) — because the data audit found: {f.message}"
        return
    f.evidence["demoted_from"] = f.severity.value
    f.severity = Severity.INFO
    f.message = (
        f"{f.message}; no harm seen in this run (none of {', '.join(AUDIT_EXPLAINS[f.code])} on its held-out "
        "split), so this is a note, not a problem"
    )


__all__ = ["AUDIT_EXPLAINS", "EXPLAINS", "SYMPTOMS", "apply_symptoms_and_causes"]
