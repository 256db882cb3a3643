"""``run.evaluate`` for 1,000 samples x 10 classes: the per-call cost, the share of the next flush, and references
(process CPU time, which a shared machine disturbs less than wall time).

Prints, best of ``--repeats`` blocks of ``--calls`` calls each (1 torch thread):
* ``run.evaluate("val", y, logits)`` on a watched run (metrics + confusion matrix buffered, no flush);
* the flush that commits those calls' rows, per call (one SQLite transaction for the whole block);
* the checked path ``trainmedic.metrics.evaluate_classification`` (what ``run.evaluate`` called before);
* ``torch.bincount(y * k + logits.argmax(1), minlength=k*k)``: the confusion matrix alone, a reference for how
  fast this machine is at the moment (a shared machine can be several times slower than an idle one).

    python benchmarks/evaluate_bench.py [--calls 300] [--repeats 7] [--n 1000] [--k 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import trainmedic as tm
from trainmedic.metrics import evaluate_classification


def best_per_call(fn: object, calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(calls):
            fn()  # type: ignore[operator]
        best = min(best, (time.process_time() - t) / calls)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, a.k, (a.n,), generator=g)
    logits = torch.randn(a.n, a.k, generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        model = nn.Linear(a.k, a.k)
        run = tm.watch(
            model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=Path(tmp) / "r", quiet=True
        )
        run.evaluate("val", y, logits)
        run.flush()
        evals, flushes = [], []
        for _ in range(a.repeats):
            t = time.process_time()
            for _ in range(a.calls):
                run.evaluate("val", y, logits)
            evals.append((time.process_time() - t) / a.calls)
            t = time.process_time()
            run.flush()
            flushes.append((time.process_time() - t) / a.calls)
        run.close()
    checked = best_per_call(lambda: evaluate_classification(y, logits), a.calls, a.repeats)
    ref = best_per_call(
        lambda: torch.bincount(y * a.k + logits.argmax(1), minlength=a.k * a.k), a.calls, a.repeats
    )
    ev, fl = min(evals), min(flushes)
    print(
        f"torch {torch.__version__}, 1 thread, {a.n} samples x {a.k} classes, best of {a.repeats} x {a.calls} calls"
    )
    print(f"run.evaluate (buffered)          {ev * 1e3:.3f} ms/call")
    print(f"  + its share of the next flush  {fl * 1e3:.3f} ms/call  (total {(ev + fl) * 1e3:.3f} ms)")
    print(f"checked path (evaluate_classification) {checked * 1e3:.3f} ms/call")
    print(
        f"reference: torch.bincount confusion matrix {ref * 1e3:.3f} ms/call "
        f"(run.evaluate = {ev / ref:.1f}x the bare confusion matrix)"
    )


if __name__ == "__main__":
    main()
