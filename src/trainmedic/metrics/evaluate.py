"""The entry points the run recorder calls: plain JSON-able dicts, one shape for every task.

Each returns ``{"task", "num_classes", "scalars": {name: float}, "per_class": {name: [value per class]},
…}``; classification adds ``"confusion_matrix"`` (list of lists of int).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .classification import classification_metrics
from .detection import match_detections

__all__ = ["evaluate", "evaluate_classification", "evaluate_detection", "is_detection"]


def evaluate_classification(
    targets: Any, outputs: Any, num_classes: int | None = None, threshold: float = 0.5
) -> dict[str, Any]:
    """Classification metrics as plain python: scalars, per-class lists, confusion matrix."""
    return classification_metrics(targets, outputs, num_classes, threshold).to_dict()


def evaluate_detection(
    targets: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Detection metrics as plain python: mAP@0.5, mAP@[.5:.95], pooled precision/recall, per-class lists."""
    return match_detections(outputs, targets, iou_threshold, num_classes).to_dict()


def is_detection(outputs: Any) -> bool:
    """Outputs given as a list of per-image dicts mean a detection task."""
    return (
        isinstance(outputs, Sequence)
        and not isinstance(outputs, (str, bytes))
        and len(outputs) > 0
        and all(isinstance(o, Mapping) for o in outputs)
    )


def evaluate(
    targets: Any,
    outputs: Any,
    num_classes: int | None = None,
    threshold: float = 0.5,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Pick the task from the outputs (a list of dicts → detection, otherwise classification) and evaluate it."""
    if is_detection(outputs):
        return evaluate_detection(targets, outputs, iou_threshold, num_classes)
    return evaluate_classification(targets, outputs, num_classes, threshold)
