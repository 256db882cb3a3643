"""Hyperparameter changes are recorded at their step, also on quiet steps (no statistic due)."""

from __future__ import annotations

from pathlib import Path

import torch
from _recorder_helpers import digits, mlp, watched
from torch import nn

import trainmedic as tm


def _series(r: tm.RunReader, name: str) -> dict[int, float]:
    s = r.scalar(name)
    return dict(zip(s.steps.tolist(), s.values.tolist()))


def test_scheduler_and_manual_changes_land_on_their_steps(tmp_path: Path) -> None:
    X, y = digits(512)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5)
    run = watched(model, opt, tmp_path, every=10)
    # most steps are quiet: the pre-step hook's short path looks only at the lr object
    run._cadence.gn_every = 10
    lr_at: dict[int, float] = {}
    for step in range(40):
        if step == 23:
            opt.param_groups[0]["momentum"] = 0.5  # no new lr object: seen at the next step with work
        lr_at[step] = opt.param_groups[0]["lr"]
        xb, yb = X[step * 8 : step * 8 + 8], y[step * 8 : step * 8 + 8]
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        sched.step()
        run.log(loss=torch.tensor(0.0))
    run.close()
    r = tm.open_run(tmp_path)
    lr = _series(r, "lr")
    changes = [s for s in range(1, 40) if lr_at[s] != lr_at[s - 1]]
    assert changes == [6, 12, 18, 24, 30, 36]
    assert all(s in lr and lr[s] == lr_at[s] for s in [0, *changes])  # each change at its own step
    for s, v in lr.items():  # and nothing recorded that was not in force
        assert v == lr_at[s], (s, v, lr_at[s])
    momentum = _series(r, "momentum")
    first_half = [s for s, v in momentum.items() if v == 0.5]
    assert first_half and 23 <= min(first_half) <= 30, momentum  # at most the gradient-norm cadence late
    assert all(v == 0.9 for s, v in momentum.items() if s < 23)
