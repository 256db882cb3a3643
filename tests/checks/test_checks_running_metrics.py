"""The README's loop — ``run.log(loss=, outputs=, targets=)`` and a val score per epoch, no clean training pass —
gets fit problems judged from the running training metrics (split ``train_running``): overfitting is found on a
real overfitting run, and a healthy one stays silent (scenarios/programs.py holds more healthy shapes)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import trainmedic as tm
from trainmedic.running import RUNNING_SPLIT
from trainmedic.scenarios.programs import run_program
from trainmedic.scenarios.zoo import dataset


def _readme_loop(run_dir: Path, train_n: int, width: int, epochs: int, data: str = "digits") -> float:
    torch.manual_seed(0)
    d = dataset(data, 0, train_n=train_n)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    run = tm.watch(model, opt, run_dir=run_dir, quiet=True)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(d.y_train), generator=g).split(16):
            opt.zero_grad()
            out = model(d.x_train[idx])
            loss = loss_fn(out, d.y_train[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=d.y_train[idx])
        model.eval()
        with torch.no_grad():
            out = model(d.x_val)
            run.evaluate("val", d.y_val, out, loss=loss_fn(out, d.y_val))
    run.close()
    return float((out.argmax(1) == d.y_val).float().mean())


def test_readme_loop_finds_overfitting_from_running_metrics(tmp_path: Path) -> None:
    val_acc = _readme_loop(tmp_path / "over", train_n=60, width=256, epochs=80, data="digits_noisy")
    r = tm.open_run(tmp_path / "over")
    assert RUNNING_SPLIT in r.splits and "train" not in r.splits  # no clean pass: running metrics only
    assert r.eval_series(RUNNING_SPLIT, "accuracy").values[-1] > 0.95 > val_acc + 0.2
    r.close()
    found = {f.code: f for f in tm.diagnose(tmp_path / "over").findings if f.severity in ("warning", "error")}
    assert "overfitting" in found, sorted(found)
    assert found["overfitting"].evidence["accuracy_gap"] > 0.2


def test_readme_loop_stays_silent_on_a_healthy_run(tmp_path: Path) -> None:
    outcome, diagnosis = run_program("readme_running_metrics", tmp_path / "ok")
    assert outcome.ok, outcome
    assert not [f.code for f in diagnosis.findings if f.severity in ("warning", "error")]
    r = tm.open_run(tmp_path / "ok")
    assert RUNNING_SPLIT in r.splits and len(r.eval_series(RUNNING_SPLIT, "accuracy")) == 15
    r.close()
