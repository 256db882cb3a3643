from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import EarlyStopping, Plateau, improved, load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))


def _train(model: nn.Module, opt: torch.optim.Optimizer, k: int) -> list[float]:
    """Every source of randomness is used: torch (data, dropout), numpy and python random (noise)."""
    losses = []
    model.train()
    for _ in range(k):
        x = torch.randn(8, 6) + float(np.random.normal()) + random.random()
        y = torch.randint(0, 2, (8,))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_rollback_is_bit_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, 3)  # optimizer has state
    path = save_checkpoint(tmp_path / "ckpt.pt", model, opt, extra={"epoch": 3, "note": "x"})
    first = _train(model, opt, 5)
    weights_first = [p.detach().clone() for p in model.parameters()]
    extra = load_checkpoint(path, model, opt)
    assert extra == {"epoch": 3, "note": "x"}
    second = _train(model, opt, 5)
    assert first == second
    for a, b in zip(weights_first, model.parameters()):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob("*.tmp"))


def test_load_into_fresh_objects_and_errors(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, 2)
    save_checkpoint(tmp_path / "a.pt", model, opt)
    other = _model()
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(tmp_path / "a.pt", other, other_opt, restore_rng=False)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(
        opt.state_dict()["state"][0]["momentum_buffer"], other_opt.state_dict()["state"][0]["momentum_buffer"]
    )
    with pytest.raises(TrainmedicError, match="`path` must be an existing checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", model)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainmedicError, match="`path` must be a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt", model)
    save_checkpoint(tmp_path / "noopt.pt", model)
    with pytest.raises(TrainmedicError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "noopt.pt", model, opt)


def test_plateau_rule() -> None:
    assert improved(0.9, 1.0, "min") and not improved(0.95, 1.0, "min", min_delta=0.1)
    assert improved(1.2, 1.0, "max", 0.1) and not improved(float("nan"), 1.0)
    assert improved(5.0, None)
    p = Plateau(mode="min", patience=2)
    assert [p.update(v) for v in [3, 2, 2.5, 2.1, 1.0, 1.5, 1.5]] == [
        False,
        False,
        False,
        True,
        False,
        False,
        True,
    ]


@pytest.mark.parametrize("on_disk", [False, True])
def test_early_stopping_stops_at_right_epoch_and_restores(tmp_path: Path, on_disk: bool) -> None:
    val = [1.0, 0.8, 0.6, 0.65, 0.61, 0.7, 0.5]
    es = EarlyStopping(patience=3, min_delta=0.0, checkpoint_path=tmp_path / "best.pt" if on_disk else None)
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stops = []
    for epoch, v in enumerate(val):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # "training" changes the weights every epoch
        stop = es.update(v, model, opt, epoch=epoch)
        stops.append(stop)
        if stop:
            break
    assert stops == [False, False, False, False, False, True]
    assert (es.best_epoch, es.stopped_epoch, es.best) == (2, 5, 0.6)
    assert float(model.weight.detach()) == 2.0  # restored to the best epoch's weights


def test_early_stopping_start_epoch_max_mode_and_restore() -> None:
    es = EarlyStopping(
        monitor="val_acc", mode="max", patience=2, min_delta=0.01, start_from_epoch=2, restore_best=False
    )
    model = nn.Linear(1, 1)
    values = [0.9, 0.95, 0.5, 0.6, 0.605, 0.602]
    results = []
    for epoch, v in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        results.append(es.update(torch.tensor(v), model))
    assert results == [False, False, False, False, False, True]
    assert es.best_epoch == 3 and float(model.weight.detach()) == 5.0  # no automatic restore
    assert es.restore(model) == 3 and float(model.weight.detach()) == 3.0
    with pytest.raises(TrainmedicError, match="needs a best state"):
        EarlyStopping().restore(model)
