"""Real recorded runs on sklearn's digits for the report tests, and a tiny run written without torch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import trainmedic as tm

EVIL = "<script>alert(1)</script>"


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def train_run(
    run_dir: Path,
    *,
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    model: nn.Module,
    make_opt: Callable[[nn.Module], torch.optim.Optimizer],
    epochs: int,
    batch: int,
    name: str | None = None,
    class_names: list[str] | None = None,
    seed: int = 0,
    lr_at_epoch: dict[int, float] | None = None,
) -> Path:
    """A plain watched loop: log the loss every step, evaluate train and val every epoch.

    ``lr_at_epoch`` sets the learning rate at the start of an epoch (a badly chosen schedule step).
    """
    torch.manual_seed(seed)
    opt = make_opt(model)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    xv, yv = torch.from_numpy(x_va), torch.from_numpy(y_va)
    g = torch.Generator().manual_seed(seed)
    run = tm.watch(
        model,
        opt,
        run_dir=run_dir,
        overwrite=True,
        quiet=True,
        name=name,
        every=2,
        config={"epochs": epochs, "batch_size": batch},
    )
    for epoch in range(epochs):
        if lr_at_epoch and epoch in lr_at_epoch:
            for group in opt.param_groups:
                group["lr"] = lr_at_epoch[epoch]
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate(
                "train", yt, model(xt), loss=loss_fn(model(xt), yt), class_names=class_names, num_classes=10
            )
            run.evaluate(
                "val", yv, model(xv), loss=loss_fn(model(xv), yv), class_names=class_names, num_classes=10
            )
    run.close()
    return run_dir


def _split(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    cut = int(0.7 * len(y))
    return x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]


def _mlp(width: int, depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(64, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def make_healthy(runs_root: Path) -> Path:
    x, y = _digits()
    x_tr, y_tr, x_va, y_va = _split(x, y)
    torch.manual_seed(0)
    return train_run(
        runs_root / "healthy",
        x_tr=x_tr,
        y_tr=y_tr,
        x_va=x_va,
        y_va=y_va,
        model=_mlp(32),
        make_opt=lambda m: torch.optim.Adam(m.parameters(), lr=3e-3),
        epochs=6,
        batch=64,
    )


def make_overfit(runs_root: Path) -> Path:
    x, y = _digits()
    x_tr, y_tr, x_va, y_va = _split(x, y)
    torch.manual_seed(0)
    return train_run(
        runs_root / "overfit",
        x_tr=x_tr[:60],
        y_tr=y_tr[:60],
        x_va=x_va,
        y_va=y_va,
        model=_mlp(256),
        make_opt=lambda m: torch.optim.Adam(m.parameters(), lr=3e-3),
        epochs=40,
        batch=30,
    )


def make_exploding(runs_root: Path) -> Path:
    """SGD at lr 0.1 for one epoch (a baseline for the live check), then lr 20: the gradients blow up."""
    x, y = _digits()
    x_tr, y_tr, x_va, y_va = _split(x, y)
    torch.manual_seed(0)
    return train_run(
        runs_root / "exploding",
        x_tr=x_tr,
        y_tr=y_tr,
        x_va=x_va,
        y_va=y_va,
        model=_mlp(64),
        make_opt=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        epochs=3,
        batch=64,
        lr_at_epoch={1: 20.0},
    )


def make_imbalanced(runs_root: Path) -> Path:
    """Classes 2-9 keep 6% of their samples; the names include a script tag, so is the run's name."""
    x, y = _digits()
    rng = np.random.default_rng(0)
    keep = (y < 2) | (rng.random(len(y)) < 0.06)
    x_tr, y_tr, x_va, y_va = _split(x[keep], y[keep])
    torch.manual_seed(0)
    names = [EVIL if c == 3 else f"digit {c}" for c in range(10)]
    return train_run(
        runs_root / "imbalanced",
        x_tr=x_tr,
        y_tr=y_tr,
        x_va=x_va,
        y_va=y_va,
        model=_mlp(16),
        make_opt=lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
        epochs=4,
        batch=64,
        name=f"imbalanced {EVIL}",
        class_names=names,
    )


def write_tiny_run(run_dir: Path, name: str, slope: float = 1.0) -> Path:
    """A few signals written straight through RunWriter: cheap to build and to report on."""
    from trainmedic.store import RunWriter

    w = RunWriter(run_dir, mode="overwrite")
    w.set_meta(name=name, status="closed", steps=30, epochs=3)
    steps = np.arange(30)
    w.add_scalars("loss", steps, 2.0 * np.exp(-slope * steps / 10))
    w.add_scalars("grad_norm", steps, np.full(30, 0.5))
    for epoch in range(3):
        for split, acc in (("train", 0.6 + 0.1 * epoch), ("val", 0.55 + 0.08 * epoch)):
            w.add_eval(split, epoch, 10 * (epoch + 1), "accuracy", acc)
            w.add_eval(split, epoch, 10 * (epoch + 1), "loss", 1.0 - acc / 2)
    w.close()
    return run_dir
