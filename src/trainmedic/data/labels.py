"""Label-noise detection by confident learning (Northcutt, Jiang & Chuang, 2021), written from the paper.

Given out-of-sample predicted probabilities ``P`` (N, K) and given labels ``y``:

1. per-class thresholds ``t_j`` = mean of ``P[:, j]`` over samples labelled ``j`` (the model's self-confidence);
2. each sample's *confident label* is the most probable class among those with ``P[i, j] >= t_j``;
3. the confident joint ``C[i, j]`` counts samples labelled ``i`` whose confident label is ``j``, calibrated so
   each row sums to the number of samples labelled ``i``; its off-diagonal share estimates the noise rate;
4. prune by noise rate: for each ``i != j``, the ``C[i, j]`` samples labelled ``i`` with the largest margin
   ``P[:, j] - P[:, i]`` are suspects; a suspect the model itself predicts as its given label is dropped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import TrainmedicError, describe_shape


@dataclass
class LabelIssues:
    suspects: np.ndarray  # indices, most suspicious first
    noise_rate: float  # off-diagonal share of the calibrated confident joint
    confident_joint: np.ndarray  # (K, K) calibrated counts


def as_probabilities(outputs: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Accept probabilities (rows sum to 1) or logits (softmaxed); shape must be (n, K >= num_classes)."""
    p = np.asarray(outputs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n or p.shape[1] < num_classes:
        raise TrainmedicError(
            f"`outputs` must be out-of-sample probabilities or logits of shape ({n}, {num_classes}) for the training "
            f"split; got shape {describe_shape(p)}"
        )
    if not np.all(np.isfinite(p)):
        raise TrainmedicError("`outputs` must be finite; got NaN/Inf values")
    if np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        return p
    z = p - p.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def find_label_issues(
    pred_probs: np.ndarray, labels: np.ndarray, max_given_probability: float = 1.0
) -> LabelIssues:
    """Confident learning with prune-by-noise-rate; see the module docstring.

    ``max_given_probability`` keeps only suspects whose given label has at most this probability: where
    classes overlap, a correct label sits at a moderate probability (0.2-0.5) of its class; a wrong one in a
    region of another class sits near 0. The noise-rate estimate is unchanged.
    """
    n, k = pred_probs.shape
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    thresholds = np.array([pred_probs[labels == j, j].mean() if counts[j] else np.inf for j in range(k)])
    above = pred_probs >= thresholds[None, :] - 1e-12
    masked = np.where(above, pred_probs, -np.inf)
    confident = masked.argmax(axis=1)
    has = above.any(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[has], confident[has]), 1.0)
    row = joint.sum(axis=1, keepdims=True)
    calibrated = np.divide(joint, row, out=np.zeros_like(joint), where=row > 0) * counts[:, None]
    noise_rate = float((calibrated.sum() - np.trace(calibrated)) / max(n, 1))
    prediction = pred_probs.argmax(axis=1)
    suspect_mask = np.zeros(n, dtype=bool)
    margin_of = np.zeros(n)
    for i in range(k):
        members = np.flatnonzero(labels == i)
        if not members.size:
            continue
        for j in range(k):
            take = int(round(calibrated[i, j]))
            if j == i or take <= 0:
                continue
            margin = pred_probs[members, j] - pred_probs[members, i]
            top = members[np.argsort(-margin, kind="stable")[:take]]
            suspect_mask[top] = True
            margin_of[top] = np.maximum(margin_of[top], pred_probs[top, j] - pred_probs[top, i])
    suspect_mask &= prediction != labels
    if max_given_probability < 1.0:
        suspect_mask &= pred_probs[np.arange(n), labels] <= max_given_probability
    suspects = np.flatnonzero(suspect_mask)
    suspects = suspects[np.argsort(-margin_of[suspects], kind="stable")]
    return LabelIssues(suspects=suspects, noise_rate=noise_rate, confident_joint=calibrated)


def cross_val_probabilities(
    x: np.ndarray, y: np.ndarray, num_classes: int, seed: int = 0, cv: int = 5, model: str = "best"
) -> np.ndarray:
    """Out-of-sample probabilities, ``cross_val_predict(cv=5)``, of the checking model (see :func:`checking_model`)."""
    return checking_model(x, y, num_classes, seed=seed, cv=cv, model=model)[0]


def checking_model(
    x: np.ndarray, y: np.ndarray, num_classes: int, seed: int = 0, cv: int = 5, model: str = "best"
) -> tuple[np.ndarray, str, float]:
    """Out-of-sample probabilities of the model that fits the labels best: (probabilities, name, CV accuracy).

    Two standardized candidates, each ``cross_val_predict(cv=5)``: a logistic regression (linear boundaries,
    many features) and a 15-nearest-neighbour vote (curved boundaries in few dimensions: circles, moons); the
    one with the higher cross-validated accuracy is the judge (``model="logistic"`` / ``"knn"`` forces one). A
    label that one model cannot fit is not wrong because of that model: a judge that fits none of the labels
    (circles under a linear model) would call half of them wrong. Classes too small for ``cv`` folds reduce
    the folds (at least 2); absent classes get probability 0.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present, counts = np.unique(y, return_counts=True)
    folds = int(max(2, min(cv, counts.min())))
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    candidates = {
        "logistic regression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=300, C=1.0)
        ),
        "15-nearest-neighbour vote": lambda: make_pipeline(
            StandardScaler(),
            KNeighborsClassifier(n_neighbors=int(min(15, max(1, len(y) * (folds - 1) // folds - 1)))),
        ),
    }
    if model == "logistic":
        candidates = {k: v for k, v in candidates.items() if k.startswith("logistic")}
    elif model == "knn":
        candidates = {k: v for k, v in candidates.items() if not k.startswith("logistic")}
    from threadpoolctl import threadpool_limits

    best: tuple[np.ndarray, str, float] | None = None
    # small fits are slower with many BLAS threads (spin-up and contention), so use one
    with warnings.catch_warnings(), threadpool_limits(1 if x.size < 2_000_000 else None):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, make in candidates.items():
            proba = cross_val_predict(
                make(),
                x,
                y,
                cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                method="predict_proba",
            )
            out = np.zeros((len(y), num_classes))
            out[:, present] = proba
            acc = float(np.mean(out.argmax(axis=1) == y))
            if best is None or acc > best[2] + 1e-9:
                best = (out, name, acc)
    assert best is not None
    return best
