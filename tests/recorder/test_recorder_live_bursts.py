"""The live exploding-gradient alarm: a burst is a candidate, confirmed by what follows it.

A healthy full-batch run can have a gradient-norm burst of 30x its median for a few steps (a tanh net leaving a
plateau) and recover at once; the live monitor must not stop it under ``raise_on="error"``. A real explosion
(the norm stays up, or the values turn non-finite) must still stop the loop.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from sklearn.datasets import make_moons
from sklearn.model_selection import train_test_split
from torch import nn

import trainmedic as tm
from trainmedic.findings import Finding, Severity
from trainmedic.live import CONFIRM_ABOVE, CONFIRM_WINDOW, LiveMonitor, TrainingProblemError
from trainmedic.settings import Thresholds


def _monitor() -> tuple[LiveMonitor, list[Finding]]:
    out: list[Finding] = []
    return LiveMonitor(Thresholds(), out.append), out


def _feed(m: LiveMonitor, values: list[float], start: int = 0) -> int:
    for i, v in enumerate(values):
        m.observe("grad_norm", start + i, v)
    return start + len(values)


def test_transient_burst_is_a_note_not_an_alarm() -> None:
    m, out = _monitor()
    s = _feed(m, [1.0 + 0.01 * (i % 7) for i in range(50)])
    s = _feed(m, [40.0, 45.0, 38.0], s)  # three spikes: a candidate, nothing emitted yet
    assert out == []
    _feed(m, [1.0] * CONFIRM_WINDOW, s)
    assert len(out) == 1 and out[0].severity is Severity.INFO and out[0].code == "exploding_gradient"
    assert out[0].evidence["transient"] and out[0].step == 50


def test_sustained_burst_is_confirmed_as_an_error() -> None:
    m, out = _monitor()
    s = _feed(m, [1.0] * 50)
    s = _feed(m, [40.0, 60.0, 90.0], s)
    _feed(m, [100.0 * 1.1**i for i in range(CONFIRM_ABOVE)], s)
    assert [f.severity for f in out] == [Severity.ERROR]
    assert out[0].step == 50 and out[0].evidence["ratio"] > 100


def test_burst_ending_in_nan_names_the_explosion_first() -> None:
    m, out = _monitor()
    s = _feed(m, [1.0] * 50)
    s = _feed(m, [40.0, 400.0, 4000.0], s)
    m.observe("loss", s, float("nan"))
    assert [(f.code, f.severity) for f in out] == [
        ("exploding_gradient", Severity.ERROR),
        ("nonfinite", Severity.ERROR),
    ]


def test_unconfirmed_burst_at_the_end_is_noted_at_close() -> None:
    m, out = _monitor()
    s = _feed(m, [1.0] * 50)
    _feed(m, [40.0, 45.0, 38.0, 1.0], s)
    m.finish(s + 4)
    assert len(out) == 1 and out[0].severity is Severity.INFO and "run ended" in out[0].message


def _moons_fullbatch(run_dir: Path, seed: int, lr: float, steps: int = 300) -> tuple[tm.Run, list[float]]:
    """A healthy program as users write it: full-batch SGD on moons, logits + float targets, raise_on="error"."""
    torch.manual_seed(seed)
    X, y = make_moons(n_samples=1000, noise=0.2, random_state=seed)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed)
    xtr, xte = torch.tensor(Xtr).float(), torch.tensor(Xte).float()
    ttr, tte = torch.tensor(ytr).float().view(-1, 1), torch.tensor(yte).float().view(-1, 1)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    run = tm.watch(model, opt, run_dir=run_dir, raise_on="error", quiet=True)
    losses: list[float] = []
    try:
        for epoch in range(steps):
            logits = model(xtr)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, ttr)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=logits, targets=ttr)
            losses.append(loss.item())
            if epoch % 10 == 9:
                with torch.no_grad():
                    run.evaluate("val", targets=tte, outputs=model(xte))
    finally:
        run.close()
    return run, losses


def test_healthy_full_batch_burst_does_not_stop_training(tmp_path: Path) -> None:
    """Seed 1 of this program has a 35x burst at step 272 that the loss rides out (val accuracy ~0.95)."""
    run, losses = _moons_fullbatch(tmp_path / "r", seed=1, lr=0.5)
    assert len(losses) == 300 and all(math.isfinite(v) for v in losses)
    assert not [f for f in run.findings if f.is_problem]
    # the default schedule reads the gradient norm every 8th step there: the burst is a transient note when
    # enough of its steps are read, and otherwise not seen at all; never an error
    notes = [f for f in run.findings if f.code == "exploding_gradient"]
    assert all(n.severity is Severity.INFO and n.evidence["transient"] for n in notes)
    d = tm.diagnose(tmp_path / "r")
    assert not [f for f in d.findings if f.code == "exploding_gradient" and f.is_problem]


@pytest.mark.parametrize("lr", [0.1, 0.3])
def test_real_explosion_still_stops_training(tmp_path: Path, lr: float) -> None:
    """Linear regression on unscaled inputs with a step past 2/L: the weights and the gradient grow each step."""
    torch.manual_seed(0)
    X = torch.randn(512, 20) * 3.0
    y = X @ torch.randn(20, 1) + 0.1 * torch.randn(512, 1)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", raise_on="error", quiet=True)
    stopped = None
    with pytest.raises(TrainingProblemError) as e:
        for step in range(2000):
            i = (step * 32) % 512
            loss = nn.functional.mse_loss(model(X[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            stopped = step
            run.log(loss=loss)
    run.close()
    assert stopped is not None and stopped < 1000
    assert e.value.finding.code in ("exploding_gradient", "nonfinite")
    assert e.value.finding.severity is Severity.ERROR
