from __future__ import annotations

import pytest
import torch
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import (
    add_missing_params,
    add_momentum,
    scale_learning_rate,
    set_learning_rate,
    switch_optimizer,
    warmup_then_plateau,
)


def _opt(kind: str = "sgd", **kw) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    groups = [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[1].parameters(), "lr": 0.01}]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[kind]
    return model, cls(groups, lr=0.1, **kw)


def test_scale_and_set_learning_rate() -> None:
    _, opt = _opt()
    changes = scale_learning_rate(opt, 0.1)
    assert [(c.old, c.new) for c in changes] == [(0.1, pytest.approx(0.01)), (0.01, pytest.approx(0.001))]
    set_learning_rate(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    with pytest.raises(TrainmedicError, match="one per param group"):
        set_learning_rate(opt, [0.1, 0.2, 0.3])
    with pytest.raises(TrainmedicError, match="`factor`"):
        scale_learning_rate(opt, 0)


def test_scheduler_base_lrs_follow() -> None:
    _, opt = _opt()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    scale_learning_rate(opt, 0.5, scheduler=sched)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.005])


def test_add_momentum() -> None:
    model, opt = _opt()
    change = add_momentum(opt, 0.9)
    assert change.changed and all(g["momentum"] == 0.9 for g in opt.param_groups)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    assert all("momentum_buffer" in s and s["momentum_buffer"] is not None for s in opt.state.values())
    _, adam = _opt("adam")
    assert not add_momentum(adam).changed and adam.param_groups[0]["betas"] == (0.9, 0.999)
    assert add_momentum(adam, betas=(0.95, 0.999)).changed and adam.param_groups[1]["betas"] == (0.95, 0.999)


def test_switch_optimizer_carries_what_transfers() -> None:
    model, opt = _opt(weight_decay=1e-4)
    adam = switch_optimizer(opt, to="adam")
    assert isinstance(adam, torch.optim.Adam)
    assert [g["lr"] for g in adam.param_groups] == [1e-3, 1e-3]  # SGD lr does not transfer to Adam
    assert [g["weight_decay"] for g in adam.param_groups] == [1e-4, 1e-4]
    set_learning_rate(adam, [3e-4, 1e-4])
    adamw = switch_optimizer(adam, to="adamw")
    assert isinstance(adamw, torch.optim.AdamW) and [g["lr"] for g in adamw.param_groups] == [3e-4, 1e-4]
    sgd = switch_optimizer(adamw, model.parameters(), to="sgd", lr=0.05)
    assert (
        len(sgd.param_groups) == 1
        and sgd.param_groups[0]["lr"] == 0.05
        and sgd.param_groups[0]["momentum"] == 0.9
    )
    model(torch.randn(2, 3)).sum().backward()
    sgd.step()
    with pytest.raises(TrainmedicError, match="`to`"):
        switch_optimizer(opt, to="lion")


def test_add_missing_params() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    opt = torch.optim.SGD(model[0].parameters(), lr=0.1)
    assert add_missing_params(opt, model) == 2
    assert add_missing_params(opt, model) == 0
    assert opt.param_groups[1]["lr"] == 0.1


def test_warmup_then_plateau() -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = warmup_then_plateau(opt, warmup_steps=4, start_factor=0.2, patience=2, factor=0.5)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(6):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    reduced = [sched.step(v) for v in [1.0, 0.9, 0.95, 0.91, 0.8, 0.85, 0.9]]
    assert reduced == [False, False, False, True, False, False, True]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    state = sched.state_dict()
    other = warmup_then_plateau(opt, warmup_steps=4)
    other.load_state_dict(state)
    assert not other.in_warmup and other.plateau.best == pytest.approx(0.8)


def test_metric_during_warmup_is_ignored() -> None:
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    sched = warmup_then_plateau(opt, warmup_steps=10, patience=0)
    assert not sched.step(5.0) and sched.plateau.count == 0
