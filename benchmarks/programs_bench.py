"""Healthy programs (issue 11): the false-alarm rate on `trainmedic.scenarios.programs` over several seeds.

Each program is a whole training loop in one of the shapes real code takes (see the module); each run is checked
by its oracle first (a run that did not train as it should is a wrong config, reported as such), then any warning
or error on it is a false alarm. Always exits 0: the CI gate is tests/scenarios/test_programs.py.

    python benchmarks/programs_bench.py [--seeds 0,1,2] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", default=None)
    args = ap.parse_args(argv)
    from trainmedic.scenarios.programs import PROGRAMS, run_program

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [n for n in PROGRAMS if args.only is None or args.only in n]
    runs = alarmed = oracle_failed = 0
    by_code: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            for seed in seeds:
                t = time.perf_counter()
                outcome, diagnosis = run_program(name, Path(tmp) / f"{name}-{seed}", seed=seed)
                codes = sorted({f.code for f in diagnosis.findings if f.severity in ("warning", "error")})
                runs += 1
                oracle_failed += not outcome.ok
                alarmed += bool(codes)
                by_code.update(codes)
                flag = "" if outcome.ok else f"  ORACLE FAILED: {outcome}"
                print(f"{name:34s} seed {seed}  {time.perf_counter() - t:5.2f}s  {codes}{flag}", flush=True)
    print()
    print(f"runs                    {runs} ({len(names)} programs x {len(seeds)} seeds)")
    print(f"oracle failed           {oracle_failed}")
    print(f"false-alarm rate        {alarmed}/{runs} = {alarmed / max(runs, 1):.3f}")
    print(f"false alarms by code    {dict(by_code.most_common())}")
    print(f"wall seconds            {time.perf_counter() - t0:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
