"""`tm.audit(..., run=run)` stores the audit with the run: its findings join the run's diagnosis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import trainmedic as tm


def test_audit_with_run_joins_the_diagnosis(tmp_path) -> None:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    keep = np.concatenate([np.flatnonzero(y == c)[: (150 if c == 0 else 12)] for c in range(10)])
    train, val, _ = tm.split((x[keep], y[keep]), seed=0)
    model = nn.Sequential(nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True)
    d = tm.audit(train=train, val=val, run=run, label_check="off")
    assert d.has("data_imbalance")
    xb, yb = torch.tensor(train[0]), torch.tensor(train[1])
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        run.log(loss=loss)
    run.close()
    joined = tm.diagnose(tmp_path / "r")
    audit_findings = [f for f in joined.findings if f.source == "audit"]
    assert any(f.code == "data_imbalance" and f.is_problem for f in audit_findings)


def test_audit_rejects_something_that_is_not_a_run() -> None:
    x, y = load_digits(return_X_y=True)
    with pytest.raises(tm.TrainmedicError, match="`run` must be a trainmedic Run"):
        tm.audit(train=(x[:200], y[:200]), run="runs/exp1")
