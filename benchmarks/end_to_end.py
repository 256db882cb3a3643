"""End-to-end cost of watching: whole small training programs, bare vs watched at the defaults.

Each loop is a complete program as a user writes it: build the model, train for its epochs, and at the end of
each epoch score the train and val splits (the bare loop computes the same forward passes and its own accuracy;
the watched loop calls ``run.evaluate`` for both splits instead). Watched = ``tm.watch(...)`` (its one-time
set-up included), ``run.log(loss=loss)`` per step, ``run.evaluate`` per split and epoch, ``run.close()``. Bare and
watched runs of the same loop alternate in one process (``--repeats`` pairs, the first of each order warmed up)
with the same seed, so they compute the same thing; 1 torch thread.

Loops: a tiny tabular net (width 5, 700 samples, batch 128, 300 epochs), the digits MLP (batch 64, 20 epochs),
a small CNN, an LSTM and a Transformer encoder on digits (rows as a sequence). Targets: <= 1.05x on every loop,
<= 1.03x on loops whose step takes >= 1 ms.

    python benchmarks/end_to_end.py [--repeats 7] [--loops tabular,mlp,cnn,lstm,transformer] [--log-outputs]

Each run is timed on two clocks: wall time (what the user waits) and the process's CPU time (less disturbed by
other jobs on a shared machine). Three summaries per clock: the ratio of the medians, the ratio of the best
runs (best-of-N, the least disturbed estimate of the intrinsic cost) and the median of the pairs' ratios.

``--log-outputs`` also passes ``outputs=`` / ``targets=`` to ``run.log`` (running training metrics).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits, make_classification
from torch import nn

import trainmedic as tm


@dataclass
class Loop:
    name: str
    make: Callable[[], nn.Module]
    data: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    batch: int
    epochs: int
    lr: float


def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(X), generator=g)
    tr, va = idx[: int(0.6 * len(X))], idx[int(0.6 * len(X)) : int(0.8 * len(X))]
    return X[tr], y[tr], X[va], y[va]


def _tabular() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    X, y = make_classification(n_samples=875, n_features=10, n_informative=5, n_classes=2, random_state=0)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    return Xt[:700], yt[:700], Xt[700:], yt[700:]


class _Seq(nn.Module):
    """Digits as 8 rows of 8 pixels: an LSTM or a Transformer encoder over the rows, a linear head."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "lstm":
            self.body: nn.Module = nn.LSTM(8, 32, batch_first=True)
        else:
            self.embed = nn.Linear(8, 32)
            layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
            self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 8, 8)
        if self.kind == "lstm":
            out, _ = self.body(x)
            return self.head(out[:, -1])
        return self.head(self.body(self.embed(x)).mean(dim=1))


def _cnn() -> nn.Module:
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


LOOPS = {
    "tabular": Loop(
        "tabular",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2)),
        _tabular,
        128,
        300,
        1e-2,
    ),
    "mlp": Loop(
        "mlp",
        lambda: nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        ),
        _digits,
        64,
        20,
        1e-3,
    ),
    "cnn": Loop("cnn", _cnn, _digits, 64, 20, 1e-3),
    "lstm": Loop("lstm", lambda: _Seq("lstm"), _digits, 64, 20, 3e-3),
    "transformer": Loop("transformer", lambda: _Seq("transformer"), _digits, 64, 10, 1e-3),
}


def train(loop: Loop, data: Any, watched: bool, root: Path, log_outputs: bool) -> tuple[float, float, int]:
    """One whole program; returns (wall seconds, process CPU seconds, optimizer steps)."""
    Xtr, ytr, Xva, yva = data
    torch.manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    model = loop.make()
    opt = torch.optim.Adam(model.parameters(), lr=loop.lr)
    loss_fn = nn.CrossEntropyLoss()
    run = tm.watch(model, opt, run_dir=root / f"r{time.perf_counter_ns()}", quiet=True) if watched else None
    g = torch.Generator().manual_seed(1)
    steps = 0
    n = len(Xtr)
    for _ in range(loop.epochs):
        perm = torch.randperm(n, generator=g)
        model.train()
        for i in range(0, n, loop.batch):
            idx = perm[i : i + loop.batch]
            xb, yb = Xtr[idx], ytr[idx]
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            steps += 1
            if run is not None:
                if log_outputs:
                    run.log(loss=loss, outputs=out, targets=yb)
                else:
                    run.log(loss=loss)
        model.eval()
        with torch.no_grad():
            for split, X, y in (("train", Xtr, ytr), ("val", Xva, yva)):
                logits = model(X)
                split_loss = loss_fn(logits, y)
                if run is not None:
                    run.evaluate(split, y, logits, loss=split_loss)
                else:  # what a bare program prints: loss and accuracy
                    _ = float(split_loss), float((logits.argmax(1) == y).float().mean())
    if run is not None:
        run.close()
    return time.perf_counter() - t0, time.process_time() - c0, steps


def _ratios(bare: list[float], watched: list[float]) -> str:
    pairs = [w / b for b, w in zip(bare, watched)]
    return (
        f"median {statistics.median(watched) / statistics.median(bare):.3f}x, "
        f"best-of {min(watched) / min(bare):.3f}x, per-pair median {statistics.median(pairs):.3f} "
        f"(IQR {np.percentile(pairs, 25):.3f}-{np.percentile(pairs, 75):.3f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--log-outputs", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    names = [s.strip() for s in a.loops.split(",") if s.strip()]
    print(
        f"torch {torch.__version__}, 1 thread, {a.repeats} bare/watched pairs per loop (alternating order); "
        "wall time and process CPU time of the same runs"
        + (", run.log(loss, outputs, targets)" if a.log_outputs else "")
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in names:
            loop = LOOPS[name]
            data = loop.data()
            train(loop, data, False, root, a.log_outputs)  # warm-up: first-call paths, allocator
            train(loop, data, True, root, a.log_outputs)
            t: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            steps = 0
            for r in range(a.repeats):
                for w in (False, True) if r % 2 == 0 else (True, False):
                    wall, cpu, steps = train(loop, data, w, root, a.log_outputs)
                    t[w].append((wall, cpu))
            b = statistics.median(x[0] for x in t[False])
            print(
                f"{name:<12} {steps:>5} steps, bare {b:.3f} s ({b * 1000 / steps:.2f} ms/step incl. evaluation)"
            )
            for i, clock in enumerate(("wall", "cpu")):
                bare, watched = [x[i] for x in t[False]], [x[i] for x in t[True]]
                print(f"{'':<12} {clock:<4} {_ratios(bare, watched)}")


if __name__ == "__main__":
    main()
