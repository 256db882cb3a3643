"""split(): stratification, groups, reproducibility, input kinds and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, Subset, TensorDataset

from trainmedic.data import split, split_indices
from trainmedic.errors import TrainmedicError


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x, y


def test_stratified_shares_and_sizes(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    s = split((x, y))
    sizes = [len(p[1]) for p in s]
    assert sum(sizes) == len(y)
    for size, r in zip(sizes, (0.6, 0.2, 0.2)):
        assert abs(size - r * len(y)) <= 1
    all_idx = np.concatenate(s.indices)
    assert len(np.unique(all_idx)) == len(y)
    for part, idx, r in zip(s, s.indices, (0.6, 0.2, 0.2)):
        counts = np.bincount(part[1], minlength=10)
        expected = r * np.bincount(y)
        assert np.all(np.abs(counts - expected) <= 1.5)
        np.testing.assert_array_equal(part[0], x[idx])
        np.testing.assert_array_equal(part[1], y[idx])


def test_every_class_with_three_samples_is_in_every_split() -> None:
    y = np.array([0] * 100 + [1] * 3 + [2] * 4 + [3] * 2)
    tr, va, te = split_indices(len(y), y)
    for part in (tr, va, te):
        present = set(y[part].tolist())
        assert {0, 1, 2} <= present


def test_same_seed_same_split_other_seed_other_split(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    a, b, c = split((x, y), seed=3), split((x, y), seed=3), split((x, y), seed=4)
    for i in range(3):
        np.testing.assert_array_equal(a.indices[i], b.indices[i])
    assert not np.array_equal(a.indices[0], c.indices[0])


def test_groups_never_span_splits_and_stay_stratified(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    groups = np.arange(len(y)) // 5  # e.g. 5 images per patient
    s = split((x, y), groups=groups, seed=1)
    sets = [set(groups[i].tolist()) for i in s.indices]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(i) for i in s.indices) == len(y)
    for idx, r in zip(s.indices, (0.6, 0.2, 0.2)):
        assert abs(len(idx) / len(y) - r) < 0.03
        share = np.bincount(y[idx], minlength=10) / len(idx)
        assert np.abs(share - np.bincount(y) / len(y)).max() < 0.03


def test_group_split_with_uneven_groups() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, size=600)
    y = rng.integers(0, 3, size=600)
    tr, va, te = split_indices(600, y, groups=groups, seed=2)
    assert len(tr) and len(va) and len(te)
    assert not set(groups[tr]) & set(groups[te])


def test_tensor_pair_and_x_with_y_keyword() -> None:
    x = torch.randn(50, 3)
    y = torch.arange(50) % 2
    tr, va, te = split((x, y))
    assert isinstance(tr[0], torch.Tensor) and tr[0].shape[1] == 3 and len(tr[1]) == len(tr[0])
    s2 = split(x.numpy(), y=y.numpy())
    assert isinstance(s2.train[0], np.ndarray) and len(s2.train[0]) == 30
    plain = split(np.arange(10))
    assert sorted(np.concatenate(list(plain)).tolist()) == list(range(10))


class _Items(Dataset[tuple[torch.Tensor, int]]):
    """A Dataset without .targets: labels only through indexing."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((2,), float(i)), int(i < 10)


def test_dataset_gives_subsets_with_labels_from_items_or_targets() -> None:
    s = split(_Items())
    assert all(isinstance(p, Subset) for p in s)
    for part in s:
        labels = {int(part[i][1]) for i in range(len(part))}
        assert labels == {0, 1}
    ds = TensorDataset(torch.randn(30, 2), torch.tensor([0] * 20 + [1] * 10))
    tr, va, te = split(ds, ratios=(0.5, 0.25, 0.25))
    assert len(tr) == 15 and isinstance(tr, Subset)

    class WithTargets(_Items):
        targets = [0] * 20 + [1] * 20

    s3 = split(WithTargets())
    assert sum(WithTargets.targets[i] for i in s3.indices[0]) == 12


@pytest.mark.parametrize(
    ("ratios", "needle"),
    [
        ((0.5, 0.5, 0.5), "sum to 1"),
        ((1.2, -0.1, -0.1), "positive"),
        ((0.5, 0.5), "three numbers"),
        (("a", 1, 2), "three numbers"),
    ],
)
def test_bad_ratios(ratios: tuple, needle: str) -> None:
    with pytest.raises(TrainmedicError, match=needle):
        split((np.zeros((10, 2)), np.zeros(10, dtype=int)), ratios=ratios)


def test_mismatched_lengths_and_bad_labels() -> None:
    with pytest.raises(TrainmedicError, match="one label per sample"):
        split((np.zeros((10, 2)), np.zeros(9, dtype=int)))
    with pytest.raises(TrainmedicError, match="integer class indices"):
        split((np.zeros((10, 2)), np.linspace(0, 1, 10)))
    with pytest.raises(TrainmedicError, match="at least 3 distinct groups"):
        split((np.zeros((10, 2)), np.zeros(10, dtype=int)), groups=[0] * 5 + [1] * 5)
