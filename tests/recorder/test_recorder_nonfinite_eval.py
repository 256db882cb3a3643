"""A diverged model's NaN outputs are recorded as a finding, not raised as bad input."""

from __future__ import annotations

import torch
from torch import nn

import trainmedic as tm


def test_nan_outputs_in_evaluate_are_recorded_not_raised(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True)
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        run.log(loss=loss)
    out = model(x).detach()
    run.evaluate("val", y, out)
    out[0, 0] = float("nan")
    res = run.evaluate("val", y, out)
    run.close()
    assert res["nonfinite"] is True and abs(res["nonfinite_share"] - 1 / out.numel()) < 1e-6
    r = tm.open_run(tmp_path / "r")
    assert r.eval_series("val", "nonfinite_outputs").steps.tolist() == [1]
    assert [e["code"] for e in r.events("nonfinite_outputs")] == ["nonfinite"]
    assert [f.code for f in run.findings] == ["nonfinite"]
    assert tm.diagnose(tmp_path / "r").has("nonfinite", "error")


def test_progress_console_follows_the_run(tmp_path, capsys) -> None:
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with tm.watch(model, opt, run_dir=tmp_path / "p", quiet=True, progress=True, total_steps=5) as run:
        for _ in range(5):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            run.log(loss=loss)
        run.evaluate("val", y, model(x).detach())
    out = capsys.readouterr()
    text = out.out + out.err
    assert "val" in text and "accuracy" in text
