"""Which optimizer step a logged loss belongs to, also when a GradScaler skips the first steps (AMP start-up)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _recorder_helpers import digits, mlp, watched
from torch import nn

import trainmedic as tm


@pytest.mark.parametrize("log_after_step", [True, False], ids=["log-after-step", "log-before-step"])
@pytest.mark.parametrize("skipped", [0, 3])
def test_logged_loss_belongs_to_its_optimizer_step(
    tmp_path: Path, log_after_step: bool, skipped: int
) -> None:
    """The first ``skipped`` iterations have NaN gradients, so the GradScaler skips ``optimizer.step``: no hook
    runs. The loss recorded at step s must be the loss of the iteration whose optimizer step was s."""
    X, y = digits(256)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    run = watched(model, opt, tmp_path, every=1)
    loss_of_step: dict[int, float] = {}
    for it in range(12):
        xb, yb = X[it * 16 : (it + 1) * 16], y[it * 16 : (it + 1) * 16]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        bad = float("nan") if it < skipped else 1.0
        scaler.scale(loss * bad).backward()
        if not log_after_step:
            run.log(loss=loss)
        before = run.step
        scaler.step(opt)
        scaler.update()
        if run.step > before:  # a real step: this iteration's loss is that step's
            loss_of_step[before] = loss.item()
        if log_after_step:
            run.log(loss=loss)
    run.close()
    assert len(loss_of_step) == 12 - skipped
    r = tm.open_run(tmp_path)
    rec = r.scalar("loss")
    last: dict[int, float] = {}
    for s, v in zip(rec.steps.tolist(), rec.values.tolist()):
        last[int(s)] = v  # skipped iterations repeat a step number; the step's own loss comes last
    for s, v in loss_of_step.items():
        assert math.isclose(last[s], v, rel_tol=1e-6), (s, last[s], v, rec.steps.tolist())
    assert list(r.scalar("grad_norm").steps) == list(range(12 - skipped))
    assert r.meta["amp"]["grad_scaler"] is True


def test_nan_loss_on_a_quiet_step_stops_training_at_that_step(tmp_path: Path) -> None:
    """Between statistics, run.log takes a short path; a non-finite loss still reaches the live check at once."""
    from trainmedic.live import TrainingProblemError

    X, y = digits(256)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = watched(model, opt, tmp_path, raise_on="error")
    stopped_at, short = None, 0
    try:
        for step in range(300):
            i = (step * 16) % 240
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X[i : i + 16]), y[i : i + 16])
            loss.backward()
            opt.step()
            short += bool(run._log_sinks)  # the short path is armed
            run.log(loss=loss * float("nan") if step == 157 else loss)
    except TrainingProblemError as e:
        stopped_at, finding = step, e.finding
    run.close()
    assert stopped_at == 157 and finding.code == "nonfinite" and finding.step == 157
    assert short > 100  # most steps before it took the short path
