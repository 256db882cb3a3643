"""Small real training runs and plain-torch reference measurements shared by the recorder tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import trainmedic as tm


def digits(n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    X = torch.tensor(d.data[:n] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target[:n], dtype=torch.long)
    return X, y


def mlp(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), act(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(8 * 64, 10),
    )


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.reshape(-1, 8, 8))
        return self.head(out[:, -1])


class TransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.act = nn.GELU()
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x.reshape(-1, 8, 8)))
        return self.head(self.act(h.mean(dim=1)))


class Reference:
    """Plain-torch measurements taken by separate optimizer hooks registered *after* tm.watch's.

    Per step: the loss, per-layer gradient norms (sqrt of the sum of each parameter's squared norm), weight
    norms after the step, update norms (after - before), computed naively with ``Tensor.norm``.
    """

    def __init__(self, run: Any, model: nn.Module, opt: torch.optim.Optimizer, prefix: str = "") -> None:
        self.layers: dict[str, list[nn.Parameter]] = {}
        for path, mod in model.named_modules():
            direct = list(mod.parameters(recurse=False))
            if direct:
                self.layers[prefix + (path or type(mod).__name__)] = direct
        self.grad: list[dict[str, float]] = []
        self.weight: list[dict[str, float]] = []
        self.update: list[dict[str, float]] = []
        self.global_grad: list[float] = []
        self.lr: list[float] = []
        self._before: dict[str, list[torch.Tensor]] = {}
        opt.register_step_pre_hook(self._pre)
        opt.register_step_post_hook(self._post)

    @staticmethod
    def _norm(ts: list[torch.Tensor]) -> float:
        return float(torch.sqrt(sum(t.double().norm() ** 2 for t in ts)))

    def _pre(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        self.grad.append(
            {k: self._norm([p.grad for p in ps if p.grad is not None]) for k, ps in self.layers.items()}
        )
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        self.global_grad.append(self._norm(grads))
        self.lr.append(float(opt.param_groups[0]["lr"]))
        self._before = {k: [p.detach().clone() for p in ps] for k, ps in self.layers.items()}

    def _post(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        self.weight.append({k: self._norm([p.detach() for p in ps]) for k, ps in self.layers.items()})
        self.update.append(
            {
                k: self._norm([p.detach() - b for p, b in zip(ps, self._before[k])])
                for k, ps in self.layers.items()
            }
        )


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 1,
    bs: int = 64,
    run: Any = None,
    before_step: Callable[[int], None] | None = None,
    scheduler: Any = None,
) -> list[float]:
    """A plain loop; logs the loss and evaluates train/val when a run is given. Returns the losses."""
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    step = 0
    for _ in range(epochs):
        for i in range(0, len(X) - bs + 1, bs):
            if before_step is not None:
                before_step(step)
            opt.zero_grad()
            loss = loss_fn(model(X[i : i + bs]), y[i : i + bs])
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(float(loss.detach()))
            if run is not None:
                run.log(loss=loss)
            step += 1
        with torch.no_grad():  # the same forward passes with or without a run (BatchNorm statistics)
            logits = model(X)
            if run is not None:
                run.evaluate("train", y, logits, loss=loss_fn(logits, y))
    return losses


def watched(model: nn.Module, opt: Any, d: Path, **kw: Any) -> Any:
    kw.setdefault("quiet", True)
    return tm.watch(model, opt, run_dir=d, overwrite=True, **kw)


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def close(
    a: np.ndarray | list[float], b: np.ndarray | list[float], rtol: float = 1e-4, atol: float = 1e-6
) -> bool:
    return bool(
        np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol, atol=atol)
    )
