"""Classification metrics as pure functions: tensors in, a confusion matrix and its derived numbers out.

Everything is derived from one confusion matrix (rows = true class, columns = predicted class), so the
one-shot functions and the streaming classes (which only add confusion matrices) give identical results.

Zero division, the same rule as scikit-learn's ``zero_division=0``; no metric is ever NaN:

* precision of class c = TP / (TP + FP), and 0 when the class was never predicted;
* recall of class c = TP / (TP + FN), and 0 when the class has no samples;
* F1 of class c = 2 TP / (2 TP + FP + FN), and 0 when the class has neither samples nor predictions.

Macro averages are taken over **all** ``num_classes`` classes, absent ones included (they count as 0),
exactly like scikit-learn with ``labels=range(num_classes)``. The absent classes are listed in
``classes_without_samples`` / ``classes_without_predictions`` so that a reader can tell a weak class from a
missing one. Weighted averages weight by support, so absent classes weigh nothing; micro averages pool all
counts and equal accuracy for single-label data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import TrainmedicError
from ._checks import (
    as_tensor,
    check_label_range,
    check_no_nan,
    check_num_classes,
    check_threshold,
    float_list,
    int_list,
    shape_of,
    to_class_indices,
)

__all__ = [
    "ClassificationMetrics",
    "classification_metrics",
    "confusion_matrix",
    "predicted_classes",
]


def _targets_1d(targets: Any) -> Tensor:
    t = as_tensor(targets, "targets")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim == 0:
        raise TrainmedicError("`targets` must be class indices of shape (N,); got a scalar")
    if t.ndim == 2 and t.shape[1] >= 2 and t.shape[0] > 0 and _one_hot_rows(t):
        # one-hot (or soft, label-smoothed) targets as Keras programs keep them: the class is the row's argmax
        t = t.argmax(1)
    if t.ndim != 1:
        hint = " (one-hot or soft targets are taken when each row sums to 1)" if t.ndim == 2 else ""
        raise TrainmedicError(f"`targets` must be class indices of shape (N,); got shape {shape_of(t)}{hint}")
    if t.numel() == 0:
        raise TrainmedicError("`targets` must hold at least one sample; got an empty batch of shape (0,)")
    return to_class_indices(t, "targets")


def _one_hot_rows(t: Tensor) -> bool:
    """Rows of non-negative values that each sum to 1 (one-hot or soft class targets)."""
    f = t.double()
    if not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
        return False
    return bool(torch.allclose(f.sum(1), torch.ones(f.shape[0], dtype=f.dtype), atol=1e-4))


def predicted_classes(
    outputs: Any, num_classes: int | None = None, threshold: float = 0.5
) -> tuple[Tensor, int | None]:
    """Read ``outputs`` as predicted class indices; return them and the class count the outputs imply.

    * ``(N, C)`` scores (logits or probabilities, C >= 2): argmax; they imply ``C`` classes.
    * ``(N,)`` or ``(N, 1)`` floating scores: binary. Values all inside [0, 1] are probabilities, anything
      else are logits (passed through a sigmoid); class 1 when the probability is ``> threshold`` (as
      torchmetrics does). They imply 2 classes.
    * ``(N,)`` integer or bool: class indices already; they imply nothing.
    """
    num_classes = check_num_classes(num_classes)
    threshold = check_threshold(threshold)
    o = as_tensor(outputs, "outputs")
    if o.ndim == 2 and o.shape[1] == 1:
        o = o[:, 0]
    if o.ndim == 0 or o.ndim > 2:
        raise TrainmedicError(
            "`outputs` must be scores of shape (N, C), binary scores of shape (N,) or class indices of shape (N,); "
            f"got shape {shape_of(o)}"
        )
    if o.shape[0] == 0:
        raise TrainmedicError(
            f"`outputs` must hold at least one sample; got an empty batch of shape {shape_of(o)}"
        )
    if o.ndim == 2:
        if num_classes is not None and o.shape[1] != num_classes:
            raise TrainmedicError(
                f"`outputs` must have num_classes={num_classes} columns; got shape {shape_of(o)}"
            )
        if not o.is_floating_point():
            return o.argmax(dim=1), int(o.shape[1])
        # max propagates NaN, so one pass gives the argmax and the NaN check.
        best, index = o.max(dim=1)
        if bool(torch.isnan(best).any()):
            check_no_nan(o, "outputs")
        return index, int(o.shape[1])
    check_no_nan(o, "outputs")
    if o.is_floating_point():
        if num_classes is not None and num_classes != 2:
            raise TrainmedicError(
                f"`outputs` of shape {shape_of(o)} with floating values are binary scores, which need num_classes=2; "
                f"got num_classes={num_classes} (pass class indices as an integer tensor, or scores of shape (N, {num_classes}))"
            )
        probs = o if bool((o.min() >= 0) & (o.max() <= 1)) else torch.sigmoid(o)
        return (probs > threshold).long(), 2
    return to_class_indices(o, "outputs"), None


def _prepare(
    targets: Any, outputs: Any, num_classes: int | None, threshold: float
) -> tuple[Tensor, Tensor, int]:
    """Validate and align targets and predictions; settle the number of classes."""
    num_classes = check_num_classes(num_classes)
    t = _targets_1d(targets)
    p, implied = predicted_classes(outputs, num_classes, threshold)
    if p.shape[0] != t.shape[0]:
        raise TrainmedicError(
            f"`outputs` must have one row per target (N={t.shape[0]}); got {p.shape[0]} rows"
        )
    if p.device != t.device:
        p = p.to(t.device)
    if num_classes is None:
        if implied is not None:
            num_classes = implied
        else:
            # Inferred from the labels seen, at least 2: a batch of only zeros is most often a binary problem.
            num_classes = max(int(t.max()), int(p.max()), 1) + 1
    check_label_range(t, num_classes, "targets")
    check_label_range(p, num_classes, "outputs")
    return t, p, num_classes


def confusion_matrix(
    targets: Any, outputs: Any, num_classes: int | None = None, threshold: float = 0.5
) -> Tensor:
    """Count (true, predicted) pairs: a ``[C, C]`` long tensor, rows = true class, columns = predicted.

    One ``bincount`` over ``target * C + predicted`` keeps it linear in N (1M predictions, 1,000 classes:
    a few milliseconds). ``outputs`` may be scores, binary scores or class indices (see
    :func:`predicted_classes`); ``num_classes`` is inferred when omitted.
    """
    t, p, c = _prepare(targets, outputs, num_classes, threshold)
    return _bincount_confusion(t, p, c)


def _bincount_confusion(t: Tensor, p: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den with 0 where den == 0 (scikit-learn's ``zero_division=0``)."""
    num = num.to(torch.float64)
    den = den.to(torch.float64)
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def _weighted(values: Tensor, weights: Tensor) -> float:
    total = float(weights.sum())
    return float((values * weights.to(torch.float64)).sum() / total) if total > 0 else 0.0


@dataclass
class ClassificationMetrics:
    """Everything derived from one confusion matrix; see the module docstring for the zero-division rule."""

    num_classes: int
    confusion_matrix: Tensor  # [C, C] long, rows = true, columns = predicted
    tp: Tensor  # [C] long
    fp: Tensor
    fn: Tensor
    tn: Tensor
    support: Tensor  # [C] long, samples per true class (tp + fn)
    predicted: Tensor  # [C] long, predictions per class (tp + fp)
    precision: Tensor  # [C] float64
    recall: Tensor
    f1: Tensor
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_micro: float
    recall_micro: float
    f1_micro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    num_samples: int
    classes_without_samples: list[int] = field(default_factory=list)  # support == 0 (still in macro, as 0)
    classes_without_predictions: list[int] = field(default_factory=list)  # never predicted: precision is 0

    @classmethod
    def from_confusion_matrix(cls, cm: Tensor) -> ClassificationMetrics:
        """Derive every number from a ``[C, C]`` confusion matrix (rows = true, columns = predicted)."""
        cm = as_tensor(cm, "cm")
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
            raise TrainmedicError(f"`cm` must be a square [C, C] confusion matrix; got shape {shape_of(cm)}")
        cm = cm.detach().to("cpu", torch.int64)
        n = int(cm.sum())
        if n == 0:
            raise TrainmedicError(
                "`cm` must count at least one sample; got an empty confusion matrix (no updates?)"
            )
        tp = cm.diagonal().clone()
        support = cm.sum(dim=1)
        predicted = cm.sum(dim=0)
        fn = support - tp
        fp = predicted - tp
        tn = n - tp - fp - fn
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
        tp_sum, pred_sum, true_sum = int(tp.sum()), int(predicted.sum()), int(support.sum())
        p_micro = tp_sum / pred_sum if pred_sum else 0.0
        r_micro = tp_sum / true_sum if true_sum else 0.0
        f_den = 2 * tp_sum + (pred_sum - tp_sum) + (true_sum - tp_sum)
        f_micro = 2 * tp_sum / f_den if f_den else 0.0
        return cls(
            num_classes=int(cm.shape[0]),
            confusion_matrix=cm,
            tp=tp,
            fp=fp,
            fn=fn,
            tn=tn,
            support=support,
            predicted=predicted,
            precision=precision,
            recall=recall,
            f1=f1,
            accuracy=tp_sum / n,
            precision_macro=float(precision.mean()),
            recall_macro=float(recall.mean()),
            f1_macro=float(f1.mean()),
            precision_micro=p_micro,
            recall_micro=r_micro,
            f1_micro=f_micro,
            precision_weighted=_weighted(precision, support),
            recall_weighted=_weighted(recall, support),
            f1_weighted=_weighted(f1, support),
            num_samples=n,
            classes_without_samples=[int(i) for i in torch.nonzero(support == 0).flatten()],
            classes_without_predictions=[int(i) for i in torch.nonzero(predicted == 0).flatten()],
        )

    def scalars(self) -> dict[str, float]:
        """The flat name → float view that the run recorder stores."""
        return {
            "accuracy": float(self.accuracy),
            "precision_macro": self.precision_macro,
            "recall_macro": self.recall_macro,
            "f1_macro": self.f1_macro,
            "precision_micro": self.precision_micro,
            "recall_micro": self.recall_micro,
            "f1_micro": self.f1_micro,
            "precision_weighted": self.precision_weighted,
            "recall_weighted": self.recall_weighted,
            "f1_weighted": self.f1_weighted,
            "num_samples": float(self.num_samples),
        }

    def per_class(self) -> dict[str, list[float] | list[int]]:
        """Per-class lists, index = class id."""
        return {
            "precision": float_list(self.precision),
            "recall": float_list(self.recall),
            "f1": float_list(self.f1),
            "support": int_list(self.support),
            "predicted": int_list(self.predicted),
            "tp": int_list(self.tp),
            "fp": int_list(self.fp),
            "fn": int_list(self.fn),
            "tn": int_list(self.tn),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able python: floats, ints and lists only."""
        return {
            "task": "classification",
            "num_classes": self.num_classes,
            "scalars": self.scalars(),
            "per_class": self.per_class(),
            "confusion_matrix": [[int(v) for v in row] for row in self.confusion_matrix.tolist()],
            "classes_without_samples": list(self.classes_without_samples),
            "classes_without_predictions": list(self.classes_without_predictions),
        }


def classification_metrics(
    targets: Any, outputs: Any, num_classes: int | None = None, threshold: float = 0.5
) -> ClassificationMetrics:
    """Confusion matrix, per-class and averaged precision/recall/F1 and accuracy in one pass.

    ``num_classes`` is inferred when omitted: the score columns for ``(N, C)`` outputs, 2 for binary scores,
    otherwise the largest label seen + 1 (at least 2). Pass it whenever a class might be missing from a batch.
    """
    return ClassificationMetrics.from_confusion_matrix(
        confusion_matrix(targets, outputs, num_classes, threshold)
    )


_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def fast_confusion_matrix(targets: Any, outputs: Any, num_classes: int | None = None) -> Any:
    """The common case of :func:`confusion_matrix` in one ``bincount``: a ``(C, C)`` int64 NumPy array, or None
    when the input needs the checked path.

    Handled: integer targets ``(N,)`` with ``(N, C)`` floating scores (C >= 2) or, with ``num_classes``, integer
    class indices ``(N,)``, on one device. Anything else — binary scores, other shapes, labels out of range
    (a ``bincount`` longer than C², or a negative index) — returns None, and :func:`confusion_matrix` gives the
    full checks and their messages. Non-finite scores are the caller's to rule out (``Run.evaluate`` does).
    CPU tensors go through NumPy views (``argmax`` + ``bincount`` there cost about half of torch's on small
    inputs); others stay on their device until the C x C counts.
    """
    import numpy as np

    if not isinstance(targets, Tensor) or not isinstance(outputs, Tensor):
        return None
    if targets.ndim != 1 or targets.dtype not in _INDEX_DTYPES or targets.device != outputs.device:
        return None
    n = targets.shape[0]
    if n == 0 or outputs.shape[0] != n:
        return None
    scores = outputs.ndim == 2 and outputs.is_floating_point() and outputs.shape[1] >= 2
    if scores:
        k = int(outputs.shape[1])
        if num_classes is not None and num_classes != k:
            return None
    elif (
        outputs.ndim == 1 and outputs.dtype in _INDEX_DTYPES and num_classes is not None and num_classes >= 1
    ):
        k = num_classes
    else:
        return None
    host = outputs.device.type == "cpu" and outputs.dtype in (torch.float32, torch.float64, *_INDEX_DTYPES)
    try:
        if host:
            t = targets.detach().numpy().astype(np.int64, copy=False)
            o = outputs.detach().numpy()
            pred = o.argmax(axis=1) if scores else o.astype(np.int64, copy=False)
            if not scores and (pred.min() < 0 or pred.max() >= k):
                return None
            counts = np.bincount(t * k + pred, minlength=k * k)
        else:
            p = outputs.detach().argmax(dim=1) if scores else outputs.long()
            if not scores and (bool((p < 0).any()) or bool((p >= k).any())):
                return None
            counts = torch.bincount(targets.long() * k + p, minlength=k * k).cpu().numpy()
    except (RuntimeError, ValueError):  # a negative target
        return None
    if counts.size != k * k:  # a target >= k
        return None
    return counts.reshape(k, k)


def metrics_dict(cm: Any) -> dict[str, Any]:
    """``ClassificationMetrics.from_confusion_matrix(cm).to_dict()`` with a few vectorised NumPy calls: the same
    numbers (same zero-division rule), for ``Run.evaluate``'s per-epoch path."""
    import numpy as np

    m = np.asarray(cm, dtype=np.int64)
    n = int(m.sum())
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1 or n == 0:
        return ClassificationMetrics.from_confusion_matrix(torch.as_tensor(m)).to_dict()
    k = m.shape[0]
    tp = m.diagonal()
    add = np.add.reduce  # the ufunc itself: ndarray.sum/mean add a Python wrapper per call
    support = add(m, axis=1)
    predicted = add(m, axis=0)
    both = support + predicted  # 2 tp + fp + fn: F1's denominator

    def safe_div(num: Any, den: Any) -> Any:
        return np.divide(num, den, out=np.zeros(k), where=den > 0)

    p, r, f = safe_div(tp, predicted), safe_div(tp, support), safe_div(2 * tp, both)
    macro = [float(add(p)) / k, float(add(r)) / k, float(add(f)) / k]
    weighted = [float(np.dot(p, support)) / n, float(np.dot(r, support)) / n, float(np.dot(f, support)) / n]
    tp_sum = int(add(tp))
    acc = tp_sum / n  # single-label: micro precision = micro recall = micro F1 = accuracy
    precision, recall, f1 = p.tolist(), r.tolist(), f.tolist()
    return {
        "task": "classification",
        "num_classes": int(m.shape[0]),
        "scalars": {
            "accuracy": acc,
            "precision_macro": macro[0],
            "recall_macro": macro[1],
            "f1_macro": macro[2],
            "precision_micro": acc,
            "recall_micro": acc,
            "f1_micro": acc,
            "precision_weighted": weighted[0],
            "recall_weighted": weighted[1],
            "f1_weighted": weighted[2],
            "num_samples": float(n),
        },
        "per_class": {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support.tolist(),
            "predicted": predicted.tolist(),
            "tp": tp.tolist(),
            "fp": (predicted - tp).tolist(),
            "fn": (support - tp).tolist(),
            "tn": (n - support - predicted + tp).tolist(),
        },
        "confusion_matrix": m.tolist(),
        "classes_without_samples": np.flatnonzero(support == 0).tolist(),
        "classes_without_predictions": np.flatnonzero(predicted == 0).tolist(),
    }
