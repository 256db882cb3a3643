from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import UndersamplingSampler, balanced_sampler, class_weights


def test_inverse_weights_by_hand() -> None:
    w = class_weights(counts=[90, 10])
    # w_c = N / (C * n_c) = 100 / (2 * 90), 100 / (2 * 10)
    torch.testing.assert_close(w, torch.tensor([100 / 180, 5.0]))
    labels = np.array([0] * 90 + [1] * 10)
    torch.testing.assert_close(class_weights(labels), w)
    # mean weight over samples is 1
    assert float(w[torch.as_tensor(labels)].mean()) == pytest.approx(1.0)


def test_sqrt_and_effective_weights() -> None:
    counts = np.array([400.0, 100.0, 25.0])
    w = class_weights(counts=counts, scheme="sqrt_inverse").numpy()
    raw = 1 / np.sqrt(counts)
    np.testing.assert_allclose(w, raw * counts.sum() / (raw * counts).sum(), rtol=1e-6)
    assert float((w * counts).sum() / counts.sum()) == pytest.approx(1.0)
    beta = 0.99
    e = class_weights(counts=counts, scheme="effective", beta=beta).numpy()
    raw = (1 - beta) / (1 - beta**counts)
    np.testing.assert_allclose(e, raw * counts.sum() / (raw * counts).sum(), rtol=1e-6)
    assert e[2] > e[1] > e[0]


def test_absent_class_and_errors() -> None:
    w = class_weights(torch.tensor([0, 0, 0, 2]), num_classes=4)
    assert w.shape == (4,) and float(w[1]) == float(w[3]) == float(w.max())
    with pytest.raises(TrainmedicError, match="exactly one"):
        class_weights([0, 1], counts=[1, 1])
    with pytest.raises(TrainmedicError, match="`labels` must be non-empty class indices"):
        class_weights(np.array([[0, 1]]))
    with pytest.raises(TrainmedicError, match="`scheme`"):
        class_weights(counts=[1, 2], scheme="log")


def _drawn_counts(sampler, labels: np.ndarray, epochs: int) -> np.ndarray:
    idx = np.concatenate([np.fromiter(iter(sampler), dtype=np.int64) for _ in range(epochs)])
    return np.bincount(labels[idx], minlength=labels.max() + 1)


LABELS = np.array([0] * 900 + [1] * 90 + [2] * 10)


def test_oversampling_balances() -> None:
    s = balanced_sampler(LABELS, mode="oversample", seed=0)
    assert isinstance(s, WeightedRandomSampler) and len(s) == 2700
    c = _drawn_counts(s, LABELS, 10)
    assert np.all(np.abs(c / c.max() - 1.0) < 0.06)


def test_oversampling_partial_ratio() -> None:
    s = balanced_sampler(LABELS, mode="oversample", target_ratio=0.5, seed=1)
    c = _drawn_counts(s, LABELS, 10).astype(float)
    np.testing.assert_allclose(c / c[0], [1.0, 0.5, 0.5], atol=0.05)


def test_undersampling_exact_ratio_and_fresh_subsets() -> None:
    s = balanced_sampler(LABELS, mode="undersample", target_ratio=0.5, seed=0)
    assert isinstance(s, UndersamplingSampler) and len(s) == 20 + 20 + 10
    first = list(s)
    assert np.bincount(LABELS[first]).tolist() == [20, 20, 10]
    assert len(set(first)) == len(first)
    second = list(s)
    assert set(first) != set(second)
    s.set_epoch(0)
    assert list(s) == first
    loader = DataLoader(
        TensorDataset(torch.as_tensor(LABELS)), batch_size=16, sampler=balanced_sampler(LABELS, "undersample")
    )
    ys = torch.cat([b[0] for b in loader])
    assert torch.bincount(ys).tolist() == [10, 10, 10]


def test_sampler_errors() -> None:
    with pytest.raises(TrainmedicError, match="`target_ratio`"):
        balanced_sampler(LABELS, target_ratio=2.0)
    with pytest.raises(TrainmedicError, match="`mode`"):
        balanced_sampler(LABELS, mode="smote")


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12).filter(any),
    scheme=st.sampled_from(["inverse", "sqrt_inverse", "effective"]),
)
def test_mean_weight_over_samples_is_one(counts: list[int], scheme: str) -> None:
    w = class_weights(counts=counts, scheme=scheme).double().numpy()
    n = np.asarray(counts, dtype=float)
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    assert float((w * n).sum() / n.sum()) == pytest.approx(1.0, rel=1e-5)
