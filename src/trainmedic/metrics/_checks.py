"""Argument checks shared by the metric functions, kept apart from the maths so each reads plainly.

Every check raises :class:`~trainmedic.errors.TrainmedicError` with one line: the argument, what was
expected, what was received.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import TrainmedicError, describe_shape


def as_tensor(x: Any, name: str) -> Tensor:
    """Accept tensors, numpy arrays and nested sequences; detach tensors so metrics never touch autograd."""
    if isinstance(x, Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise TrainmedicError(
            f"`{name}` must be a tensor, an array or a sequence of numbers; got {type(x).__name__}"
        ) from None


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """A probability cut-off must lie in [0, 1]."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise TrainmedicError(f"`{name}` must be a number in [0, 1]; got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:
        raise TrainmedicError(f"`{name}` must be a number in [0, 1]; got {threshold!r}")
    return value


def check_num_classes(num_classes: int | None) -> int | None:
    """``num_classes`` is optional, but when given it must be a positive whole number."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise TrainmedicError(f"`num_classes` must be a positive integer or None; got {num_classes!r}")
    return num_classes


def check_no_nan(x: Tensor, name: str) -> None:
    """NaN scores make every downstream number meaningless, so they are refused rather than propagated."""
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        count = int(torch.isnan(x).sum())
        raise TrainmedicError(
            f"`{name}` must not contain NaN; got {count} NaN value(s) of {x.numel()} (check the model for nonfinite outputs)"
        )


def to_class_indices(x: Tensor, name: str) -> Tensor:
    """Turn integer, bool or whole-valued float labels into a long tensor; refuse fractional values."""
    if x.dtype == torch.bool:
        return x.long()
    if x.is_floating_point():
        check_no_nan(x, name)
        bad = x != torch.round(x)
        if bool(bad.any()):
            example = float(x[bad][0])
            raise TrainmedicError(
                f"`{name}` must hold whole class indices; got non-integer values such as {example:g}"
            )
        return x.long()
    if x.is_complex():
        raise TrainmedicError(f"`{name}` must hold class indices; got a complex tensor")
    return x.long()


def check_label_range(labels: Tensor, num_classes: int, name: str) -> None:
    """Labels outside [0, num_classes) would silently land in another cell of a bincount."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise TrainmedicError(
            f"`{name}` must be class indices in [0, {num_classes}) (num_classes={num_classes}); got {bad}"
        )


def shape_of(x: Any) -> str:
    return describe_shape(x)


def float_list(t: Tensor) -> list[float]:
    """A 1-D tensor as plain python floats (JSON-able)."""
    return [float(v) for v in t.tolist()]


def int_list(t: Tensor) -> list[int]:
    """A 1-D tensor as plain python ints (JSON-able)."""
    return [int(v) for v in t.tolist()]
