from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import RemedyWarning, count_activations, swap_activations


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Tanh()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Sigmoid()])
        self.heads = nn.ModuleDict({"a": nn.Sequential(nn.Linear(4, 4), nn.ReLU())})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc(x))
        for layer in self.layers:
            x = layer(x)
        return self.heads["a"](x)


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def test_swap_in_nested_containers_and_attributes() -> None:
    model = nn.Sequential(Block(), nn.Linear(4, 2))
    changed = swap_activations(model, to="leaky_relu", negative_slope=0.1)
    assert sorted(changed) == ["0.act", "0.heads.a.1", "0.layers.1"]
    assert count_activations(model) == {"LeakyReLU": 3}
    assert model[0].act.negative_slope == 0.1


def test_swapped_model_matches_hand_built_equivalent() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3))
    ref = nn.Sequential(nn.Linear(5, 8), nn.SiLU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 3))
    ref.load_state_dict(model.state_dict())
    assert swap_activations(model, to="silu") == ["1", "3"]
    x = torch.randn(16, 5)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_output_activation_is_kept_and_inplace_preserved() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True), nn.Linear(2, 1), nn.Sigmoid())
    assert swap_activations(model) == ["1"]
    assert isinstance(model[3], nn.Sigmoid)
    assert isinstance(model[1], nn.LeakyReLU) and model[1].inplace
    assert swap_activations(nn.Sequential(nn.Linear(2, 1), nn.Sigmoid()), skip_output=False) == ["1"]


def test_shared_instance_stays_shared() -> None:
    act = nn.ReLU()
    model = nn.Sequential(nn.Linear(2, 2), act, nn.Linear(2, 2), act, nn.Linear(2, 2))
    assert swap_activations(model) == ["1", "3"]
    assert model[1] is model[3]


def test_custom_mapping_and_prelu_on_model_dtype() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    changed = swap_activations(model, mapping={nn.Tanh: "prelu"})
    assert changed == ["1"]
    assert isinstance(model[1], nn.PReLU) and model[1].weight.dtype == torch.float64
    assert isinstance(model[3], nn.ReLU)
    model(torch.randn(3, 2, dtype=torch.float64))


def test_functional_model_warns() -> None:
    with pytest.warns(RemedyWarning, match="functional"):
        assert swap_activations(Functional()) == []


def test_nothing_to_swap_warns() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU(), nn.Linear(2, 2))
    with pytest.warns(RemedyWarning, match="no activation module matched"):
        assert swap_activations(model) == []


def test_bad_arguments() -> None:
    with pytest.raises(TrainmedicError, match="`to` must be one of"):
        swap_activations(nn.Sequential(nn.ReLU()), to="swish2")
    with pytest.raises(TrainmedicError, match="`model` must be a torch.nn.Module"):
        swap_activations("model")  # type: ignore[arg-type]
