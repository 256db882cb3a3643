from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import freeze, gradual_unfreeze, load_matching_weights, save_checkpoint, unfreeze


def _net(classes: int) -> nn.Module:
    torch.manual_seed(classes)
    return nn.Sequential(
        nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU()),
        nn.Sequential(nn.Linear(8, 8), nn.ReLU()),
        nn.Linear(8, classes),
    )


def test_loads_matching_and_skips_mismatched_shapes() -> None:
    src, dst = _net(10), _net(3)
    sd = src.state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["1.0.bias"]
    report = load_matching_weights(dst, sd)
    assert sorted(report.skipped_shape) == ["2.bias", "2.weight"]
    assert report.skipped_missing == ["1.0.bias"]
    assert report.unexpected == ["extra.weight"]
    assert "0.1.running_mean" in report.loaded and "0.0.weight" in report.loaded
    assert torch.equal(dst[0][0].weight, src[0][0].weight)
    assert not torch.equal(dst[1][0].bias, src[1][0].bias)


def test_partial_copy_strip_prefix_and_path(tmp_path: Path) -> None:
    src, dst = _net(10), _net(3)
    prefixed = {f"module.{k}": v for k, v in src.state_dict().items()}
    report = load_matching_weights(dst, prefixed, strict_shapes=False)
    assert sorted(report.partial) == ["2.bias", "2.weight"] and not report.unexpected
    assert torch.equal(dst[2].weight, src[2].weight[:3])
    save_checkpoint(tmp_path / "c.pt", src, include_rng=False)
    assert len(load_matching_weights(_net(10), tmp_path / "c.pt").loaded) == len(src.state_dict())
    with pytest.raises(TrainmedicError, match="`state_dict`"):
        load_matching_weights(dst, tmp_path / "nope.pt")


def test_freeze_unfreeze_and_training_only_moves_head() -> None:
    model = _net(3)
    frozen = freeze(model, except_=("2",), freeze_norm_stats=True)
    assert "0.0.weight" in frozen and "2.weight" not in frozen
    assert not model[0][1].training
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model[0][1].eval()
    nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
    opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    names = [n for n, _ in model.named_parameters()]
    assert {n for n, m in zip(names, moved) if m} == {"2.weight", "2.bias"}
    assert sorted(unfreeze(model, ["1"])) == ["1.0.bias", "1.0.weight"]
    assert len(unfreeze(model)) == 4
    with pytest.raises(TrainmedicError, match="`except_`"):
        freeze(model, except_=("head",))


def test_gradual_unfreeze_from_head_down() -> None:
    model = _net(3)
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1)
    unfreezer = gradual_unfreeze(model, every=2, optimizer=opt)
    assert all(not p.requires_grad for p in model.parameters())
    assert sorted(unfreezer.step(0)) == ["2.bias", "2.weight"]
    assert unfreezer.step(1) == []
    assert sorted(unfreezer.step(2)) == ["1.0.bias", "1.0.weight"]
    assert sum(len(g["params"]) for g in opt.param_groups) == 4
    assert len(unfreezer.step(10)) == 4 and all(p.requires_grad for p in model.parameters())
