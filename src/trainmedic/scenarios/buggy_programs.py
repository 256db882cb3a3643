"""Buggy training programs: the mistakes real training code makes, each in a whole loop (project issue 11).

The healthy programs (``programs.py``) measure false alarms; these measure recall on bugs written the way users
write them, not the way the fault catalogue injects them: a forgotten ``zero_grad`` or ``step``, labels shuffled
apart from their inputs, a softmax or a sigmoid before ``CrossEntropyLoss``, a scaler fitted on train and not applied to val,
batch-norm statistics that never update, raw pixel values into sigmoid units, a loss written by hand that takes
``log(0)``, ``NLLLoss`` on raw logits, a per-epoch scheduler stepped per batch, and the hyperparameter mistakes of question-and-answer threads (learning rates far off, momentum 0.99
at a large step, dropout 0.9, weight decay 1.0, two epochs of plain SGD).

``BUGGY`` maps a name to ``(program, expected)``: the program ``(run_dir, seed, fixed=False) -> Harm`` and the set of codes of
which at least one must be reported as a warning or error for the bug to count as found: a diagnosis
(the symptom or its cause), never a bare measurement such as ``low_accuracy`` or ``low_recall``. Each program's oracle
checks first that the bug did harm the run (val accuracy well below what the data allows, or a non-finite loss),
so a mistake that happens to train fine is reported as a wrong program, not as a miss.

Each program also runs as its *published fix* (``fixed=True``: the answer's change and nothing else, or
the change plus the learning rate the answer also set); the fixed twin must train to what the data allows
and get no warning or error — healthy programs as close to the buggy ones as a real fix is.

Loops whose bug is in the loop itself are written out; the others (a bug in the model, the data or a
hyperparameter) share :func:`_train`, the plain loop a user writes first.
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

from .programs import _acc, _batches, _mlp, _watch
from .zoo import ZooData, dataset, reference_accuracy


@dataclass
class Harm:
    """What the buggy program reached against what the data allows (the oracle: the bug must cost)."""

    value: float  # final val accuracy (NaN when the run broke)
    reference: float  # what a healthy model reaches on the same split
    margin: float = 0.05

    @property
    def harmed(self) -> bool:
        return not math.isfinite(self.value) or self.value <= self.reference - self.margin

    def __str__(self) -> str:
        return f"val_accuracy {self.value:.3f} (reference {self.reference:.3f}, harm needs <= -{self.margin})"


Program = Callable[..., Harm]
BUGGY: dict[str, tuple[Program, frozenset[str]]] = {}

NOT_LEARNING = frozenset({"underfitting", "inefficient_learning", "training_failed"})
BROKEN = frozenset({"exploding_gradient", "nonfinite", "training_failed", "inefficient_learning"})


def bug(*expected: str | frozenset[str]) -> Callable[[Program], Program]:
    codes: set[str] = set()
    for e in expected:
        codes |= {e} if isinstance(e, str) else set(e)

    def register(fn: Program) -> Program:
        BUGGY[fn.__name__] = (fn, frozenset(codes))
        return fn

    return register


def _harm(name: str, model: nn.Module, d: ZooData, seed: int, margin: float = 0.05) -> Harm:
    acc = _acc(model, d.x_val, d.y_val)
    if any(not bool(torch.isfinite(p).all()) for p in model.parameters()):
        acc = float("nan")
    return Harm(acc, reference_accuracy(name, seed), margin)


def _train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    d: ZooData,
    run_dir: Path,
    seed: int,
    epochs: int,
    batch: int = 32,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    running: bool = False,
) -> None:
    """The plain loop: step, ``run.log(loss)``, then train and val scored each epoch (or running metrics)."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(epochs):
        model.train()
        for idx in _batches(len(d.y_train), batch, g):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            if running:
                run.log(loss=loss, outputs=out, targets=d.y_train[idx])
            else:
                run.log(loss=loss)
        model.eval()
        with torch.no_grad():
            if not running:
                run.evaluate("train", d.y_train, model(d.x_train))
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out)
    run.close()


# ------------------------------------------------------------------------------------------- loop bugs


@bug(BROKEN, NOT_LEARNING)
def forgot_zero_grad(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``opt.zero_grad()`` left out: gradients add up over the whole run, so the step keeps growing."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(10):
        for idx in _batches(len(d.y_train), 32, g):
            if fixed:
                opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _harm("digits", model, d, seed)


@bug(NOT_LEARNING)
def forgot_optimizer_step(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``opt.step()`` lost in a refactor: the loss is computed and back-propagated, nothing is updated."""
    torch.manual_seed(seed)
    d = dataset("wine", seed)
    model = _mlp(13, 32, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(30):
        for idx in _batches(len(d.y_train), 16, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            if fixed:
                opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _harm("wine", model, d, seed)


@bug(NOT_LEARNING, "label_noise")
def labels_shuffled_apart(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """The inputs are shuffled once before training and the labels are not: every training label is wrong."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    perm = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(seed + 1))
    x_train, y_train = d.x_train[perm], (d.y_train[perm] if fixed else d.y_train)  # the bug: y_train[perm]
    model = _mlp(64, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(15):
        for idx in _batches(len(y_train), 32, g):
            opt.zero_grad()
            out = model(x_train[idx])
            loss = loss_fn(out, y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=y_train[idx])
        model.eval()
        with torch.no_grad():
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
        model.train()
    run.close()
    return _harm("digits", model, d, seed)


@bug(NOT_LEARNING, "vanishing_gradient", "gradient_masking")
def detached_outputs(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``out = model(x).detach().requires_grad_()`` (to silence an error): the loss never reaches the model."""
    torch.manual_seed(seed)
    d = dataset("breast_cancer", seed)
    model = _mlp(30, 16, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(20):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            out = model(d.x_train[idx]) if fixed else model(d.x_train[idx]).detach().requires_grad_()
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _harm("breast_cancer", model, d, seed)


@bug(BROKEN, NOT_LEARNING)
def handwritten_log_softmax(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """A loss written by hand, ``-log(softmax(out))[y]``, at a large learning rate: a probability underflows
    to 0 and the loss turns to inf, then NaN."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 128, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05 if fixed else 1.0, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(10):
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            if fixed:  # log_softmax never takes log(0)
                logp = torch.log_softmax(model(d.x_train[idx]), dim=1)
                loss = -logp[torch.arange(len(idx)), d.y_train[idx]].mean()
            else:
                p = torch.softmax(model(d.x_train[idx]), dim=1)
                loss = -torch.log(p[torch.arange(len(idx)), d.y_train[idx]]).mean()
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _harm("digits", model, d, seed)


@bug("train_test_mismatch")
def val_not_standardized(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """The scaler is fitted and applied to the training split, and the validation split is scored raw."""
    torch.manual_seed(seed)
    raw = dataset("wine", seed, normalize=False)
    mu, sd = raw.x_train.mean(0), raw.x_train.std(0) + 1e-6
    x_train, x_val = (raw.x_train - mu) / sd, ((raw.x_val - mu) / sd if fixed else raw.x_val)
    model = _mlp(13, 32, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(30):
        for idx in _batches(len(raw.y_train), 16, g):
            opt.zero_grad()
            loss = loss_fn(model(x_train[idx]), raw.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", raw.y_train, model(x_train))
            run.evaluate("val", raw.y_val, model(x_val))
    run.close()
    acc = _acc(model, x_val, raw.y_val)
    return Harm(acc, reference_accuracy("wine", seed))


@bug("train_test_mismatch")
def batchnorm_stats_frozen(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``BatchNorm1d(momentum=0.0)`` (meant as "no momentum"): the running statistics never leave 0 and 1, so
    eval mode normalizes with the wrong mean and scale."""
    torch.manual_seed(seed)
    d = dataset("breast_cancer", seed, normalize=False)
    model = nn.Sequential(
        nn.Linear(30, 32),
        nn.BatchNorm1d(32, momentum=0.1 if fixed else 0.0),
        nn.ReLU(),
        nn.Linear(32, 2),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, d, run_dir, seed, epochs=20, running=True)
    return _harm("breast_cancer", model, d, seed)


@bug("train_test_mismatch")
def augmentation_only_at_train(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Every training image is inverted (``1 - x``, a copied "augmentation" that does not preserve the class's
    look), the val images are not: the model learns inverted digits and meets plain ones."""
    torch.manual_seed(seed)
    d = dataset("digits_img", seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(12 if fixed else 8):
        model.train()
        for idx in _batches(len(d.y_train), 64, g):
            xb = d.x_train[idx] if fixed else 1.0 - d.x_train[idx]
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
    return _harm("digits_img", model, d, seed)


@bug(NOT_LEARNING)
def nll_loss_on_logits(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``nn.NLLLoss`` on raw logits (it expects log-probabilities): the loss is ``-logit[y]``, unbounded
    below, and the model learns to inflate logits instead of classifying (the fix: ``log_softmax`` first)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    nll = nn.NLLLoss()

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nll(torch.log_softmax(out, dim=1) if fixed else out, y)

    _train(model, opt, d, run_dir, seed, epochs=10, loss_fn=loss_fn)
    return _harm("digits", model, d, seed)


@bug(NOT_LEARNING)
def scheduler_stepped_per_batch(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``StepLR(step_size=1, gamma=0.5)`` meant per epoch, stepped after every batch: the learning rate is
    0.5^20 of its start after 20 batches and the model freezes almost at once (the fix: step per epoch)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9 if fixed else 0.5)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    run = _watch(model, opt, run_dir)
    for _ in range(10):
        model.train()
        for idx in _batches(len(d.y_train), 32, g):
            opt.zero_grad()
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            loss.backward()
            opt.step()
            if not fixed:
                sched.step()
            run.log(loss=loss)
        if fixed:
            sched.step()
        model.eval()
        with torch.no_grad():
            run.evaluate("train", d.y_train, model(d.x_train))
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    return _harm("digits", model, d, seed)


# ------------------------------------------------------------------------------------- model bugs


@bug(NOT_LEARNING, "gradient_masking")
def softmax_before_cross_entropy(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``nn.Softmax`` as the last layer, then ``CrossEntropyLoss`` (which applies log-softmax again), under
    plain SGD: the gradient through the double softmax is tiny and learning crawls."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10) if fixed else nn.Sequential(_mlp(64, 64, 10), nn.Softmax(dim=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1 if fixed else 0.01, momentum=0.9 if fixed else 0.0)
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug("gradient_masking", NOT_LEARNING)
def sigmoid_before_cross_entropy(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``nn.Sigmoid`` after the last layer of a 10-class net, then ``CrossEntropyLoss``: the logits live in
    (0, 1), the probabilities stay near uniform and the loss cannot fall (the fix: drop the Sigmoid)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10) if fixed else nn.Sequential(_mlp(64, 64, 10), nn.Sigmoid())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9 if fixed else 0.0)
    _train(model, opt, d, run_dir, seed, epochs=10, running=True)
    return _harm("digits", model, d, seed)


@bug("vanishing_gradient", "gradient_masking", NOT_LEARNING)
def deep_sigmoid_sgd(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Eight sigmoid layers under plain SGD: the first layers receive almost no gradient (the fix: three ReLU
    layers under Adam)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10, depth=3, act=nn.ReLU) if fixed else _mlp(64, 32, 10, depth=8, act=nn.Sigmoid)
    opt = (
        torch.optim.Adam(model.parameters(), lr=1e-3)
        if fixed
        else torch.optim.SGD(model.parameters(), lr=0.05)
    )
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug("bad_initialization", NOT_LEARNING)
def zero_initialized(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Every weight set to zero "for reproducibility": the hidden units stay identical and the net cannot
    learn more than one feature."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    if not fixed:
        for p in model.parameters():
            nn.init.zeros_(p)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug("gradient_masking", "bad_initialization", NOT_LEARNING)
def dead_relu_negative_bias(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Hidden biases initialised to -3 ("sparse activations"): almost every ReLU is off from the start."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10, depth=3)
    for m in list(model)[:-1]:
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.bias, 0.0 if fixed else -3.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9 if fixed else 0.0)
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug("gradient_masking", "bad_initialization", "vanishing_gradient", NOT_LEARNING)
def tanh_large_init(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """A deep tanh net initialised with N(0, 1) weights (no fan-in scaling): the units saturate at ±1."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 128, 10, depth=5, act=nn.Tanh)
    for m in model:
        if isinstance(m, nn.Linear):
            if fixed:
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.normal_(m.weight, 0.0, 1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug("vanishing_gradient", "gradient_masking", NOT_LEARNING)
def deep_cnn_sigmoid_no_norm(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Six sigmoid conv layers with no normalization and plain SGD: the net never gets off the ground."""
    torch.manual_seed(seed)
    d = dataset("digits_img", seed)
    layers: list[nn.Module] = []
    c = 1
    for _ in range(6):
        if fixed:
            layers += [nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
        else:
            layers += [nn.Conv2d(c, 8, 3, padding=1), nn.Sigmoid()]
        c = 8
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * 64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9 if fixed else 0.0)
    _train(model, opt, d, run_dir, seed, epochs=5, batch=64)
    return _harm("digits_img", model, d, seed)


@bug("underfitting", "inefficient_learning")
def dropout_ninety(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Dropout 0.9 on a narrow net (``p`` read as the keep probability): the model cannot fit the data."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 32, 10, depth=2, p=0.1 if fixed else 0.9)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug(BROKEN, NOT_LEARNING)
def transformer_lr_too_high(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """A Transformer encoder trained with Adam at lr 0.05 (the MLP's learning rate, no warm-up)."""
    from .programs import _TokenTransformer

    torch.manual_seed(seed)
    d = dataset("tokens", seed)
    model = _TokenTransformer(d.vocab, 32, d.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3 if fixed else 0.05)
    _train(model, opt, d, run_dir, seed, epochs=8, batch=32, running=True)
    return _harm("tokens", model, d, seed)


# ------------------------------------------------------------------------------ hyperparameter bugs


@bug(BROKEN, NOT_LEARNING)
def sgd_lr_far_too_high(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Plain SGD at lr 5: the loss diverges within the first epoch."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05 if fixed else 5.0)
    _train(model, opt, d, run_dir, seed, epochs=8)
    return _harm("digits", model, d, seed)


@bug(BROKEN, NOT_LEARNING)
def loss_only_adam_lr_half(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Adam at lr 0.5 in a loop that logs only the loss (no evaluation at all): after one spike every
    ReLU is dead and the loss sits at ln 10 for the rest of the run (the fix: lr 1e-3)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3 if fixed else 0.5)
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
    run.close()
    return _harm("digits", model, d, seed)


@bug(BROKEN, NOT_LEARNING)
def momentum_099_large_step(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """SGD at lr 0.5 with momentum 0.99: an effective step of 50."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05 if fixed else 0.5, momentum=0.9 if fixed else 0.99)
    _train(model, opt, d, run_dir, seed, epochs=8, running=True)
    return _harm("digits", model, d, seed)


@bug(NOT_LEARNING)
def adam_lr_1e6(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Adam at lr 1e-6 (a typo for 1e-3): after 10 epochs the model has barely moved."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3 if fixed else 1e-6)
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug("underfitting", "inefficient_learning")
def two_epochs_plain_sgd(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Two epochs of plain SGD at lr 0.01 (copied from a run on a dataset 100x larger): stopped while the
    validation accuracy was still climbing."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9 if fixed else 0.0)
    _train(model, opt, d, run_dir, seed, epochs=25 if fixed else 2, running=True)
    return _harm("digits", model, d, seed)


@bug("underfitting", "inefficient_learning")
def weight_decay_one(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``weight_decay=1.0`` (meant as 1e-4): the weights are pulled to zero faster than they learn."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4 if fixed else 1.0)
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug("underfitting", "inefficient_learning")
def weight_decay_point_three(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """``weight_decay=0.3`` (meant as 3e-4) under SGD with momentum: the model learns a little, then the
    penalty holds it on a plateau far below what the data allows, with train and val alike."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 128, 10, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4 if fixed else 0.3)
    _train(model, opt, d, run_dir, seed, epochs=15)
    return _harm("digits", model, d, seed)


@bug("underfitting", "inefficient_learning")
def two_epochs_sgd_scored(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Two epochs of plain SGD at lr 0.02, each scored on a clean pass over train and val: the validation
    accuracy jumps between the two evaluations and the loss is still falling steeply when training stops."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 64, 10, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    _train(model, opt, d, run_dir, seed, epochs=40 if fixed else 2)
    return _harm("digits", model, d, seed)


@bug("bad_initialization", "underfitting", "gradient_masking")
def huge_init_normal_three(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Every weight drawn from N(0, 3^2) (a copied init for a different scale): the loss starts in the
    thousands; after a first epoch that looks fine the ReLU layers die and the model falls back to a few
    classes (the best epoch is good, the final model is not)."""
    torch.manual_seed(seed)
    d = dataset("digits", seed)
    model = _mlp(64, 128, 10, depth=2)
    if not fixed:
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 3.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    _train(model, opt, d, run_dir, seed, epochs=15)
    return _harm("digits", model, d, seed)


@bug("gradient_masking", "inefficient_learning", "underfitting", "exploding_gradient")
def raw_pixels_sigmoid(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """Pixel values 0–255 fed straight into a sigmoid net (no scaling): the first layer saturates."""
    torch.manual_seed(seed)
    raw = dataset("digits", seed, normalize=False)
    # the fix: standardize with the training split's mean and spread
    d = (
        dataset("digits", seed)
        if fixed
        else ZooData(raw.x_train * 16.0, raw.y_train, raw.x_val * 16.0, raw.y_val, raw.num_classes, raw.kind)
    )
    model = _mlp(64, 64, 10, depth=2, act=nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _train(model, opt, d, run_dir, seed, epochs=10)
    return _harm("digits", model, d, seed)


@bug(BROKEN, NOT_LEARNING)
def lstm_sgd_no_clipping(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """An LSTM under SGD at lr 5 without gradient clipping: the recurrent gradients blow up."""
    from .zoo import _Seq

    torch.manual_seed(seed)
    d = dataset("sequences", seed)
    model = _Seq("lstm", 3, 32, 2)
    opt = (
        torch.optim.Adam(model.parameters(), lr=3e-3)
        if fixed
        else torch.optim.SGD(model.parameters(), lr=5.0)
    )
    _train(model, opt, d, run_dir, seed, epochs=8, running=True)
    return _harm("sequences", model, d, seed)


# ---------------------------------------------------------------------------------------- data bugs


@bug("overfitting", "insufficient_data")
def tiny_train_split(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """A split of 40 training samples for 10 classes (``train_size=0.03``), a wide net, 150 epochs."""
    torch.manual_seed(seed)
    d = dataset("digits", seed) if fixed else dataset("digits", seed, train_n=40)
    model = _mlp(64, 256, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train(model, opt, d, run_dir, seed, epochs=10 if fixed else 150, batch=32 if fixed else 16)
    return _harm("digits", model, d, seed, margin=0.1)


@bug("overfitting", "label_noise", "low_data_quality")
def noisy_labels_long_training(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """40% of the training labels wrong (a broken annotation join), a wide net trained until it memorises."""
    torch.manual_seed(seed)
    d0 = dataset("digits", seed)
    rng = np.random.default_rng(seed + 7)
    y = d0.y_train.numpy().copy()
    flip = rng.random(len(y)) < (0.0 if fixed else 0.4)
    y[flip] = rng.integers(0, 10, int(flip.sum()))
    d = ZooData(d0.x_train, torch.tensor(y), d0.x_val, d0.y_val, 10, d0.kind)
    model = _mlp(64, 256, 10)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    _train(model, opt, d, run_dir, seed, epochs=12 if fixed else 80, batch=32)
    return _harm("digits", model, d, seed)


@bug("data_imbalance")
def imbalanced_no_weighting(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """A 97/3 training split of an overlapping two-class problem, plain cross-entropy, balanced val split:
    the minority class is never predicted."""
    from sklearn.datasets import make_classification

    torch.manual_seed(seed)
    x, y = make_classification(
        2400, n_features=8, n_informative=3, weights=[0.5, 0.5], class_sep=0.6, random_state=seed
    )
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    rng = np.random.default_rng(seed)
    idx0, idx1 = rng.permutation(np.flatnonzero(y == 0)), rng.permutation(np.flatnonzero(y == 1))
    train = np.concatenate([idx0[:900], idx1[:28]])
    val = np.concatenate([idx0[900:1100], idx1[600:800]])
    d = ZooData(
        torch.tensor(x[train]),
        torch.tensor(y[train]),
        torch.tensor(x[val]),
        torch.tensor(y[val]),
        2,
        "tabular",
    )
    model = _mlp(8, 16, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # the fix: class weights inverse to the training counts
    w = torch.tensor([1.0, 900 / 28]) if fixed else None
    _train(model, opt, d, run_dir, seed, epochs=10, loss_fn=nn.CrossEntropyLoss(weight=w))
    acc = _acc(model, d.x_val, d.y_val)
    # what the data allows: the same model on a balanced training split of the same pool
    from sklearn.linear_model import LogisticRegression

    bal = np.concatenate([idx0[:450], idx1[:450]])
    ref = float((LogisticRegression().fit(x[bal], y[bal]).predict(x[val]) == y[val]).mean())
    return Harm(acc, ref)


@bug("train_test_mismatch")
def val_from_other_distribution(run_dir: Path, seed: int, fixed: bool = False) -> Harm:
    """The val split comes from another sensor (every feature shifted by 1.5 standard deviations)."""
    torch.manual_seed(seed)
    d0 = dataset("breast_cancer", seed)
    d = ZooData(d0.x_train, d0.y_train, d0.x_val + (0.0 if fixed else 1.5), d0.y_val, 2, d0.kind)
    model = _mlp(30, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train(model, opt, d, run_dir, seed, epochs=20)
    return _harm("breast_cancer", model, d, seed)


# Fixed twins that keep a real harm, so their findings are right and they are not counted as healthy:
# class weights on 28 minority samples still recall the minority at ~60% against ~88% for the majority.
FIX_LEAVES_HARM = frozenset({"imbalanced_no_weighting"})


def run_buggy(name: str, run_dir: str | Path, seed: int = 0, fixed: bool = False) -> tuple[Harm, Any, bool]:
    """Run one buggy program (or, ``fixed=True``, its published fix) into ``run_dir`` and diagnose it:
    (oracle, diagnosis, found)."""
    import trainmedic as tm

    torch.set_num_threads(1)
    fn, expected = BUGGY[name]
    harm = fn(Path(run_dir), seed, fixed=fixed)
    diagnosis = tm.diagnose(str(run_dir))
    found = any(f.code in expected and f.severity in ("warning", "error") for f in diagnosis.findings)
    return harm, diagnosis, found
