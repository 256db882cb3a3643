"""Diagnosing a long stored history: 1M steps of loss/grad_norm/lr and 50 layers of per-layer statistics
(every 10 steps, as the recorder's default cadence), written with RunWriter directly.

Target: ``tm.diagnose`` ≤ 2 s. Prints the write time, the diagnose time (best of 3) and the findings.
Usage: python benchmarks/diagnose_bench.py [--steps N] [--layers L]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def write_history(path: Path, steps: int, layers: int, every: int = 10, chunk: int = 1000) -> None:
    from trainmedic.store import RunWriter

    rng = np.random.default_rng(0)
    names = [f"net.{i}" for i in range(layers)]
    w = RunWriter(path, mode="overwrite")
    w.set_meta(
        name="bench",
        status="closed",
        steps=steps,
        every=every,
        models=[
            {
                "name": "model",
                "total_params": layers * 4096,
                "trainable_params": layers * 4096,
                "layers": [
                    {
                        "name": n,
                        "type": "Linear",
                        "params": 4096,
                        "trainable": 4096,
                        "activation_kind": "relu",
                        "norm": False,
                        "init": {
                            "std": 0.05,
                            "mean_abs": 0.04,
                            "he_std": 0.177,
                            "xavier_std": 0.125,
                            "identical_units": False,
                        },
                    }
                    for n in names
                ],
            }
        ],
    )
    for stat in ("grad_norm", "weight_norm", "update_norm", "update_ratio"):
        w.set_layer_set(stat, names)
    w.set_layer_set("act_dead", names)
    t = np.arange(steps)
    loss = 2.3 * np.exp(-t / (steps / 10)) + 0.05 + 0.02 * rng.standard_normal(steps)
    grad = np.abs(1.0 + 0.2 * rng.standard_normal(steps))
    for s in range(0, steps, chunk * every):
        e = min(steps, s + chunk * every)
        w.add_scalars("loss", t[s:e], loss[s:e])
        w.add_scalars("grad_norm", t[s:e], grad[s:e])
        w.add_scalars("lr", t[s:e:every], np.full(len(t[s:e:every]), 1e-3))
        for k in range(s, e, every):
            w.add_layer_values("grad_norm", k, np.full(layers, 0.5, dtype=np.float32))
            w.add_layer_values("weight_norm", k, np.full(layers, 10.0, dtype=np.float32))
            w.add_layer_values("update_norm", k, np.full(layers, 0.01, dtype=np.float32))
            w.add_layer_values("update_ratio", k, np.full(layers, 1e-3, dtype=np.float32))
            w.add_layer_values("act_dead", k, np.full(layers, 0.05, dtype=np.float32))
        w.flush()
    epochs = 100
    for ep in range(epochs):
        for split, acc in (("train", 0.99), ("val", 0.96)):
            w.add_eval(split, ep, (ep + 1) * steps // epochs, "accuracy", acc)
            w.add_eval(split, ep, (ep + 1) * steps // epochs, "recall_macro", acc)
            w.add_eval(split, ep, (ep + 1) * steps // epochs, "loss", 0.1 if split == "train" else 0.15)
            cm = (np.eye(10) * 96 + 0.4).astype(int).tolist()
            w.add_record(
                "classification",
                {"confusion_matrix": cm},
                epoch=ep,
                step=(ep + 1) * steps // epochs,
                split=split,
            )
    w.set_meta(
        **{
            "split/train": {"samples": 1000, "class_counts": [100] * 10},
            "split/val": {"samples": 1000, "class_counts": [100] * 10},
        },
        epochs=epochs,
    )
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--layers", type=int, default=50)
    args = ap.parse_args()
    import trainmedic as tm

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "run"
        t0 = time.perf_counter()
        write_history(p, args.steps, args.layers)
        t_write = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in p.iterdir()) / 1e6
        times = []
        for _ in range(3):
            t = time.perf_counter()
            d = tm.diagnose(p)
            times.append(time.perf_counter() - t)
        print(
            f"history: {args.steps} steps, {args.layers} layers, every 10 steps; {size:.0f} MB; written in {t_write:.1f}s"
        )
        print(f"diagnose: best {min(times):.2f}s, runs {[round(x, 2) for x in times]} (target <= 2 s)")
        print(
            f"findings: {[str(f) for f in d.findings] or 'none (healthy)'}; skipped: {[s.code for s in d.skipped]}"
        )


if __name__ == "__main__":
    main()
