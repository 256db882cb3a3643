"""trainmedic.metrics: classification and detection metrics, one-shot and streaming.

Pure functions (tensors in, tensors/dataclasses out) live in :mod:`trainmedic.metrics.functional`; streaming
classes that accumulate over batches and sync across processes in :mod:`trainmedic.metrics.streaming`;
:func:`evaluate` is what the run recorder calls. torchmetrics is never imported here.
"""

from __future__ import annotations

from .boxes import box_convert, box_iou
from .classification import ClassificationMetrics, classification_metrics, confusion_matrix
from .detection import COCO_IOU_THRESHOLDS, DetectionMetrics, match_detections
from .evaluate import evaluate, evaluate_classification, evaluate_detection
from .streaming import ClassificationMetric, ConfusionMatrixMetric, DetectionMetric, Metric

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "ClassificationMetric",
    "ClassificationMetrics",
    "ConfusionMatrixMetric",
    "DetectionMetric",
    "DetectionMetrics",
    "Metric",
    "box_convert",
    "box_iou",
    "classification_metrics",
    "confusion_matrix",
    "evaluate",
    "evaluate_classification",
    "evaluate_detection",
    "match_detections",
]
