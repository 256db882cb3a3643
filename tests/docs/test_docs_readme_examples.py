"""The README's examples run as written (with a real model, data and loop around them)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


def test_three_line_example_runs_as_written(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _blocks()[0]
    assert code.count("run.") >= 3 and "tm.watch(model, optimizer" in code
    x, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    ns = {
        "model": model,
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2),
        "loss_fn": nn.functional.cross_entropy,
        "epochs": 3,
        "train_loader": [(x[i : i + 64], y[i : i + 64]) for i in range(0, 1200, 64)],
        "x_val": x[1200:],
        "y_val": y[1200:],
    }
    exec(compile(code, "README.md", "exec"), ns)
    import trainmedic as tm

    r = tm.open_run(tmp_path / "runs" / "exp1")
    from trainmedic.cadence import LogCadence

    # every step's loss; the gradient norm on the default schedule's steps (every step for 32, then spreading)
    assert len(r.scalar("loss")) == 57
    assert r.scalar("grad_norm").steps.tolist() == LogCadence().steps(57)[0]
    assert r.eval_series("val", "accuracy").values[-1] > 0.8


def test_fit_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    import trainmedic as tm

    line = next(ln for ln in _blocks()[1].splitlines() if ln.startswith("result = tm.fit("))
    x, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.0), nn.Linear(32, 10))
    ns = {"tm": tm, "model": model, "X_tr": x[:1200], "y_tr": y[:1200], "X_va": x[1200:], "y_va": y[1200:]}
    exec(compile(line.split("#")[0].replace("epochs=20", "epochs=3"), "README.md", "exec"), ns)
    result = ns["result"]
    assert result.epochs_run == 3 and result.config["dropout"] == 0.2
    assert result.final("val_accuracy") > 0.6  # it really trained the model on digits (chance: 0.1)
    assert model[2].p == 0.2  # the dropout keyword reached the model


def test_data_example_runs() -> None:
    import numpy as np

    import trainmedic as tm

    x, y = load_digits(return_X_y=True)
    ns = {"tm": tm, "X": x.astype(np.float32), "y": y}
    code = _blocks()[2].replace("print(", "diag = (")
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["diag"].healthy
