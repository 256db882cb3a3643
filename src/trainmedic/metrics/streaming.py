"""Streaming metrics: accumulate over batches (and processes), compute once.

Each metric declares its state with the reduction that joins it across processes, like torchmetrics'
``add_state(..., dist_reduce_fx=...)``: ``"sum"`` states are added with ``all_reduce``, ``"cat"`` states
(lists) are gathered with ``all_gather_object`` and joined in rank order. ``compute()`` syncs only when
``torch.distributed`` is initialised with more than one process, and it never changes the local state, so
updating can go on after a compute. Because the maths lives in the functional modules and only ever sees
the accumulated state, streaming over many batches gives exactly the one-shot result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import TrainmedicError
from ._checks import check_num_classes, check_threshold
from .classification import ClassificationMetrics, _bincount_confusion, _prepare
from .detection import DetectionMatches, DetectionMetrics, _iou_thresholds, detection_matches

__all__ = ["ClassificationMetric", "ConfusionMatrixMetric", "DetectionMetric", "Metric"]

Reduction = Literal["sum", "cat"]


def _distributed() -> bool:
    if not torch.distributed.is_available():
        return False
    dist = torch.distributed
    return bool(dist.is_initialized() and dist.get_world_size() > 1)


class Metric:
    """Base class: declare states with :meth:`add_state`, implement ``update`` and ``compute``."""

    def __init__(self, sync_on_compute: bool = True) -> None:
        self.sync_on_compute = sync_on_compute
        self._defaults: dict[str, Tensor | list[Any]] = {}
        self._reductions: dict[str, Reduction] = {}

    def add_state(self, name: str, default: Tensor | list[Any], reduce: Reduction) -> None:
        """Declare a state: a tensor added across processes (``"sum"``) or a list joined in rank order (``"cat"``)."""
        if reduce not in ("sum", "cat"):
            raise TrainmedicError(f"`reduce` must be 'sum' or 'cat'; got {reduce!r}")
        if reduce == "sum" and not isinstance(default, Tensor):
            raise TrainmedicError(
                f"`default` of a 'sum' state must be a tensor; got {type(default).__name__}"
            )
        if reduce == "cat" and not (isinstance(default, list) and not default):
            raise TrainmedicError("`default` of a 'cat' state must be an empty list")
        self._defaults[name] = default
        self._reductions[name] = reduce
        setattr(self, name, default.clone() if isinstance(default, Tensor) else [])

    def reset(self) -> None:
        """Forget everything accumulated (start of a new epoch or split)."""
        for name, default in self._defaults.items():
            setattr(self, name, default.clone() if isinstance(default, Tensor) else [])

    def synced_state(self) -> dict[str, Any]:
        """The state joined over all processes (the local state itself when not distributed)."""
        state = {name: getattr(self, name) for name in self._reductions}
        if not (self.sync_on_compute and _distributed()):
            return state
        dist = torch.distributed
        comm_device = (
            torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        )
        out: dict[str, Any] = {}
        for name, reduce in self._reductions.items():
            value = state[name]
            if reduce == "sum":
                t = value.clone() if comm_device is None else value.to(comm_device)
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                out[name] = t.to(value.device)
            else:
                gathered: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, list(value))
                out[name] = [item for part in gathered for item in (part or [])]
        return out


class ConfusionMatrixMetric(Metric):
    """Streaming ``[C, C]`` confusion matrix (rows = true, columns = predicted); state summed across processes."""

    def __init__(self, num_classes: int, threshold: float = 0.5, sync_on_compute: bool = True) -> None:
        super().__init__(sync_on_compute)
        checked = check_num_classes(num_classes)
        if checked is None:
            raise TrainmedicError("`num_classes` must be a positive integer for a streaming metric; got None")
        self.num_classes: int = checked
        self.threshold = check_threshold(threshold)
        self.confmat: Tensor
        self.add_state("confmat", torch.zeros(checked, checked, dtype=torch.long), reduce="sum")

    def update(self, targets: Any, outputs: Any) -> None:
        """Add one batch. ``outputs``: scores (N, C), binary scores (N,) or class indices (N,).

        Binary scores are read as probabilities or logits per batch (all values in [0, 1] → probabilities),
        so pass logits or probabilities consistently.
        """
        t, p, c = _prepare(targets, outputs, self.num_classes, self.threshold)
        cm = _bincount_confusion(t, p, c)
        if self.confmat.device != cm.device:
            self.confmat = self.confmat.to(cm.device)
        self.confmat += cm

    def compute(self) -> Tensor:
        """The confusion matrix over everything seen (on all processes)."""
        cm: Tensor = self.synced_state()["confmat"]
        return cm.clone()


class ClassificationMetric(ConfusionMatrixMetric):
    """Streaming :class:`ClassificationMetrics`: accumulates a confusion matrix, derives everything at the end."""

    def compute(self) -> ClassificationMetrics:  # type: ignore[override]
        """Precision/recall/F1/accuracy over everything seen (on all processes)."""
        return ClassificationMetrics.from_confusion_matrix(super().compute())


class DetectionMetric(Metric):
    """Streaming detection metrics: each update matches its images at once; only the matches are kept.

    The state is the per-detection match results (score, label, matched at each IoU threshold) plus the
    ground-truth labels, gathered across processes in rank order.
    """

    def __init__(
        self, iou_threshold: float = 0.5, num_classes: int | None = None, sync_on_compute: bool = True
    ) -> None:
        super().__init__(sync_on_compute)
        self.iou_thresholds, _ = _iou_thresholds(iou_threshold)
        self.iou_threshold = float(iou_threshold)
        self.num_classes = check_num_classes(num_classes)
        self.matches: list[DetectionMatches]
        self.add_state("matches", [], reduce="cat")

    def update(self, targets: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch of images: ``targets`` ``[{"boxes", "labels"}]``, ``outputs`` ``[{"boxes", "scores", "labels"}]``.

        Targets come first, as in :class:`ClassificationMetric` and ``run.evaluate``.
        """
        self.matches.append(detection_matches(outputs, targets, self.iou_thresholds, self.num_classes))

    def compute(self) -> DetectionMetrics:
        """mAP, per-class counts and AP over every image seen (on all processes)."""
        parts: list[DetectionMatches] = self.synced_state()["matches"]
        if not parts:
            raise TrainmedicError("`DetectionMetric.compute()` needs at least one update; got none")
        return DetectionMetrics.from_matches(
            DetectionMatches.cat(parts), self.iou_threshold, self.num_classes
        )
