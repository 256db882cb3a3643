"""Small, vectorized statistics the checks share (no I/O; every function takes numpy arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def window_means(x: np.ndarray, n: int) -> np.ndarray:
    """Means of ``n`` consecutive, equal-as-possible windows of ``x`` (fewer when ``x`` is short)."""
    x = np.asarray(x, dtype=np.float64)
    n = max(1, min(n, len(x)))
    return np.array([w.mean() for w in np.array_split(x, n)])


def running_reference(
    x: np.ndarray, window: int = 200, min_history: int = 20, max_exact: int = 20000
) -> np.ndarray:
    """For each index, the median of the (up to) ``window`` values before it; NaN with < ``min_history``.

    Exact for short series; for long ones (a million steps) medians of blocks of ``window`` values are
    used, each index compared with the median of the previous complete block — the same "ratio to the
    running median" rule as the live monitor at a fraction of the cost.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    ref = np.full(n, np.nan)
    if n <= min_history:
        return ref
    if n <= max_exact:
        for i in range(min_history, min(window, n)):
            ref[i] = np.median(x[:i])
        if n > window:
            ref[window:] = np.median(sliding_window_view(x[:-1], window), axis=1)
        return ref
    nb = n // window
    blocks = np.median(x[: nb * window].reshape(nb, window), axis=1)
    prev = np.concatenate([[np.nan], blocks])  # reference of block k is the median of block k-1
    idx = np.minimum(np.arange(n) // window, nb)
    return prev[idx]


def sustained(mask: np.ndarray, k: int = 3, of: int = 5) -> np.ndarray:
    """True at index i when at least ``k`` of the ``of`` values ending at i are True."""
    m = np.asarray(mask, dtype=np.int64)
    if len(m) == 0:
        return np.zeros(0, dtype=bool)
    c = np.convolve(m, np.ones(of, dtype=np.int64))[: len(m)]
    return c >= k


def confusion_pattern(cm: np.ndarray) -> dict[str, Any]:
    """Name the shape of a confusion matrix: ``diagonal`` (healthy), ``piled`` (predictions gathered in a
    few columns: imbalance or collapse) or ``diffuse`` (spread off the diagonal: underfitting)."""
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum()
    c = cm.shape[0]
    if n <= 0 or c == 0:
        return {"pattern": "empty"}
    acc = float(np.trace(cm) / n)
    col = cm.sum(axis=0) / n
    row = cm.sum(axis=1) / n
    k = max(1, c // 5)
    top = np.argsort(-col)[:k]
    col_top, row_top = float(col[top].sum()), float(row[top].sum())
    piled = (
        col_top >= 0.5
        and col_top >= 1.5 * row_top
        and c > 2
        or (c == 2 and col_top >= 0.9 and row_top <= 0.75)
    )
    pattern = "diagonal" if acc >= 0.8 and not piled else "piled" if piled else "diffuse"
    return {
        "pattern": pattern,
        "diagonal_share": round(acc, 4),
        "top_predicted_classes": [int(i) for i in top],
        "top_predicted_share": round(col_top, 4),
        "top_true_share": round(row_top, 4),
    }


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall (NaN where undefined), support (true count) and predicted count per class."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    pred = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / pred, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
    return precision, recall, support, pred


def first_true(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def fmt(x: float) -> str:
    """Short number formatting for messages."""
    if not np.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3g}"
