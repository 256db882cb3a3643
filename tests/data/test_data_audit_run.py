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


def _token_run(tmp_path, train_label_noise: float) -> tm.Diagnosis:
    """A token-count task (no kNN or linear model reads it) audited with the run, then learned by an MLP over
    token counts; ``train_label_noise`` flips that share of the training labels."""
    from trainmedic.scenarios.zoo import dataset

    d = dataset("tokens", 0)
    ytr = d.y_train.clone()
    if train_label_noise:
        g = torch.Generator().manual_seed(1)
        flip = torch.rand(len(ytr), generator=g) < train_label_noise
        ytr[flip] = (ytr[flip] + torch.randint(1, 3, (int(flip.sum()),), generator=g)) % 3

    def counts(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x, 10).sum(1).float()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True)
    tm.audit(train=(d.x_train.numpy(), ytr.numpy()), val=(d.x_val.numpy(), d.y_val.numpy()), run=run)
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(counts(d.x_train)), ytr)
        loss.backward()
        opt.step()
        run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", ytr, model(counts(d.x_train)))
            run.evaluate("val", d.y_val, model(counts(d.x_val)))
    run.close()
    return tm.diagnose(tmp_path / "r")


def test_an_audit_cause_without_harm_in_the_run_is_a_note(tmp_path) -> None:
    """The audit says the inputs barely predict the labels (kNN on raw tokens); the run's model learns the task:
    the cause explains no symptom, so the run's diagnosis keeps it as a note."""
    diag = _token_run(tmp_path, 0.0)
    quality = [f for f in diag.findings if f.source == "audit" and f.code == "low_data_quality"]
    assert quality and all(f.severity.value == "info" for f in quality), quality
    assert any(f.evidence.get("demoted_from") == "warning" for f in quality)
    assert not [f.code for f in diag.findings if f.severity.value in ("warning", "error")]


def test_an_audit_cause_that_explains_a_symptom_stays_a_problem(tmp_path) -> None:
    """The audit finds 20:1 imbalance; the run's model ignores the minority (low recall on its val split): the
    audit's cause explains that symptom and stays a warning that says so."""
    from trainmedic.scenarios.zoo import dataset

    d = dataset("imbalanced", 0)
    keep = (d.y_train == 0) | (torch.rand(len(d.y_train), generator=torch.Generator().manual_seed(0)) < 0.3)
    xtr, ytr = d.x_train[keep], d.y_train[keep]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True)
    tm.audit(
        train=(xtr.numpy(), ytr.numpy()), val=(d.x_val.numpy(), d.y_val.numpy()), run=run, label_check="off"
    )
    for _ in range(10):
        for idx in torch.randperm(len(ytr), generator=torch.Generator().manual_seed(1)).split(32):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("val", d.y_val, model(d.x_val))
    run.close()
    diag = tm.diagnose(tmp_path / "r")
    assert any(f.code == "low_recall" and f.is_problem for f in diag.findings)
    audit_imbalance = [f for f in diag.findings if f.source == "audit" and f.code == "data_imbalance"]
    assert audit_imbalance and any(f.is_problem and "explains" in f.message for f in audit_imbalance)
