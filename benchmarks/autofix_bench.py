"""Autofix on the scenario suite: fix rate and wall time to a repaired model, as a ratio to one training run.

For every faulty scenario of :data:`trainmedic.scenarios.SCENARIOS` in the issue's families (exploding lr,
NaN, deep sigmoid vanishing, dead ReLUs, bad init, overfitting on tiny data, underfitting, imbalance,
stalled lr), autofix runs with a budget of ``--budget`` training runs. Its *healthy counterpart* is the
same data and architecture trained with the healthy hyperparameters of ``healthy_<arch>``. A scenario counts
as fixed when autofix ends with a diagnosis without warnings **and** a validation accuracy at least the
counterpart's minus ``--tolerance``. One training run = the median wall time of 3 watched runs of the
counterpart (after a warm-up run that absorbs torch's start-up). Time ratio (the issue's "wall time to a repaired model"): autofix wall
time — baseline, trials, diagnoses and checkpoints included — until the first *kept* trial whose model is
healthy and meets that bar, ÷ the counterpart's training time (one training run). The ratio to autofix's
final model (it may keep polishing a repaired model with more epochs while it still improves) is printed too.

    python benchmarks/autofix_bench.py [--budget 6] [--tolerance 0.02] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

FAMILIES = (
    "exploding",
    "nonfinite",
    "vanishing",
    "dead_relu",
    "saturated",
    "init_",
    "overfit",
    "insufficient",
    "underfit",
    "imbalance",
    "oscillating",
    "stalled",
)
REPEATS = 3
DATA_KEYS = ("dataset", "data", "arch", "depth", "epochs")  # the setup; the rest are the faulty knobs


def counterpart(config: dict, healthy: dict) -> dict:
    """The faulty scenario's data and architecture with the healthy hyperparameters of its architecture."""
    out = dict(healthy)
    for k in DATA_KEYS:
        if k in config:
            out[k] = config[k]
    out["normalize_inputs"] = True
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=6)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)

    import trainmedic as tm
    from trainmedic.remedies.autofix import autofix, run_metric
    from trainmedic.scenarios import SCENARIOS
    from trainmedic.scenarios.train import DEFAULTS, train_fn

    healthy = {s.arch: s.config for s in SCENARIOS.values() if s.healthy and s.name.startswith("healthy_")}
    names = args.only or [n for n, s in SCENARIOS.items() if not s.healthy and n.startswith(FAMILIES)]
    # warm-up: the first training run of a process pays torch's one-time start-up; time none of it
    warm = tm.watch(run_dir=Path(tempfile.mkdtemp(prefix="autofix-warm-")), overwrite=True, quiet=True)
    train_fn({"epochs": 1}, warm)
    warm.close()
    rows = []
    t_all = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="autofix-bench-"))
    for name in names:
        sc = SCENARIOS[name]
        ref_cfg = counterpart(sc.config, healthy.get(sc.arch, {}))
        times = []
        for _ in range(REPEATS):  # one training run = the median of REPEATS watched runs (they are short)
            run = tm.watch(run_dir=root / name / "counterpart", overwrite=True, quiet=True)
            t0 = time.perf_counter()
            try:
                train_fn(ref_cfg, run)
            finally:
                run.close()
            times.append(time.perf_counter() - t0)
        ref_secs = statistics.median(times)
        ref = run_metric(root / name / "counterpart") or 0.0
        res = autofix(
            train_fn,
            sc.config,
            budget=args.budget,
            run_root=root / name / "autofix",
            defaults=DEFAULTS,
            tolerance=args.tolerance,
        )
        best = res.best_metric or 0.0
        fixed = res.healthy and best >= ref - args.tolerance
        repaired_at = next(
            (
                t.elapsed
                for t in res.trials
                if t.kept and not t.codes_after and (t.metric_after or 0.0) >= ref - args.tolerance
            ),
            None,
        )
        rows.append(
            {
                "scenario": name,
                "arch": sc.arch,
                "baseline": res.baseline_metric,
                "fixed_metric": best,
                "counterpart": ref,
                "healthy_diagnosis": res.healthy,
                "left": res.codes,
                "fixed": fixed,
                "runs": len(res.trials),
                "remedies": [t.remedy for t in res.trials[1:] if t.kept],
                "ratio": (repaired_at / ref_secs) if fixed and repaired_at is not None else None,
                "ratio_final": res.seconds_to_best / ref_secs,
                "seconds_to_repaired": repaired_at,
                "seconds_to_best": res.seconds_to_best,
                "one_run_seconds": ref_secs,
            }
        )
        r = rows[-1]
        print(
            f"{name:34s} {sc.arch:11s} base {r['baseline'] or 0:.3f} -> {best:.3f} (counterpart {ref:.3f}) "
            f"healthy={res.healthy!s:5s} fixed={fixed!s:5s} runs={r['runs']} ratio={r['ratio'] or float('nan'):.2f} "
            f"(final {r['ratio_final']:.2f}) kept={r['remedies']} left={res.codes}",
            flush=True,
        )
    n_fixed = sum(r["fixed"] for r in rows)
    ratios = [r["ratio"] for r in rows if r["fixed"] and r["ratio"] is not None]
    finals = [r["ratio_final"] for r in rows if r["fixed"]]
    print(
        f"\nfix rate: {n_fixed}/{len(rows)} = {n_fixed / max(1, len(rows)):.0%} (tolerance {args.tolerance}, budget {args.budget} runs)"
    )
    if ratios:
        print(
            f"time to repaired model / one training run (fixed scenarios): median {statistics.median(ratios):.2f}x, mean {statistics.mean(ratios):.2f}x, max {max(ratios):.2f}x"
        )
        print(
            f"time to autofix's final model / one training run (fixed scenarios): median {statistics.median(finals):.2f}x, mean {statistics.mean(finals):.2f}x, max {max(finals):.2f}x"
        )
    print(f"total wall time: {time.perf_counter() - t_all:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
