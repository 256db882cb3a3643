"""Shrinking long series for display; the store keeps every value.

A 100k-step line drawn point by point makes a multi-megabyte SVG that no eye can tell from 2,000 points.
Plain striding would hide the one spike that matters (an explosion, a NaN), so lines keep each bucket's
minimum *and* maximum, and heatmaps keep each bucket's maximum.
"""

from __future__ import annotations

import warnings

import numpy as np

MAX_LINE_POINTS = 2000
MAX_HEATMAP_COLUMNS = 400


def minmax_downsample(
    steps: np.ndarray, values: np.ndarray, max_points: int = MAX_LINE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of a line that keep every bucket's extremes, in step order.

    Non-finite values become NaN (a gap in the drawn line); a bucket with no finite value keeps one NaN so
    the gap stays visible.
    """
    steps = np.asarray(steps)
    vals = np.asarray(values, dtype=np.float64)
    vals = np.where(np.isfinite(vals), vals, np.nan)
    n = len(vals)
    if n <= max_points:
        return steps, vals
    n_buckets = max(1, max_points // 2)
    size = -(-n // n_buckets)  # ceil
    n_buckets = -(-n // size)
    padded = np.full(n_buckets * size, np.nan)
    padded[:n] = vals
    grid = padded.reshape(n_buckets, size)
    lo = np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=1)
    hi = np.argmax(np.where(np.isnan(grid), -np.inf, grid), axis=1)
    base = np.arange(n_buckets) * size
    idx = np.unique(np.concatenate([base + lo, base + hi]))
    idx = idx[idx < n]
    return steps[idx], vals[idx]


def bucket_columns(
    steps: np.ndarray, values: np.ndarray, max_columns: int = MAX_HEATMAP_COLUMNS
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a (T, L) per-layer table to at most ``max_columns`` time buckets, keeping each bucket's max.

    Returns the first step of each bucket and the (buckets, L) table. The maximum keeps a short gradient
    spike visible after bucketing; NaN only where a layer has no finite value in the bucket.
    """
    steps = np.asarray(steps)
    vals = np.asarray(values, dtype=np.float64)
    vals = np.where(np.isfinite(vals), vals, np.nan)
    t = vals.shape[0]
    if t <= max_columns:
        return steps, vals
    size = -(-t // max_columns)
    n_buckets = -(-t // size)
    padded = np.full((n_buckets * size, vals.shape[1]), np.nan)
    padded[:t] = vals
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN buckets are expected
        reduced = np.nanmax(padded.reshape(n_buckets, size, vals.shape[1]), axis=1)
    return steps[::size], reduced
