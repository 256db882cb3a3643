"""Run the whole scenario catalogue and print recall and false alarms of the diagnosis.

recall       = expected problem codes found / expected problem codes
false alarms = problem codes (warning/error) on healthy runs, plus codes on faulty runs outside
               expected ∪ the scenario's documented `acceptable` co-findings

Usage: python benchmarks/scenario_suite.py [--threads N] [name ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1 avoids oversubscription)"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from trainmedic.scenarios import SCENARIOS, run_scenario

    names = args.names or list(SCENARIOS)
    found = expected = 0
    alarms: list[str] = []
    missed: list[str] = []
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            sc = SCENARIOS[name]
            t, c = time.perf_counter(), time.process_time()
            d = run_scenario(name, os.path.join(tmp, name))
            codes = d.codes
            hit = sc.expected & codes
            found += len(hit)
            expected += len(sc.expected)
            extra = codes - sc.expected - sc.acceptable
            missed += [f"{name}:{m}" for m in sorted(sc.expected - codes)]
            alarms += [f"{name}:{e}" for e in sorted(extra)]
            print(
                f"{name:34s} {sc.arch:12s} {time.perf_counter() - t:5.1f}s wall {time.process_time() - c:5.1f}s cpu  "
                f"expected {sorted(sc.expected) or '-'} found {sorted(codes) or '-'}"
                + (f"  FALSE ALARM {sorted(extra)}" if extra else "")
            )
    recall = found / expected if expected else 1.0
    print(f"\nscenarios: {len(names)}  expected codes: {expected}  found: {found}  recall: {recall:.3f}")
    print(f"false alarms: {len(alarms)} {alarms}")
    print(f"missed: {missed}")
    print(
        f"total: {time.perf_counter() - t0:.1f}s wall, {time.process_time() - c0:.1f}s cpu (torch threads {args.threads})"
    )
    return 0 if recall >= 0.97 and not alarms else 1


if __name__ == "__main__":
    sys.exit(main())
