"""Weight and gradient quantiles per layer — at the first capture, then at captures at least QUANTILE_GAP steps
apart (or half the step number) — against torch.quantile of the full tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import trainmedic as tm
from trainmedic.cadence import QUANTILE_GAP, next_quantile
from trainmedic.probes.optimizer import QUANTILE_SAMPLE, QUANTILE_STATS, QUANTILES


def test_quantiles_match_the_full_tensors_within_sampling_noise(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(128, 20), torch.randint(0, 3, (128,))
    run = tm.watch(model, opt, run_dir=tmp_path / "run", quiet=True, every=4)
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    layers = [m for m in model if isinstance(m, nn.Linear)]
    # captures every 4 steps; the quantiles at 0, then at the first capture >= QUANTILE_GAP steps later, ...
    assert (
        next_quantile(0) == QUANTILE_GAP and next_quantile(1000) == 1500 and QUANTILE_GAP <= 200
    )  # the gap grows with the step
    want, nxt = [], 0
    for step in range(0, 2 * QUANTILE_GAP + 13, 4):
        if step >= nxt:
            want.append(step)
            nxt = next_quantile(step)
    for step in range(2 * QUANTILE_GAP + 13):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        run.log(loss=loss)
        if step in want:  # the quantile steps: the full tensors after the step, as the probe sees them
            seen[step] = [
                (
                    torch.cat([m.weight.detach().flatten(), m.bias.detach().flatten()]).clone(),
                    torch.cat([m.weight.grad.flatten(), m.bias.grad.flatten()]).clone(),
                )
                for m in layers
            ]
    run.close()
    r = tm.open_run(tmp_path / "run")
    assert set(QUANTILE_STATS) <= set(r.layer_stats)
    wall = r.scalar("wall_time")  # seconds since tm.watch at each capture step: step time and throughput
    assert list(wall.steps) == list(range(0, 2 * QUANTILE_GAP + 13, 4))  # every capture
    assert (np.diff(wall.values) > 0).all() and wall.values[0] >= 0
    assert sorted(seen) == want and len(want) == 3
    for kind, col in (("weight", 0), ("grad", 1)):
        for q in QUANTILES:
            ls = r.layer_stat(f"{kind}_q{round(q * 100):02d}")
            assert list(ls.steps) == sorted(seen) and ls.layers == ["0", "2", "4"]
            for t, step in enumerate(ls.steps):
                for li, full in enumerate(seen[int(step)]):
                    ref = full[col]
                    got = float(ls.values[t, li])
                    # where the recorded value sits in the full tensor's distribution, vs the quantile asked:
                    # a nearest-rank quantile of a 512-element sample is off by its sampling noise only
                    rank = float((ref <= got).double().mean())
                    tol = 4 * np.sqrt(q * (1 - q) / QUANTILE_SAMPLE) + 2 / QUANTILE_SAMPLE
                    assert abs(rank - q) <= tol, (kind, q, step, li, rank)
            # the values are the tensors' own, not a normalised statistic
            ref_med = float(torch.quantile(seen[int(ls.steps[-1])][0][col], q))
            assert np.isfinite(ls.values[-1, 0]) and abs(ls.values[-1, 0] - ref_med) < 0.5 * (
                float(seen[int(ls.steps[-1])][0][col].abs().max()) + 1e-12
            )


def test_a_layer_without_gradient_has_nan_gradient_quantiles(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    model[0].requires_grad_(False)  # frozen: no gradient ever
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tm.watch(model, opt, run_dir=tmp_path / "run", quiet=True, every=2)
    for _ in range(4):
        opt.zero_grad()
        loss = model(torch.randn(16, 8)).pow(2).mean()
        loss.backward()
        opt.step()
        run.log(loss=loss)
    run.close()
    r = tm.open_run(tmp_path / "run")
    g = r.layer_stat("grad_q50")
    w = r.layer_stat("weight_q50")
    assert g.layers == ["0", "2"]
    assert np.isnan(g.values[:, 0]).all() and np.isfinite(g.values[:, 1]).all()
    assert np.isfinite(w.values).all()


def test_the_torch_path_gives_the_numpy_paths_quantiles() -> None:
    """Accelerators take the torch path (gathers and one sort on the device); on the CPU both must agree."""
    from trainmedic.probes.layers import LayerIndex
    from trainmedic.probes.optimizer import OptimizerProbe

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 5), nn.LayerNorm(5))
    model[2].requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(8, 30)).sum().backward()
    probe = OptimizerProbe("optimizer", opt, LayerIndex.build({"model": model}))
    host, device = probe.param_quantiles(True), probe.param_quantiles(False)
    assert host is not None and device is not None and host.shape == device.shape == (2, len(QUANTILES), 3)
    assert torch.allclose(host.float(), device.float(), equal_nan=True)
    assert torch.isnan(host[:, :, 1]).all()  # the frozen layer is not this optimizer's: no row at all
    assert torch.isfinite(host[:, :, [0, 2]]).all()
