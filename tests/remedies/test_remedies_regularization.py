from __future__ import annotations

import pytest
import torch
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import add_dropout, set_dropout, set_weight_decay, weight_decay_param_groups


def test_set_dropout_only_raises() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1), nn.Sequential(nn.Dropout2d(0.6)), nn.Linear(2, 2))
    assert set_dropout(model, 0.3) == ["1"]
    assert model[1].p == 0.3 and model[2][0].p == 0.6
    assert set_dropout(model, 0.3, only_raise=False) == ["2.0"]
    with pytest.raises(TrainmedicError, match="`p` must be a dropout probability"):
        set_dropout(model, 1.5)


def test_add_dropout_after_activations_not_last() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(8, 8),
        nn.Tanh(),
        nn.Linear(8, 1),
        nn.Sigmoid(),
    )
    paths = add_dropout(model, p=0.25)
    assert paths == ["1_dropout", "7_dropout"]
    drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert len(drops) == 3
    assert isinstance(model.get_submodule("1_dropout"), nn.Dropout2d)
    assert (
        isinstance(model.get_submodule("7_dropout"), nn.Dropout)
        and model.get_submodule("7_dropout").p == 0.25
    )
    names = list(model._modules)
    assert names[-1] == "9" and names[names.index("7") + 1] == "7_dropout"
    model.train()
    assert model(torch.randn(3, 1, 6, 6)).shape == (3, 1)
    assert add_dropout(model, p=0.25) == []  # idempotent


def test_add_dropout_really_drops_in_train_mode() -> None:
    model = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 1))
    add_dropout(model, p=0.5)
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(100))
        model[0].bias.fill_(1.0)
    captured: list[torch.Tensor] = []
    model.get_submodule("2").register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    torch.manual_seed(0)
    model(torch.zeros(50, 100))
    zero_share = float((captured[0] == 0).float().mean())
    assert 0.45 < zero_share < 0.55


def test_set_weight_decay_splits_groups_and_keeps_state() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    report = set_weight_decay(opt, 0.01, skip_norm_and_bias=True)
    assert (report.decayed, report.not_decayed, report.groups) == (2, 4, 2)
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[1]["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in opt.param_groups[0]["params"])
    assert len(opt.state) == 6
    opt.step()
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    assert set_weight_decay(plain, 1e-4).decayed == 6 and plain.param_groups[0]["weight_decay"] == 1e-4
    with pytest.raises(TrainmedicError, match="`wd`"):
        set_weight_decay(plain, -1.0)


def test_weight_decay_param_groups() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    model[2].weight.requires_grad_(False)
    groups = weight_decay_param_groups(model, 0.05)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.05 and [p.shape for p in decay["params"]] == [torch.Size([3, 3])]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    torch.optim.AdamW(groups, lr=1e-3)
