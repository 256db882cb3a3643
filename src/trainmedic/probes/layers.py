"""Which modules of a model are *layers* (own parameters) and which are *activations*.

Layer names are module paths (``"features.0"``); with several models they are prefixed by the model's name
(``"generator/net.0"``). The order is registration order, which for ordinary models is input → output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# Activation module types and how their output is judged.
RELU_LIKE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
LEAKY_LIKE: tuple[type[nn.Module], ...] = (
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)
SIGMOID_LIKE: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Hardsigmoid)
TANH_LIKE: tuple[type[nn.Module], ...] = (nn.Tanh, nn.Hardtanh, nn.Softsign)
RECURRENT: tuple[type[nn.Module], ...] = (nn.RNN, nn.LSTM, nn.GRU)
CONV: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
NORM: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.RMSNorm,
)


# Activation modules of other libraries, by class name (never imported here): Hugging Face transformers'
# ``ACT2CLS`` (BERT's ``GELUActivation``, GPT-2's ``NewGELUActivation``, Llama's ``SiLUActivation`` …).
NAMED_KINDS: dict[str, str] = {
    "GELUActivation": "leaky",
    "NewGELUActivation": "leaky",
    "FastGELUActivation": "leaky",
    "QuickGELUActivation": "leaky",
    "AccurateGELUActivation": "leaky",
    "ClippedGELUActivation": "leaky",
    "GELUTanh": "leaky",
    "PytorchGELUTanh": "leaky",
    "SiLUActivation": "leaky",
    "MishActivation": "leaky",
    "XIELUActivation": "leaky",
    "SqrtSoftplusActivation": "leaky",
    "ReLUSquaredActivation": "relu",
    "LaplaceActivation": "sigmoid",  # a Gaussian CDF: (0, 1)-bounded like a sigmoid
}


def activation_kind(module: nn.Module) -> str | None:
    """``"relu"``, ``"leaky"``, ``"sigmoid"``, ``"tanh"`` or ``"recurrent"`` (tanh-bounded outputs); else None."""
    if isinstance(module, RELU_LIKE):
        return "relu"
    if isinstance(module, LEAKY_LIKE):
        return "leaky"
    if isinstance(module, SIGMOID_LIKE):
        return "sigmoid"
    if isinstance(module, TANH_LIKE):
        return "tanh"
    if isinstance(module, RECURRENT):
        return "recurrent"
    return NAMED_KINDS.get(type(module).__name__)


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose hooks fire: strips DistributedDataParallel/DataParallel and ``torch.compile`` wrappers."""
    seen = 0
    while seen < 5:
        seen += 1
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            break
    return model


def is_compiled(model: nn.Module) -> bool:
    return hasattr(model, "_orig_mod") or (
        isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
        and hasattr(model.module, "_orig_mod")
    )


@dataclass
class LayerIndex:
    """Parameter-owning layers and activation modules of one or more models, with stable names."""

    layers: list[str] = field(default_factory=list)  # parameter-owning modules
    layer_modules: list[nn.Module] = field(default_factory=list)
    param_layer: dict[int, int] = field(default_factory=dict)  # id(param) -> index into layers
    param_name: dict[int, str] = field(default_factory=dict)
    activations: list[str] = field(default_factory=list)
    activation_modules: list[nn.Module] = field(default_factory=list)
    activation_kinds: list[str] = field(default_factory=list)
    activation_unit_dim: list[int] = field(default_factory=list)  # 1 for conv feature maps, -1 otherwise

    @classmethod
    def build(cls, models: dict[str, nn.Module]) -> LayerIndex:
        idx = cls()
        prefix_names = len(models) > 1
        for mname, model in models.items():
            last_was_conv = False
            for path, mod in unwrap(model).named_modules():
                name = (
                    (f"{mname}/{path}" if path else mname) if prefix_names else (path or type(mod).__name__)
                )
                direct = [p for p in mod.parameters(recurse=False)]
                if direct:
                    i = len(idx.layers)
                    idx.layers.append(name)
                    idx.layer_modules.append(mod)
                    for pname, p in mod.named_parameters(recurse=False):
                        idx.param_layer.setdefault(id(p), i)
                        idx.param_name.setdefault(id(p), f"{name}.{pname}")
                    if not isinstance(mod, NORM):
                        last_was_conv = isinstance(mod, CONV)
                kind = activation_kind(mod)
                if kind is not None:
                    idx.activations.append(name)
                    idx.activation_modules.append(mod)
                    idx.activation_kinds.append(kind)
                    idx.activation_unit_dim.append(1 if last_was_conv else -1)
        return idx

    def params_of(self, optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
        return [p for g in optimizer.param_groups for p in g["params"]]
