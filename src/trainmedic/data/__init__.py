"""Dataset splitting (stratified, group-aware) and auditing (sufficient, balanced, relevant, labelled, diverse, clean)."""

from __future__ import annotations

from .audit import audit
from .labels import LabelIssues, find_label_issues
from .learning_curve import LearningCurve, learning_curve
from .split import Splits, split, split_indices
from .thresholds import AuditThresholds, load_audit_thresholds

__all__ = [
    "AuditThresholds",
    "LabelIssues",
    "LearningCurve",
    "Splits",
    "audit",
    "find_label_issues",
    "learning_curve",
    "load_audit_thresholds",
    "split",
    "split_indices",
]
