"""Swap saturating or dying activations for non-saturating ones (remedy ``non_saturating_activation``).

Only activation *modules* can be swapped: an activation called as a function inside ``forward``
(``F.relu(x)``, ``torch.sigmoid(x)``, ``TransformerEncoderLayer(activation="relu")``) is code, not state, and
no remedy can reach it. :func:`swap_activations` warns (:class:`RemedyWarning`) when it finds nothing to swap,
and says whether that is because the model has no activation modules at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from ..errors import TrainmedicError
from ._modules import (
    ACTIVATIONS,
    RELU_FAMILY,
    SATURATING,
    all_paths,
    check_module,
    leaf_modules,
    replace_module,
    warn,
)

ActivationFactory = Callable[[nn.Module], nn.Module]  # old module -> new module


def _inplace(old: nn.Module) -> bool:
    return bool(getattr(old, "inplace", False))


def activation_factory(to: str, negative_slope: float = 0.01) -> ActivationFactory:
    """The constructor for target ``to``; keeps ``inplace`` of the module it replaces where both allow it."""
    factories: dict[str, ActivationFactory] = {
        "leaky_relu": lambda old: nn.LeakyReLU(negative_slope, inplace=_inplace(old)),
        "silu": lambda old: nn.SiLU(inplace=_inplace(old)),
        "relu": lambda old: nn.ReLU(inplace=_inplace(old)),
        "gelu": lambda old: nn.GELU(),
        "elu": lambda old: nn.ELU(inplace=_inplace(old)),
        "selu": lambda old: nn.SELU(inplace=_inplace(old)),
        "mish": lambda old: nn.Mish(inplace=_inplace(old)),
        "prelu": lambda old: nn.PReLU(init=negative_slope),
    }
    if to not in factories:
        raise TrainmedicError(f"`to` must be one of {', '.join(sorted(factories))}; got {to!r}")
    return factories[to]


_TARGET_TYPES: dict[str, type[nn.Module]] = {
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "mish": nn.Mish,
    "prelu": nn.PReLU,
}

# What is swapped by default: ReLU (dies) and the saturating family.
DEFAULT_SOURCES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6) + SATURATING


def swap_activations(
    model: nn.Module,
    mapping: Mapping[type[nn.Module], str | ActivationFactory] | None = None,
    to: str = "leaky_relu",
    negative_slope: float = 0.01,
    skip_output: bool = True,
) -> list[str]:
    """Replace activation modules in place anywhere in ``model`` and return the changed module paths.

    Args:
        model: any module tree (nested Sequentials, ModuleLists, ModuleDicts, custom attributes).
        mapping: ``{old activation type: target name or factory(old) -> new module}``; types not in it are
            left alone. ``None`` maps ReLU/ReLU6 and the saturating family (Sigmoid, Tanh, Hardtanh, ...)
            to ``to``.
        to: the target for the default mapping: ``leaky_relu``, ``silu``, ``relu``, ``gelu``, ``elu``,
            ``selu``, ``mish`` or ``prelu``.
        negative_slope: slope of LeakyReLU (and initial slope of PReLU).
        skip_output: leave an activation that is the model's very last module alone. An output sigmoid or
            tanh belongs to the loss (BCELoss, a bounded regression target), not to the hidden layers.

    A module instance shared by several paths is replaced by one shared new instance. Swapped activations
    whose parameters are new (PReLU) must be added to the optimizer by the caller
    (:func:`trainmedic.remedies.add_missing_params`).
    """
    check_module(model)
    if mapping is None:
        target = activation_factory(to, negative_slope)
        target_type = _TARGET_TYPES[to]
        mapping = {t: target for t in DEFAULT_SOURCES if t is not target_type}
    factories: dict[type[nn.Module], ActivationFactory] = {}
    for src, dst in mapping.items():
        if not (isinstance(src, type) and issubclass(src, nn.Module)):
            raise TrainmedicError(f"`mapping` keys must be nn.Module types; got {src!r}")
        factories[src] = activation_factory(dst, negative_slope) if isinstance(dst, str) else dst

    leaves = leaf_modules(model)
    output_path = leaves[-1][0] if leaves and skip_output else None
    replaced: dict[int, nn.Module] = {}
    changed: list[str] = []
    for path, module in list(all_paths(model)):
        if not path or path == output_path:
            continue
        factory = factories.get(type(module))  # exact type: a subclass may carry custom behaviour
        if factory is None:
            continue
        new = replaced.get(id(module))
        if new is None:
            new = factory(module)
            ref = next(model.parameters(), None)
            if ref is not None and any(True for _ in new.parameters()):
                new = new.to(device=ref.device, dtype=ref.dtype)  # PReLU: live where the model lives
            new.train(module.training)
            replaced[id(module)] = new
        replace_module(model, path, new)
        changed.append(path)

    if not changed:
        has_any = any(isinstance(m, ACTIVATIONS) for _, m in all_paths(model) if _)
        if has_any:
            warn(
                "swap_activations: no activation module matched the mapping; nothing was swapped "
                "(the model's activations may already be the target, or only its output activation matched)"
            )
        else:
            warn(
                "swap_activations: the model has no activation modules; its activations are probably "
                "functional (F.relu / torch.sigmoid inside forward) and must be changed in its code"
            )
    return changed


def count_activations(model: nn.Module) -> dict[str, int]:
    """How many activation modules of each kind the model holds (e.g. for a finding's evidence)."""
    counts: dict[str, int] = {}
    for path, m in all_paths(check_module(model)):
        if path and isinstance(m, ACTIVATIONS):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return counts


def is_relu_family(m: nn.Module) -> bool:
    return isinstance(m, RELU_FAMILY)
