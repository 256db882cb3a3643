"""The batched activation statistics (float passes instead of boolean masks) against a naive NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainmedic.probes.activations import activation_stats_batch


def reference_stats(a: np.ndarray, kind: str, unit_dim: int) -> np.ndarray:
    """``[mean, std, dead, zero, saturated]`` of one sample ``(rows, ...)``, straight from the definitions."""
    flat = a.reshape(-1).astype(np.float64)
    nan = math.nan
    if kind == "relu":
        zero = float(np.mean(flat <= 0))
        d = unit_dim if unit_dim >= 0 else a.ndim - 1
        units = np.moveaxis(a, d, -1).reshape(-1, a.shape[d])
        dead = float(np.mean(np.all(units <= 0, axis=0))) if a.ndim >= 2 else zero
    else:
        dead, zero = nan, float(np.mean(flat == 0))
    if kind == "sigmoid":
        sat = float(np.mean((flat < 0.01) | (flat > 0.99)))
    elif kind in ("tanh", "recurrent"):
        sat = float(np.mean(np.abs(flat) > 0.99))
    else:
        sat = nan
    return np.array([flat.mean(), math.sqrt(float(np.mean((flat - flat.mean()) ** 2))), dead, zero, sat])


def _sample(kind: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 3
    if kind == "relu":
        x = torch.relu(x)
        x[..., :2] = 0.0  # two dead units (features or, with unit_dim 0, the first two positions)
    elif kind == "sigmoid":
        x = torch.sigmoid(x)
    elif kind in ("tanh", "recurrent"):
        x = torch.tanh(x)
    else:  # leaky: negative values and some exact zeros
        x = torch.nn.functional.leaky_relu(x, 0.01)
        x[0] = 0.0
    return x


@pytest.mark.parametrize("kind", ["relu", "leaky", "sigmoid", "tanh", "recurrent"])
@pytest.mark.parametrize(
    ("shape", "unit_dim"),
    [((64, 128), -1), ((16, 8, 6, 6), 0), ((5, 7, 32), -1), ((1, 300), -1)],
    ids=["mlp", "conv", "sequence", "one-row"],
)
def test_host_and_batched_statistics_agree(kind: str, shape: tuple[int, ...], unit_dim: int) -> None:
    samples = [_sample(kind, shape, seed) for seed in range(3)]
    batched = activation_stats_batch(torch.stack(samples), kind, unit_dim).numpy()
    host = np.stack([reference_stats(s.numpy(), kind, unit_dim) for s in samples])
    assert batched.shape == host.shape == (3, 5)
    assert np.array_equal(np.isnan(batched), np.isnan(host))
    ok = ~np.isnan(host)
    assert np.allclose(batched[ok], host[ok], rtol=1e-5, atol=1e-6), (batched, host)


def test_statistics_mean_what_they_say() -> None:
    """A hand-made ReLU sample: 2 of 4 units never fire, 5 of 8 elements are zero; a sigmoid one half flat."""
    a = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 3.0, 2.0, 0.0]])
    mean, std, dead, zero, sat = activation_stats_batch(a[None], "relu", -1)[0].tolist()
    assert mean == pytest.approx(0.75) and std == pytest.approx(float(a.std(unbiased=False)))
    assert dead == pytest.approx(0.5) and zero == pytest.approx(5 / 8) and math.isnan(sat)
    s = torch.tensor([[0.001, 0.5, 0.999, 0.2]])
    assert activation_stats_batch(s[None], "sigmoid", -1)[0, 4].item() == pytest.approx(0.5)
