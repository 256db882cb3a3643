"""The check registry: one small declaration per check, in the style of a linter's rule table.

A check declares its problem ``code``, the signals it ``requires`` (it is skipped, with the reason, when they
are missing), the :class:`~trainmedic.settings.Thresholds` fields it reads (reported in each finding's
evidence), the remedies it may suggest, and three short texts for ``trainmedic explain`` (what it detects,
why it matters, the evidence it uses). The function judges and writes the message from the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..codes import PROBLEMS, REMEDIES
from ..findings import Finding

if TYPE_CHECKING:
    from .context import Context

CheckFn = Callable[["Context"], "list[Finding] | Finding | None"]

# Signal requirements a check may declare; Context.missing() explains each one that is absent.
REQUIREMENTS: dict[str, str] = {
    "loss": "a per-step training loss (run.log(loss=...))",
    "grad_norm": "per-step gradient norms (recorded when the optimizer is watched)",
    "layer_grad_norm": "per-layer gradient norms (recorded every `every` steps when the optimizer is watched)",
    "activations": "activation statistics (ReLU/sigmoid/tanh modules in the model, activations=True)",
    "model_summary": "the model summary (tm.watch(model, ...))",
    "train_eval": "per-epoch accuracy of the training split (run.evaluate('train', ...))",
    "heldout_eval": "per-epoch accuracy of a held-out split (run.evaluate('val', ...))",
    "heldout_loss": "per-epoch loss of a held-out split (run.evaluate('val', ..., loss=...))",
    "confusion_matrix": "a classification confusion matrix (run.evaluate with class outputs)",
    "class_counts": "class counts of a split (run.evaluate on a classification task)",
    "gan_losses": "discriminator and generator losses (run.log(loss_d=..., loss_g=...))",
    "diversity": "a generator-output diversity signal (run.log(diversity=...))",
    "rank_sync": "per-rank summaries of a torch.distributed run (tm.watch and close on every rank)",
}


@dataclass(frozen=True)
class Check:
    code: str
    fn: CheckFn
    requires: tuple[str, ...]
    thresholds: tuple[str, ...]
    remedies: tuple[str, ...]
    what: str
    why: str
    evidence: str
    requires_any: tuple[str, ...] = field(default_factory=tuple)  # at least one of these

    @property
    def title(self) -> str:
        return PROBLEMS[self.code].title

    @property
    def name(self) -> str:
        return self.fn.__name__


CHECKS: dict[str, Check] = {}


def check(
    code: str,
    *,
    requires: tuple[str, ...] = (),
    requires_any: tuple[str, ...] = (),
    thresholds: tuple[str, ...] = (),
    remedies: tuple[str, ...] = (),
    what: str,
    why: str,
    evidence: str,
) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as the check of ``code`` (one check per code)."""

    def deco(fn: CheckFn) -> CheckFn:
        if code not in PROBLEMS:
            raise ValueError(f"check {fn.__name__}: unknown problem code {code!r}")
        for r in remedies:
            if r not in REMEDIES:
                raise ValueError(f"check {fn.__name__}: unknown remedy code {r!r}")
        for req in (*requires, *requires_any):
            if req not in REQUIREMENTS:
                raise ValueError(f"check {fn.__name__}: unknown requirement {req!r}")
        if code in CHECKS:
            raise ValueError(f"check for {code!r} registered twice ({CHECKS[code].name}, {fn.__name__})")
        CHECKS[code] = Check(code, fn, requires, thresholds, remedies, what, why, evidence, requires_any)
        return fn

    return deco


def all_checks() -> dict[str, Check]:
    """Every registered check (imports the check modules on first use)."""
    from . import activations, data, fit, gan, gradients, performance, ranks  # noqa: F401

    return CHECKS
