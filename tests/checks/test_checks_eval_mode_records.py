"""A held-out split scored with dropout still in training mode (a forgotten ``model.eval()``), on the
``eval_mode`` records written when the state changes: each evaluation is in the state of the last record at
or before its epoch."""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import trainmedic as tm


def _program(run_dir: Path, train_mode_epochs: set[int], epochs: int = 8) -> tm.Run:
    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(X), generator=g)
    tr, va = idx[:1200], idx[1200:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    run = tm.watch(model, opt, run_dir=run_dir, quiet=True)
    for epoch in range(epochs):
        model.train()
        for i in range(0, 1200, 64):
            b = tr[i : i + 64]
            opt.zero_grad()
            out = model(X[b])
            loss = loss_fn(out, y[b])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        if epoch not in train_mode_epochs:
            model.eval()
        with torch.no_grad():
            run.evaluate("train", y[tr], model(X[tr]))
            run.evaluate("val", y[va], model(X[va]))
    run.close()
    return run


def test_eval_mode_is_recorded_on_change_and_expanded_over_the_evaluations(tmp_path: Path) -> None:
    _program(tmp_path / "r", train_mode_epochs={2, 3, 4, 5, 6, 7})
    r = tm.open_run(tmp_path / "r")
    recs = r.records("eval_mode", "val")
    # two records for eight evaluations: eval mode at epoch 0, dropout left on from epoch 2
    assert [(x["epoch"], x["data"]["train_mode_modules"]) for x in recs] == [(0, 0), (2, 1)]
    assert recs[1]["data"]["names"] == ["2"]
    d = tm.diagnose(tmp_path / "r")
    f = [x for x in d.by_code("train_test_mismatch") if x.evidence.get("kind") == "scored_in_train_mode"]
    assert f, d.findings
    assert f[0].evidence["evaluations_in_train_mode"] == 6 and f[0].evidence["evaluations"] == 8


def test_a_split_scored_in_eval_mode_at_the_end_is_not_blamed(tmp_path: Path) -> None:
    _program(tmp_path / "r", train_mode_epochs={0, 1, 2})
    r = tm.open_run(tmp_path / "r")
    assert [x["epoch"] for x in r.records("eval_mode", "val")] == [0, 3]
    d = tm.diagnose(tmp_path / "r")
    assert not [x for x in d.findings if x.evidence.get("kind") == "scored_in_train_mode"], d.findings
