"""Does more data still help? Train on nested, stratified fractions of the training split and score on val."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import TrainmedicError
from ._inputs import as_split
from .split import _take


@dataclass(frozen=True)
class LearningCurve:
    fractions: list[float]
    sizes: list[int]
    scores: list[float]

    @property
    def last_gain(self) -> float:
        """Score gained by the last step (e.g. 50% -> 100%); large means the curve has not flattened."""
        return float(self.scores[-1] - self.scores[-2]) if len(self.scores) >= 2 else 0.0


def learning_curve(
    train_fn: Callable[[Any, Any], float],
    train: Any,
    val: Any,
    fractions: Sequence[float] = (0.25, 0.5, 1.0),
    seed: int = 0,
) -> LearningCurve:
    """Call ``train_fn(train_part, val) -> score`` (higher is better) on growing, nested training subsets.

    Subsets are stratified (each class keeps its share) and nested (each contains the previous), so the curve
    measures data quantity, not luck of the draw. ``train_part`` has the type of ``train``.
    """
    fr = sorted(float(f) for f in fractions)
    if len(fr) < 2 or fr[0] <= 0 or fr[-1] > 1:
        raise TrainmedicError(f"`fractions` must be at least two values in (0, 1]; got {tuple(fractions)!r}")
    y = as_split(train, "train").y
    rng = np.random.default_rng(seed)
    per_class = {int(c): rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}
    sizes, scores = [], []
    for f in fr:
        idx = np.sort(np.concatenate([p[: max(1, int(round(f * len(p))))] for p in per_class.values()]))
        if isinstance(train, Dataset) and not isinstance(train, (tuple, list)):
            part: Any = Subset(train, idx.tolist())
        else:
            part = (_take(train[0], idx), _take(train[1], idx))
        score = train_fn(part, val)
        try:
            scores.append(float(score))
        except (TypeError, ValueError):
            raise TrainmedicError(
                f"`train_fn` must return a number (a validation score); got {score!r}"
            ) from None
        sizes.append(len(idx))
    return LearningCurve(fr, sizes, scores)
