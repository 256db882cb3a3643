"""Healthy training programs in the many shapes real code takes (project issue 11).

The zoo varies models, data and optimizers inside one harness (``zoo.run_case``); real programs also vary in
*how* they are watched: the README's loop with running training metrics (``run.log(outputs=, targets=)``)
and no clean training pass, ``loss.item()`` floats, evaluation every N steps instead of per epoch, a test
split scored once at the end, regression and autoencoders with no classes at all, sigmoid heads with
``BCELoss`` on probabilities, gradient accumulation, ``OneCycleLR`` warm-up, warm restarts, label smoothing,
frozen backbones, unused parameters, ``LBFGS`` with a closure, residual stacks, a GAN, multi-label targets,
accuracy logged as plain scalars, early stopping written by hand, ``model.eval()`` left on, full-batch SGD,
softmax probabilities scored, bfloat16 autocast with clipping, a 30-sample val split. Every program here
trains normally — its oracle (val accuracy within a few points of a scikit-learn reference, or a loss that
fell by the stated factor) is checked by the test — so any warning or error on one is a false alarm.

``PROGRAMS`` maps a name to a function ``(run_dir, seed) -> Outcome``. Each program is written out as a whole
loop on purpose, the way its user would write it (the loops look alike line by line and differ in the calls
that matter): a shared training helper would turn them back into one harness, which is what the zoo already is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .zoo import dataset, reference_accuracy


@dataclass
class Outcome:
    """What the program reached, and what it should have (the oracle)."""

    metric: str  # "val_accuracy" | "loss_drop"
    value: float
    target: float  # the value must be >= target

    @property
    def ok(self) -> bool:
        return math.isfinite(self.value) and self.value >= self.target

    def __str__(self) -> str:
        return f"{self.metric} {self.value:.3f} (needs >= {self.target:.3f})"


PROGRAMS: dict[str, Callable[[Path, int], Outcome]] = {}


def program(fn: Callable[[Path, int], Outcome]) -> Callable[[Path, int], Outcome]:
    PROGRAMS[fn.__name__] = fn
    return fn


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    pred = (out.squeeze(-1) > 0.5).long() if out.ndim == 1 or out.shape[-1] == 1 else out.argmax(-1)
    return float((pred == y).float().mean())


def _classify(name: str, acc: float, tol: float = 0.05, seed: int = 0) -> Outcome:
    return Outcome("val_accuracy", acc, reference_accuracy(name, seed) - tol)


def _mlp(
    inp: int, width: int, out: int, depth: int = 2, act: type[nn.Module] = nn.ReLU, p: float = 0.0
) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = inp
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        if p:
            layers.append(nn.Dropout(p))
        d = width
    layers.append(nn.Linear(d, out))
    return nn.Sequential(*layers)


def _batches(n: int, bs: int, g: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=g).split(bs))


def _watch(model: Any, opt: Any, run_dir: Path, **kw: Any) -> Any:
    import trainmedic as tm

    return tm.watch(model, opt, run_dir=str(run_dir), quiet=True, **kw)


# ---------------------------------------------------------------------------------------------- programs


def readme_loop(
    run_dir: Path,
    seed: int = 0,
    data: str = "digits",
    train_n: int | None = None,
    width: int = 64,
    epochs: int = 15,
    lr: float = 1e-3,
    batch: int = 32,
) -> float:
    """The README's loop: running training metrics from the batches (``run.log(loss=, outputs=, targets=)``),
    val scored per epoch, no clean training pass. Returns the final val accuracy."""
    torch.manual_seed(seed)
    d = dataset(data, seed, train_n=train_n)
    model = _mlp(d.x_train.shape[1], width, d.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(epochs):
        for idx in _batches(len(d.y_train), batch, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        model.eval()
        with torch.no_grad():
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
        model.train()
    run.close()
    return _acc(model, d.x_val, d.y_val)


@program
def readme_running_metrics(run_dir: Path, seed: int) -> Outcome:
    """The README's loop on digits (see :func:`readme_loop`)."""
    return _classify("digits", readme_loop(run_dir, seed))


@program
def running_metrics_heavy_dropout(run_dir: Path, seed: int) -> Outcome:
    """Dropout 0.5: the running (train-mode) accuracy sits below the eval-mode val accuracy, as it should."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 128, 10, p=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(20):
        model.train()
        for idx in _batches(len(d.y_train), 64, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        model.eval()
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def running_metrics_slow_sgd(run_dir: Path, seed: int) -> Outcome:
    """Plain SGD that learns over the epoch: each epoch's running accuracy lags the end-of-epoch val score."""
    torch.manual_seed(seed)
    d = dataset("wine", seed)
    model = _mlp(13, 32, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(30):
        for idx in _batches(len(d.y_train), 16, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("wine", _acc(model, d.x_val, d.y_val))


@program
def float_loss_test_at_end(run_dir: Path, seed: int) -> Outcome:
    """``run.log(loss=loss.item())`` floats, one scoring of a test split after training."""
    torch.manual_seed(seed)
    d = dataset("breast_cancer", seed)
    model = _mlp(30, 16, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(25):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss.item())
    model.eval()
    with torch.no_grad():
        run.evaluate("test", d.y_val, model(d.x_val))
    run.close()
    return _classify("breast_cancer", _acc(model, d.x_val, d.y_val))


@program
def eval_every_n_steps(run_dir: Path, seed: int) -> Outcome:
    """An iteration-based loop (no epochs): an infinite sampler, val scored every 50 steps."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for step in range(600):
        idx = torch.randint(0, len(d.y_train), (32,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
        loss.backward()
        opt.step()
        run.log(loss=loss)
        if (step + 1) % 50 == 0:
            model.eval()
            with torch.no_grad():
                out = model(d.x_val)
                run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
            model.train()
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def regression_mse(run_dir: Path, seed: int) -> Outcome:
    """Regression (scikit-learn's diabetes data): MSE loss, a val loss logged per epoch, no classes at all."""
    from sklearn.datasets import load_diabetes

    torch.manual_seed(seed)
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    rng = np.random.default_rng(seed)
    p = rng.permutation(len(y))
    xt, yt = torch.tensor(x[p], dtype=torch.float32), torch.tensor(y[p], dtype=torch.float32)
    xtr, ytr, xva, yva = xt[:340], yt[:340], xt[340:], yt[340:]
    model = _mlp(10, 16, 1, depth=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = nn.MSELoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    last = float("nan")
    for _ in range(30):
        for idx in _batches(len(ytr), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx]).squeeze(1), ytr[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            val = float(loss_fn(model(xva).squeeze(1), yva))
        run.log(val_loss=val)
        last = val
    run.close()
    # predicting the mean gives a (standardized) MSE of 1; a linear model reaches about 0.5
    return Outcome("loss_drop", 1.0 / max(last, 1e-9), 1.5)


@program
def autoencoder(run_dir: Path, seed: int) -> Outcome:
    """A digits autoencoder: reconstruction loss only (no labels, no evaluate)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = nn.Sequential(
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 8),
        nn.ReLU(),
        nn.Linear(8, 32),
        nn.ReLU(),
        nn.Linear(32, 64),
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.MSELoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    losses = []
    for _ in range(30):
        for idx in _batches(len(d.y_train), 64, g):
            opt.zero_grad()
            xb = d.x_train[idx]
            loss = loss_fn(model(xb), xb)
            loss.backward()
            opt.step()
            run.log(loss=loss)
            losses.append(float(loss))
    run.close()
    return Outcome("loss_drop", float(np.mean(losses[:5]) / np.mean(losses[-5:])), 2.0)


@program
def sigmoid_head_bce_probabilities(run_dir: Path, seed: int) -> Outcome:
    """A Keras-style binary net: Sigmoid output, ``nn.BCELoss`` on probabilities, probabilities scored."""
    torch.manual_seed(seed)
    d = dataset("moons", seed)
    model = nn.Sequential(
        nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid()
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCELoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(40):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]).squeeze(1), d.y_train[idx].float())
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train).squeeze(1))
            p = model(d.x_val).squeeze(1)
            run.evaluate("val", d.y_val, p, loss=loss_fn(p, d.y_val.float()))
    run.close()
    return _classify("moons", _acc(model, d.x_val, d.y_val))


@program
def gradient_accumulation(run_dir: Path, seed: int) -> Outcome:
    """Four micro-batches of 16 per optimizer step (the loss is logged per micro-batch)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(15):
        opt.zero_grad()
        for i, idx in enumerate(_batches(len(d.y_train), 16, g)):
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx]) / 4
            loss.backward()
            run.log(loss=loss * 4)
            if (i + 1) % 4 == 0:
                opt.step()
                opt.zero_grad()
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def onecycle_warmup(run_dir: Path, seed: int) -> Outcome:
    """``OneCycleLR`` per step (warm-up to 10x, anneal): the loss bumps while the learning rate climbs."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 128, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    epochs, bs = 12, 32
    steps = epochs * math.ceil(len(d.y_train) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(epochs):
        for idx in _batches(len(d.y_train), bs, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            sched.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def warm_restarts(run_dir: Path, seed: int) -> Outcome:
    """``CosineAnnealingWarmRestarts``: the learning rate jumps back up every 5 epochs."""
    torch.manual_seed(seed)
    d = dataset("wine", seed)
    model = _mlp(13, 32, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=5)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(30):
        for idx in _batches(len(d.y_train), 16, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        sched.step()
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("wine", _acc(model, d.x_val, d.y_val))


@program
def label_smoothing(run_dir: Path, seed: int) -> Outcome:
    """Label smoothing 0.2: the loss floor sits far above zero although every sample is right."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(25):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            tr = model(d.x_train)
            run.evaluate("train", d.y_train, tr, loss=loss_fn(tr, d.y_train))
            va = model(d.x_val)
            run.evaluate("val", d.y_val, va, loss=loss_fn(va, d.y_val))
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def frozen_backbone_finetune(run_dir: Path, seed: int) -> Outcome:
    """Transfer learning: a backbone trained on digits 0-4, frozen (requires_grad False), a new head for 0-9."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    backbone = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
    pre = nn.Sequential(backbone, nn.Linear(64, 5))
    m = d.y_train < 5
    popt = torch.optim.Adam(pre.parameters(), lr=2e-3)
    for _ in range(150):
        popt.zero_grad()
        nn.functional.cross_entropy(pre(d.x_train[m]), d.y_train[m]).backward()
        popt.step()
    for p in backbone.parameters():
        p.requires_grad_(False)
    model = nn.Sequential(backbone, nn.Linear(64, 10))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(20):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    # features learned on five classes only: a linear head on them cannot match a model trained on all ten
    return Outcome("val_accuracy", _acc(model, d.x_val, d.y_val), 0.82)


class _TwoHeads(nn.Module):
    """A multi-task net used for one task only: the second head's parameters never get a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(30, 32), nn.ReLU())
        self.head = nn.Linear(32, 2)
        self.aux = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@program
def unused_parameters(run_dir: Path, seed: int) -> Outcome:
    """A module with an unused head (its gradients stay None)."""
    torch.manual_seed(seed)
    d = dataset("breast_cancer", seed)
    model = _TwoHeads()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(25):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("breast_cancer", _acc(model, d.x_val, d.y_val))


@program
def lbfgs_full_batch(run_dir: Path, seed: int) -> Outcome:
    """``LBFGS`` with a closure on the full iris set (several function evaluations per step)."""
    torch.manual_seed(seed)
    d = dataset("iris", seed)
    model = _mlp(4, 16, 3, depth=1, act=nn.Tanh)
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=10)
    loss_fn = nn.CrossEntropyLoss()
    run = _watch(model, opt, run_dir)
    for _ in range(15):

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn(model(d.x_train), d.y_train)
            loss.backward()
            return loss

        loss = opt.step(closure)
        run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("iris", _acc(model, d.x_val, d.y_val), tol=0.07)


class _ResMLP(nn.Module):
    def __init__(self, width: int, blocks: int, k: int) -> None:
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
            for _ in range(blocks)
        )
        self.out = nn.Linear(width, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


@program
def residual_deep_mlp(run_dir: Path, seed: int) -> Outcome:
    """Eight pre-norm residual GELU blocks (deep, but the skips keep the gradient flowing)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _ResMLP(64, 8, 10)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(12):
        for idx in _batches(len(d.y_train), 64, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        model.eval()
        with torch.no_grad():
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
        model.train()
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def unscaled_tabular_adam(run_dir: Path, seed: int) -> Outcome:
    """A typical forum program: raw (unscaled) breast-cancer features, Adam, 3 Dense layers, 50 epochs."""
    from sklearn.datasets import load_breast_cancer

    torch.manual_seed(seed)
    x, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(seed)
    p = rng.permutation(len(y))
    xt, yt = torch.tensor(x[p], dtype=torch.float32), torch.tensor(y[p])
    xtr, ytr, xva, yva = xt[:420], yt[:420], xt[420:], yt[420:]
    model = _mlp(30, 32, 2, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(50):
        for idx in _batches(len(ytr), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", ytr, model(xtr))
            run.evaluate("val", yva, model(xva))
    run.close()
    return Outcome("val_accuracy", _acc(model, xva, yva), 0.88)


@program
def val_and_test_each_epoch(run_dir: Path, seed: int) -> Outcome:
    """Two held-out splits scored every epoch (val and test halves of the held-out set)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    h = len(d.y_val) // 2
    model = _mlp(64, 64, 10)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(15):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val[:h], model(d.x_val[:h]))
            run.evaluate("test", d.y_val[h:], model(d.x_val[h:]))
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def cnn_bn_augment_running(run_dir: Path, seed: int) -> Outcome:
    """A CNN with batch norm and dropout, noise + shift augmentation, running metrics, val per epoch."""
    torch.manual_seed(seed)
    d = dataset("digits_img", seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(32 * 16, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(8):
        model.train()
        for idx in _batches(len(d.y_train), 64, g):
            xb = d.x_train[idx]
            xb = torch.roll(xb, shifts=int(torch.randint(-1, 2, (1,), generator=g)), dims=3)
            xb = xb + 0.05 * torch.randn(xb.shape, generator=g)
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        model.eval()
        with torch.no_grad():
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
    run.close()
    return _classify("digits_img", _acc(model, d.x_val, d.y_val))


@program
def class_weighted_running(run_dir: Path, seed: int) -> Outcome:
    """An 88/12 imbalanced set with a class-weighted loss and running metrics."""
    torch.manual_seed(seed)
    d = dataset("imbalanced", seed)
    counts = torch.bincount(d.y_train, minlength=2).float()
    model = _mlp(8, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts))
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(25):
        for idx in _batches(len(d.y_train), 64, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    # balanced data would allow the reference; class weighting trades accuracy for minority recall
    return _classify("imbalanced", _acc(model, d.x_val, d.y_val), tol=0.12)


@program
def class_weighted_19_to_1(run_dir: Path, seed: int) -> Outcome:
    """A 19:1 training split of two overlapping Gaussian clouds, a class-weighted loss under SGD with momentum,
    a balanced val split: the minority is recalled a little worse than the majority (a trade-off the weights
    chose), which is not harm."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(100 + seed)
    mu = np.zeros(20, dtype=np.float32)
    mu[:4] = 0.9

    def sample(n0: int, n1: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.concatenate([rng.normal(size=(n0, 20)), rng.normal(size=(n1, 20)) + mu]).astype(np.float32)
        y = np.r_[np.zeros(n0), np.ones(n1)].astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)

    x_tr, y_tr = sample(3800, 200)
    x_va, y_va = sample(500, 500)
    mean, std = x_tr.mean(0), x_tr.std(0)
    x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    model = _mlp(20, 64, 2, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 19.0]) / 10)
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(10):
        model.train()
        for idx in _batches(len(y_tr), 128, g):
            opt.zero_grad()
            out = model(x_tr[idx])
            loss = loss_fn(out, y_tr[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out.detach(), targets=y_tr[idx])
        model.eval()
        with torch.no_grad():
            run.evaluate("val", targets=y_va, outputs=model(x_va))
    run.close()
    # what the data allows: a class-balanced logistic regression on the same split
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(class_weight="balanced", max_iter=1000).fit(x_tr.numpy(), y_tr.numpy())
    target = float((ref.predict(x_va.numpy()) == y_va.numpy()).mean()) - 0.05
    return Outcome("val_accuracy", _acc(model, x_va, y_va), target)


@program
def blobs_at_bayes_floor(run_dir: Path, seed: int) -> Outcome:
    """Five heavily overlapping Gaussian blobs: the best possible accuracy is about 60% and one class is
    recalled below 50% by any model. Full-batch RMSprop with GELU/LeakyReLU units, running metrics, 150
    epochs: the run sits at the data's floor, which is a fact about the data, not a training problem."""
    from sklearn.datasets import make_blobs
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    torch.manual_seed(seed)
    x, y = make_blobs(
        n_samples=1500, centers=5, n_features=2, cluster_std=2.5, center_box=(-8, 8), random_state=seed
    )
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    tr, va = idx[:1200], idx[1200:]
    mean, std = x[tr].mean(0), x[tr].std(0)
    x_tr = torch.tensor((x[tr] - mean) / std, dtype=torch.float32)
    x_va = torch.tensor((x[va] - mean) / std, dtype=torch.float32)
    y_tr, y_va = torch.tensor(y[tr]), torch.tensor(y[va])
    model = nn.Sequential(nn.Linear(2, 32), nn.GELU(), nn.Linear(32, 32), nn.LeakyReLU(0.1), nn.Linear(32, 5))
    opt = torch.optim.RMSprop(model.parameters(), lr=3e-3)
    run = _watch(model, opt, run_dir)
    for _ in range(150):
        model.train()
        opt.zero_grad()
        out = model(x_tr)
        loss = nn.functional.cross_entropy(out, y_tr)
        loss.backward()
        opt.step()
        run.log(loss=loss, outputs=out.detach(), targets=y_tr)
        model.eval()
        with torch.no_grad():
            run.evaluate("val", targets=y_va, outputs=model(x_va))
    run.close()
    # what the data allows: the Bayes-optimal family for Gaussian blobs
    qda = QuadraticDiscriminantAnalysis().fit(x[tr], y[tr])
    return Outcome(
        "val_accuracy", _acc(model, x_va, y_va), float((qda.predict(x[va]) == y[va]).mean()) - 0.05
    )


class _TokenTransformer(nn.Module):
    def __init__(self, vocab: int, dim: int, k: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.1, activation="gelu", batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.enc(self.emb(x) + self.pos)).mean(1))


@program
def transformer_warmup_adamw(run_dir: Path, seed: int) -> Outcome:
    """A GELU transformer encoder on tokens with linear warm-up then decay (LambdaLR), AdamW, clipping."""
    torch.manual_seed(seed)
    d = dataset("tokens", seed)
    model = _TokenTransformer(max(d.vocab, 10), 32, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    epochs, bs = 25, 32
    total = epochs * math.ceil(len(d.y_train) / bs)
    warm = total // 10
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / (total - warm))
    )
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(epochs):
        model.train()
        for idx in _batches(len(d.y_train), bs, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        model.eval()
        with torch.no_grad():
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
    run.close()
    return _classify("tokens", _acc(model, d.x_val, d.y_val), tol=0.08)


@program
def gru_val_only_sgd_momentum(run_dir: Path, seed: int) -> Outcome:
    """A GRU on sequences with SGD + momentum and a step schedule, val scored each epoch (no train pass)."""
    torch.manual_seed(seed)
    d = dataset("sequences", seed)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 32, batch_first=True)
            self.head = nn.Linear(32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(30):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        sched.step()
        with torch.no_grad():
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
    run.close()
    return _classify("sequences", _acc(model, d.x_val, d.y_val), tol=0.08)


@program
def long_converged_tabular(run_dir: Path, seed: int) -> Outcome:
    """5,000 steps on blobs with a noise floor, scored every 25 epochs: a long flat tail after convergence."""
    torch.manual_seed(seed)
    d = dataset("blobs", seed)
    model = _mlp(2, 16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for epoch in range(500):
        for idx in _batches(len(d.y_train), 64, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        if epoch % 25 == 24:
            with torch.no_grad():
                run.evaluate("train", d.y_train, model(d.x_train), epoch=epoch)
                run.evaluate("val", d.y_val, model(d.x_val), epoch=epoch)
    run.close()
    return _classify("blobs", _acc(model, d.x_val, d.y_val))


@program
def gan_ring(run_dir: Path, seed: int) -> Outcome:
    """A GAN on a ring of Gaussians, logged by the documented signal contract (loss_d, loss_g, diversity)."""
    import trainmedic as tm

    from .gan import train_gan

    cfg = {"steps": 600, "seed": seed}
    run = tm.watch(run_dir=str(run_dir), quiet=True, config=cfg)
    try:
        out = train_gan(cfg, run)
    finally:
        run.close()
    # a covered ring has a mean pairwise distance near 4 r / pi = 2.5; a collapsed one near 0.1
    return Outcome("diversity", float(out.get("diversity", 0.0)), 2.0)


@program
def batch_size_one_sgd(run_dir: Path, seed: int) -> Outcome:
    """Online learning: batch size 1, plain SGD at a small step (a very noisy per-step loss)."""
    torch.manual_seed(seed)
    d = dataset("iris", seed)
    model = _mlp(4, 8, 3, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(40):
        for idx in _batches(len(d.y_train), 1, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("iris", _acc(model, d.x_val, d.y_val), tol=0.07)


@program
def multilabel_bce(run_dir: Path, seed: int) -> Outcome:
    """Multi-label targets (4 independent binary labels per sample), ``BCEWithLogitsLoss``, a val loss logged
    per epoch; no ``run.evaluate`` (the targets are not classes)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(800, 10)).astype(np.float32)
    y = (x @ rng.normal(size=(10, 4)) + rng.normal(0, 0.5, (800, 4)) > 0).astype(np.float32)
    xt, yt = torch.tensor(x), torch.tensor(y)
    model = _mlp(10, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(20):
        for idx in _batches(600, 32, g):
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.log(val_loss=float(loss_fn(model(xt[600:]), yt[600:])))
    run.close()
    with torch.no_grad():
        acc = float(((model(xt[600:]) > 0).float() == yt[600:]).float().mean())
    return Outcome("val_accuracy", acc, 0.85)  # per-label accuracy; a linear model reaches about 0.9


@program
def accuracy_as_logged_scalars(run_dir: Path, seed: int) -> Outcome:
    """Accuracy computed by hand and logged as scalars (``run.log(acc=..., val_acc=..., val_loss=...)``),
    never through ``run.evaluate``."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(15):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, acc=(out.argmax(1) == d.y_train[idx]).float().mean())
        with torch.no_grad():
            o = model(d.x_val)
            run.log(val_loss=loss_fn(o, d.y_val), val_acc=(o.argmax(1) == d.y_val).float().mean())
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def two_epochs_enough(run_dir: Path, seed: int) -> Outcome:
    """Two epochs are all an easy task needs (breast cancer, Adam 1e-2): short, and done."""
    torch.manual_seed(seed)
    d = dataset("breast_cancer", seed)
    model = _mlp(30, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(2):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("breast_cancer", _acc(model, d.x_val, d.y_val))


@program
def early_stopping_by_hand(run_dir: Path, seed: int) -> Outcome:
    """Early stopping written by hand: patience 10 on the val loss, ``break`` out of a 200-epoch loop, the
    best state_dict loaded back before ``run.close()`` (trainmedic is not told)."""
    torch.manual_seed(seed)
    d = dataset("wine", seed)
    model = _mlp(13, 64, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    best, bad = float("inf"), 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(200):
        model.train()
        for idx in _batches(len(d.y_train), 16, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        model.eval()
        with torch.no_grad():
            o = model(d.x_val)
            val = float(loss_fn(o, d.y_val))
            run.evaluate("val", d.y_val, o, loss=val)
            run.evaluate("train", d.y_train, model(d.x_train))
        if val < best - 1e-4:
            best, bad = val, 0
            state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= 10:
                break
    model.load_state_dict(state)
    run.close()
    return _classify("wine", _acc(model, d.x_val, d.y_val))


@program
def eval_mode_left_on(run_dir: Path, seed: int) -> Outcome:
    """``model.eval()`` before scoring and never ``model.train()`` again: dropout is off after the first
    epoch (harmless here: the model still reaches what the data allows)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 128, 10, p=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    model.train()
    for _ in range(15):
        for idx in _batches(len(d.y_train), 64, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        model.eval()
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def full_batch_sgd_iris(run_dir: Path, seed: int) -> Outcome:
    """Full-batch SGD with momentum for 300 epochs on iris, scored every 10 epochs."""
    torch.manual_seed(seed)
    d = dataset("iris", seed)
    model = _mlp(4, 16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    run = _watch(model, opt, run_dir)
    for epoch in range(300):
        opt.zero_grad()
        loss = loss_fn(model(d.x_train), d.y_train)
        loss.backward()
        opt.step()
        run.log(loss=loss)
        if epoch % 10 == 9:
            with torch.no_grad():
                run.evaluate("train", d.y_train, model(d.x_train))
                run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("iris", _acc(model, d.x_val, d.y_val), tol=0.07)


@program
def softmax_probabilities_scored(run_dir: Path, seed: int) -> Outcome:
    """Softmax probabilities (not logits) passed to ``run.evaluate``, RMSprop with batches of 8."""
    torch.manual_seed(seed)
    d = dataset("wine", seed)
    model = _mlp(13, 32, 3)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(40):
        for idx in _batches(len(d.y_train), 8, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train).softmax(1))
            run.evaluate("val", d.y_val, model(d.x_val).softmax(1))
    run.close()
    return _classify("wine", _acc(model, d.x_val, d.y_val))


@program
def bf16_autocast_cosine_clipped(run_dir: Path, seed: int) -> Outcome:
    """bfloat16 autocast on the CPU, AdamW with a per-step cosine schedule, ``clip_grad_norm_(1.0)`` every step."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 128, 10, depth=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 12 * 22)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(12):
        model.train()
        for idx in _batches(len(d.y_train), 64, g):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(d.x_train[idx])
                loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            run.log(loss=loss, outputs=out.float(), targets=d.y_train[idx])
        model.eval()
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _classify("digits", _acc(model, d.x_val, d.y_val))


@program
def thirty_sample_val_split(run_dir: Path, seed: int) -> Outcome:
    """Overlapping blobs (a noise floor near 80%) scored on a val split of only 30 samples."""
    torch.manual_seed(seed)
    d = dataset("blobs", seed)
    model = _mlp(2, 16, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    xv, yv = d.x_val[:30], d.y_val[:30]
    for _ in range(30):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        with torch.no_grad():
            o = model(xv)
            run.evaluate("val", yv, o, loss=loss_fn(o, yv))
    run.close()
    return _classify("blobs", _acc(model, d.x_val, d.y_val))


def run_program(name: str, run_dir: str | Path, seed: int = 0) -> tuple[Outcome, Any]:
    """Run one program into ``run_dir`` and diagnose it: (oracle outcome, diagnosis)."""
    import trainmedic as tm

    torch.set_num_threads(1)
    out = PROGRAMS[name](Path(run_dir), seed)
    return out, tm.diagnose(str(run_dir))
