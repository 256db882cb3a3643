"""Small, fast data sets that provoke (or avoid) each training problem.

Everything is in memory and built in milliseconds: sklearn's bundled digits (8x8 images, 10 classes) and
synthetic sequences. Each builder returns a :class:`Data` with a train and a validation split; builders
take a ``seed`` so a scenario repeats exactly.

Why these: digits is a real data set that a small MLP/CNN fits in a second; the sequence tasks (sign of a
running sum for an LSTM, majority token for a Transformer encoder) are learnable by their architecture
in a few epochs and are easy to break on purpose (label noise, shifts, imbalance, tiny subsets).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..errors import TrainmedicError

DATASETS = ("digits", "sequences", "tokens")


@dataclass
class Data:
    """Train and validation tensors plus what a model builder needs to know about them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    kind: str  # "image" (N, 1, 8, 8), "sequence" (N, L, F) float, "tokens" (N, L) long
    vocab: int = 0  # tokens only

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return x, d.target.astype(np.int64)


def _split_indices(
    y: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/val indices."""
    tr, va = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(len(idx) * val_fraction)))
        va.append(idx[:k])
        tr.append(idx[k:])
    return rng.permutation(np.concatenate(tr)), rng.permutation(np.concatenate(va))


def digits(
    seed: int = 0,
    train_per_class: int | None = None,
    imbalance: float = 1.0,
    minority_classes: int = 5,
    label_noise: float = 0.0,
    train_input_noise: float = 0.0,
    confuse: Any = None,
    confuse_rate: float = 0.0,
) -> Data:
    """sklearn digits, standardized with training statistics, as (N, 1, 8, 8) images.

    - ``train_per_class``: keep only this many training samples per class (tiny subsets).
    - ``imbalance``: the last ``minority_classes`` classes keep 1/``imbalance`` of their training samples;
      the validation split stays balanced (the training data is skewed, the world is not).
    - ``label_noise``: this share of *training* labels replaced by random classes.
    - ``train_input_noise``: Gaussian noise of this std added to *training* inputs only (a shifted split).
    - ``confuse=(a, b)`` (or a list of such pairs), ``confuse_rate``: this share of training samples of class
      ``a`` relabelled ``b``
      (a systematic labelling error: many false positives for ``b``, false negatives for ``a``).
    """
    if imbalance < 1.0:
        raise TrainmedicError(f"`imbalance` must be >= 1 (largest/smallest class); got {imbalance!r}")
    if not 0.0 <= label_noise <= 1.0:
        raise TrainmedicError(f"`label_noise` must be in [0, 1]; got {label_noise!r}")
    x, y = _digits_arrays()
    rng = np.random.default_rng(seed)
    tr, va = _split_indices(y, 0.25, rng)
    classes = np.unique(y)
    if train_per_class is not None:
        tr = np.concatenate([tr[y[tr] == c][:train_per_class] for c in classes])
    if imbalance > 1.0:
        keep = []
        for c in classes:
            idx = tr[y[tr] == c]
            if c >= len(classes) - minority_classes:
                idx = idx[: max(1, int(round(len(idx) / imbalance)))]
            keep.append(idx)
        tr = rng.permutation(np.concatenate(keep))
    x_tr, y_tr = x[tr].copy(), y[tr].copy()
    x_va, y_va = x[va].copy(), y[va].copy()
    if label_noise > 0:
        flip = rng.random(len(y_tr)) < label_noise
        y_tr[flip] = rng.integers(0, len(classes), int(flip.sum()))
    if confuse is not None and confuse_rate > 0:
        pairs = [confuse] if isinstance(confuse[0], int) else list(confuse)
        for a, b in pairs:
            sel = (y_tr == a) & (rng.random(len(y_tr)) < confuse_rate)
            y_tr[sel] = b
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-3
    x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    x_tr = np.clip(x_tr, -5, 5)
    x_va = np.clip(x_va, -5, 5)
    if train_input_noise > 0:
        x_tr = x_tr + rng.normal(0, train_input_noise, x_tr.shape).astype(np.float32)
    return Data(
        torch.from_numpy(x_tr.reshape(-1, 1, 8, 8)).float(),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_va.reshape(-1, 1, 8, 8)).float(),
        torch.from_numpy(y_va),
        num_classes=len(classes),
        kind="image",
    )


def sequences(
    seed: int = 0,
    n_train: int = 800,
    n_val: int = 300,
    length: int = 12,
    label_noise: float = 0.0,
    imbalance: float = 1.0,
    train_per_class: int | None = None,
) -> Data:
    """Sign of the sum of a random sequence (binary), for recurrent models: shape (N, L, 1).

    The label depends on every step, so the model must carry information through time. ``imbalance``
    keeps 1/``imbalance`` of the positive training class; ``label_noise`` flips training labels.
    """
    g = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = g.normal(0, 1, (n, length, 1)).astype(np.float32)
        s = x.sum(axis=(1, 2))
        return x, (s > 0).astype(np.int64)

    x_tr, y_tr = make(n_train)
    x_va, y_va = make(n_val)
    if imbalance > 1.0:
        pos = np.flatnonzero(y_tr == 1)
        drop = pos[int(round(len(pos) / imbalance)) :]
        keep = np.setdiff1d(np.arange(len(y_tr)), drop)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if train_per_class is not None:
        keep = np.concatenate([np.flatnonzero(y_tr == c)[:train_per_class] for c in (0, 1)])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if label_noise > 0:
        flip = g.random(len(y_tr)) < label_noise
        y_tr[flip] = 1 - y_tr[flip]
    return Data(
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_va),
        torch.from_numpy(y_va),
        2,
        "sequence",
    )


def tokens(
    seed: int = 0,
    n_train: int = 800,
    n_val: int = 300,
    length: int = 16,
    vocab: int = 12,
    num_classes: int = 4,
    label_noise: float = 0.0,
    imbalance: float = 1.0,
    train_per_class: int | None = None,
) -> Data:
    """Majority token: which of the first ``num_classes`` tokens occurs most often, shape (N, L) long.

    Each sequence draws from a random mixture that favours one class token, then fills with distractor
    tokens; a Transformer encoder with mean pooling learns to count in a few epochs.
    """
    g = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = g.integers(0, num_classes, n)
        x = g.integers(num_classes, vocab, (n, length))
        for i, c in enumerate(labels):
            k = g.integers(length // 4, length // 2 + 1)
            pos = g.choice(length, k, replace=False)
            x[i, pos[: k - k // 3]] = c
            others = [o for o in range(num_classes) if o != c]
            x[i, pos[k - k // 3 :]] = g.choice(others, len(pos[k - k // 3 :]))
        counts = np.stack([(x == c).sum(1) for c in range(num_classes)], 1)
        return x.astype(np.int64), counts.argmax(1).astype(np.int64)

    x_tr, y_tr = make(n_train)
    x_va, y_va = make(n_val)
    if imbalance > 1.0:
        keep = []
        for c in range(num_classes):
            idx = np.flatnonzero(y_tr == c)
            if c >= num_classes // 2:
                idx = idx[: max(1, int(round(len(idx) / imbalance)))]
            keep.append(idx)
        k = np.sort(np.concatenate(keep))
        x_tr, y_tr = x_tr[k], y_tr[k]
    if train_per_class is not None:
        k = np.sort(np.concatenate([np.flatnonzero(y_tr == c)[:train_per_class] for c in range(num_classes)]))
        x_tr, y_tr = x_tr[k], y_tr[k]
    if label_noise > 0:
        flip = g.random(len(y_tr)) < label_noise
        y_tr[flip] = g.integers(0, num_classes, int(flip.sum()))
    return Data(
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_va),
        torch.from_numpy(y_va),
        num_classes,
        "tokens",
        vocab,
    )


def load(name: str, seed: int = 0, **options: object) -> Data:
    """Build data set ``name`` (one of :data:`DATASETS`) with its builder's options."""
    builders = {"digits": digits, "sequences": sequences, "tokens": tokens}
    if name not in builders:
        raise TrainmedicError(f"`dataset` must be one of {', '.join(DATASETS)}; got {name!r}")
    try:
        return builders[name](seed=seed, **options)  # type: ignore[operator]
    except TypeError as e:
        raise TrainmedicError(f"`data_options` for dataset {name!r} are not valid: {e}") from None
