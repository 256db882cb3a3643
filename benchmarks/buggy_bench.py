"""Buggy programs (issue 11): recall on `trainmedic.scenarios.buggy_programs` over seeds.

Each program is a whole training loop with a mistake real code makes; its oracle checks first that the bug
harmed the run (a bug that trained fine is a wrong program, reported as such); then the bug counts as found when
one of its expected codes is reported as a warning or error. Always exits 0: the CI gate is
tests/scenarios/test_buggy_programs.py.

    python benchmarks/buggy_bench.py [--seeds 0] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--only", default=None)
    args = ap.parse_args(argv)
    from trainmedic.scenarios.buggy_programs import BUGGY, run_buggy

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [n for n in BUGGY if args.only is None or args.only in n]
    runs = found = unharmed = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            for seed in seeds:
                t = time.perf_counter()
                harm, diagnosis, hit = run_buggy(name, Path(tmp) / f"{name}-{seed}", seed=seed)
                codes = sorted(
                    {f"{f.code}:{f.severity[0]}" for f in diagnosis.findings if f.severity != "info"}
                )
                runs += 1
                found += hit
                unharmed += not harm.harmed
                flag = "found" if hit else "MISSED"
                extra = "" if harm.harmed else f"  NOT HARMED: {harm}"
                print(
                    f"{name:30s} seed {seed} {time.perf_counter() - t:5.2f}s {flag:6s} {codes}  [{harm}]{extra}",
                    flush=True,
                )
    print()
    print(f"runs              {runs} ({len(names)} programs x {len(seeds)} seeds)")
    print(f"bug did no harm   {unharmed}")
    print(f"recall            {found}/{runs} = {found / max(runs, 1):.3f}")
    print(f"wall seconds      {time.perf_counter() - t0:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
