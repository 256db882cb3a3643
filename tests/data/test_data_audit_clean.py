"""Clean data stays silent; the Diagnosis is complete and serializable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trainmedic.data import audit, split
from trainmedic.findings import Diagnosis


@pytest.mark.parametrize("name", ["digits", "wine", "breast_cancer"])
def test_clean_bundled_data_has_no_problems(bundled: dict[str, Any], name: str) -> None:
    tr, va, te = split(bundled[name], seed=0)
    d = audit(tr, va, te)
    assert d.healthy, [str(f) for f in d.problems]
    assert all(f.source == "audit" and f.split in ("train", "val", "test") for f in d.findings)
    # every criterion reported something, even when healthy
    assert {
        "insufficient_data",
        "data_imbalance",
        "train_test_mismatch",
        "label_noise",
        "data_leakage",
        "low_data_quality",
    } <= {f.code for f in d.findings}


def test_to_dict_is_complete_and_round_trips(digits_splits: Any) -> None:
    d = audit(*digits_splits, label_check="off")
    doc = json.loads(d.to_json())
    assert doc["run"] == "audit" and doc["healthy"] is True
    assert set(doc["signals"]["splits"]) == {"train", "val", "test"}
    assert doc["signals"]["splits"]["train"]["class_counts"]["0"] > 0
    assert {"imbalance_ratio", "near_duplicate_radius"} <= set(doc["signals"]["thresholds"])
    assert doc["skipped"] == [{"code": "label_noise", "reason": "label_check='off'"}]
    imb = next(f for f in doc["findings"] if f["code"] == "data_imbalance")
    assert imb["evidence"]["threshold_imbalance_ratio"] == 3.0
    back = Diagnosis.from_dict(doc)
    assert [f.code for f in back.findings] == [f.code for f in d.findings]


def test_train_only_and_reproducible(bundled: dict[str, Any]) -> None:
    a = audit(bundled["wine"], seed=1)
    b = audit(bundled["wine"], seed=1)
    assert a.to_dict() == b.to_dict()
    assert any(s.code == "train_test_mismatch" for s in a.skipped)


@pytest.mark.parametrize("name", ["moons", "circles", "blobs2", "iris", "sequences", "digits_img"])
def test_clean_low_dimensional_and_curved_data_stays_silent(name: str) -> None:
    """Judged against the data's own noise: 2-D points are close to each other by chance (not leakage), a
    curved boundary is no label noise because a linear model cannot follow it, overlap near the boundary is no
    label noise either (the given label keeps a moderate probability there)."""
    from trainmedic.scenarios.zoo import dataset

    d = dataset(name, 0)
    diag = audit((d.x_train, d.y_train), (d.x_val, d.y_val))
    assert not [(f.code, f.message) for f in diag.findings if f.severity.value in ("warning", "error")]
    if name == "circles":  # the judge is the model that fits: a 15-NN vote, not the linear one
        assert diag.signals["label_model"]["model"].startswith("15-nearest")


def test_labels_no_model_can_predict_are_not_judged() -> None:
    """Token counts decide the class: neither checking model sees that rule, so no label is called wrong."""
    from trainmedic.scenarios.zoo import dataset

    d = dataset("tokens", 0)
    diag = audit((d.x_train, d.y_train), (d.x_val, d.y_val))
    (f,) = [f for f in diag.by_code("label_noise")]
    assert f.severity.value == "info" and "not judged" in f.message
    assert any(s.code == "label_noise" for s in diag.skipped)
