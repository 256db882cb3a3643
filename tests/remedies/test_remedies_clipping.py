from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import (
    GradientClipper,
    clip_norm_from_history,
    healthy_stretch,
    install_gradient_clipping,
)


def _history(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(1.0, 0.1, size=400))


def test_clip_value_ignores_isolated_spikes() -> None:
    clean = _history()
    spiky = clean.copy()
    spiky[[50, 120, 121, 300]] = [500.0, 1e4, 800.0, 1e6]
    expected = float(np.quantile(np.delete(clean, [50, 120, 121, 300]), 0.9))
    assert clip_norm_from_history(spiky) == pytest.approx(expected)
    assert 1.0 < clip_norm_from_history(spiky) < 1.3
    assert clip_norm_from_history(spiky, quantile=0.5, factor=2.0) == pytest.approx(
        2.0 * float(np.median(np.delete(clean, [50, 120, 121, 300])))
    )


def test_healthy_stretch_ends_at_explosion_or_nonfinite() -> None:
    h = _history()
    exploded = np.concatenate([h[:100], np.geomspace(100, 1e8, 50)])
    assert healthy_stretch(exploded).size == 100
    with_nan = h.copy()
    with_nan[60] = np.nan
    assert healthy_stretch(with_nan).size == 60
    # the exploding tail does not pull the clip value up
    assert clip_norm_from_history(exploded) == pytest.approx(float(np.quantile(h[:100], 0.9)))


def test_clip_value_errors() -> None:
    with pytest.raises(TrainmedicError, match="at least 5 finite"):
        clip_norm_from_history([np.nan, 1.0])
    with pytest.raises(TrainmedicError, match="1-D"):
        clip_norm_from_history(np.ones((3, 3)))
    with pytest.raises(TrainmedicError, match="`quantile`"):
        clip_norm_from_history(np.ones(10), quantile=1.5)


def _global_norm(model: nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))


def test_hook_bounds_global_norm_during_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves the weights, we look at grads
    seen: list[float] = []
    clipper = install_gradient_clipping(opt, max_norm=0.5)
    opt.register_step_pre_hook(lambda o, a, k: seen.append(_global_norm(model)))  # runs after the clipper
    x = torch.randn(32, 10) * 100
    (model(x) ** 2).mean().backward()
    raw = _global_norm(model)
    assert raw > 0.5
    opt.step()
    assert seen[0] == pytest.approx(0.5, rel=1e-4)
    assert clipper.last_norm == pytest.approx(raw, rel=1e-5)
    assert (clipper.steps, clipper.clipped_steps) == (1, 1)
    clipper.remove()
    opt.zero_grad()
    (model(x) ** 2).mean().backward()
    opt.step()
    assert seen[1] == pytest.approx(raw, rel=1e-5)  # removed: no more clipping


def test_clipper_with_adam_changes_update_size() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    GradientClipper(1e-3).install(opt)
    before = [p.detach().clone() for p in model.parameters()]
    (model(torch.randn(8, 4) * 1000).sum()).backward()
    opt.step()
    moved = torch.linalg.vector_norm(
        torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    )
    assert float(moved) == pytest.approx(1e-3, rel=1e-4)
    with pytest.raises(TrainmedicError, match="`max_norm`"):
        GradientClipper(0.0)
