"""Autofix against a random search over the same knobs, ranges, number of trials and time limit.

An independent re-evaluation of AUTOTRAINER (ICST'23) found that a random search over the same
hyperparameters matched or beat it: that is the baseline an automatic repair has to beat to mean something.

Setup: faulty MLP configurations of the digits task (:data:`CONFIGS`, written for this benchmark, not taken
from the scenario catalogue), one per family of the catalogue — vanishing gradients, exploding steps, dead
units, bad initialization, a stalled learning rate, too few epochs, overfitting, imbalance, unscaled
inputs. Each config has a fixed *setup* (data options, depth: what a user would not call a hyperparameter)
and faulty *knobs*. For each config and seed:

* **autofix**: ``tm.autofix`` with a budget of ``--budget`` training runs (the faulty baseline included);
* **random search**: the faulty run itself, then ``budget - 1`` configs drawn from :data:`SPACE` (the
  same knobs autofix may change, over ranges that hold every value autofix can produce), the setup kept;
  the best validation accuracy wins;
* both stop starting trials after ``--seconds`` of wall time (the same limit);
* **healthy counterpart**: the setup trained with :data:`HEALTHY` knobs (a healthy MLP reaches ≈ 0.97).

A config is *fixable* when its faulty baseline is more than 0.02 below its healthy counterpart. Time to the
repaired model: autofix's wall time until its first kept trial within 0.02 of the counterpart, ÷ one
training run of the counterpart (the median of this config's counterpart runs).

    python benchmarks/autofix_vs_random.py                               # full: all configs x 3 seeds
    python benchmarks/autofix_vs_random.py --configs 4 --seeds 1 --budget 4   # quick look
    python benchmarks/autofix_vs_random.py --only deep_sigmoid_sgd --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

# name, family, setup (fixed), faulty knobs
CONFIGS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("deep_sigmoid_sgd", "vanishing", {"depth": 8}, {"activation": "sigmoid", "optimizer": "sgd", "lr": 0.1}),
    ("deep_tanh_sgd", "vanishing", {"depth": 10}, {"activation": "tanh", "optimizer": "sgd", "lr": 0.01}),
    (
        "deep_sigmoid_narrow",
        "vanishing",
        {"depth": 6},
        {"activation": "sigmoid", "optimizer": "sgd", "lr": 0.5, "width": 24},
    ),
    ("sgd_lr_5", "exploding", {"depth": 2}, {"optimizer": "sgd", "lr": 5.0}),
    ("momentum_lr_3", "exploding", {"depth": 3}, {"optimizer": "sgd", "lr": 3.0, "momentum": 0.9}),
    ("adam_lr_0.3", "exploding", {"depth": 2}, {"optimizer": "adam", "lr": 0.3}),
    ("relu_dead_adam_0.05", "dead_units", {"depth": 4}, {"optimizer": "adam", "lr": 0.05, "width": 32}),
    ("relu_dead_huge_init", "dead_units", {"depth": 3}, {"init": "huge", "optimizer": "sgd", "lr": 0.05}),
    (
        "init_zeros",
        "bad_init",
        {"depth": 2},
        {"init": "zeros", "optimizer": "sgd", "lr": 0.1, "momentum": 0.9},
    ),
    ("init_constant", "bad_init", {"depth": 3}, {"init": "constant", "optimizer": "adam", "lr": 1e-3}),
    ("init_tiny_deep", "bad_init", {"depth": 6}, {"init": "tiny", "optimizer": "sgd", "lr": 0.05}),
    ("sgd_lr_1e-4", "stalled_lr", {"depth": 2}, {"optimizer": "sgd", "lr": 1e-4}),
    ("adam_lr_1e-5", "stalled_lr", {"depth": 2}, {"optimizer": "adam", "lr": 1e-5}),
    ("sgd_3_epochs", "too_few_epochs", {"depth": 2}, {"optimizer": "sgd", "lr": 0.02, "epochs": 3}),
    ("adam_2_epochs", "too_few_epochs", {"depth": 2}, {"optimizer": "adam", "lr": 3e-4, "epochs": 2}),
    (
        "tiny_data_wide",
        "overfitting",
        {"depth": 2, "data": {"train_per_class": 15}},
        {"width": 512, "epochs": 40, "optimizer": "adam", "lr": 3e-3},
    ),
    (
        "noisy_labels_wide",
        "overfitting",
        {"depth": 2, "data": {"label_noise": 0.3}},
        {"width": 256, "epochs": 30, "optimizer": "adam", "lr": 3e-3},
    ),
    ("imbalance_30", "imbalance", {"depth": 2, "data": {"imbalance": 30}}, {"optimizer": "sgd", "lr": 0.02}),
    (
        "imbalance_60_one",
        "imbalance",
        {"depth": 2, "data": {"imbalance": 60, "minority_classes": 2}},
        {"optimizer": "adam", "lr": 1e-3, "epochs": 6},
    ),
    (
        "raw_inputs_sgd",
        "unscaled_inputs",
        {"depth": 2},
        {"normalize_inputs": False, "optimizer": "sgd", "lr": 0.05},
    ),
    (
        "raw_inputs_tanh",
        "unscaled_inputs",
        {"depth": 3},
        {"normalize_inputs": False, "activation": "tanh", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
    ),
    ("heavy_dropout", "underfitting", {"depth": 2}, {"dropout": 0.85, "optimizer": "adam", "lr": 1e-3}),
    (
        "sigmoid_momentum_0.99",
        "exploding",
        {"depth": 4},
        {"activation": "sigmoid", "optimizer": "sgd", "lr": 1.0, "momentum": 0.99},
    ),
]

HEALTHY: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "activation": "relu", "width": 64, "epochs": 10}

# The knobs random search draws, over ranges that hold every value autofix can set (the lr remedies move
# by x10 / x3 and back into range; train_longer doubles or continues the epochs; width doubles or halves).
SPACE: dict[str, tuple[str, Any]] = {
    "optimizer": ("choice", ["sgd", "adam"]),
    "lr": ("log", (1e-5, 1.0)),
    "momentum": ("choice", [0.0, 0.9]),
    "activation": ("choice", ["relu", "leaky_relu", "tanh", "sigmoid"]),
    "init": ("choice", ["default", "he", "xavier"]),
    "norm": ("choice", ["none", "batch"]),
    "dropout": ("choice", [0.0, 0.2, 0.4]),
    "weight_decay": ("choice", [0.0, 1e-4, 1e-3]),
    "width": ("choice", [16, 32, 64, 128, 256, 512]),
    "epochs": ("int_log", (5, 40)),
    "normalize_inputs": ("choice", [True, False]),
    "early_stopping": ("choice", [False, True]),  # with restore_best, as autofix sets them
    "class_weights": ("choice", [False, True]),
    "sampler": ("choice", ["none", "oversample"]),
    "lr_schedule": ("choice", ["none", "plateau"]),
    "grad_clip": ("choice", [None, 1.0, 10.0]),
    "augmentation": ("choice", [False, True]),
}


def draw(rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, (kind, arg) in SPACE.items():
        if kind == "choice":
            out[k] = arg[int(rng.integers(len(arg)))]
        elif kind == "log":
            out[k] = float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
        else:
            out[k] = int(round(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1])))))
    out["restore_best"] = out["early_stopping"]
    return out


def one_run(cfg: dict[str, Any], run_dir: Path) -> tuple[float | None, float]:
    import trainmedic as tm
    from trainmedic.remedies.autofix import run_metric
    from trainmedic.scenarios.train import train_fn

    t0 = time.perf_counter()
    run = tm.watch(run_dir=run_dir, overwrite=True, quiet=True)
    try:
        train_fn(cfg, run)
    finally:
        run.close()
    return run_metric(run_dir), time.perf_counter() - t0


def random_search(
    name: str,
    faulty: dict[str, Any],
    setup: dict[str, Any],
    budget: int,
    seconds: float | None,
    seed: int,
    root: Path,
) -> tuple[float, int, float]:
    rng = np.random.default_rng([zlib.crc32(name.encode()), seed])
    t0 = time.perf_counter()
    best = -1.0
    trials = 0
    for i in range(budget):
        if seconds is not None and time.perf_counter() - t0 >= seconds:
            break
        cfg = faulty if i == 0 else {**draw(rng), **setup, "seed": seed}
        v, _ = one_run(cfg, root / f"rs-{i:02d}")
        trials += 1
        if v is not None and v > best:
            best = v
    return best, trials, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", type=int, default=None, help="the first N configs only")
    ap.add_argument("--only", nargs="*", help="these configs only (names)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=6, help="training runs per method, the faulty one included")
    ap.add_argument("--seconds", type=float, default=60.0, help="time limit per method and config/seed")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from trainmedic.remedies.autofix import autofix
    from trainmedic.scenarios.train import DEFAULTS, train_fn

    configs = [c for c in CONFIGS if not args.only or c[0] in args.only][: args.configs]
    root = Path(tempfile.mkdtemp(prefix="autofix-vs-random-"))
    one_run({"epochs": 1}, root / "warm")  # torch's one-time start-up is timed in no method
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    hdr = f"{'config':24s} {'seed':>4s} {'faulty':>7s} {'healthy':>7s} {'autofix':>7s} {'random':>7s} {'af_n':>4s} {'rs_n':>4s} {'af_s':>6s} {'rs_s':>6s} {'t_fix/run':>9s}"
    print(hdr)
    for name, family, setup, knobs in configs:
        for seed in range(args.seeds):
            faulty = {**knobs, **setup, "seed": seed}
            d = root / f"{name}-{seed}"
            healthy, run_s = one_run({**HEALTHY, **setup, "seed": seed}, d / "healthy")
            res = autofix(
                train_fn,
                faulty,
                budget=args.budget,
                run_root=d / "af",
                seconds=args.seconds,
                defaults=DEFAULTS,
            )
            rs, rs_n, rs_s = random_search(name, faulty, setup, args.budget, args.seconds, seed, d)
            faulty_v = res.trials[0].metric_after
            h = healthy or 0.0
            fix_t = next(
                (
                    t.elapsed
                    for t in res.trials
                    if t.kept and t.metric_after is not None and t.metric_after >= h - args.tolerance
                ),
                None,
            )
            row = {
                "config": name,
                "family": family,
                "seed": seed,
                "faulty": faulty_v,
                "healthy": healthy,
                "autofix": res.best_metric,
                "random": rs,
                "autofix_trials": len(res.trials),
                "random_trials": rs_n,
                "autofix_seconds": res.seconds,
                "random_seconds": rs_s,
                "run_seconds": run_s,
                "fix_ratio": None if fix_t is None else fix_t / run_s,
                "fixable": faulty_v is None or faulty_v < h - args.tolerance,
                "stop_reason": res.stop_reason,
                "remedies": [t.remedy for t in res.trials[1:] if t.kept],
            }
            rows.append(row)

            def f(v: Any) -> str:
                return "   —   " if v is None else f"{v:7.4f}"

            print(
                f"{name:24s} {seed:4d} {f(faulty_v)} {f(healthy)} {f(res.best_metric)} {f(rs)} "
                f"{len(res.trials):4d} {rs_n:4d} {res.seconds:6.1f} {rs_s:6.1f} "
                f"{'—' if row['fix_ratio'] is None else format(row['fix_ratio'], '.2f'):>9s}",
                flush=True,
            )
    summarize(rows, args, time.perf_counter() - t_all)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def summarize(rows: list[dict[str, Any]], args: argparse.Namespace, total: float) -> None:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)

    def mean(rs: list[dict[str, Any]], k: str) -> float:
        return float(np.mean([r[k] if r[k] is not None else 0.0 for r in rs]))

    af = {c: mean(rs, "autofix") for c, rs in by.items()}
    ra = {c: mean(rs, "random") for c, rs in by.items()}
    fa = {c: mean(rs, "faulty") for c, rs in by.items()}
    he = {c: mean(rs, "healthy") for c, rs in by.items()}
    wins = sum(af[c] >= ra[c] for c in by)
    wins_runs = sum((r["autofix"] or 0.0) >= r["random"] for r in rows)
    fixable = [r for r in rows if r["fixable"]]
    within = sum((r["autofix"] or 0.0) >= (r["healthy"] or 0.0) - args.tolerance for r in fixable)
    within_rs = sum(r["random"] >= (r["healthy"] or 0.0) - args.tolerance for r in fixable)
    ratios = [r["fix_ratio"] for r in fixable if r["fix_ratio"] is not None]
    print()
    print(f"configs: {len(by)}, seeds: {args.seeds}, budget {args.budget}, time limit {args.seconds:g}s each")
    print(
        f"autofix >= random: {wins}/{len(by)} configs ({wins / len(by):.0%}; mean over seeds), "
        f"{wins_runs}/{len(rows)} config-seed pairs ({wins_runs / len(rows):.0%})"
    )
    print(
        f"median final val accuracy: autofix {statistics.median(r['autofix'] or 0.0 for r in rows):.4f}, "
        f"random {statistics.median(r['random'] for r in rows):.4f}"
    )
    print(
        f"median gain over random: {statistics.median(af[c] - ra[c] for c in by):+.4f} (per config), "
        f"over the faulty baseline: {statistics.median(af[c] - fa[c] for c in by):+.4f}"
    )
    print(
        f"within {args.tolerance:g} of the healthy counterpart (fixable runs): autofix {within}/{len(fixable)} "
        f"({within / max(1, len(fixable)):.0%}), random {within_rs}/{len(fixable)} ({within_rs / max(1, len(fixable)):.0%})"
    )
    if ratios:
        print(
            f"time to the repaired model / one training run: median {statistics.median(ratios):.2f} "
            f"over {len(ratios)} repaired runs (max {max(ratios):.2f})"
        )
    print(f"mean healthy counterpart {np.mean(list(he.values())):.4f}; total {total:.0f}s")


if __name__ == "__main__":
    main()
