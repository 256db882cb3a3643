"""Dropout and weight decay (remedies ``add_dropout``, ``weight_decay``): the standard answers to overfitting."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import TrainmedicError
from ._modules import ACTIVATIONS, DROPOUTS, NORM_LAYERS, check_module, fresh_name, insert_after


def _check_p(p: float) -> float:
    if not 0.0 <= float(p) < 1.0:
        raise TrainmedicError(f"`p` must be a dropout probability in [0, 1); got {p!r}")
    return float(p)


def set_dropout(model: nn.Module, p: float, only_raise: bool = True) -> list[str]:
    """Set the rate of every existing dropout module to ``p``; return the changed paths.

    With ``only_raise`` (the default) rates already above ``p`` are kept: this remedy regularizes more,
    never less.
    """
    check_module(model)
    p = _check_p(p)
    changed: list[str] = []
    for path, m in model.named_modules():
        rate = float(getattr(m, "p", 0.0))
        if isinstance(m, DROPOUTS) and (rate < p or (not only_raise and rate != p)):
            m.p = p  # type: ignore[assignment]
            changed.append(path)
    return changed


def _dropout_for(last_layer: nn.Module | None, p: float) -> nn.Module:
    """Channel dropout after convolutions (neighbouring pixels are correlated), element dropout elsewhere."""
    if isinstance(last_layer, nn.Conv2d):
        return nn.Dropout2d(p)
    if isinstance(last_layer, nn.Conv3d):
        return nn.Dropout3d(p)
    if isinstance(last_layer, nn.Conv1d) and hasattr(nn, "Dropout1d"):
        return nn.Dropout1d(p)
    return nn.Dropout(p)


def add_dropout(model: nn.Module, p: float = 0.3) -> list[str]:
    """Insert a dropout layer after each activation inside a Sequential; return the new layers' paths.

    An activation that is the last element of its Sequential is skipped (it may be the model's output, and
    dropout on outputs is noise on the predictions), and so is one already followed by dropout. After a
    Conv2d/Conv3d/Conv1d the dropout drops whole channels. The new layers follow the model's train/eval mode.
    """
    check_module(model)
    p = _check_p(p)
    inserted: list[str] = []
    for seq_path, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        items = list(seq._modules.items())
        plan: list[tuple[str, str, nn.Module]] = []
        last_weight: nn.Module | None = None
        for i, (name, m) in enumerate(items):
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                last_weight = m
            if not isinstance(m, ACTIVATIONS) or i == len(items) - 1:
                continue
            if isinstance(items[i + 1][1], DROPOUTS):
                continue
            drop = _dropout_for(last_weight, p)
            drop.train(seq.training)
            plan.append((name, fresh_name(seq, f"{name}_dropout"), drop))
        if plan:
            insert_after(seq, plan)
            inserted += [f"{seq_path}.{n}" if seq_path else n for _, n, _ in plan]
    return inserted


def _no_decay(param: torch.Tensor) -> bool:
    """Biases and norm gains/shifts are 1-D: decaying them pulls norms toward zero and helps nothing."""
    return param.dim() <= 1


@dataclass(frozen=True)
class WeightDecayReport:
    """What :func:`set_weight_decay` changed."""

    weight_decay: float
    decayed: int  # parameters (tensors) now decayed
    not_decayed: int  # parameters kept at weight decay 0
    groups: int  # parameter groups of the optimizer afterwards


def set_weight_decay(
    optimizer: torch.optim.Optimizer, wd: float, skip_norm_and_bias: bool = False
) -> WeightDecayReport:
    """Set ``weight_decay`` on all parameter groups of ``optimizer`` in place.

    With ``skip_norm_and_bias``, 1-D parameters (biases, norm weights) are moved to a sibling group with
    weight decay 0 — a group that mixes both is split. Optimizer state is keyed by parameter, so it survives.
    With Adam, weight decay is an L2 term in the gradient; AdamW decouples it (see :func:`switch_optimizer`).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TrainmedicError(f"`optimizer` must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    if not float(wd) >= 0.0:
        raise TrainmedicError(f"`wd` must be a weight decay >= 0; got {wd!r}")
    wd = float(wd)
    decayed = not_decayed = 0
    new_groups: list[dict[str, Any]] = []
    for group in optimizer.param_groups:
        if "weight_decay" not in group:
            raise TrainmedicError(
                f"`optimizer` must support weight_decay; {type(optimizer).__name__} has no such setting"
            )
        params = list(group["params"])
        if not skip_norm_and_bias:
            group["weight_decay"] = wd
            decayed += len(params)
            continue
        keep = [p for p in params if not _no_decay(p)]
        skip = [p for p in params if _no_decay(p)]
        if keep and skip:
            group["params"] = keep
            group["weight_decay"] = wd
            sibling = {k: v for k, v in group.items() if k != "params"}
            sibling["params"], sibling["weight_decay"] = skip, 0.0
            new_groups.append(sibling)
        elif keep:
            group["weight_decay"] = wd
        else:
            group["weight_decay"] = 0.0
        decayed += len(keep)
        not_decayed += len(skip)
    for sibling in new_groups:
        optimizer.add_param_group(sibling)
    return WeightDecayReport(wd, decayed, not_decayed, len(optimizer.param_groups))


def weight_decay_param_groups(
    model: nn.Module, wd: float, skip_norm_and_bias: bool = True, extra_no_decay: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Parameter groups for a new optimizer: ``[{"params": decayed, "weight_decay": wd}, {"params": rest,
    "weight_decay": 0.0}]``.

    Not decayed: biases, parameters of normalization layers, embeddings' 1-D parameters, and any
    parameter whose name contains one of ``extra_no_decay``. Frozen parameters are left out. Empty groups
    are dropped.
    """
    check_module(model)
    if not float(wd) >= 0.0:
        raise TrainmedicError(f"`wd` must be a weight decay >= 0; got {wd!r}")
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)
    }
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = skip_norm_and_bias and (
            id(p) in norm_params
            or name.endswith("bias")
            or _no_decay(p)
            or any(s in name for s in extra_no_decay)
        )
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(wd)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
