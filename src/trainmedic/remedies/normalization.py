"""Insert normalization layers between weight layers and their activations (remedy ``batch_norm``).

Why: normalizing pre-activations keeps them in the activation's useful range (fewer dead ReLUs, less
saturation, better-conditioned gradients). Only Sequentials are edited — there the data flow is the module
order, so "Linear followed by an activation" is a fact, not a guess. New layers get a name next to the
layer they normalize (``"0_norm"``), so the state-dict keys of existing layers do not move (integer
indexing, ``seq[i]``, is positional and does shift).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import TrainmedicError
from ._modules import (
    ACTIVATIONS,
    SEQUENCE_MODULES,
    check_module,
    fresh_name,
    insert_after,
    param_device_dtype,
)

_KINDS = ("auto", "batch", "layer")


def _linear_input_ranks(model: nn.Module, example_input: Any) -> dict[int, int]:
    """Rank of the input each Linear sees in one forward pass (2 = (N, F); 3 = (N, L, F) sequences)."""
    ranks: dict[int, int] = {}
    handles = []

    def hook(m: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor):
            ranks[id(m)] = max(ranks.get(id(m), 0), args[0].dim())

    for m in model.modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_pre_hook(hook))
    try:
        _forward(model, example_input)
    finally:
        for h in handles:
            h.remove()
    return ranks


def _forward(model: nn.Module, example_input: Any) -> Any:
    was_training = {m: m.training for m in model.modules()}
    model.eval()  # eval: BatchNorm uses its running stats and accepts a batch of one
    try:
        with torch.no_grad():
            if isinstance(example_input, tuple):
                return model(*example_input)
            return model(example_input)
    finally:
        for m, t in was_training.items():
            m.training = t


def _shape_of(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(_shape_of(o) for o in out)
    if isinstance(out, dict):
        return {k: _shape_of(v) for k, v in out.items()}
    return type(out).__name__


def _norm_for(layer: nn.Module, kind: str, linear_rank: int | None) -> nn.Module | None:
    device, dtype = param_device_dtype(layer)
    kw: dict[str, Any] = {"device": device, "dtype": dtype}
    if isinstance(layer, nn.Linear):
        n = layer.out_features
        if kind == "layer" or (linear_rank is not None and linear_rank != 2):
            return nn.LayerNorm(n, **kw)
        return nn.BatchNorm1d(n, **kw)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        c = layer.out_channels
        if kind == "layer":
            return nn.GroupNorm(1, c, **kw)  # one group = layer norm over (C, *spatial)
        bn = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}[type(layer)]
        return bn(c, **kw)
    return None


def insert_normalization(
    model: nn.Module,
    kind: str = "auto",
    example_input: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[str]:
    """Insert a norm layer after each Linear/Conv that is directly followed by an activation in a Sequential.

    Args:
        kind: ``batch`` — BatchNorm1d/2d/3d; ``layer`` — LayerNorm after Linear, GroupNorm(1, C) after Conv;
            ``auto`` — batch norm, except LayerNorm after a Linear that sees sequences: judged from
            ``example_input`` when given (a Linear whose input is not (N, F)), else from the presence of
            recurrent/attention/embedding modules in the model.
        example_input: a batch (or tuple of forward arguments). When given, the model is run on it before
            and after the change (in eval mode, without gradients); if the output shapes differ or the
            forward fails, the change is undone and a :class:`TrainmedicError` is raised.
        optimizer: when given, the new layers' parameters are added to it as a new param group (copying
            the hyperparameters of its first group), so that they train.

    Returns the paths of the inserted layers. They sit on the device/dtype of the layer they follow, and in
    its train/eval mode.
    """
    check_module(model)
    if kind not in _KINDS:
        raise TrainmedicError(f"`kind` must be one of {', '.join(_KINDS)}; got {kind!r}")
    ranks: dict[int, int] = {}
    before: Any = None
    if example_input is not None:
        ranks = _linear_input_ranks(model, example_input)
        before = _shape_of(_forward(model, example_input))
    sequence_model = any(isinstance(m, SEQUENCE_MODULES) for m in model.modules())

    undo: list[tuple[nn.Sequential, dict[str, Any]]] = []
    inserted: list[str] = []
    for seq_path, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        items = list(seq._modules.items())
        plan: list[tuple[str, str, nn.Module]] = []
        for (name, layer), (_, nxt) in zip(items, items[1:], strict=False):
            if layer is None or not isinstance(nxt, ACTIVATIONS):
                continue
            rank = ranks.get(id(layer))
            if kind == "auto" and rank is None and sequence_model and isinstance(layer, nn.Linear):
                rank = 3
            norm = _norm_for(layer, "layer" if kind == "layer" else "batch", rank)
            if norm is None:
                continue
            norm.train(layer.training)
            new_name = fresh_name(seq, f"{name}_norm")
            plan.append((name, new_name, norm))
        if plan:
            undo.append((seq, dict(seq._modules)))
            insert_after(seq, plan)
            inserted += [f"{seq_path}.{n}" if seq_path else n for _, n, _ in plan]

    if example_input is not None and inserted:
        try:
            after = _shape_of(_forward(model, example_input))
            problem = None if after == before else f"output shape changed from {before} to {after}"
        except Exception as e:  # the forward of an arbitrary user model can raise anything
            problem = f"forward failed: {type(e).__name__}: {e}"
        if problem is not None:
            for seq, modules in undo:
                seq._modules.clear()
                seq._modules.update(modules)
            raise TrainmedicError(
                f"`model` must keep working after inserting normalization; {problem}; the change was undone"
            )
    if optimizer is not None and inserted:
        new_params = [p for path in inserted for p in model.get_submodule(path).parameters()]
        if new_params:
            group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
            group["params"] = new_params
            optimizer.add_param_group(group)
    return inserted
