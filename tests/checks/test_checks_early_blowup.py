"""The first updates blow the weights up (Adam at lr 1; SGD on raw breast-cancer features): the loss jumps
hundreds of times in the first steps, ReLUs die, and the run never learns. Before a running median exists the
spike rule cannot see it; the early blow-up rule names the explosion as the root cause, so the dead units and
the tiny gradients that follow are its evidence, not separate causes. A healthy start stays silent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from torch import nn

import trainmedic as tm


def _run(run_dir: Path, case: str, seed: int = 0) -> tm.Diagnosis:
    torch.manual_seed(seed)
    if case == "raw_sgd":
        x, y = load_breast_cancer(return_X_y=True)
        k, make = 2, lambda p: torch.optim.SGD(p, lr=0.01)
    else:
        x, y = load_digits(return_X_y=True)
        x = x / 16.0
        k = 10
        make = (
            (lambda p: torch.optim.Adam(p, lr=1.0))
            if case == "adam_lr1"
            else (lambda p: torch.optim.Adam(p, lr=1e-3))
        )
    X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(X))
    X, Y = X[perm], Y[perm]
    n = int(0.8 * len(X))
    model = nn.Sequential(
        nn.Linear(X.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, k)
    )
    opt = make(model.parameters())
    run = tm.watch(model, opt, run_dir=run_dir, quiet=True)
    for _ in range(8):
        for i in range(0, n, 32):
            out = model(X[i : i + 32])
            loss = nn.functional.cross_entropy(out, Y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out.detach(), targets=Y[i : i + 32])
        with torch.no_grad():
            run.evaluate("val", Y[n:], model(X[n:]))
    run.close()
    return tm.diagnose(run_dir)


@pytest.mark.parametrize("case", ["adam_lr1", "raw_sgd"])
def test_a_blow_up_in_the_first_steps_is_the_root_cause(tmp_path: Path, case: str) -> None:
    d = _run(tmp_path / "r", case)
    f = d.by_code("exploding_gradient")
    assert f and f[0].severity.value == "error" and f[0].evidence["kind"] == "early", d.findings
    assert f[0].evidence["loss_jump"] >= 10 and f[0].step is not None and f[0].step < 25
    # what the blown-up weights did afterwards is evidence, not a cause of its own
    problems = {x.code for x in d.findings if x.is_problem}
    assert not problems & {"vanishing_gradient", "gradient_masking", "bad_initialization"}, d.findings


def test_a_healthy_start_is_not_a_blow_up(tmp_path: Path) -> None:
    d = _run(tmp_path / "r", "healthy")
    assert "exploding_gradient" not in d.codes
    assert not [x for x in d.findings if x.is_problem], d.findings
