"""Recording overhead: bare vs watched training of an MLP and a small CNN on sklearn's digits.

Four identical set-ups (bare; watched with default settings — the step schedule of ``trainmedic/cadence.py``;
watched with the opt-in wall-time budget ``overhead_budget=0.02``, which thins ``every=10`` on fast models; and
watched with every statistic on every step, ``every=1`` given explicitly, which never thins) train side by side in one process, in interleaved chunks of 100 steps (the order rotates each
round), so that the neighbours' load on a shared machine hits every variant alike. (Shorter chunks bias the
figure against the watched set-ups: each switch between models re-warms the caches, and a watched step has
more code and data to bring back; training does not switch models every few steps.) Each variant's time is its
process CPU time (``time.process_time``, one torch thread) summed over all chunks, including the final flush
of what was recorded; ``--wall`` uses wall-clock time. The figure is watched time / bare time, with the
spread of the per-round ratios. One-time costs (``tm.watch`` set-up, ``run.close``) are reported apart.

``--device cuda`` puts data and models on the GPU and times wall-clock with ``torch.cuda.synchronize()`` at
each chunk's start and end (CPU time says nothing about queued kernels there). ``--models`` picks the models;
``big`` (an MLP 64-1024-1024-1024-10) has kernels long enough that GPU time is not all launch overhead.

    python benchmarks/overhead.py [--rounds 50] [--chunk 100] [--threads 1] [--wall] [--parts]
                                  [--device cpu|cuda] [--models mlp,cnn,big | --only mlp]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import trainmedic as tm

CLOCK = time.process_time


def _no_sync() -> None:
    """On the CPU every kernel has finished when it returns: nothing to wait for."""


SYNC: Callable[[], None] = _no_sync  # torch.cuda.synchronize on --device cuda


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )


def big() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 1024),
        nn.ReLU(),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Linear(1024, 10),
    )


MODELS: dict[str, Callable[[], nn.Module]] = {"mlp": mlp, "cnn": cnn, "big": big}


NEVER = 10**12

# --parts: the recorder's pieces added one at a time (each a watched set-up beside the bare one)
PARTS: dict[str, dict[str, Any]] = {
    "step hooks only": {"every": 1, "_cadences": (NEVER, NEVER), "_log": False},
    "+ run.log(loss)": {"every": 1, "_cadences": (NEVER, NEVER)},
    "+ grad norm every step": {"every": 1, "_cadences": (1, NEVER)},
    "+ layer norms every step": {"every": 1, "_cadences": (1, 1), "activations": False},
    "+ activations every step": {"every": 1, "_cadences": (1, 1)},
}


def fix_cadences(run: Any, grad_norm_every: int, capture_every: int) -> None:
    """Pin a run's cadences (a benchmark knob: the overhead budget off, statistics at these cadences)."""
    run._meter = None
    # the --parts set-ups pass every=1: a FixedCadence, whose two numbers the hooks read at each step with work
    run._cadence.gn_every, run._cadence.cap_every = grad_norm_every, capture_every
    run._update_quiet()
    if run._act_probe is not None and run._act_probe.capture and capture_every != 1:
        run._act_probe.stop_capture()


class Setup:
    """One model + optimizer (+ run when watched) that can train a chunk of steps and account its time."""

    def __init__(
        self, make: Callable[[], nn.Module], watch: dict[str, Any] | None, root: Path, device: torch.device
    ) -> None:
        torch.manual_seed(0)
        self.model = make().to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = nn.CrossEntropyLoss()
        self.run = None
        self.seconds = 0.0
        self.step = 0
        self.once_ms = 0.0
        self.cadence: dict[str, Any] | None = None
        self.log = True
        if watch is not None:
            watch = dict(watch)
            fixed = watch.pop(
                "_cadences", None
            )  # --parts: (gradient-norm cadence, capture cadence), no budget
            self.log = watch.pop("_log", True)
            t = time.perf_counter()
            self.run = tm.watch(
                self.model, self.opt, run_dir=root / f"r{time.perf_counter_ns()}", quiet=True, **watch
            )
            if fixed is not None:
                fix_cadences(self.run, *fixed)
            self.once_ms += 1000 * (time.perf_counter() - t)

    def chunk(self, X: torch.Tensor, y: torch.Tensor, steps: int, bs: int = 64) -> float:
        model, opt, loss_fn, run = self.model, self.opt, self.loss_fn, self.run
        n = len(X)
        SYNC()
        t0 = CLOCK()
        for _ in range(steps):
            i = (self.step * bs) % (n - bs)
            self.step += 1
            xb, yb = X[i : i + bs], y[i : i + bs]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            if run is not None and self.log:
                run.log(loss=loss)
        SYNC()
        dt = CLOCK() - t0
        self.seconds += dt
        return dt

    def finish(self) -> None:
        if self.run is not None:
            SYNC()
            t0 = CLOCK()
            self.run.flush()  # what the loop recorded, moved and written: part of the per-step cost
            SYNC()
            self.seconds += CLOCK() - t0
            self.cadence = self.run._cadence_meta()
            t = time.perf_counter()
            self.run.close()
            self.once_ms += 1000 * (time.perf_counter() - t)


def measure(
    make: Callable[[], nn.Module],
    X: torch.Tensor,
    y: torch.Tensor,
    rounds: int,
    chunk: int,
    root: Path,
    parts: bool = False,
) -> None:
    variants: dict[str, dict[str, Any] | None] = {
        "bare": None,
        "default": {},
        "budget=2%": {"overhead_budget": 0.02},
        "every=1": {"every": 1},
    }
    parts_mode = parts
    if parts:
        variants = {"bare": None, **PARTS}
    setups = {k: Setup(make, v, root, X.device) for k, v in variants.items()}
    for s in setups.values():  # warm-up: allocator, first-step paths, first flush
        s.chunk(X, y, 10)
        s.seconds = 0.0
    names = list(setups)
    per_round: dict[str, list[float]] = {k: [] for k in names if k != "bare"}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        times = {k: setups[k].chunk(X, y, chunk) for k in order}
        for k in per_round:
            per_round[k].append(times[k] / times["bare"])
    for s in setups.values():
        s.finish()
    bare = setups["bare"].seconds
    steps = setups["bare"].step - 10
    parts = []
    for k, rs in per_round.items():
        parts.append(
            f"{k} {setups[k].seconds / bare:.3f}x (per-round median {statistics.median(rs):.3f}, "
            f"IQR {np.percentile(rs, 25):.3f}-{np.percentile(rs, 75):.3f})"
        )
    if parts_mode:
        print(f"{make.__name__.upper()}: bare {bare * 1e6 / steps:.1f} µs/step over {steps} steps")
        for k in per_round:
            extra = (setups[k].seconds - bare) * 1e6 / steps
            print(
                f"  {k:<28} {setups[k].seconds / bare:.3f}x  (+{extra:6.1f} µs/step; per-round median "
                f"{statistics.median(per_round[k]):.3f})"
            )
        return
    print(
        f"{make.__name__.upper()}: bare {bare * 1000 / steps:.3f} ms/step over {steps} steps; watched/bare: "
        + "; ".join(parts)
    )
    for k in per_round:
        c = setups[k].cadence or {}
        if c.get("schedule") == "log":
            g, caps = setups[k].run._cadence.steps(setups[k].step)  # type: ignore[union-attr]
            print(
                f"{make.__name__.upper()}: {k}: step schedule (the same on any machine): {len(g)} gradient norms "
                f"and {len(caps)} captures in {setups[k].step} steps"
            )
        if c.get("budget") is not None:
            meas, pred = c.get("measured_overhead"), c.get("predicted_overhead")
            print(
                f"{make.__name__.upper()}: {k}: budget {c['budget']:.0%}, grad_norm every {c['grad_norm_every']}, "
                f"capture every {c['capture_every']} steps (last measured share "
                f"{meas if meas is None else f'{meas:.1%}'}, predicted after thinning "
                f"{pred if pred is None else f'{pred:.1%}'}, {c.get('checks')} check(s))"
            )
    once = ", ".join(f"{k} {setups[k].once_ms:.0f} ms" for k in per_round)
    print(f"{make.__name__.upper()}: one-time cost per run (tm.watch + run.close), not in the ratios: {once}")


def parse_models(text: str) -> list[str]:
    """``"mlp,cnn,big"`` → the model names, in order; unknown names fail with the list of known ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"`--models` must be a comma-separated list of {', '.join(MODELS)}; got {text!r}"
        )
    return names


def main() -> None:
    global CLOCK, SYNC
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=100, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wall", action="store_true", help="wall-clock instead of process CPU time")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--models", type=parse_models, default=None, help="comma-separated: mlp,cnn,big")
    ap.add_argument("--only", choices=list(MODELS), default=None, help="one model (same as --models NAME)")
    ap.add_argument(
        "--parts",
        action="store_true",
        help="the cost of each piece of the recorder (pinned cadences, no budget)",
    )
    args = ap.parse_args()
    if args.only is not None and args.models is not None:
        ap.error("give `--only` or `--models`, not both")
    models: list[str] = [args.only] if args.only else args.models or ["mlp", "cnn"]
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                "overhead.py: `--device cuda` needs a CUDA GPU; got none (torch.cuda.is_available() is False, "
                f"torch {torch.__version__}); use --device cpu"
            )
        CLOCK, SYNC = time.perf_counter, torch.cuda.synchronize  # CPU time misses queued GPU work
    elif args.wall:
        CLOCK = time.perf_counter
    torch.set_num_threads(args.threads)
    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32, device=device)
    y = torch.tensor(d.target, dtype=torch.long, device=device)
    clock = "process CPU" if CLOCK is time.process_time else "wall-clock"
    if device.type == "cuda":
        clock += " (synchronized at each chunk's start and end)"
        print(
            f"device: {torch.cuda.get_device_name()} (cuda), TF32 matmul {torch.backends.cuda.matmul.allow_tf32}"
        )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {clock} time, batch 64, Adam, "
        f"{args.rounds} rounds x {args.chunk} steps per variant, interleaved"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            measure(MODELS[name], X, y, args.rounds, args.chunk, Path(tmp), parts=args.parts)


if __name__ == "__main__":
    main()
