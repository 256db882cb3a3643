"""The three tiny fits every integration must judge like a plain ``tm.watch`` loop (callback parity).

* ``healthy``: an MLP on all of digits; no warning or error.
* ``overfit``: 20 digits per class with 40% of their labels replaced at random, a wide MLP, 40 epochs at
  Adam 1e-2: it memorizes the training set (running training accuracy ≈ 98%) while held-out accuracy stays
  near 63% and the held-out loss rises from its best epoch.
* ``collapse``: labels drawn independently of the inputs, 15% positive: the model can only learn the prior,
  predicts the majority class for every sample, and the minority class's recall is 0.

Each framework's test trains them through its callback and compares the diagnosis with :data:`EXPECTED`; a
plain PyTorch loop with ``run.log(loss=, outputs=, targets=)`` gets the same verdicts
(``test_parity_plain_loop_gets_the_verdicts_the_callbacks_must_match``).
Not a test module (no ``test_`` prefix): also imported by the Keras subprocess script.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# codes at warning/error that each case must (and the healthy case must not) get
EXPECTED: dict[str, set[str]] = {
    "healthy": set(),
    "overfit": {"overfitting"},
    "collapse": {"data_imbalance", "low_recall"},
}


@dataclass
class Case:
    name: str
    X_train: np.ndarray  # float32 (N, 64)
    y_train: np.ndarray  # int64 (N,)
    X_val: np.ndarray
    y_val: np.ndarray
    width: int
    epochs: int
    lr: float
    batch_size: int

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max())) + 1


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, va = idx[:1437], idx[1437:]
    return X[tr], y[tr].astype(np.int64), X[va], y[va].astype(np.int64)


def cases() -> dict[str, Case]:
    X_tr, y_tr, X_va, y_va = digits_split()
    rng = np.random.default_rng(0)
    sel = np.concatenate([np.where(y_tr == c)[0][:20] for c in range(10)])
    y_noisy = y_tr[sel].copy()
    flip = rng.random(len(sel)) < 0.4
    y_noisy[flip] = rng.integers(0, 10, int(flip.sum()))
    y_c_tr = (rng.random(len(y_tr)) < 0.15).astype(np.int64)
    y_c_va = (rng.random(len(y_va)) < 0.15).astype(np.int64)
    return {
        "healthy": Case("healthy", X_tr, y_tr, X_va, y_va, width=32, epochs=10, lr=1e-2, batch_size=64),
        "overfit": Case(
            "overfit", X_tr[sel], y_noisy, X_va, y_va, width=256, epochs=40, lr=1e-2, batch_size=32
        ),
        "collapse": Case("collapse", X_tr, y_c_tr, X_va, y_c_va, width=32, epochs=5, lr=1e-2, batch_size=64),
    }


def problems(run_dir: str | Path) -> set[str]:
    """Codes of the run's findings at warning or error."""
    import trainmedic as tm

    return {f.code for f in tm.diagnose(run_dir).findings if f.severity.value in ("warning", "error")}


def check(found: dict[str, set[str]]) -> list[str]:
    """What is wrong with the verdicts of the three cases (empty: parity holds)."""
    bad = []
    for name, want in EXPECTED.items():
        got = found.get(name)
        if got is None:
            bad.append(f"{name}: not run")
        elif not want and got:
            bad.append(f"{name}: a healthy fit got {sorted(got)}")
        elif not want <= got:
            bad.append(f"{name}: expected {sorted(want)} among {sorted(got)}")
    return bad


def summary(found: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {sorted(v)}" for k, v in found.items())
