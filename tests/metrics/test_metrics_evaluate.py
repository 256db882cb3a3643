"""The recorder's entry points: one dict shape, plain JSON, task picked from the outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from trainmedic.errors import TrainmedicError
from trainmedic.metrics import evaluate, evaluate_classification, evaluate_detection


def test_evaluate_classification_shape_and_values() -> None:
    d = evaluate_classification(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 1]), num_classes=4)
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["task"] == "classification" and d["num_classes"] == 4
    assert d["scalars"]["accuracy"] == 0.5
    for name in ("precision", "recall", "f1"):
        for avg in ("macro", "micro", "weighted"):
            assert isinstance(d["scalars"][f"{name}_{avg}"], float)
    assert d["per_class"]["support"] == [1, 1, 2, 0]
    assert d["confusion_matrix"][2] == [0, 1, 1, 0]
    assert d["classes_without_samples"] == [3]


def test_evaluate_detection_shape() -> None:
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    outputs = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10]]),
            "scores": torch.tensor([0.7]),
            "labels": torch.tensor([1]),
        }
    ]
    d = evaluate_detection(targets, outputs)
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["task"] == "detection"
    assert (
        d["scalars"]["map_50"] == 1.0 and d["scalars"]["precision"] == 1.0 and d["scalars"]["recall"] == 1.0
    )
    assert evaluate(targets, outputs) == d


def test_evaluate_picks_classification_for_tensors() -> None:
    assert evaluate([0, 1], torch.tensor([[0.2, 0.8], [0.9, 0.1]]))["task"] == "classification"


def test_evaluate_refuses_mixed_inputs() -> None:
    with pytest.raises(TrainmedicError, match="`targets` must be a list with one dict per image"):
        evaluate(
            torch.tensor([0, 1]),
            [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}],
        )


def test_import_is_light() -> None:
    code = "import sys, trainmedic.metrics; print('torchmetrics' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False"]
