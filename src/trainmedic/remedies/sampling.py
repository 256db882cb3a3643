"""Class weights and balanced samplers (remedies ``class_weights``, ``oversample``, ``undersample``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch.utils.data import Sampler, WeightedRandomSampler

from ..errors import TrainmedicError, describe_shape

_SCHEMES = ("inverse", "sqrt_inverse", "effective")


def _labels_array(labels: ArrayLike | torch.Tensor, arg: str = "labels") -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        if y.ndim == 1 and y.size and np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TrainmedicError(
                f"`{arg}` must be non-empty class indices of shape (N,); got {y.dtype} of shape {describe_shape(y)}"
            )
    if y.min() < 0:
        raise TrainmedicError(f"`{arg}` must be class indices >= 0; got minimum {int(y.min())}")
    return y.astype(np.int64)


def class_counts(labels: ArrayLike | torch.Tensor, num_classes: int | None = None) -> np.ndarray:
    y = _labels_array(labels)
    return np.bincount(y, minlength=num_classes or 0)


def class_weights(
    labels: ArrayLike | torch.Tensor | None = None,
    *,
    counts: ArrayLike | None = None,
    num_classes: int | None = None,
    scheme: str = "inverse",
    beta: float = 0.999,
) -> torch.Tensor:
    """Per-class loss weights (float32, shape (C,)) for ``CrossEntropyLoss(weight=...)``.

    Give either ``labels`` (class indices) or ``counts`` (samples per class). Raw weights:
    ``inverse`` 1/n_c; ``sqrt_inverse`` 1/sqrt(n_c) (milder); ``effective`` (1 - beta)/(1 - beta^n_c), the
    "effective number of samples" of Cui et al. 2019 (beta → 0: no weighting, beta → 1: inverse).

    Normalization: scaled so that the mean weight *over samples* is 1, i.e. sum_c n_c w_c = N — the loss keeps
    its scale, and the learning rate its meaning. For ``inverse`` this gives w_c = N / (C · n_c)
    (scikit-learn's "balanced"). A class with no samples gets the largest weight of the others (it has no
    training samples to weight, but stays weighted if it shows up at evaluation).
    """
    if (labels is None) == (counts is None):
        raise TrainmedicError(
            "`labels` or `counts` must be given, exactly one of them; got "
            + ("both" if labels is not None else "neither")
        )
    if scheme not in _SCHEMES:
        raise TrainmedicError(f"`scheme` must be one of {', '.join(_SCHEMES)}; got {scheme!r}")
    if counts is not None:
        n = np.asarray(counts, dtype=float).reshape(-1)
        if n.size == 0 or np.any(n < 0) or not np.all(np.isfinite(n)):
            raise TrainmedicError(
                f"`counts` must be finite, non-negative samples per class; got {n.tolist()}"
            )
        if num_classes is not None and num_classes > n.size:
            n = np.concatenate([n, np.zeros(num_classes - n.size)])
    else:
        n = class_counts(labels, num_classes).astype(float)  # type: ignore[arg-type]
    present = n > 0
    if not present.any():
        raise TrainmedicError("`counts` must hold at least one sample; got all zeros")
    raw = np.zeros_like(n)
    if scheme == "inverse":
        raw[present] = 1.0 / n[present]
    elif scheme == "sqrt_inverse":
        raw[present] = 1.0 / np.sqrt(n[present])
    else:
        if not 0.0 <= beta < 1.0:
            raise TrainmedicError(f"`beta` must be in [0, 1); got {beta!r}")
        raw[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    w = raw * n.sum() / float((raw * n).sum())
    w[~present] = w[present].max()
    return torch.tensor(w, dtype=torch.float32)


def _check_ratio(target_ratio: float) -> float:
    if not 0.0 < float(target_ratio) <= 1.0:
        raise TrainmedicError(
            f"`target_ratio` must be in (0, 1] (smallest/largest class); got {target_ratio!r}"
        )
    return float(target_ratio)


def _targets(counts: np.ndarray, mode: str, r: float) -> np.ndarray:
    """Samples per class per epoch so that smallest/largest drawn class = ``r`` (classes already closer keep
    their count)."""
    present = counts > 0
    if mode == "oversample":
        goal = r * counts.max()
        return np.where(present, np.maximum(counts, goal), 0.0)
    goal = counts[present].min() / r
    return np.where(present, np.minimum(counts, goal), 0.0)


class UndersamplingSampler(Sampler[int]):
    """Each epoch, a fresh random subset: every class keeps at most ``per_class[c]`` samples, drawn without
    replacement and shuffled. Epoch ``e`` uses seed ``seed + e`` (reproducible; the epoch advances on each
    ``iter`` unless set with :meth:`set_epoch`)."""

    def __init__(self, labels: np.ndarray, per_class: np.ndarray, seed: int = 0) -> None:
        self.labels = labels
        self.per_class = np.floor(per_class + 1e-9).astype(np.int64)
        self.seed = int(seed)
        self.epoch = 0
        self._by_class = [np.flatnonzero(labels == c) for c in range(len(per_class))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.per_class.sum())

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        chosen: list[np.ndarray] = []
        for idx, k in zip(self._by_class, self.per_class, strict=False):
            if k <= 0 or idx.size == 0:
                continue
            pick = torch.randperm(idx.size, generator=g)[: int(k)].numpy()
            chosen.append(idx[pick])
        all_idx = np.concatenate(chosen)
        order = torch.randperm(all_idx.size, generator=g).numpy()
        return iter(all_idx[order].tolist())


def balanced_sampler(
    labels: ArrayLike | torch.Tensor,
    mode: str = "oversample",
    target_ratio: float = 1.0,
    seed: int = 0,
    num_samples: int | None = None,
) -> Sampler[int]:
    """A sampler for ``DataLoader(dataset, sampler=...)`` that evens out the classes.

    ``target_ratio`` is the wanted (expected) count of the smallest class ÷ count of the largest in each
    epoch's draws; 1.0 balances fully. Classes already closer to the largest are left as they are.

    - ``oversample``: a :class:`WeightedRandomSampler` with replacement; class c is drawn in expectation
      max(n_c, ratio · n_max) times per epoch (epoch length: their sum, or ``num_samples``).
    - ``undersample``: an :class:`UndersamplingSampler`; class c keeps min(n_c, n_min / ratio) samples per
      epoch, a different random subset each epoch, no replacement.
    """
    y = _labels_array(labels)
    r = _check_ratio(target_ratio)
    counts = np.bincount(y).astype(float)
    if mode == "oversample":
        targets = _targets(counts, mode, r)
        per_sample = (targets / np.where(counts > 0, counts, 1.0))[y]
        n = int(num_samples) if num_samples is not None else int(math.ceil(targets.sum()))
        g = torch.Generator().manual_seed(int(seed))
        weights: Any = torch.as_tensor(per_sample, dtype=torch.double)
        return WeightedRandomSampler(weights, num_samples=n, replacement=True, generator=g)
    if mode == "undersample":
        if num_samples is not None:
            raise TrainmedicError(
                "`num_samples` is only for mode='oversample'; got it with mode='undersample'"
            )
        return UndersamplingSampler(y, _targets(counts, mode, r), seed=seed)
    raise TrainmedicError(f"`mode` must be 'oversample' or 'undersample'; got {mode!r}")
