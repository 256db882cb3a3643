"""Small models for the scenarios: ``build_model(config)`` → MLP, CNN, LSTM or Transformer encoder.

Config keys (all optional except what the architecture needs): ``arch`` (mlp/cnn/lstm/transformer),
``width``, ``depth``, ``activation`` (relu/leaky_relu/silu/sigmoid/tanh), ``init``
(default/he/xavier/zeros/constant/tiny/huge), ``dropout``, ``norm`` (none/batch/layer), plus the data's
``input_shape``, ``num_classes`` and ``vocab`` (filled in by :func:`trainmedic.scenarios.train.train_fn`).
Activations are modules (not functions) so that trainmedic's activation probes can see them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import TrainmedicError

ARCHS = ("mlp", "cnn", "lstm", "transformer")
ACTIVATIONS = ("relu", "leaky_relu", "silu", "sigmoid", "tanh")
INITS = ("default", "he", "xavier", "zeros", "constant", "tiny", "huge")
NORMS = ("none", "batch", "layer")


def make_activation(name: str) -> nn.Module:
    table: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,
        "silu": nn.SiLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
    }
    if name not in table:
        raise TrainmedicError(f"`activation` must be one of {', '.join(ACTIVATIONS)}; got {name!r}")
    return table[name]()


def _norm(kind: str, features: int, conv: bool) -> list[nn.Module]:
    if kind == "none":
        return []
    if kind == "batch":
        return [nn.BatchNorm2d(features) if conv else nn.BatchNorm1d(features)]
    if kind == "layer":
        return [nn.GroupNorm(1, features) if conv else nn.LayerNorm(features)]
    raise TrainmedicError(f"`norm` must be one of {', '.join(NORMS)}; got {kind!r}")


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int,
        depth: int,
        activation: str,
        dropout: float,
        norm: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), *_norm(norm, width, False), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = width
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        width: int,
        depth: int,
        activation: str,
        dropout: float,
        norm: str,
    ) -> None:
        super().__init__()
        c = in_shape[0]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Conv2d(c, width, 3, padding=1),
                *_norm(norm, width, True),
                make_activation(activation),
            ]
            if i == depth // 2 - 1 or (depth == 1):
                layers.append(nn.MaxPool2d(2))
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        head: list[nn.Module] = [nn.Flatten()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(c * 4, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class LSTMClassifier(nn.Module):
    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int,
        depth: int,
        activation: str,
        dropout: float,
        norm: str,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            in_features,
            width,
            num_layers=max(1, depth),
            batch_first=True,
            dropout=dropout if depth > 1 else 0.0,
        )
        head: list[nn.Module] = [
            nn.Linear(width, width),
            *_norm(norm, width, False),
            make_activation(activation),
        ]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class TransformerClassifier(nn.Module):
    def __init__(
        self,
        vocab: int,
        length: int,
        num_classes: int,
        width: int,
        depth: int,
        activation: str,
        dropout: float,
        norm: str,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(1, length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            nhead=2,
            dim_feedforward=2 * width,
            dropout=dropout,
            activation=make_activation(activation),
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=max(1, depth), enable_nested_tensor=False)
        self.head = nn.Sequential(*_norm(norm, width, False), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x) + self.pos[:, : x.shape[1]])
        return self.head(h.mean(dim=1))


def apply_init(model: nn.Module, init: str, activation: str = "relu") -> None:
    """(Re)initialize the weights of Linear/Conv/LSTM layers; biases are zeroed except for ``default``.

    ``tiny`` and ``huge`` scale He/Xavier by 1e-3 and 10: the two ways an initial scale goes wrong;
    ``zeros`` and ``constant`` make every unit of a layer identical (symmetry is never broken).
    """
    if init not in INITS:
        raise TrainmedicError(f"`init` must be one of {', '.join(INITS)}; got {init!r}")
    if init == "default":
        return
    relu_like = activation in ("relu", "leaky_relu", "silu")
    for m in model.modules():
        weights: list[torch.Tensor] = []
        biases: list[torch.Tensor] = []
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            weights = [m.weight]
            biases = [m.bias] if m.bias is not None else []
        elif isinstance(m, nn.LSTM):
            weights = [p for n, p in m.named_parameters() if n.startswith("weight")]
            biases = [p for n, p in m.named_parameters() if n.startswith("bias")]
        with torch.no_grad():
            for w in weights:
                fan_in = w[0].numel()
                fan_out = w.shape[0] * (w[0][0].numel() if w.dim() > 2 else 1)
                he = math.sqrt(2.0 / fan_in)
                xavier = math.sqrt(2.0 / (fan_in + fan_out))
                base = he if relu_like else xavier
                if init in ("he", "xavier"):
                    w.normal_(0.0, he if init == "he" else xavier)
                elif init == "zeros":
                    w.zero_()
                elif init == "constant":
                    w.fill_(0.05)
                elif init == "tiny":
                    w.normal_(0.0, base * 1e-3)
                elif init == "huge":
                    w.normal_(0.0, base * 10.0)
            for b in biases:
                b.zero_()


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """The model a scenario config asks for (see the module docstring for the keys)."""
    arch = str(config.get("arch", "mlp"))
    width = int(config.get("width", 64))
    depth = int(config.get("depth", 2))
    activation = str(config.get("activation", "relu"))
    dropout = float(config.get("dropout", 0.0))
    norm = str(config.get("norm", "none"))
    num_classes = int(config["num_classes"])
    shape = tuple(config["input_shape"])
    if width < 1 or depth < 1:
        raise TrainmedicError(
            f"`width` and `depth` must be positive integers; got width={width}, depth={depth}"
        )
    if not 0.0 <= dropout < 1.0:
        raise TrainmedicError(f"`dropout` must be in [0, 1); got {dropout!r}")
    model: nn.Module
    if arch == "mlp":
        model = MLP(math.prod(shape), num_classes, width, depth, activation, dropout, norm)
    elif arch == "cnn":
        if len(shape) != 3:
            raise TrainmedicError(f"`arch` 'cnn' needs image inputs (C, H, W); got input shape {shape}")
        model = CNN(shape, num_classes, width, depth, activation, dropout, norm)
    elif arch == "lstm":
        if len(shape) != 2:
            raise TrainmedicError(f"`arch` 'lstm' needs sequence inputs (L, F); got input shape {shape}")
        model = LSTMClassifier(shape[-1], num_classes, width, depth, activation, dropout, norm)
    elif arch == "transformer":
        vocab = int(config.get("vocab", 0))
        if len(shape) != 1 or vocab < 1:
            raise TrainmedicError(
                f"`arch` 'transformer' needs token inputs (L,) and a vocab; got input shape {shape}, vocab {vocab}"
            )
        if width % 2:
            raise TrainmedicError(f"`width` must be even for the transformer (2 heads); got {width}")
        model = TransformerClassifier(vocab, shape[0], num_classes, width, depth, activation, dropout, norm)
    else:
        raise TrainmedicError(f"`arch` must be one of {', '.join(ARCHS)}; got {arch!r}")
    apply_init(model, str(config.get("init", "default")), activation)
    return model
