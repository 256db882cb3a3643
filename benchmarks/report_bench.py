"""Time ``tm.report`` on a long run: 100k steps, 50 layers, written straight through ``RunWriter``.

    python benchmarks/report_bench.py [--steps 100000] [--layers 50] [--repeats 3] [--browser]

Prints the time to write the run, the time to render the report (best and median of the repeats, wall and
CPU), the report's size, its number of figures and interactive charts; with ``--browser`` also the time
headless Chromium takes to load the page and mount every interactive chart. Figures are for BENCHMARKS.md,
section "## Report".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from trainmedic.findings import Diagnosis, Finding, RemedySuggestion, Severity
from trainmedic.probes.quantiles import QUANTILE_STATS
from trainmedic.report import report
from trainmedic.store import RunWriter


def write_run(
    run_dir: Path, steps: int, n_layers: int, every: int = 10, epochs: int = 100, classes: int = 10
) -> None:
    rng = np.random.default_rng(0)
    w = RunWriter(run_dir, mode="overwrite")
    layers = [f"encoder.block{i // 2}.{'fc' if i % 2 == 0 else 'proj'}" for i in range(n_layers)]
    acts = [f"encoder.block{i}.act" for i in range(n_layers // 2)]
    w.set_meta(
        name="bench-100k",
        status="closed",
        steps=steps,
        epochs=epochs,
        every=every,
        device="cpu",
        batch_size=128,
        layers=layers,
        activations=acts,
        optimizers=[
            {
                "name": "optimizer",
                "type": "AdamW",
                "param_groups": [
                    {"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.01, "num_params": 10**6}
                ],
            }
        ],
        config={"epochs": epochs, "model": "bench-mlp", "layers": n_layers},
        models=[
            {
                "name": "model",
                "type": "BenchNet",
                "total_params": 10**6,
                "trainable_params": 10**6,
                "layers": [
                    {"name": lay, "type": "Linear", "params": 20000, "activation": "ReLU"} for lay in layers
                ],
            }
        ],
        thresholds={"min_accuracy": 0.6, "min_recall": 0.5, "explode_ratio": 20.0},
    )
    s = np.arange(steps)
    loss = 2.3 * np.exp(-s / (steps / 5)) + 0.1 + 0.05 * rng.standard_normal(steps)
    loss[steps * 3 // 4 : steps * 3 // 4 + 50] *= 30  # a spike the downsampling must keep
    gnorm = np.abs(1.0 + 0.2 * rng.standard_normal(steps))
    gnorm[steps * 3 // 4 : steps * 3 // 4 + 50] *= 100
    chunk = 1000
    for a in range(0, steps, chunk):
        w.add_scalars("loss", s[a : a + chunk], loss[a : a + chunk])
        w.add_scalars("grad_norm", s[a : a + chunk], gnorm[a : a + chunk])
        w.add_scalars("lr", s[a : a + chunk : every], 1e-3 * (0.5 ** (s[a : a + chunk : every] / steps * 4)))
        w.flush()
    for stat, names in (
        ("grad_norm", layers),
        ("weight_norm", layers),
        ("update_norm", layers),
        ("update_ratio", layers),
        ("act_mean", acts),
        ("act_std", acts),
        ("act_dead", acts),
        ("act_zero", acts),
        ("act_saturated", acts),
        *((q, layers) for q in QUANTILE_STATS),
    ):
        w.set_layer_set(stat, names)
    depth = np.linspace(1.0, 0.01, n_layers)  # vanishing toward the input
    for k, step in enumerate(range(0, steps, every)):
        g = depth[::-1] * gnorm[step] * (1 + 0.1 * rng.standard_normal(n_layers))
        w.add_layer_values("grad_norm", step, g)
        w.add_layer_values("weight_norm", step, 10 + 0.001 * k * np.ones(n_layers))
        w.add_layer_values("update_norm", step, 1e-2 * g)
        w.add_layer_values("update_ratio", step, 1e-3 * g)
        na = len(acts)
        w.add_layer_values("act_mean", step, 0.5 + 0.1 * rng.standard_normal(na))
        w.add_layer_values("act_std", step, 1.0 + 0.1 * rng.standard_normal(na))
        w.add_layer_values("act_dead", step, np.clip(np.linspace(0, 0.6, na) * k / (steps / every), 0, 1))
        w.add_layer_values("act_zero", step, np.full(na, 0.5))
        w.add_layer_values("act_saturated", step, np.full(na, np.nan))
        spread = 0.05 * (1 + k / (steps / every))
        for q, z in zip(QUANTILE_STATS, (-2.3, -0.67, 0.0, 0.67, 2.3, -2.3, -0.67, 0.0, 0.67, 2.3)):
            scale = spread if q.startswith("weight") else 1e-3 * g
            w.add_layer_values(q, step, z * scale * np.ones(n_layers))
        w.add_scalar("wall_time", step, 0.004 * step * (1 + 0.01 * rng.standard_normal()))
        if k % 2000 == 1999:
            w.flush()
    w.flush()
    per_epoch = steps // epochs
    for e in range(epochs):
        for split, acc in (
            ("train", 0.5 + 0.49 * (1 - np.exp(-e / 10))),
            ("val", 0.5 + 0.35 * (1 - np.exp(-e / 10))),
        ):
            w.add_eval(split, e, (e + 1) * per_epoch, "accuracy", acc)
            w.add_eval(split, e, (e + 1) * per_epoch, "f1_macro", acc - 0.03)
            w.add_eval(split, e, (e + 1) * per_epoch, "loss", 2.3 * (1 - acc))
            cm = rng.integers(0, 5, size=(classes, classes)) + np.diag(np.full(classes, int(100 * acc)))
            w.add_record(
                "classification",
                {
                    "confusion_matrix": cm.tolist(),
                    "per_class": {
                        "precision": (np.diag(cm) / cm.sum(0)).tolist(),
                        "recall": (np.diag(cm) / cm.sum(1)).tolist(),
                        "f1": (np.diag(cm) / cm.sum(1)).tolist(),
                        "support": cm.sum(1).tolist(),
                        "predicted": cm.sum(0).tolist(),
                    },
                },
                epoch=e,
                step=(e + 1) * per_epoch,
                split=split,
            )
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--layers", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--browser", action="store_true", help="also time headless Chromium loading the page")
    args = ap.parse_args()
    diag = Diagnosis(
        "bench-100k",
        [
            Finding(
                "exploding_gradient",
                Severity.ERROR,
                "gradient norm spiked 100x",
                {"first_step": args.steps * 3 // 4, "ratio": 100.0, "threshold_ratio": 20.0},
                [RemedySuggestion.of("gradient_clipping", "caps the update")],
                step=args.steps * 3 // 4,
            )
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        write_run(run_dir, args.steps, args.layers)
        print(
            f"wrote a {args.steps:,}-step, {args.layers}-layer run in {time.perf_counter() - t0:.2f} s "
            f"({(run_dir / 'run.sqlite').stat().st_size / 1e6:.1f} MB on disk)"
        )
        walls, cpus = [], []
        out = Path(tmp) / "report.html"
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            report(run_dir, out, diagnosis=diag)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        text = out.read_text(encoding="utf-8")
        print(
            f"report: best {min(walls):.2f} s, median {statistics.median(walls):.2f} s wall "
            f"(CPU best {min(cpus):.2f} s) over {args.repeats} runs"
        )
        print(
            f"report size: {len(text.encode()) / 1e6:.2f} MB, {text.count('<svg')} inline SVG figures, "
            f"{text.count('data-tm=')} interactive charts"
        )
        if args.browser:
            browser_times(out)


def browser_times(page: Path, repeats: int = 3) -> None:
    """Load the page in headless Chromium (tests/report/cdp.py) until every interactive chart is mounted."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "report"))
    from cdp import Browser  # type: ignore[import-not-found]

    b = Browser()
    try:
        loads, mounted = [], []
        for _ in range(repeats):
            loads.append(b.navigate(page.as_uri()))
            t0 = time.perf_counter()
            n = b.eval("document.querySelectorAll('.tm-ichart').length")
            mounted.append(time.perf_counter() - t0)
        problems = b.console_problems()
    finally:
        b.close()
    print(
        f"chromium: load event best {min(loads):.2f} s, median {statistics.median(loads):.2f} s "
        f"({n} interactive charts mounted before it; console problems: {len(problems)})"
    )


if __name__ == "__main__":
    main()
