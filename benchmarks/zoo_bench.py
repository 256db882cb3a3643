"""Zoo benchmark (issue 11): false-alarm rate on the healthy zoo, recall on the faulty grid.

Runs every zoo case (its own plain-PyTorch loop, watched, then diagnosed) and prints, per case, the codes at
warning/error; then the false-alarm rate, the recall and a per-code count of false alarms. Always exits 0:
it measures, CI gates live in tests/scenarios/test_zoo.py.

    python benchmarks/zoo_bench.py --jobs 2 --json zoo.json [--only SUBSTRING] [--keep DIR]
    python benchmarks/zoo_bench.py --rediagnose DIR      # judge the runs kept by --keep again, no training

``--keep`` stores each case's run directory (and its oracle) under DIR; ``--rediagnose`` re-runs only the
diagnosis on them, which is how a change to a check is measured on the whole zoo in seconds.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _one(name: str, keep: Path | None = None) -> dict[str, Any]:
    import torch

    from trainmedic.scenarios import zoo

    torch.set_num_threads(1)
    case = zoo.case(name)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = (keep / name) if keep is not None else Path(tmp) / "run"
        if keep is not None:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        try:
            r = zoo.run_case(case, run_dir)
        except Exception as e:  # a broken case is reported, not fatal to the benchmark
            return {"name": name, "kind": case.kind, "error": f"{type(e).__name__}: {e}"}
    row = _row(case, r)
    if keep is not None:
        oracle = {k: row[k] for k in ("seconds", "oracle_ok", "oracle", "val_accuracy")}
        (keep / name / "zoo_oracle.json").write_text(json.dumps(oracle))
    return row


def _rejudge(name: str, keep: Path) -> dict[str, Any]:
    """The row of a kept run, with a fresh diagnosis (the oracle is the one stored at training time)."""
    import trainmedic as tm
    from trainmedic.scenarios import zoo

    case = zoo.case(name)
    oracle = json.loads((keep / name / "zoo_oracle.json").read_text())
    r = zoo.ZooResult(case, oracle["val_accuracy"], float("nan"), True, True, oracle["seconds"])
    r.findings = list(tm.diagnose(str(keep / name)).findings)
    return {**_row(case, r), **oracle}


def _row(case: Any, r: Any) -> dict[str, Any]:
    name = case.name
    return {
        "name": name,
        "kind": case.kind,
        "seconds": round(r.seconds, 3),
        "oracle_ok": r.oracle_ok if case.kind == "healthy" else None,
        "oracle": r.oracle_message,
        "val_accuracy": r.final_val_accuracy,
        "expected": sorted(case.expected),
        "found": sorted(r.found),
        "missed": sorted(r.missed),
        "false_alarms": sorted(r.false_alarms),
        "alarms": [{"code": f.code, "severity": f.severity, "message": f.message} for f in r.alarms],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument(
        "--keep", type=Path, default=None, help="store each case's run directory under this folder"
    )
    ap.add_argument(
        "--rediagnose", type=Path, default=None, help="diagnose the runs kept under this folder again"
    )
    args = ap.parse_args(argv)
    from trainmedic.scenarios import zoo

    names = [c.name for c in zoo.zoo() if args.only is None or args.only in c.name]
    t0 = time.perf_counter()
    if args.rediagnose is not None:
        names = [n for n in names if (args.rediagnose / n / "zoo_oracle.json").exists()]
        one: Any = functools.partial(_rejudge, keep=args.rediagnose)
    else:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
        one = functools.partial(_one, keep=args.keep)
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            rows = []
            for row in pool.imap(one, names):
                rows.append(row)
                _print_row(row)
    else:
        rows = []
        for n in names:
            rows.append(one(n))
            _print_row(rows[-1])
    wall = time.perf_counter() - t0
    summary = _summary(rows, wall)
    print()
    for k, v in summary.items():
        if k != "false_alarms_by_code":
            print(f"{k:32s} {v}")
    print("false alarms by code (healthy cases with a warning/error of that code):")
    for code, n in summary["false_alarms_by_code"].items():
        print(f"  {code:28s} {n}")
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1))
    return 0


def _print_row(row: dict[str, Any]) -> None:
    if "error" in row:
        print(f"{row['kind']:7s} {row['name']:45s} ERROR {row['error']}", flush=True)
        return
    flag = "" if row["kind"] == "faulty" or row["oracle_ok"] else "  ORACLE FAILED: " + row["oracle"]
    extra = f" missed={row['missed']}" if row["kind"] == "faulty" else ""
    print(
        f"{row['kind']:7s} {row['name']:45s} {row['seconds']:5.2f}s {row['found']}{extra}{flag}", flush=True
    )


def _summary(rows: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    healthy = [r for r in ok if r["kind"] == "healthy"]
    faulty = [r for r in ok if r["kind"] == "faulty"]
    alarmed = [r for r in healthy if r["found"]]
    n_exp = sum(len(r["expected"]) for r in faulty)
    n_hit = sum(len(r["expected"]) - len(r["missed"]) for r in faulty)
    by_code = collections.Counter(c for r in healthy for c in r["found"])
    return {
        "healthy_cases": len(healthy),
        "healthy_oracle_failed": sum(not r["oracle_ok"] for r in healthy),
        "false_alarm_rate": round(len(alarmed) / max(1, len(healthy)), 3),
        "faulty_cases": len(faulty),
        "recall": round(n_hit / max(1, n_exp), 3),
        "faulty_cases_fully_found": sum(not r["missed"] for r in faulty),
        "faulty_extra_codes": sum(bool(r["false_alarms"]) for r in faulty),
        "errors": len(rows) - len(ok),
        "wall_seconds": round(wall, 1),
        "case_seconds_sum": round(sum(r["seconds"] for r in ok), 1),
        "false_alarms_by_code": dict(by_code.most_common()),
    }


if __name__ == "__main__":
    sys.exit(main())
