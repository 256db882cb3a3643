from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import insert_normalization


@pytest.fixture(autouse=True)
def _one_thread():  # tiny models: thread contention on a busy 2-core box costs 50x
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_inserts_batchnorm_keeps_names_and_forward() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 16),
        nn.Tanh(),
        nn.Linear(16, 3),
    )
    before = set(model.state_dict())
    x = torch.randn(5, 1, 8, 8)
    paths = insert_normalization(model, example_input=x)
    assert paths == ["0_norm", "3_norm"]
    assert isinstance(model.get_submodule("0_norm"), nn.BatchNorm2d)
    assert isinstance(model.get_submodule("3_norm"), nn.BatchNorm1d)
    assert before <= set(model.state_dict())
    assert [type(m).__name__ for m in model][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert model(x).shape == (5, 3)
    assert model[2] is model.get_submodule("1")  # integer indexing is positional, names stay


def test_layer_kind_and_sequence_auto_detection() -> None:
    model = nn.Sequential(nn.Conv1d(3, 6, 3), nn.ReLU(), nn.Conv1d(6, 2, 1))
    assert insert_normalization(model, kind="layer") == ["0_norm"]
    assert isinstance(model[1], nn.GroupNorm) and model[1].num_groups == 1

    seq = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(4, 7, 8)  # (N, L, F): BatchNorm1d would treat L as channels
    assert insert_normalization(seq, example_input=x) == ["0_norm"]
    assert isinstance(seq[1], nn.LayerNorm)
    assert seq(x).shape == (4, 7, 2)

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.mlp = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3))

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.mlp(self.emb(t))

    tagger = Tagger()
    assert insert_normalization(tagger) == ["mlp.0_norm"]
    assert isinstance(tagger.mlp[1], nn.LayerNorm)


def test_same_dtype_mode_and_optimizer_group() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double().eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    insert_normalization(model, kind="batch", optimizer=opt)
    bn = model[1]
    assert bn.weight.dtype == torch.float64 and not bn.training
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["params"][0] is bn.weight


def test_broken_forward_is_undone() -> None:
    class Weird(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            assert len(self.body) == 2, "depends on the container length"
            return h

    model = Weird()
    with pytest.raises(TrainmedicError, match="change was undone"):
        insert_normalization(model, example_input=torch.randn(2, 4))
    assert len(model.body) == 2
    with pytest.raises(TrainmedicError, match="`kind`"):
        insert_normalization(model, kind="group")


def _train_digits(model: nn.Module, epochs: int = 8) -> float:
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(X).argmax(1) == y).float().mean())


def _sigmoid_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.Sigmoid(), nn.Linear(64, 64), nn.Sigmoid(), nn.Linear(64, 10))


def test_normalized_model_learns_digits_where_plain_one_stalls() -> None:
    assert _train_digits(_sigmoid_net()) < 0.3  # saturated sigmoids + plain SGD: stuck near chance
    model = _sigmoid_net()
    assert insert_normalization(model) == ["0_norm", "2_norm"]
    assert _train_digits(model) > 0.9
