"""Benchmark trainmedic.audit on large data: 1M tabular rows (20 features) and 100k 1x16x16 images.

Prints wall time, peak traced memory (tracemalloc: numpy buffers and Python objects allocated during the audit,
the input arrays excluded) and the process's peak RSS. label_check="auto" fits the cross-validated model on at
most 10k random samples. Usage: python benchmarks/audit_bench.py [--rows N] [--images N]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from trainmedic.data import audit, split_indices


def _run(name: str, x: np.ndarray, y: np.ndarray) -> None:
    tr, va, te = split_indices(len(y), y, seed=0)
    parts = [(x[i], y[i]) for i in (tr, va, te)]  # copies made before tracing: the input, not the audit
    tracemalloc.start()
    t0 = time.perf_counter()
    d = audit(*parts, label_check="auto")
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(p[0].nbytes for p in parts) / 2**20
    print(f"{name}: {len(y):,} samples of shape {x.shape[1:]}, input {size:.0f} MiB")
    print(
        f"  time {elapsed:.1f} s, peak traced {peak / 2**20:.0f} MiB, peak RSS {rss:.0f} MiB, findings: "
        + ", ".join(f"{f.code}/{f.split}" for f in d.problems)
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=100_000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 20))
    y = rng.integers(0, 5, a.rows)
    x = (centers[y] + rng.normal(size=(a.rows, 20))).astype(np.float32)
    _run("tabular", x, y)
    del x, y
    yi = rng.integers(0, 10, a.images)
    proto = rng.random((10, 1, 16, 16)).astype(np.float32)
    xi = (proto[yi] + 0.3 * rng.standard_normal((a.images, 1, 16, 16), dtype=np.float32)).astype(np.float32)
    _run("images", xi, yi)


if __name__ == "__main__":
    main()
