"""Shared helpers for walking and editing a module tree (private to the remedies package).

The remedies edit models in place: they replace or insert child modules while keeping the names of the
existing ones, so that state-dict keys of untouched layers (and the optimizer's parameter objects) stay
valid.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from torch import nn

from ..errors import TrainmedicError


class RemedyWarning(UserWarning):
    """A remedy could not do (all of) what it was asked; the model is left usable."""


# Activations that keep a gradient for positive inputs (and usually beyond): the targets of a swap.
RELU_FAMILY: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)
# Activations whose gradient vanishes for large |x|.
SATURATING: tuple[type[nn.Module], ...] = (
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
)
# Output activations: never swapped, but they do end a layer.
OUTPUT_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d)
ACTIVATIONS: tuple[type[nn.Module], ...] = RELU_FAMILY + SATURATING + OUTPUT_ACTIVATIONS

CONV: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,
    nn.RNNBase,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.MultiheadAttention,
)
SEQUENCE_MODULES: tuple[type[nn.Module], ...] = (
    nn.RNNBase,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.Embedding,
    nn.EmbeddingBag,
)
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())  # RMSNorm is torch >= 2.4
DROPOUTS: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)


def is_activation(m: nn.Module) -> bool:
    return isinstance(m, ACTIVATIONS)


def check_module(model: object, arg: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TrainmedicError(f"`{arg}` must be a torch.nn.Module; got {type(model).__name__}")
    return model


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules without children, in registration order (the order most models run them in).

    Recurrent and attention modules count as leaves even when they hold children. A module used at several
    places is listed once per place.
    """
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, m: nn.Module) -> None:
        children = list(m.named_children())
        if not children or isinstance(m, (nn.RNNBase, nn.MultiheadAttention)):
            out.append((prefix, m))
            return
        for name, child in children:
            walk(f"{prefix}.{name}" if prefix else name, child)

    walk("", model)
    return out


def all_paths(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every (path, module) below ``model``, shared modules once per place they are used."""
    return model.named_modules(remove_duplicate=False)


def parent_of(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    if "." in path:
        parent_path, name = path.rsplit(".", 1)
        return model.get_submodule(parent_path), name
    return model, path


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` where ``path`` is; works for Sequential/ModuleList/ModuleDict items and attributes."""
    parent, name = parent_of(model, path)
    if name not in parent._modules:
        raise TrainmedicError(f"`path` must name a child module of the model; got {path!r}")
    parent._modules[name] = new


def insert_after(seq: nn.Sequential, after: list[tuple[str, str, nn.Module]]) -> None:
    """Insert modules into ``seq`` in place: each ``(existing_name, new_name, module)`` goes right after
    ``existing_name``. Existing names are kept, so their state-dict keys do not move."""
    by_name: dict[str, list[tuple[str, nn.Module]]] = {}
    for existing, new_name, module in after:
        if new_name in seq._modules:
            raise TrainmedicError(f"cannot insert {new_name!r} into a Sequential that already has that name")
        by_name.setdefault(existing, []).append((new_name, module))
    rebuilt: OrderedDict[str, Any] = OrderedDict()
    for name, module in seq._modules.items():
        rebuilt[name] = module
        for new_name, new_module in by_name.get(name, []):
            rebuilt[new_name] = new_module
    seq._modules.clear()
    seq._modules.update(rebuilt)


def fresh_name(seq: nn.Module, base: str) -> str:
    name, k = base, 1
    while name in seq._modules:
        k += 1
        name = f"{base}{k}"
    return name


def param_device_dtype(m: nn.Module) -> tuple[object, object]:
    for p in m.parameters(recurse=False):
        return p.device, p.dtype
    for p in m.parameters():
        return p.device, p.dtype
    return None, None


def warn(message: str) -> None:
    warnings.warn(message, RemedyWarning, stacklevel=3)
