"""One chunked pass per split: per-feature moments, non-finite counts, row hashes and a random row sample.

Moments merge chunk by chunk (Chan et al.), so memory is one chunk plus a few vectors of length ``n_features``,
plus 8 bytes per row for the hash and ``sample_rows`` rows kept for the two-sample tests and neighbour checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._inputs import DEFAULT_CHUNK_ROWS, SplitData, channel_layout
from .duplicates import hash_rows


@dataclass
class SplitStats:
    n: int
    count: np.ndarray  # finite values per feature
    mean: np.ndarray
    m2: np.ndarray  # sum of squared deviations
    minimum: np.ndarray
    maximum: np.ndarray
    nonfinite: np.ndarray  # NaN/Inf per feature
    rows_nonfinite: int
    hashes: np.ndarray  # (n,) uint64
    sample_index: np.ndarray  # sorted local indices of the kept rows
    sample: np.ndarray  # (m, n_features) rows at sample_index

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.divide(self.m2, np.maximum(self.count - 1, 1)))


def scan_split(
    split: SplitData,
    sample_rows: int,
    seed: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    tick: Callable[[int], None] | None = None,
) -> SplitStats:
    d = split.n_features
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(split.n, size=min(sample_rows, split.n), replace=False))
    count = np.zeros(d)
    mean = np.zeros(d)
    m2 = np.zeros(d)
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    nonfinite = np.zeros(d, dtype=np.int64)
    rows_bad = 0
    hashes = np.empty(split.n, dtype=np.uint64)
    sample = np.empty((len(keep), d))
    for start, block in split.chunks(chunk_rows):
        fin = np.isfinite(block)
        bad = ~fin
        nonfinite += bad.sum(axis=0)
        rows_bad += int(bad.any(axis=1).sum())
        c = fin.sum(axis=0).astype(np.float64)
        safe = np.where(fin, block, 0.0)
        mc = np.divide(safe.sum(axis=0), c, out=np.zeros(d), where=c > 0)
        m2c = np.where(fin, (block - mc) ** 2, 0.0).sum(axis=0)
        tot = count + c
        delta = mc - mean
        mean = mean + np.divide(delta * c, tot, out=np.zeros(d), where=tot > 0)
        m2 = m2 + m2c + np.divide(delta**2 * count * c, tot, out=np.zeros(d), where=tot > 0)
        count = tot
        lo = np.minimum(lo, np.where(fin, block, np.inf).min(axis=0))
        hi = np.maximum(hi, np.where(fin, block, -np.inf).max(axis=0))
        hashes[start : start + len(block)] = hash_rows(block)
        a, b = np.searchsorted(keep, [start, start + len(block)])
        sample[a:b] = block[keep[a:b] - start]
        if tick:
            tick(len(block))
    return SplitStats(split.n, count, mean, m2, lo, hi, nonfinite, rows_bad, hashes, keep, sample)


def summary_features(sample: np.ndarray, sample_shape: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    """What the shift tests compare: the features themselves (tabular) or per-sample channel mean and std."""
    layout = channel_layout(sample_shape)
    if layout is None:
        return sample, [f"feature {i}" for i in range(sample.shape[1])]
    channels, last = layout
    m = sample.shape[0]
    per = sample.reshape(m, -1, channels).transpose(0, 2, 1) if last else sample.reshape(m, channels, -1)
    with np.errstate(invalid="ignore"):
        mu = np.nanmean(np.where(np.isfinite(per), per, np.nan), axis=2)
        sd = np.nanstd(np.where(np.isfinite(per), per, np.nan), axis=2)
    names = [f"channel {c} mean" for c in range(channels)] + [f"channel {c} std" for c in range(channels)]
    return np.concatenate([mu, sd], axis=1), names


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values), monotone, same order as ``p``."""
    n = len(p)
    if not n:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def ks_tests(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column two-sample KS statistic and p-value, ignoring non-finite values."""
    from scipy.stats import ks_2samp

    stats = np.zeros(a.shape[1])
    pvals = np.ones(a.shape[1])
    for j in range(a.shape[1]):
        x = a[:, j][np.isfinite(a[:, j])]
        y = b[:, j][np.isfinite(b[:, j])]
        if len(x) < 2 or len(y) < 2:
            continue
        r = ks_2samp(x, y, method="asymp")
        stats[j], pvals[j] = float(r.statistic), float(r.pvalue)
    return stats, pvals
