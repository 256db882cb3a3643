"""Stratified, group-aware, reproducible train/val/test splits (default 60/20/20).

Stratification rounds each class's share with a carried remainder, so per-class counts follow the ratios and
the split sizes stay within one sample of ``N * ratio``; every class with at least three samples gets at least
one sample in every split. With ``groups``, whole groups are placed greedily (largest first) where they bring
the per-class counts closest to their targets, so no group appears in two splits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import TrainmedicError, describe_shape
from ._inputs import as_labels, dataset_labels, to_numpy

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """``train``, ``val`` and ``test`` parts (unpack like a tuple) plus the indices that made them."""

    train: Any
    val: Any
    test: Any
    indices: tuple[np.ndarray, np.ndarray, np.ndarray]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.train, self.val, self.test))

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> Any:
        return (self.train, self.val, self.test)[i]


def check_ratios(ratios: Sequence[float]) -> np.ndarray:
    """Three positive ratios that sum to 1."""
    try:
        r = np.asarray([float(v) for v in ratios], dtype=np.float64)
    except (TypeError, ValueError):
        raise TrainmedicError(f"`ratios` must be three numbers (train, val, test); got {ratios!r}") from None
    if r.shape != (3,):
        raise TrainmedicError(
            f"`ratios` must be three numbers (train, val, test); got {len(r)} values {tuple(ratios)!r}"
        )
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise TrainmedicError(f"`ratios` must all be positive; got {tuple(float(v) for v in r)!r}")
    if abs(r.sum() - 1.0) > 1e-6:
        raise TrainmedicError(
            f"`ratios` must sum to 1; got {tuple(float(v) for v in r)!r} (sum {r.sum():.6g})"
        )
    return r


def _allocate(n: int, ratios: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """Counts for one block of ``n`` samples: floor of the quota plus carried remainder, then largest remainders."""
    quota = n * ratios + carry
    counts = np.floor(quota).astype(np.int64)
    counts = np.minimum(np.maximum(counts, 0), n)
    rest = n - int(counts.sum())
    if rest > 0:
        for s in np.argsort(-(quota - counts), kind="stable")[:rest]:
            counts[s] += 1
    while counts.sum() > n:  # carry overshoot: take from the split furthest above its quota
        counts[int(np.argmax(counts - quota))] -= 1
    if n >= 3:  # every split sees every class that can be spread
        for s in range(3):
            while counts[s] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[s] += 1
    carry[:] = quota - counts
    return counts


def split_indices(
    n: int,
    y: np.ndarray | None = None,
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    stratify: bool = True,
    seed: int = 0,
    groups: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted index arrays of the three splits; the plain-index core of :func:`split`."""
    r = check_ratios(ratios)
    if n < 3:
        raise TrainmedicError(f"`data` must hold at least 3 samples to split three ways; got {n}")
    rng = np.random.default_rng(seed)
    labels = y if (stratify and y is not None) else np.zeros(n, dtype=np.int64)
    if groups is not None:
        g = to_numpy(groups, "groups")
        if g.shape[:1] != (n,) or g.ndim != 1:
            raise TrainmedicError(
                f"`groups` must have one entry per sample, shape ({n},); got {describe_shape(g)}"
            )
        return _group_split(labels, g, r, rng)
    parts: list[list[np.ndarray]] = [[], [], []]
    carry = np.zeros(3)
    classes = np.unique(labels)
    for c in rng.permutation(
        classes
    ):  # class order random so the carry does not always favour the same class
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        counts = _allocate(len(idx), r, carry)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for s in range(3):
            parts[s].append(idx[bounds[s] : bounds[s + 1]])
    out = tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return out[0], out[1], out[2]


def _group_split(
    labels: np.ndarray, groups: np.ndarray, r: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(groups, return_inverse=True)
    if len(uniq) < 3:
        raise TrainmedicError(
            f"`groups` must contain at least 3 distinct groups to split three ways; got {len(uniq)}"
        )
    classes, lab = np.unique(labels, return_inverse=True)
    per_group = np.zeros((len(uniq), len(classes)), dtype=np.int64)
    np.add.at(per_group, (inverse, lab), 1)
    sizes = per_group.sum(axis=1)
    target = r[:, None] * per_group.sum(axis=0)[None, :]  # (3, K)
    target_size = r * len(labels)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, random among equal sizes
    counts = np.zeros((3, len(classes)))
    assigned = np.empty(len(uniq), dtype=np.int64)
    for gi in order:
        best, best_cost = 0, np.inf
        for s in range(3):
            trial = counts.copy()
            trial[s] += per_group[gi]
            size = trial.sum(axis=1)
            # relative squared misfit of class counts and split sizes; empty splits cost extra
            cost = float(np.sum((trial - target) ** 2 / np.maximum(target, 1.0)))
            cost += float(np.sum((size - target_size) ** 2 / np.maximum(target_size, 1.0)))
            cost += 1e9 * float(np.sum(size == 0))
            if cost < best_cost:
                best, best_cost = s, cost
        counts[best] += per_group[gi]
        assigned[gi] = best
    sample_split = assigned[inverse]
    out = tuple(np.flatnonzero(sample_split == s).astype(np.int64) for s in range(3))
    return out[0], out[1], out[2]


def _take(x: Any, idx: np.ndarray) -> Any:
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, dtype=torch.long, device=x.device)]
    return np.asarray(x)[idx]


def split(
    data: Any,
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    stratify: bool = True,
    seed: int = 0,
    groups: Any = None,
    *,
    y: Any = None,
) -> Splits:
    """Split a dataset into train/val/test.

    Args:
        data: a torch ``Dataset`` (parts are ``Subset``s; labels from ``.targets``/``.labels`` or ``ds[i][1]``),
            an ``(X, y)`` pair (parts are ``(X_part, y_part)`` pairs of the same type) or ``X`` with ``y=``.
            An ``X`` without labels is split without stratification and parts are plain arrays.
        ratios: train, val, test shares: positive, summing to 1.
        stratify: keep each class's share the same in every split.
        seed: the same seed gives the same split.
        groups: one group id per sample; a group never spans two splits.
    """
    if isinstance(data, Dataset) and not isinstance(data, (tuple, list)):
        n = len(data)  # type: ignore[arg-type]
        labels = dataset_labels(data, "data") if stratify else None
        idx = split_indices(n, labels, ratios, stratify, seed, groups)
        parts = tuple(Subset(data, p.tolist()) for p in idx)
        return Splits(parts[0], parts[1], parts[2], idx)
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or y is not None:
            raise TrainmedicError(
                f"`data` must be an (X, y) pair, or X with `y=`; got a {type(data).__name__} of length {len(data)}"
                + (" and `y=`" if y is not None else "")
            )
        x, y = data
        paired = True
    else:
        x, paired = data, y is not None
    n = int(x.shape[0]) if hasattr(x, "shape") else len(x)
    labels = as_labels(y, "y", n) if y is not None else None
    idx = split_indices(n, labels, ratios, stratify and labels is not None, seed, groups)
    if paired:
        tr, va, te = ((_take(x, p), _take(y, p)) for p in idx)
    else:
        tr, va, te = (_take(x, p) for p in idx)
    return Splits(tr, va, te, idx)
