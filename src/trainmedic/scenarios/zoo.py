"""The zoo: a generated grid of small, varied training programs, healthy and faulty (project issue 11).

The catalogue's scenarios all go through one training loop; real programs do not. Every zoo case is trained
by its own plain-PyTorch loop written the way users write them (DataLoader or manual index batching; eval on
train+val, on val only, or only at the end; CrossEntropy, single-unit BCEWithLogits or MSE on one-hot; many
optimizers, initializers, schedulers), so the false-alarm rate on healthy programs and the recall on faulty
ones can be measured on something closer to the field. A healthy case carries an oracle (finite losses,
gradients flowing, validation accuracy near what its data allows per a scikit-learn reference): a healthy
case that fails it is a wrong config, not a finding.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .catalogue import NO_LEARNING, POOR_CLASSES

# ------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class ZooData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    kind: str  # "tabular" | "image" | "sequence" | "tokens"
    vocab: int = 0


def _split(
    x: np.ndarray, y: np.ndarray, n_val: int, seed: int, normalize: bool = True
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    va, tr = idx[:n_val], idx[n_val:]
    xtr, xva = x[tr].astype(np.float32), x[va].astype(np.float32)
    if normalize and x.ndim == 2:
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    return xtr, y[tr], xva, y[va]


def _label_noise(y: np.ndarray, rate: float, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 99)
    y = y.copy()
    flip = rng.random(len(y)) < rate
    y[flip] = rng.integers(0, k, int(flip.sum()))
    return y


@functools.lru_cache(maxsize=64)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray, int, str, int]:
    """(x, y, classes, kind, n_val) for a dataset name; all bundled or synthetic, no downloads."""
    from sklearn import datasets as skd

    if name == "circles":
        x, y = skd.make_circles(600, noise=0.15, factor=0.5, random_state=0)
        return x, y, 2, "tabular", 200
    if name == "moons":
        x, y = skd.make_moons(600, noise=0.3, random_state=0)
        return x, y, 2, "tabular", 200
    if name == "blobs":  # overlapping blobs: a noise floor well below 100%
        x, y = skd.make_blobs(900, centers=[[0, 0], [2.5, 0], [1.2, 2.2]], cluster_std=1.1, random_state=0)
        return x, y, 3, "tabular", 300
    if name == "blobs2":
        x, y = skd.make_blobs(500, centers=[[0, 0], [2.5, 1.0]], cluster_std=1.0, random_state=1)
        return x, y, 2, "tabular", 150
    if name == "digits_noisy":
        d = skd.load_digits()
        rng = np.random.default_rng(0)
        x = d.data + rng.normal(0, 2.0, d.data.shape)
        return x, _label_noise(d.target, 0.1, 10, 0), 10, "tabular", 300
    if name == "digits":
        d = skd.load_digits()
        return d.data, d.target, 10, "tabular", 300
    if name == "digits_img":
        d = skd.load_digits()
        return d.images[:, None] / 16.0, d.target, 10, "image", 300
    if name == "breast_cancer":
        d = skd.load_breast_cancer()
        return d.data, d.target, 2, "tabular", 150
    if name == "wine":
        d = skd.load_wine()
        return d.data, d.target, 3, "tabular", 58
    if name == "iris":
        d = skd.load_iris()
        return d.data, d.target, 3, "tabular", 50
    if name == "imbalanced":  # 88/12, with overlap: a model that ignores the minority loses its recall
        x, y = skd.make_classification(
            1200,
            n_features=8,
            n_informative=4,
            weights=[0.88, 0.12],
            class_sep=0.8,
            flip_y=0.0,
            random_state=3,
        )
        return x, y, 2, "tabular", 300
    if name == "sequences":  # label = sign of the sum of channel 0 (with noise channels)
        rng = np.random.default_rng(5)
        x = rng.normal(0, 1, (800, 12, 3))
        y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
        return x, y, 2, "sequence", 200
    if name == "tokens":  # label = which of tokens 1,2,3 appears most often
        rng = np.random.default_rng(6)
        x = rng.integers(0, 10, (900, 16))
        counts = np.stack([(x == t).sum(1) for t in (1, 2, 3)], 1)
        keep = np.sort(counts, 1)[:, -1] > np.sort(counts, 1)[:, -2]
        x, y = x[keep][:800], counts[keep].argmax(1)[:800]
        return x, y, 3, "tokens", 200
    raise KeyError(f"unknown zoo dataset {name!r}")


@functools.lru_cache(maxsize=64)
def dataset(name: str, seed: int = 0, normalize: bool = True, train_n: int | None = None) -> ZooData:
    """One split of a zoo dataset (cached: many cases share one)."""
    x, y, k, kind, n_val = _raw(name)
    xtr, ytr, xva, yva = _split(np.asarray(x), np.asarray(y), n_val, seed, normalize and kind != "tokens")
    if train_n is not None:
        xtr, ytr = xtr[:train_n], ytr[:train_n]
    if kind == "tokens":
        return ZooData(
            torch.tensor(xtr, dtype=torch.long),
            torch.tensor(ytr, dtype=torch.long),
            torch.tensor(xva, dtype=torch.long),
            torch.tensor(yva, dtype=torch.long),
            k,
            kind,
            vocab=10,
        )
    return ZooData(
        torch.tensor(xtr, dtype=torch.float32),
        torch.tensor(ytr, dtype=torch.long),
        torch.tensor(xva, dtype=torch.float32),
        torch.tensor(yva, dtype=torch.long),
        k,
        kind,
    )


def _features(name: str, x: np.ndarray) -> np.ndarray:
    if name == "tokens":  # bag of tokens
        return np.stack([(x == t).sum(1) for t in range(10)], 1).astype(np.float64)
    return x.reshape(len(x), -1)


@functools.lru_cache(maxsize=64)
def reference_accuracy(name: str, seed: int = 0) -> float:
    """What the data allows: the best of a few scikit-learn models on the same split (cached)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    d = dataset(name, seed)
    xtr, xva = _features(name, d.x_train.numpy()), _features(name, d.x_val.numpy())
    ytr, yva = d.y_train.numpy(), d.y_val.numpy()
    best = 0.0
    for m in (LogisticRegression(max_iter=2000), SVC(C=1.0)):
        m.fit(xtr, ytr)
        best = max(best, float((m.predict(xva) == yva).mean()))
    return best


# ------------------------------------------------------------------------------------------------ models


class _Seq(nn.Module):
    def __init__(self, cell: str, in_dim: int, width: int, k: int) -> None:
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(in_dim, width, batch_first=True)
        self.head = nn.Linear(width, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        return self.head(h[:, -1])


class _Tok(nn.Module):
    def __init__(self, vocab: int, width: int, k: int, dropout: float) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=dropout, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(width, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(x)).mean(1))


def _act(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU}[name]()


def _init(model: nn.Module, how: str, bias: float | None) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight
            if how == "keras_uniform":
                nn.init.uniform_(w, -0.05, 0.05)
            elif how == "keras_normal":
                nn.init.normal_(w, 0.0, 0.05)
            elif how == "glorot":
                nn.init.xavier_uniform_(w)
            elif how == "normal1":
                nn.init.normal_(w, 0.0, 1.0)
            elif how == "tiny":
                nn.init.normal_(w, 0.0, 1e-3)
            elif how == "zeros":
                nn.init.zeros_(w)
            elif how == "small":
                nn.init.normal_(w, 0.0, 0.1 / math.sqrt(w.shape[1]))
            if m.bias is not None:
                if how in ("keras_uniform", "keras_normal", "glorot", "zeros", "tiny"):
                    nn.init.zeros_(m.bias)
                if bias is not None:
                    nn.init.constant_(m.bias, bias)


def build_model(cfg: Mapping[str, Any], d: ZooData) -> nn.Module:
    """The model a case describes: MLP (any width/depth/activation), CNN, LSTM/GRU or Transformer."""
    arch = cfg.get("arch", "mlp")
    k = d.num_classes
    out = 1 if cfg.get("loss") == "bce" else k
    dropout = float(cfg.get("dropout", 0.0))
    model: nn.Module
    if arch == "mlp":
        dims = [d.x_train.shape[1], *[int(cfg.get("width", 32))] * int(cfg.get("depth", 1))]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers.append(nn.Linear(a, b))
            if cfg.get("bn"):
                layers.append(nn.BatchNorm1d(b))
            layers.append(_act(str(cfg.get("act", "relu"))))
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[-1], out))
        model = nn.Sequential(*layers)
    elif arch == "cnn":
        w, depth = int(cfg.get("width", 8)), int(cfg.get("depth", 2))
        layers, c = [], 1
        for _ in range(depth):
            layers += [nn.Conv2d(c, w, 3, padding=1)]
            if cfg.get("bn"):
                layers.append(nn.BatchNorm2d(w))
            layers.append(_act(str(cfg.get("act", "relu"))))
            c = w
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(16 * w, out))
        model = nn.Sequential(*layers)
    elif arch in ("lstm", "gru"):
        model = _Seq(arch, d.x_train.shape[2], int(cfg.get("width", 16)), out)
    elif arch == "transformer":
        model = _Tok(d.vocab, int(cfg.get("width", 16)), out, dropout)
    else:
        raise KeyError(f"unknown arch {arch!r}")
    _init(model, str(cfg.get("init", "default")), cfg.get("bias"))
    if cfg.get("freeze_bn_stats"):  # running statistics never updated: eval normalizes with the init (0, 1)
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.momentum = 0.0
    return model


def _optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    name, lr, wd = str(cfg.get("opt", "adam")), float(cfg.get("lr", 1e-2)), float(cfg.get("wd", 0.0))
    p = model.parameters()
    if name == "adam":
        return torch.optim.Adam(p, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(p, lr=lr, weight_decay=wd or 1e-2)
    if name == "adagrad":
        return torch.optim.Adagrad(p, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(p, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(p, lr=lr, weight_decay=wd)
    if name == "sgdm":
        return torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd, nesterov=bool(cfg.get("nesterov")))
    raise KeyError(f"unknown optimizer {name!r}")


# ------------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class ZooCase:
    name: str
    kind: str  # "healthy" | "faulty"
    expected: frozenset[str] = field(default_factory=frozenset)
    acceptable: frozenset[str] = field(default_factory=frozenset)
    build: Mapping[str, Any] = field(default_factory=dict)  # the program's config, read by run_case
    tolerance: float = 0.05  # healthy oracle: val accuracy may sit this far below the reference


@dataclass
class ZooResult:
    case: ZooCase
    final_val_accuracy: float
    reference_accuracy: float
    losses_finite: bool
    gradients_flowing: bool
    seconds: float
    findings: list[Any] = field(default_factory=list)
    best_val_accuracy: float = float("nan")  # the best epoch's val accuracy (NaN: not tracked)
    n_val: int = 0

    @property
    def kept_its_best(self) -> bool:
        """The run ended near its best epoch: final val accuracy at most max(2 points, 2 standard errors of a
        difference at the val size) below the best epoch's. A run that trained well and then lost it beyond
        the noise of a maximum over epochs is overfitting (or unstable), not a healthy program, whatever its
        final value against the reference."""
        if not math.isfinite(self.best_val_accuracy) or self.n_val <= 0:
            return True
        f = self.final_val_accuracy
        se = math.sqrt(max(f * (1.0 - f), 0.25 / self.n_val) / self.n_val)
        return f >= self.best_val_accuracy - max(0.02, 2.0 * math.sqrt(2.0) * se)

    @property
    def oracle_ok(self) -> bool:
        """Healthy cases only: the program really trained well (else the config is wrong)."""
        return (
            self.losses_finite
            and self.gradients_flowing
            and self.final_val_accuracy >= self.reference_accuracy - self.case.tolerance
            and self.kept_its_best
        )

    @property
    def oracle_message(self) -> str:
        return (
            f"val acc {self.final_val_accuracy:.3f} vs reference {self.reference_accuracy:.3f} "
            f"(tol {self.case.tolerance}), best epoch {self.best_val_accuracy:.3f} (kept: "
            f"{self.kept_its_best}), losses finite={self.losses_finite}, "
            f"gradients flowing={self.gradients_flowing}"
        )

    @property
    def alarms(self) -> list[Any]:
        """Findings at warning or error."""
        return [f for f in self.findings if f.severity in ("warning", "error")]

    @property
    def found(self) -> set[str]:
        return {f.code for f in self.alarms}

    @property
    def false_alarms(self) -> set[str]:
        """Warning/error codes that are neither expected nor accepted."""
        return self.found - self.case.expected - self.case.acceptable

    @property
    def missed(self) -> set[str]:
        return set(self.case.expected) - self.found


# how far below the scikit-learn reference a sound small net may land: feature noise (digits_noisy) lets an
# MLP fit the noise where an RBF SVM averages it away
_TOL = {"digits_noisy": 0.08, "sequences": 0.06}


def _h(name: str, tol: float | None = None, **cfg: Any) -> ZooCase:
    tol = max(tol or 0.05, _TOL.get(str(cfg["data"]), 0.05))
    return ZooCase(name, "healthy", build=cfg, tolerance=tol)


def _f(
    name: str, expected: set[str], acceptable: set[str] | frozenset[str] = frozenset(), **cfg: Any
) -> ZooCase:
    return ZooCase(
        name, "faulty", frozenset(expected), frozenset(acceptable) - frozenset(expected), build=cfg
    )


_OPTS: list[dict[str, Any]] = [
    {"opt": "adam", "lr": 1e-2},
    {"opt": "adamw", "lr": 5e-3},
    {"opt": "adagrad", "lr": 5e-2},
    {"opt": "rmsprop", "lr": 3e-3},
    {"opt": "sgd", "lr": 0.2},
    {"opt": "sgdm", "lr": 0.03},
]
_STYLES = ["loader", "index", "val_only", "loss_only"]
# Two configs of the grid overfit by the textbook and moved to the faulty side (``overfit_*_long``); the healthy
# grid keeps their fixed versions. Adagrad at lr 0.05 on digits_noisy (10% of the labels flipped) reaches 96%
# training accuracy: it memorized most of the flipped labels, and its val loss rises 23% from epoch 0 (seed 0);
# at lr 0.02 it fits the signal, not the noise. The Adam LSTM at lr 0.02 is best at epoch 11 and then its val
# loss rises 185% and its val accuracy falls 4.5 points by epoch 25 (seed 0): stopped at epoch 12, it is healthy.
_MEMORIZES = {("digits_noisy", "adagrad"): 0.02}
_SEQ_LSTM_OVERFIT = {"data": "sequences", "arch": "lstm", "width": 16, "batch": 32, "epochs": 25}
_TAB = ["circles", "moons", "blobs", "blobs2", "breast_cancer", "wine", "iris", "digits_noisy", "digits"]


def _healthy() -> list[ZooCase]:
    cases: list[ZooCase] = []
    # A: every tabular dataset × every optimizer, loop style / width / batch cycling
    for i, (ds, o) in enumerate(itertools.product(_TAB, _OPTS)):
        bs = [32, 64, 128, 32][i % 4]
        ep = 25 if ds not in ("digits", "digits_noisy") else 10
        ep *= 2 if o["opt"] == "sgd" else 1  # plain SGD needs more updates to converge
        if (ds, o["opt"]) in _MEMORIZES:
            o = {**o, "lr": _MEMORIZES[ds, o["opt"]]}
        cases.append(
            _h(
                f"grid_{ds}_{o['opt']}",
                data=ds,
                **o,
                width=[32, 16, 64][i % 3],
                depth=1 + i % 2,
                act=["relu", "tanh"][i % 2],
                batch=bs,
                epochs=ep,
                style=_STYLES[i % 4],
            )
        )
    # B: tiny widths
    for w, ds in [(1, "breast_cancer"), (1, "blobs2"), (2, "iris"), (2, "breast_cancer"), (3, "moons"),
                  (4, "circles"), (4, "moons"), (6, "circles"), (8, "blobs"), (8, "wine"), (12, "circles"),
                  (12, "digits"), (3, "blobs2"), (6, "iris")]:  # fmt: skip
        cases.append(_h(f"tiny_w{w}_{ds}", data=ds, width=w, act="tanh", lr=2e-2, batch=32, epochs=40))
    # C: deep narrow tanh/sigmoid
    for depth, act, ds in itertools.product((4, 5, 6), ("tanh", "sigmoid"), ("moons", "breast_cancer")):
        cases.append(
            _h(
                f"deep_{act}{depth}_{ds}",
                data=ds,
                width=8,
                depth=depth,
                act=act,
                lr=1e-2,
                batch=32,
                epochs=40,
            )
        )
    # D: single-unit sigmoid heads (BCEWithLogits)
    for ds, o in itertools.product(("breast_cancer", "moons", "circles", "blobs2"), _OPTS[:4]):
        cases.append(_h(f"bce_{ds}_{o['opt']}", data=ds, loss="bce", **o, width=16, batch=32, epochs=30))
    # E: MSE on one-hot
    for ds in ("iris", "wine", "blobs", "digits"):
        cases.append(_h(f"mse_{ds}", data=ds, loss="mse", lr=1e-2, width=32, batch=32, epochs=40))
    # F: batch sizes, incl. 1 on small data and full batch
    for bs, ds in [(1, "iris"), (1, "wine"), (8, "iris"), (8, "breast_cancer"), (32, "wine"), (128, "moons"),
                   (512, "circles"), (0, "iris"), (0, "wine"), (0, "breast_cancer"), (0, "blobs")]:  # fmt: skip
        ep = {1: 8, 8: 20}.get(bs, 200 if bs in (0, 512) else 40)
        lr = 3e-3 if bs == 1 else 2e-2
        cases.append(
            _h(f"batch{bs or 'full'}_{ds}", data=ds, batch=bs, lr=lr, width=32, epochs=ep, style="index")
        )
    # G: long runs that converge and plateau for hundreds of epochs (full batch, cheap)
    for ds, ep in [("iris", 400), ("wine", 300), ("moons", 300), ("blobs2", 400), ("breast_cancer", 300)]:
        cases.append(_h(f"plateau_{ds}_{ep}", data=ds, batch=0, lr=1e-2, width=16, epochs=ep, style="index"))
    # H: near chance for tens of epochs, then taking off
    for ds, lr in [("moons", 0.02), ("circles", 0.5), ("blobs2", 0.01), ("iris", 0.02)]:
        cases.append(
            _h(
                f"slowstart_sgd_{ds}",
                data=ds,
                opt="sgd",
                lr=lr,
                act="tanh",
                init="small",
                width=16,
                batch=0,
                epochs=600,
                style="index",
            )  # fmt: skip
        )
    # I: small validation sets
    for ds in ("iris", "wine", "breast_cancer", "moons"):
        cases.append(_h(f"smallval_{ds}", tol=0.08, data=ds, width=16, batch=16, epochs=40, style="val_only"))
    # J: class-weighted imbalanced data
    for o in _OPTS[:4]:
        cases.append(
            _h(
                f"weighted_imbalanced_{o['opt']}",
                tol=0.06,
                data="imbalanced",
                class_weights=True,
                **o,
                width=32,
                batch=32,
                epochs=30,
            )  # fmt: skip
        )
    # K: Keras-style initializers
    for init, ds in itertools.product(
        ("keras_uniform", "keras_normal", "glorot", "normal1"), ("moons", "wine")
    ):
        w = 4 if init == "normal1" else 32
        cases.append(_h(f"init_{init}_{ds}", data=ds, init=init, width=w, act="tanh", batch=32, epochs=30))
    # L: regularization and schedules
    regs: list[dict[str, Any]] = [{"dropout": 0.3}, {"bn": True}, {"wd": 1e-3}, {"sched": "step"}, {"sched": "cosine"},
         {"sched": "plateau"}, {"clip": 1.0}, {"bn": True, "dropout": 0.2}, {"sched": "cosine", "clip": 5.0}]  # fmt: skip
    for i, extra in enumerate(regs):
        for ds in ("digits", "moons"):
            cases.append(
                _h(
                    f"reg_{'_'.join(f'{k}{v}' for k, v in extra.items())}_{ds}",
                    data=ds,
                    width=64,
                    batch=32,
                    epochs=15 if ds == "digits" else 40,
                    style=_STYLES[i % 4],
                    **extra,
                )  # fmt: skip
            )
    # M: sequence, image and token models
    for cell, o in itertools.product(("lstm", "gru"), _OPTS[:3]):
        cases.append(
            _h(
                f"seq_{cell}_{o['opt']}",
                data="sequences",
                arch=cell,
                width=16,
                batch=32,
                epochs=12 if (cell, o["opt"]) == ("lstm", "adam") else 25,  # see _SEQ_LSTM_OVERFIT
                **{**o, "lr": o["lr"] * (2 if o["opt"] != "adagrad" else 1)},
            )  # fmt: skip
        )
    cnns: list[dict[str, Any]] = [
        {},
        {"bn": True},
        {"dropout": 0.2},
        {"opt": "sgdm", "lr": 0.05},
        {"sched": "step"},
    ]
    for i, extra in enumerate(cnns):
        cases.append(_h(f"cnn_digits_{i}", data="digits_img", arch="cnn", width=8, batch=32, epochs=12,
                        style=_STYLES[i % 4], **{"lr": 1e-2, **extra}))  # fmt: skip
    toks: list[dict[str, Any]] = [{}, {"dropout": 0.1}, {"opt": "adamw"}, {"sched": "cosine", "clip": 1.0}]
    for i, extra in enumerate(toks):
        cases.append(_h(f"transformer_tokens_{i}", data="tokens", arch="transformer", width=16, batch=32,
                        epochs=20, style=_STYLES[i % 4], **{"lr": 3e-3, **extra}))  # fmt: skip
    return cases


def _faulty() -> list[ZooCase]:
    cases: list[ZooCase] = []
    raw = {"data": "breast_cancer", "normalize": False}
    for lr in (5.0, 10.0, 50.0):
        cases.append(
            _f(
                f"lr_high_sgd{lr:g}_raw",
                {"nonfinite"},  # diverges within a few steps: NaN before any growth can be seen
                NO_LEARNING
                | {"exploding_gradient", "low_data_quality", "gradient_masking", "vanishing_gradient"},
                **raw,
                act="leaky_relu",
                opt="sgd",
                lr=lr,
                batch=32,
                epochs=5,
            )  # fmt: skip
        )
    for lr in (0.3, 0.5, 1.0):
        cases.append(
            _f(
                f"lr_high_sgdm{lr:g}_deep",
                {"exploding_gradient", "nonfinite"},
                POOR_CLASSES | NO_LEARNING | {"nonfinite", "gradient_masking"},
                data="digits",
                opt="sgdm",
                lr=lr,
                depth=3,
                width=64,
                act="leaky_relu",
                batch=32,
                epochs=4,
            )  # fmt: skip
        )
    for lr, ds in [(1e-6, "digits"), (1e-6, "moons"), (1e-5, "wine"), (3e-6, "digits")]:
        cases.append(
            _f(
                f"lr_low{lr:g}_{ds}",
                {"underfitting"},
                NO_LEARNING,
                data=ds,
                opt="sgd",
                lr=lr,
                batch=32,
                epochs=8,
            )  # fmt: skip
        )
    for ds, ep in [("digits", 2), ("digits", 3), ("wine", 3), ("digits_img", 2)]:
        arch = "cnn" if ds == "digits_img" else "mlp"
        cases.append(
            _f(
                f"stopped_early_{ds}_{ep}ep",
                {"underfitting"},
                NO_LEARNING,
                data=ds,
                arch=arch,
                opt="sgd",
                lr=0.01,
                batch=64,
                epochs=ep,
            )  # fmt: skip
        )
    for depth in (6, 8, 10):
        cases.append(
            _f(
                f"vanishing_sigmoid{depth}_tiny_init",
                {"vanishing_gradient", "bad_initialization"},
                NO_LEARNING | {"gradient_masking"},
                data="digits",
                act="sigmoid",
                depth=depth,
                width=32,
                init="tiny",
                opt="sgd",
                lr=0.1,
                batch=32,
                epochs=4,
            )  # fmt: skip
        )
    for b in (-3.0, -5.0, -10.0):
        cases.append(
            _f(
                f"dead_relu_bias{b:g}",
                {"gradient_masking"},
                NO_LEARNING | {"vanishing_gradient", "bad_initialization"},
                data="digits",
                depth=2,
                width=64,
                bias=b,
                opt="sgd",
                lr=0.05,
                batch=32,
                epochs=5,
            )  # fmt: skip
        )
    for n, w in [(30, 256), (40, 512), (20, 256)]:
        cases.append(
            _f(
                f"overfit_digits_n{n}_w{w}",
                {"overfitting"},
                POOR_CLASSES | {"insufficient_data", "label_noise"},
                data="digits_noisy",
                train_n=n,
                width=w,
                depth=2,
                lr=3e-3,
                batch=16,
                epochs=150,
                style="loader",
            )  # fmt: skip
        )
    cases.append(
        _f(
            "overfit_seq_lstm_adam_long",
            {"overfitting"},
            POOR_CLASSES,
            **_SEQ_LSTM_OVERFIT,
            opt="adam",
            lr=0.02,
        )  # fmt: skip
    )
    cases.append(
        _f(
            "overfit_digits_noisy_adagrad_long",
            {"overfitting"},
            POOR_CLASSES | {"label_noise"},
            data="digits_noisy",
            opt="adagrad",
            lr=0.05,
            width=64,
            depth=1,
            act="relu",
            batch=32,
            epochs=10,
            style="loader",
        )  # fmt: skip
    )
    for ratio_drop in (0.9, 0.95, 0.98):
        cases.append(
            _f(
                f"imbalance_uncompensated_{ratio_drop:g}",
                {"data_imbalance", "low_recall"},
                POOR_CLASSES | {"underfitting"},
                data="imbalanced",
                drop_minority=ratio_drop,
                width=16,
                lr=1e-3,
                opt="sgd",
                batch=32,
                epochs=10,
            )  # fmt: skip
        )
    for rate in (0.4, 0.5, 0.6):
        cases.append(
            _f(
                f"label_noise_{rate:g}",
                {
                    "train_test_mismatch"
                },  # train-only label noise, seen from the run (label_noise is the audit's)
                POOR_CLASSES | {"overfitting", "underfitting", "label_noise"},
                data="digits",
                train_label_noise=rate,
                width=32,
                lr=3e-3,
                batch=32,
                epochs=8,
            )  # fmt: skip
        )
    for ds in ("digits", "wine", "breast_cancer"):  # raw features far from the init statistics (0, 1)
        cases.append(
            _f(
                f"bn_frozen_stats_{ds}",
                {"train_test_mismatch"},
                POOR_CLASSES | NO_LEARNING,
                data=ds,
                normalize=False,  # with standardized inputs the init statistics (0, 1) happen to fit
                bn=True,
                width=32,
                freeze_bn_stats=True,
                lr=1e-2,
                batch=32,
                epochs=15,
            )  # fmt: skip
        )
    for p in (0.5, 0.7):
        cases.append(
            _f(
                f"eval_in_train_mode_dropout{p:g}",
                {"train_test_mismatch"},
                POOR_CLASSES,
                data="digits",
                dropout=p,
                width=64,
                eval_train_mode=True,
                lr=3e-3,
                batch=32,
                epochs=10,
            )  # fmt: skip
        )
    for depth in (8, 10, 12):
        cases.append(
            _f(
                f"deep_cnn_no_norm{depth}",
                {"underfitting"},
                NO_LEARNING | {"vanishing_gradient", "gradient_masking", "bad_initialization"},
                data="digits_img",
                arch="cnn",
                depth=depth,
                width=8,
                act="sigmoid",
                opt="sgd",
                lr=0.05,
                batch=32,
                epochs=4,
            )  # fmt: skip
        )
    for ds, arch in [("digits", "mlp"), ("moons", "mlp"), ("digits_img", "cnn")]:
        cases.append(
            _f(
                f"zeros_init_{arch}_{ds}",
                {"bad_initialization"},
                NO_LEARNING | {"vanishing_gradient", "gradient_masking"},
                data=ds,
                arch=arch,
                init="zeros",
                depth=2,
                width=32,
                lr=1e-2,
                batch=32,
                epochs=5,
            )  # fmt: skip
        )
    return cases


@functools.lru_cache(maxsize=1)
def zoo() -> tuple[ZooCase, ...]:
    """Every zoo case, healthy first; names are unique and stable."""
    cases = (*_healthy(), *_faulty())
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate zoo case names"
    return cases


def case(name: str) -> ZooCase:
    return next(c for c in zoo() if c.name == name)


# ------------------------------------------------------------------------------------------------ training


def _case_data(cfg: Mapping[str, Any], seed: int) -> ZooData:
    d = dataset(str(cfg["data"]), seed, bool(cfg.get("normalize", True)), cfg.get("train_n"))
    x, y = d.x_train, d.y_train
    if cfg.get("drop_minority"):
        rng = np.random.default_rng(seed)
        keep = (y.numpy() == 0) | (rng.random(len(y)) > float(cfg["drop_minority"]))
        x, y = x[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
    if cfg.get("train_label_noise"):
        y = torch.from_numpy(_label_noise(y.numpy(), float(cfg["train_label_noise"]), d.num_classes, seed))
    return ZooData(x, y, d.x_val, d.y_val, d.num_classes, d.kind, d.vocab)


def run_case(case: ZooCase, run_dir: str | Path, seed: int = 0) -> ZooResult:
    """Train ``case`` the way a user's own loop would, watched by trainmedic; diagnose; return the result."""
    import trainmedic as tm

    cfg = case.build
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    d = _case_data(cfg, seed)
    model = build_model(cfg, d)
    opt = _optimizer(cfg, model)
    loss_kind = str(cfg.get("loss", "ce"))
    weight = None
    if cfg.get("class_weights"):
        counts = torch.bincount(d.y_train, minlength=d.num_classes).float()
        weight = counts.sum() / (d.num_classes * counts.clamp(min=1))
    ce = nn.CrossEntropyLoss(weight=weight)
    bce, mse = nn.BCEWithLogitsLoss(), nn.MSELoss()

    def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if loss_kind == "bce":
            return bce(out.squeeze(1), y.float())
        if loss_kind == "mse":
            return mse(out, nn.functional.one_hot(y, d.num_classes).float())
        return ce(out, y)

    def scored(out: torch.Tensor) -> torch.Tensor:
        """What the user hands to evaluate: probabilities for a single-unit head, raw outputs otherwise."""
        return torch.sigmoid(out.squeeze(1)) if loss_kind == "bce" else out

    def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
        pred = (out.squeeze(1) > 0).long() if loss_kind == "bce" else out.argmax(1)
        return float((pred == y).float().mean())

    sched: Any = None
    epochs = int(cfg.get("epochs", 10))
    if cfg.get("sched") == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.5)
    elif cfg.get("sched") == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    elif cfg.get("sched") == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)
    style = str(cfg.get("style", "loader"))
    n = len(d.y_train)
    bs = int(cfg.get("batch", 32)) or n
    loader = None
    if style == "loader":
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(d.x_train, d.y_train),
            batch_size=bs,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
    clip = cfg.get("clip")
    finite, grads_ok, val_acc, best_val = True, False, 0.0, 0.0
    run = tm.watch(model, opt, run_dir=str(run_dir))
    try:
        for epoch in range(epochs):
            model.train()
            if loader is not None:
                batches: Any = loader
            else:
                perm = torch.from_numpy(rng.permutation(n))
                batches = ((d.x_train[i], d.y_train[i]) for i in perm.split(bs))
            last = torch.tensor(0.0)
            for xb, yb in batches:
                opt.zero_grad()
                loss = loss_of(model(xb), yb)
                loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_(model.parameters(), float(clip))
                opt.step()
                run.log(loss=loss)
                last = loss.detach()
            if not torch.isfinite(last):
                finite = False
            if epoch == epochs - 1 or not finite:
                grads_ok = any(
                    p.grad is not None
                    and bool(torch.isfinite(p.grad).all())
                    and float(p.grad.abs().sum()) > 0
                    for p in model.parameters()
                )
            if not cfg.get("eval_train_mode"):
                model.eval()
            with torch.no_grad():
                out_va = model(d.x_val)
                val_loss = loss_of(out_va, d.y_val)
                val_acc = accuracy(out_va, d.y_val)
                best_val = max(best_val, val_acc)
                if not torch.isfinite(out_va).all():
                    finite = False
                final = epoch == epochs - 1 or not finite
                if style in ("loader", "index", "val_only") or final:  # "loss_only": val once, at the end
                    if style in ("loader", "index"):
                        out_tr = model(d.x_train)
                        run.evaluate("train", d.y_train, scored(out_tr), loss=loss_of(out_tr, d.y_train))
                    run.evaluate("val", d.y_val, scored(out_va), loss=val_loss)
            if not finite:
                break  # a diverged model: a real loop stops here
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(float(val_loss))
            elif sched is not None:
                sched.step()
    finally:
        run.close()
    diagnosis = tm.diagnose(str(run_dir))
    ref = reference_accuracy(str(cfg["data"])) if case.kind == "healthy" else float("nan")
    return ZooResult(
        case,
        val_acc,
        ref,
        finite,
        grads_ok,
        time.perf_counter() - t0,
        list(diagnosis.findings),
        best_val_accuracy=best_val,
        n_val=len(d.y_val),
    )
