"""Buggy programs (issue 11): recall on `trainmedic.scenarios.buggy_programs` over seeds.

Each program is a whole training loop with a mistake real code makes; its oracle checks first that the bug
harmed the run (a bug that trained fine is a wrong program, reported as such); then the bug counts as found when
one of its expected codes is reported as a warning or error. Always exits 0: the CI gate is
tests/scenarios/test_buggy_programs.py.

    python benchmarks/buggy_bench.py [--seeds 0] [--only SUBSTRING] [--fixed]

``--fixed`` runs each program's published fix instead: its oracle must show no harm, and any warning or error
on it is a false alarm.
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
    ap.add_argument("--fixed", action="store_true", help="run the fixed twins (false alarms)")
    args = ap.parse_args(argv)
    from trainmedic.scenarios.buggy_programs import BUGGY, FIX_LEAVES_HARM, run_buggy

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [
        n
        for n in BUGGY
        if (args.only is None or args.only in n) and not (args.fixed and n in FIX_LEAVES_HARM)
    ]
    runs = found = unharmed = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            for seed in seeds:
                t = time.perf_counter()
                harm, diagnosis, hit = run_buggy(
                    name, Path(tmp) / f"{name}-{seed}", seed=seed, fixed=args.fixed
                )
                if args.fixed:
                    hit = any(f.severity in ("warning", "error") for f in diagnosis.findings)
                codes = sorted(
                    {f"{f.code}:{f.severity[0]}" for f in diagnosis.findings if f.severity != "info"}
                )
                runs += 1
                found += hit
                bad_oracle = harm.harmed if args.fixed else not harm.harmed
                unharmed += bad_oracle
                if args.fixed:
                    flag = "ALARM" if hit else "silent"
                    extra = f"  FIX DID NOT TRAIN: {harm}" if bad_oracle else ""
                else:
                    flag = "found" if hit else "MISSED"
                    extra = f"  NOT HARMED: {harm}" if bad_oracle else ""
                print(
                    f"{name:30s} seed {seed} {time.perf_counter() - t:5.2f}s {flag:6s} {codes}  [{harm}]{extra}",
                    flush=True,
                )
    print()
    print(f"runs              {runs} ({len(names)} programs x {len(seeds)} seeds)")
    if args.fixed:
        print(f"fix did not train {unharmed}")
        print(f"false-alarm rate  {found}/{runs} = {found / max(runs, 1):.3f}")
    else:
        print(f"bug did no harm   {unharmed}")
        print(f"recall            {found}/{runs} = {found / max(runs, 1):.3f}")
    print(f"wall seconds      {time.perf_counter() - t0:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
