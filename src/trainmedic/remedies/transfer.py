"""Transfer learning helpers (remedy ``transfer_learning``): load what fits, freeze, unfreeze gradually."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import TrainmedicError
from ._modules import check_module


@dataclass
class TransferReport:
    """What :func:`load_matching_weights` did, by state-dict key."""

    loaded: list[str] = field(default_factory=list)
    skipped_missing: list[str] = field(default_factory=list)  # in the model, not in the source
    skipped_shape: list[str] = field(default_factory=list)  # in both, shapes differ (not loaded)
    partial: list[str] = field(default_factory=list)  # shapes differ, overlapping block copied
    unexpected: list[str] = field(default_factory=list)  # in the source, not in the model


def _strip_prefix(sd: Mapping[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Drop a ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile) prefix the model does not have."""
    out = dict(sd)
    for prefix in ("module.", "_orig_mod."):
        if (
            out
            and all(k.startswith(prefix) for k in out)
            and not any(k.startswith(prefix) for k in model_keys)
        ):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def load_matching_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor] | str | os.PathLike[str],
    strict_shapes: bool = True,
) -> TransferReport:
    """Copy every tensor of ``state_dict`` whose key and shape match the model; report the rest.

    ``state_dict`` may be a path (loaded with ``weights_only=True``; a trainmedic checkpoint's ``model``
    entry is used). With ``strict_shapes=False``, tensors of the same rank but different sizes are copied
    on their overlapping block (a warm start for a resized head); otherwise they are skipped.
    """
    check_module(model)
    if isinstance(state_dict, (str, os.PathLike)):
        p = Path(state_dict)
        if not p.is_file():
            raise TrainmedicError(
                f"`state_dict` must be a mapping or an existing file; got {str(p)!r} (not found)"
            )
        loaded = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(loaded, dict) and "model" in loaded and isinstance(loaded["model"], Mapping):
            loaded = loaded["model"]
        state_dict = loaded
    if not isinstance(state_dict, Mapping):
        raise TrainmedicError(
            f"`state_dict` must be a mapping of names to tensors; got {type(state_dict).__name__}"
        )
    target = model.state_dict()
    source = _strip_prefix(state_dict, set(target))
    report = TransferReport()
    with torch.no_grad():
        for key, dst in target.items():
            src = source.get(key)
            if not isinstance(src, torch.Tensor):
                report.skipped_missing.append(key)
                continue
            if src.shape == dst.shape:
                dst.copy_(src.to(device=dst.device, dtype=dst.dtype))
                report.loaded.append(key)
            elif not strict_shapes and src.dim() == dst.dim() and src.dim() > 0:
                block = tuple(slice(0, min(a, b)) for a, b in zip(src.shape, dst.shape, strict=False))
                dst[block].copy_(src[block].to(device=dst.device, dtype=dst.dtype))
                report.partial.append(key)
            else:
                report.skipped_shape.append(key)
    report.unexpected = [k for k in source if k not in target]
    return report


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def freeze(model: nn.Module, except_: Sequence[str] = (), freeze_norm_stats: bool = False) -> list[str]:
    """Stop gradients for all parameters except those under the module/parameter names in ``except_``
    (e.g. ``("fc",)`` or ``("head", "encoder.layer4")``); return the frozen parameter names.

    Frozen BatchNorm layers still update their running statistics in train mode; ``freeze_norm_stats``
    puts them in eval mode (call it again after ``model.train()``, which resets that).
    """
    check_module(model)
    if isinstance(except_, str):
        except_ = (except_,)
    names = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    unknown = [e for e in except_ if e not in names]
    if unknown:
        raise TrainmedicError(
            f"`except_` must name modules or parameters of the model; got unknown {unknown}"
        )
    frozen: list[str] = []
    for name, p in model.named_parameters():
        if _matches(name, except_):
            continue
        if p.requires_grad:
            p.requires_grad_(False)
            frozen.append(name)
    if freeze_norm_stats:
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not _matches(name, except_):
                m.eval()
    return frozen


def unfreeze(model: nn.Module, names: Sequence[str] | None = None) -> list[str]:
    """Let gradients flow again for all parameters (or those under ``names``); return the changed names.

    A parameter the optimizer was built without needs adding: :func:`trainmedic.remedies.add_missing_params`.
    """
    check_module(model)
    changed: list[str] = []
    for name, p in model.named_parameters():
        if names is not None and not _matches(name, names):
            continue
        if not p.requires_grad:
            p.requires_grad_(True)
            changed.append(name)
    return changed


class GradualUnfreezer:
    """Unfreeze a model from the head down, one group of layers every ``every`` epochs (ULMFiT-style).

    ``groups`` are module names in the order to unfreeze (default: the model's top-level children, last
    first). ``step(epoch)`` unfreezes all groups due by ``epoch`` and returns the newly trainable parameter
    names; given an ``optimizer``, parameters it lacks are added to it.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[str] | None = None,
        every: int = 1,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model = check_module(model)
        self.groups = list(groups) if groups is not None else [n for n, _ in model.named_children()][::-1]
        if every < 1:
            raise TrainmedicError(f"`every` must be >= 1 (epochs); got {every}")
        self.every = int(every)
        self.optimizer = optimizer
        self.unfrozen = 0

    def step(self, epoch: int) -> list[str]:
        due = min(len(self.groups), int(epoch) // self.every + 1)
        changed: list[str] = []
        while self.unfrozen < due:
            changed += unfreeze(self.model, [self.groups[self.unfrozen]])
            self.unfrozen += 1
        if changed and self.optimizer is not None:
            from .optim import add_missing_params

            add_missing_params(self.optimizer, self.model)
        return changed


def gradual_unfreeze(
    model: nn.Module,
    groups: Sequence[str] | None = None,
    every: int = 1,
    optimizer: torch.optim.Optimizer | None = None,
) -> GradualUnfreezer:
    """Freeze everything, then return a :class:`GradualUnfreezer`; call ``.step(epoch)`` at each epoch start."""
    freeze(model)
    return GradualUnfreezer(model, groups, every, optimizer)
