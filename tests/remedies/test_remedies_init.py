from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import expected_init_std, following_activations, reinit


def test_scheme_chosen_from_following_activation() -> None:
    model = nn.Sequential(
        nn.Linear(512, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.Dropout(0.1),
        nn.LeakyReLU(0.2),
        nn.Linear(512, 512),
        nn.Tanh(),
        nn.Linear(512, 512),
        nn.Sigmoid(),
        nn.Linear(512, 10),
    )
    torch.manual_seed(0)
    choices = reinit(model)
    assert {k: (c.scheme, c.nonlinearity) for k, c in choices.items()} == {
        "0": ("he", "relu"),
        "3": ("he", "leaky_relu"),
        "6": ("xavier", "tanh"),
        "8": ("xavier", "sigmoid"),
        "10": ("xavier", "linear"),
    }
    assert choices["3"].param == pytest.approx(0.2)
    expected = {
        "0": math.sqrt(2.0) / math.sqrt(512),
        "3": math.sqrt(2.0 / (1 + 0.2**2)) / math.sqrt(512),
        "6": 5.0 / 3.0 * math.sqrt(2.0 / 1024),
        "8": math.sqrt(2.0 / 1024),
    }
    for path, std in expected.items():
        layer = model[int(path)]
        assert choices[path].std == pytest.approx(std)
        assert float(layer.weight.detach().std()) == pytest.approx(std, rel=0.02)
        assert torch.count_nonzero(layer.bias) == 0


def test_expected_std_formulas_conv_and_uniform() -> None:
    conv = nn.Conv2d(64, 128, 3)
    fan_in, fan_out = 64 * 9, 128 * 9
    assert expected_init_std(conv, "he", "relu") == pytest.approx(math.sqrt(2 / fan_in))
    assert expected_init_std(conv, "xavier", "tanh") == pytest.approx(
        5 / 3 * math.sqrt(2 / (fan_in + fan_out))
    )
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(128, 8, 1))
    torch.manual_seed(1)
    choices = reinit(model, distribution="uniform")
    assert choices["0"].scheme == "he"
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    with pytest.raises(TrainmedicError, match="`scheme`"):
        expected_init_std(conv, "lecun")


def test_forced_scheme_and_functional_fallback() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(256, 256)
            self.b = nn.Linear(256, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    net = Net()
    assert following_activations(net) == {"a": None, "b": None}
    choices = reinit(net)
    assert (choices["a"].scheme, choices["a"].nonlinearity) == ("he", "relu")
    assert choices["b"].scheme == "xavier"
    forced = reinit(net, scheme="xavier")
    assert forced["a"].scheme == "xavier"


def test_recurrent_init() -> None:
    lstm = nn.LSTM(16, 32, num_layers=2)
    choices = reinit(nn.Sequential(lstm), forget_bias=1.0)
    assert choices["0"].scheme == "recurrent"
    w_hh = lstm.weight_hh_l0
    for g in range(4):
        block = w_hh[g * 32 : (g + 1) * 32]
        torch.testing.assert_close(block @ block.T, torch.eye(32), atol=1e-5, rtol=0)
    assert torch.all(lstm.bias_ih_l1[32:64] == 1.0) and torch.all(lstm.bias_hh_l1 == 0.0)
    bound = math.sqrt(6.0 / (16 + 32))
    assert float(lstm.weight_ih_l0.detach().abs().max()) <= bound
