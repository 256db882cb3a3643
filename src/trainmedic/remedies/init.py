"""Re-initialize weights with the scheme that fits each layer's activation (remedies ``he_init``,
``xavier_init``).

Why per layer: He (Kaiming) init keeps the activation variance constant through ReLU-family layers, Xavier
(Glorot) through tanh/sigmoid and linear layers. The activation a layer feeds is read from the module order:
the first activation module after a Linear/Conv, skipping "transparent" modules (normalization, dropout,
pooling, flatten), and before the next weight layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TrainmedicError
from ._modules import ACTIVATIONS, WEIGHT_LAYERS, check_module, leaf_modules

INIT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class InitChoice:
    """What :func:`reinit` did to one layer."""

    scheme: str  # "he", "xavier" or "recurrent" (xavier input-hidden, orthogonal hidden-hidden)
    nonlinearity: str  # the torch.nn.init name of the activation the layer feeds ("linear" if none)
    param: float | None  # negative slope for leaky_relu, else None
    std: float | None  # the expected std of the new weights (None for recurrent layers)


def nonlinearity_of(act: nn.Module | None) -> tuple[str, float | None]:
    """The ``torch.nn.init`` nonlinearity name (and parameter) that describes ``act``.

    Smooth ReLU-family activations (SiLU, GELU, ELU, Mish, ...) are treated as ReLU, the usual
    approximation; SELU wants LeCun init, which is He with the ``linear`` gain.
    """
    if act is None:
        return "linear", None
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", float(act.negative_slope)
    if isinstance(act, nn.PReLU):
        return "leaky_relu", float(act.weight.detach().float().mean())
    if isinstance(act, nn.RReLU):
        return "leaky_relu", (act.lower + act.upper) / 2.0
    if isinstance(act, nn.SELU):
        return "linear", None
    if isinstance(act, (nn.Tanh, nn.Hardtanh, nn.Softsign, nn.Tanhshrink)):
        return "tanh", None
    if isinstance(act, (nn.Sigmoid, nn.Hardsigmoid, nn.LogSigmoid)):
        return "sigmoid", None
    if isinstance(act, (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d)):
        return "linear", None
    return "relu", None


def _gain(nonlinearity: str, param: float | None) -> float:
    return float(nn.init.calculate_gain(nonlinearity, param))  # type: ignore[arg-type]


def _fans(layer: nn.Module) -> tuple[int, int]:
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise TrainmedicError(
            f"`layer` must have a weight of at least 2 dimensions (Linear/Conv); got {type(layer).__name__}"
        )
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return int(fan_in), int(fan_out)


def expected_init_std(
    layer: nn.Module, scheme: str, nonlinearity: str = "relu", param: float | None = None
) -> float:
    """The std a freshly initialized weight of ``layer`` should have.

    He (fan-in mode): ``gain / sqrt(fan_in)``; Xavier: ``gain * sqrt(2 / (fan_in + fan_out))``, with
    ``gain = torch.nn.init.calculate_gain(nonlinearity, param)`` (sqrt(2) for ReLU, sqrt(2/(1+a^2)) for
    LeakyReLU with slope a, 5/3 for tanh, 1 for sigmoid/linear). Normal and uniform variants share the std.
    """
    fan_in, fan_out = _fans(layer)
    gain = _gain(nonlinearity, param)
    if scheme == "he":
        return gain / math.sqrt(fan_in)
    if scheme == "xavier":
        return gain * math.sqrt(2.0 / (fan_in + fan_out))
    raise TrainmedicError(f"`scheme` must be 'he' or 'xavier'; got {scheme!r}")


def following_activations(model: nn.Module) -> dict[str, nn.Module | None]:
    """For each Linear/Conv layer, the activation module it feeds (None if a weight layer or the end of
    the model comes first)."""
    leaves = leaf_modules(model)
    out: dict[str, nn.Module | None] = {}
    for i, (path, m) in enumerate(leaves):
        if not isinstance(m, INIT_LAYERS):
            continue
        act: nn.Module | None = None
        for _, nxt in leaves[i + 1 :]:
            if isinstance(nxt, ACTIVATIONS):
                act = nxt
                break
            if isinstance(nxt, WEIGHT_LAYERS):
                break
        out[path] = act
    return out


def _init_weight(
    w: torch.Tensor, scheme: str, nonlinearity: str, param: float | None, distribution: str
) -> None:
    if scheme == "he":
        a = 0.0 if param is None else param
        if distribution == "normal":
            nn.init.kaiming_normal_(w, a=a, mode="fan_in", nonlinearity=nonlinearity)  # type: ignore[arg-type]
        else:
            nn.init.kaiming_uniform_(w, a=a, mode="fan_in", nonlinearity=nonlinearity)  # type: ignore[arg-type]
    else:
        gain = _gain(nonlinearity, param)
        if distribution == "normal":
            nn.init.xavier_normal_(w, gain=gain)
        else:
            nn.init.xavier_uniform_(w, gain=gain)


def _init_recurrent(m: nn.RNNBase, forget_bias: float) -> None:
    """Xavier per gate for input-hidden weights, orthogonal per gate for hidden-hidden, zero biases."""
    gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
    h = m.hidden_size
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("weight_ih"):
                for g in range(gates):
                    nn.init.xavier_uniform_(p[g * h : (g + 1) * h])
            elif name.startswith("weight_hh"):
                for g in range(gates):
                    nn.init.orthogonal_(p[g * h : (g + 1) * h])
            elif name.startswith("weight_hr"):  # LSTM projection
                nn.init.xavier_uniform_(p)
            elif name.startswith("bias"):
                p.zero_()
                if m.mode == "LSTM" and forget_bias and name.startswith("bias_ih"):
                    p[h : 2 * h].fill_(forget_bias)  # gate order: input, forget, cell, output


def reinit(
    model: nn.Module,
    scheme: str = "auto",
    distribution: str = "normal",
    fallback_nonlinearity: str = "relu",
    forget_bias: float = 0.0,
    generator_seed: int | None = None,
) -> dict[str, InitChoice]:
    """Re-initialize every Linear/Conv/RNN layer of ``model`` in place; return the choice per layer path.

    Args:
        scheme: ``auto`` — He for layers feeding a ReLU-family activation (with its negative slope), Xavier
            with the activation's gain for tanh/sigmoid, Xavier (gain 1) for the last weight layer and for
            layers feeding straight into another weight layer. ``he`` / ``xavier`` force one scheme on
            every Linear/Conv layer, still with the gain of the activation each one feeds.
        distribution: ``normal`` or ``uniform`` (same std either way).
        fallback_nonlinearity: the activation assumed after hidden layers when the model has no
            activation *modules* at all — what functional activations (``F.relu`` in ``forward``) look
            like. In a model with activation modules, a layer feeding straight into another weight layer
            counts as linear.
        forget_bias: LSTM forget-gate bias (0 = all biases zero; 1.0 is a common alternative).
        generator_seed: seed torch's global RNG first, for a reproducible re-init.

    Biases are zeroed. Normalization layers and embeddings are left alone.
    """
    check_module(model)
    if scheme not in ("auto", "he", "xavier"):
        raise TrainmedicError(f"`scheme` must be 'auto', 'he' or 'xavier'; got {scheme!r}")
    if distribution not in ("normal", "uniform"):
        raise TrainmedicError(f"`distribution` must be 'normal' or 'uniform'; got {distribution!r}")
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    follows = following_activations(model)
    layer_paths = [p for p, m in leaf_modules(model) if isinstance(m, INIT_LAYERS)]
    last = layer_paths[-1] if layer_paths else None
    has_activation_modules = any(isinstance(m, ACTIVATIONS) for _, m in leaf_modules(model))
    choices: dict[str, InitChoice] = {}
    seen: set[int] = set()
    for path, m in leaf_modules(model):
        if id(m) in seen:
            continue
        if isinstance(m, nn.RNNBase):
            seen.add(id(m))
            _init_recurrent(m, forget_bias)
            choices[path] = InitChoice("recurrent", "tanh", None, None)
            continue
        if not isinstance(m, INIT_LAYERS):
            continue
        seen.add(id(m))
        act = follows.get(path)
        nl, param = nonlinearity_of(act)
        if act is None and path != last and not has_activation_modules:
            nl, param = fallback_nonlinearity, None
        if scheme != "auto":
            chosen = scheme
        elif isinstance(act, nn.SELU) and path != last:
            chosen = "he"  # LeCun init: He with the linear gain, what self-normalizing networks need
        elif path == last or nl in ("tanh", "sigmoid", "linear"):
            chosen = "xavier"
        else:
            chosen = "he"
        weight = m.weight
        assert isinstance(weight, torch.Tensor)
        _init_weight(weight, chosen, nl, param, distribution)
        bias = getattr(m, "bias", None)
        if isinstance(bias, torch.Tensor):
            with torch.no_grad():
                bias.zero_()
        choices[path] = InitChoice(chosen, nl, param, expected_init_std(m, chosen, nl, param))
    return choices
