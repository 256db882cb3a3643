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

# exploding_gradient is both: a symptom when the loss suffered lastingly, a cause of a non-finite run.


def _short(msg: str, n: int = 140) -> str:
    return msg if len(msg) <= n else msg[: n - 1].rstrip() + "…"


def apply_symptoms_and_causes(findings: list[Finding]) -> list[Finding]:
    """Name the symptom in every symptom finding; demote causes without a present symptom to ``info``."""
    present = {f.code: f for f in findings if f.is_problem and f.code in SYMPTOMS and f.source != "audit"}
    for f in findings:
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


__all__ = ["EXPLAINS", "SYMPTOMS", "apply_symptoms_and_causes"]
