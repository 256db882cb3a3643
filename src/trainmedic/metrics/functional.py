"""The pure-tensor metric functions in one namespace (the maths lives in the task modules)."""

from __future__ import annotations

from .boxes import box_convert, box_iou
from .classification import ClassificationMetrics, classification_metrics, confusion_matrix, predicted_classes
from .detection import (
    COCO_IOU_THRESHOLDS,
    DetectionMatches,
    DetectionMetrics,
    average_precision,
    detection_matches,
    match_detections,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "ClassificationMetrics",
    "DetectionMatches",
    "DetectionMetrics",
    "average_precision",
    "box_convert",
    "box_iou",
    "classification_metrics",
    "confusion_matrix",
    "detection_matches",
    "match_detections",
    "predicted_classes",
]
