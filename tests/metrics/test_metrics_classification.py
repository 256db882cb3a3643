"""Classification metrics against scikit-learn (property tests) and hand-made degenerate cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from trainmedic.errors import TrainmedicError
from trainmedic.metrics import classification_metrics, confusion_matrix

pytestmark = pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")


def _assert_matches_sklearn(t: np.ndarray, p: np.ndarray, c: int, got) -> None:
    labels = list(range(c))
    np.testing.assert_array_equal(got.confusion_matrix.numpy(), sk_confusion_matrix(t, p, labels=labels))
    pr, rc, f1, sup = precision_recall_fscore_support(t, p, labels=labels, zero_division=0, average=None)
    np.testing.assert_allclose(got.precision.numpy(), pr, atol=1e-12)
    np.testing.assert_allclose(got.recall.numpy(), rc, atol=1e-12)
    np.testing.assert_allclose(got.f1.numpy(), f1, atol=1e-12)
    np.testing.assert_array_equal(got.support.numpy(), sup)
    for avg in ("macro", "micro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(t, p, labels=labels, zero_division=0, average=avg)
        assert getattr(got, f"precision_{avg}") == pytest.approx(pr, abs=1e-12), avg
        assert getattr(got, f"recall_{avg}") == pytest.approx(rc, abs=1e-12), avg
        assert getattr(got, f"f1_{avg}") == pytest.approx(f1, abs=1e-12), avg
    assert got.accuracy == pytest.approx(accuracy_score(t, p), abs=1e-12)
    assert got.num_classes == c
    cm = got.confusion_matrix.numpy()
    assert got.tn.tolist() == [int(cm.sum() - cm[k].sum() - cm[:, k].sum() + cm[k, k]) for k in range(c)]


@st.composite
def _multiclass(draw):
    c = draw(st.integers(1, 6))
    n = draw(st.integers(1, 50))
    # Draw labels from a random subset of classes, so some classes are absent or never predicted.
    present_t = draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c, unique=True))
    present_p = draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c, unique=True))
    t = draw(st.lists(st.sampled_from(present_t), min_size=n, max_size=n))
    p = draw(st.lists(st.sampled_from(present_p), min_size=n, max_size=n))
    return c, np.array(t), np.array(p)


@settings(max_examples=80, deadline=None)
@given(_multiclass(), st.booleans())
def test_class_indices_match_sklearn(case, as_scores: bool) -> None:
    c, t, p = case
    if as_scores and c >= 2:
        # Scores whose argmax is p: logits with the predicted class highest.
        rng = np.random.default_rng(len(t))
        scores = rng.normal(size=(len(t), c))
        scores[np.arange(len(t)), p] = scores.max(axis=1) + 1.0
        outputs = torch.tensor(scores, dtype=torch.float32)
    else:
        outputs = torch.tensor(p)
    got = classification_metrics(torch.tensor(t), outputs, num_classes=c)
    _assert_matches_sklearn(t, p, c, got)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.floats(-6, 6, allow_nan=False)), min_size=1, max_size=40),
    st.sampled_from([0.5, 0.3, 0.8]),
    st.booleans(),
    st.booleans(),
)
def test_binary_scores_match_sklearn(rows, threshold: float, as_probs: bool, column: bool) -> None:
    t = np.array([r[0] for r in rows])
    x = np.array([r[1] for r in rows])
    if as_probs:
        x = 1 / (1 + np.exp(-x))
    probs = x if (x.min() >= 0 and x.max() <= 1) else 1 / (1 + np.exp(-x))
    p = (probs > threshold).astype(int)
    outputs = torch.tensor(x, dtype=torch.float64)
    if column:
        outputs = outputs[:, None]
    got = classification_metrics(torch.tensor(t), outputs, threshold=threshold)
    assert got.num_classes == 2
    _assert_matches_sklearn(t, p, 2, got)


def test_binary_logits_match_torchmetrics() -> None:
    tm_cls = pytest.importorskip("torchmetrics.functional.classification")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, generator=g) * 3
    t = torch.randint(0, 2, (200,), generator=g)
    expected = tm_cls.binary_confusion_matrix(logits, t, threshold=0.3)
    assert torch.equal(confusion_matrix(t, logits, threshold=0.3), expected)


def test_multiclass_matches_torchmetrics() -> None:
    tm_cls = pytest.importorskip("torchmetrics.functional.classification")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(500, 7, generator=g)
    t = torch.randint(0, 7, (500,), generator=g)
    assert torch.equal(
        confusion_matrix(t, logits), tm_cls.multiclass_confusion_matrix(logits, t, num_classes=7)
    )
    f1 = tm_cls.multiclass_f1_score(logits, t, num_classes=7, average="macro")
    assert classification_metrics(t, logits).f1_macro == pytest.approx(float(f1), abs=1e-6)


def test_absent_and_unpredicted_classes_are_recorded_and_zero() -> None:
    # Class 2 never occurs and is never predicted; class 1 occurs but is never predicted.
    t = torch.tensor([0, 0, 1, 1])
    p = torch.tensor([0, 0, 0, 0])
    m = classification_metrics(t, p, num_classes=3)
    assert m.classes_without_samples == [2]
    assert m.classes_without_predictions == [1, 2]
    assert m.precision.tolist() == [0.5, 0.0, 0.0]
    assert m.recall.tolist() == [1.0, 0.0, 0.0]
    assert m.f1.tolist() == pytest.approx([2 / 3, 0.0, 0.0])
    assert m.precision_macro == pytest.approx(0.5 / 3)  # absent class counted as 0, as sklearn with labels
    assert m.accuracy == 0.5
    assert not any(np.isnan(v) for v in m.scalars().values())


def test_single_class_is_perfect_with_num_classes_one() -> None:
    m = classification_metrics(
        torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), num_classes=1
    )
    assert m.confusion_matrix.tolist() == [[5]]
    assert m.f1_macro == 1.0 and m.accuracy == 1.0


def test_inferred_num_classes() -> None:
    assert confusion_matrix([0, 0, 0], [0, 0, 0]).shape == (2, 2)  # at least 2: binary
    assert confusion_matrix([0, 4], [1, 0]).shape == (5, 5)
    assert confusion_matrix([0, 1], torch.randn(2, 6)).shape == (6, 6)


def test_input_forms_agree() -> None:
    t = [0, 1, 2, 1]
    scores = torch.tensor([[3.0, 0, 0], [0, 2, 0], [0, 1, 0], [0, 0, 1]])
    a = confusion_matrix(t, scores)
    b = confusion_matrix(np.array(t), scores.argmax(1).numpy())
    c = confusion_matrix(torch.tensor(t, dtype=torch.float32)[:, None], scores.softmax(1))
    assert torch.equal(a, b) and torch.equal(a, c)


def test_confusion_matrix_orientation_rows_true_cols_predicted() -> None:
    cm = confusion_matrix(torch.tensor([0, 0, 0]), torch.tensor([1, 1, 0]), num_classes=2)
    assert cm.tolist() == [[1, 2], [0, 0]]


def test_to_dict_is_plain_json() -> None:
    d = classification_metrics(
        torch.tensor([0, 1, 1]), torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    ).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert d["confusion_matrix"] == [[1, 0], [1, 1]]
    assert set(d["per_class"]) >= {"precision", "recall", "f1", "support", "tp", "fp", "fn", "tn"}


@pytest.mark.parametrize(
    ("targets", "outputs", "kwargs", "message"),
    [
        (
            torch.zeros(4, 3),
            torch.zeros(4, dtype=torch.long),
            {},
            "`targets` must be class indices of shape (N,); got shape (4, 3)",
        ),
        (
            torch.zeros(4, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            {},
            "`outputs` must have one row per target (N=4); got 3 rows",
        ),
        (
            torch.tensor([0, 5]),
            torch.tensor([0, 1]),
            {"num_classes": 3},
            "`targets` must be class indices in [0, 3)",
        ),
        (torch.tensor([0, 1]), torch.tensor([0, -1]), {}, "`outputs` must be class indices in"),
        (
            torch.tensor([0, 1]),
            torch.tensor([[0.1, float("nan")], [0.2, 0.3]]),
            {},
            "`outputs` must not contain NaN",
        ),
        (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), {}, "empty batch"),
        (
            torch.tensor([0, 1]),
            torch.randn(2, 3),
            {"num_classes": 4},
            "must have num_classes=4 columns; got shape (2, 3)",
        ),
        (torch.tensor([0, 1]), torch.randn(2), {"num_classes": 3}, "need num_classes=2"),
        (torch.tensor([0.5, 1.0]), torch.tensor([0, 1]), {}, "whole class indices"),
        (
            torch.tensor([0, 1]),
            torch.tensor([0, 1]),
            {"threshold": 1.5},
            "`threshold` must be a number in [0, 1]",
        ),
        (
            torch.tensor([0, 1]),
            torch.tensor([0, 1]),
            {"num_classes": 0},
            "`num_classes` must be a positive integer",
        ),
    ],
)
def test_bad_input_gives_one_line_error(targets, outputs, kwargs, message: str) -> None:
    with pytest.raises(TrainmedicError) as info:
        classification_metrics(targets, outputs, **kwargs)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_gradients_are_not_tracked() -> None:
    logits = torch.randn(6, 3, requires_grad=True)
    m = classification_metrics(torch.tensor([0, 1, 2, 0, 1, 2]), logits)
    assert not m.confusion_matrix.requires_grad


def test_one_hot_and_soft_targets_score_as_their_class_indices() -> None:
    """Keras-style one-hot (and label-smoothed) targets are read as the row's class; other 2-D targets are an
    error that says what was expected."""
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (200,), generator=g)
    logits = torch.randn(200, 4, generator=g)
    ref = confusion_matrix(y, logits)
    one_hot = torch.nn.functional.one_hot(y, 4).float()
    assert torch.equal(confusion_matrix(one_hot, logits), ref)
    soft = one_hot * 0.9 + 0.1 / 4
    assert torch.equal(confusion_matrix(soft, logits), ref)
    with pytest.raises(TrainmedicError, match=r"shape \(N,\)"):
        confusion_matrix(torch.rand(200, 4, generator=g) * 3, logits)
