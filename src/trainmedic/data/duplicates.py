"""Exact and near-duplicate rows, within and across splits, in bounded memory.

Exact duplicates: each row is rounded (``decimals``), its bytes hashed with blake2b into 8 bytes, and equal
hashes grouped. Memory: 8 bytes per sample.

Near-duplicates: random-projection LSH (E2LSH). Rows are standardized, projected on ``k`` Gaussian directions
and bucketed with width ``w = 8 r`` (``r`` the near-duplicate radius); rows are then sorted by (bucket, one more
projection) and each row is compared with its next ``window`` neighbours in the same bucket. ``tables``
independent tables catch pairs a bucket edge separates. Candidates are filtered on the projections (a true pair
of distance ``<= r`` differs by more than ``4 r`` on a projection with probability < 1e-4, and the mean squared
difference over ``extra`` projections not used for bucketing estimates the squared distance) and confirmed on the
real distance. Memory per table: ``k + 1 + extra`` float32 and one int64 per sample; rows are read in chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from ._inputs import DEFAULT_CHUNK_ROWS, SplitData


def hash_rows(block: np.ndarray, decimals: int = 6) -> np.ndarray:
    """One 64-bit blake2b digest per row of ``block`` (rows rounded to ``decimals``; -0.0 and 0.0 hash alike)."""
    rounded = np.ascontiguousarray(np.round(block, decimals) + 0.0)
    width = rounded.shape[1] * rounded.itemsize
    raw = memoryview(rounded.tobytes())
    digests = b"".join(
        hashlib.blake2b(raw[i : i + width], digest_size=8).digest() for i in range(0, len(raw), width)
    )
    return np.frombuffer(digests, dtype=np.uint64).copy()


def exact_groups(hashes: np.ndarray) -> list[np.ndarray]:
    """Groups (arrays of pooled indices, size >= 2) of equal hashes."""
    order = np.argsort(hashes, kind="stable")
    h = hashes[order]
    starts = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    ends = np.concatenate([starts[1:], [len(h)]])
    big = (ends - starts) >= 2
    return [order[s:e] for s, e in zip(starts[big], ends[big])]


class Pooled:
    """Several splits seen as one index space ``0 .. sum(n)-1`` (train first)."""

    def __init__(self, splits: Sequence[SplitData]) -> None:
        self.splits = list(splits)
        self.offsets = np.concatenate([[0], np.cumsum([s.n for s in self.splits])]).astype(np.int64)
        self.n = int(self.offsets[-1])

    def split_of(self, idx: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, idx, side="right") - 1

    def local(self, idx: np.ndarray) -> np.ndarray:
        return idx - self.offsets[self.split_of(idx)]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows for pooled indices, in the given order."""
        which = self.split_of(idx)
        out = np.empty((len(idx), self.splits[0].n_features))
        for s, sp in enumerate(self.splits):
            sel = np.flatnonzero(which == s)
            if sel.size:
                loc = idx[sel] - self.offsets[s]
                order = np.argsort(loc, kind="stable")
                out[sel[order]] = sp.rows(loc[order])
        return out


def near_duplicate_pairs(
    pooled: Pooled,
    mean: np.ndarray,
    scale: np.ndarray,
    radius: float,
    exact_hash: np.ndarray,
    *,
    seed: int = 0,
    tables: int = 3,
    k: int = 4,
    window: int = 8,
    extra: int = 8,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    tick: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(a, b)`` of pooled indices, ``a < b``, with standardized distance ``<= radius`` and unequal rows."""
    rng = np.random.default_rng(seed)
    d = len(mean)
    w = 8.0 * radius
    found_a: list[np.ndarray] = []
    found_b: list[np.ndarray] = []
    for _ in range(tables):
        proj = rng.standard_normal((d, k + 1 + extra))
        offset = rng.uniform(0.0, w, size=k)
        mult = rng.integers(1, 2**61 - 1, size=k, dtype=np.int64) | 1
        p = np.empty((pooled.n, k + 1 + extra), dtype=np.float32)
        for s, sp in enumerate(pooled.splits):
            base = int(pooled.offsets[s])
            for start, block in sp.chunks(chunk_rows):
                z = (block - mean) / scale
                np.nan_to_num(z, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
                p[base + start : base + start + len(block)] = z @ proj
                if tick:
                    tick(len(block))
        cells = np.floor((p[:, :k].astype(np.float64) + offset) / w).astype(np.int64)
        key = (cells * mult).sum(axis=1)  # wrapping int64 arithmetic: a hash of the cell
        del cells
        order = np.lexsort((p[:, k], key))
        tol = np.float32(4.0 * radius)
        tol2 = np.float32(4.0 * radius**2)
        for step in range(1, window + 1):
            a, b = order[:-step], order[step:]
            m = key[a] == key[b]
            a, b = a[m], b[m]
            if not a.size:
                continue
            diff = p[a] - p[b]
            close = np.all(np.abs(diff) <= tol, axis=1)
            close &= np.mean(diff[:, k + 1 :] ** 2, axis=1) <= tol2  # unbiased projections: ~ distance^2
            close &= exact_hash[a] != exact_hash[b]
            found_a.append(a[close])
            found_b.append(b[close])
        del p, key, order
    if not found_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = np.concatenate(found_a)
    b = np.concatenate(found_b)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    code = np.unique(lo.astype(np.int64) * pooled.n + hi)  # one int64 per pair: a fast 1-D unique
    pairs = np.stack([code // pooled.n, code % pooled.n], axis=1)
    keep_a: list[np.ndarray] = []
    keep_b: list[np.ndarray] = []
    for start in range(0, len(pairs), chunk_rows):
        pa, pb = pairs[start : start + chunk_rows, 0], pairs[start : start + chunk_rows, 1]
        with np.errstate(over="ignore", invalid="ignore"):
            za = np.nan_to_num((pooled.rows(pa) - mean) / scale, nan=0.0, posinf=0.0, neginf=0.0)
            zb = np.nan_to_num((pooled.rows(pb) - mean) / scale, nan=0.0, posinf=0.0, neginf=0.0)
            dist = np.sqrt(np.sum((za - zb) ** 2, axis=1))
        ok = dist <= radius
        keep_a.append(pa[ok])
        keep_b.append(pb[ok])
    if not keep_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(keep_a), np.concatenate(keep_b)
