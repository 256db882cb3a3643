"""The activation applied to a model's output is not judged saturated: a confident classifier's sigmoid sits on
its flat tails by design (under cross-entropy the loss's gradient, p - y, does not pass through them). A hidden
activation that saturates is still found, also a shared ``self.act`` module registered after the output layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_moons
from torch import nn

import trainmedic as tm


def _moons() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    X, y = make_moons(n_samples=1000, noise=0.2, random_state=0)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    return Xt[:800], yt[:800], Xt[800:], yt[800:]


def _train(model: nn.Module, run_dir: Path, epochs: int, lr: float) -> tm.Run:
    Xtr, ytr, Xva, yva = _moons()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    run = tm.watch(model, opt, run_dir=run_dir, quiet=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        perm = torch.randperm(800, generator=g)
        model.train()
        for i in range(0, 800, 32):
            idx = perm[i : i + 32]
            loss = nn.functional.binary_cross_entropy(model(Xtr[idx]).squeeze(1), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
        model.eval()
        with torch.no_grad():
            for split, X, y in (("train", Xtr, ytr), ("val", Xva, yva)):
                p = model(X).squeeze(1)
                run.evaluate(split, y.long(), p, loss=nn.functional.binary_cross_entropy(p, y))
    run.close()
    return run


def test_a_confident_sigmoid_output_is_not_gradient_masking(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1), nn.Sigmoid()
    )
    _train(model, tmp_path / "r", epochs=40, lr=0.1)
    r = tm.open_run(tmp_path / "r")
    assert r.meta["activation_widths"] == {"1": 32, "3": 32, "5": 1}
    sat = r.layer_stat("act_saturated")
    half = sat.values[len(sat.values) // 2 :]
    out_share = float(np.median(half[:, sat.layers.index("5")]))
    # the output sigmoid is saturated as the check measures it (so without the rule the check would fire) ...
    assert out_share >= tm.Thresholds().saturated_fraction, out_share
    d = tm.diagnose(tmp_path / "r")
    # ... and the healthy run gets no gradient_masking finding at all, not even a note
    assert "gradient_masking" not in {f.code for f in d.findings}, d.findings
    assert d.healthy and r.eval_series("val", "accuracy").values[-1] > 0.9


class SharedTanh(nn.Module):
    """One ``self.act`` used between the hidden layers, registered after the output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 32)
        self.fc2 = nn.Linear(32, 32)
        self.out = nn.Linear(32, 1)
        self.act = nn.Tanh()
        with torch.no_grad():  # N(0, 10) weights: the hidden tanh units sit on their tails
            for lin in (self.fc1, self.fc2):
                lin.weight.normal_(0.0, 10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.act(self.fc2(self.act(self.fc1(x))))))


def test_a_saturated_hidden_activation_registered_after_the_output_layer_is_still_found(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    _train(SharedTanh(), tmp_path / "r", epochs=8, lr=0.05)
    r = tm.open_run(tmp_path / "r")
    summary = r.meta["models"][0]["layers"]
    assert summary[-1]["name"] == "out" and summary[-1]["activation_module"] == "act"  # by module order
    assert r.meta["activation_widths"] == {"act": 32}  # ... but the hidden width, not the output's 1
    found = [f for f in tm.diagnose(tmp_path / "r").findings if f.code == "gradient_masking"]
    assert found and found[0].layer == "act", found
