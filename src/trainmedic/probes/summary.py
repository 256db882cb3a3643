"""Once-per-run facts: the model's layers, activations, dropout, normalization and initial weight scale.

The initial scale of each weight is compared with what He (``sqrt(2 / fan_in)``) and Xavier
(``sqrt(2 / (fan_in + fan_out))``) initialization would give, and units are checked for symmetry (identical
rows never diverge under gradient descent). This runs once, so ``.item()`` here is fine.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..distributed import local
from .layers import CONV, NORM, RECURRENT, activation_kind, unwrap


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) as torch.nn.init computes them."""
    if weight.dim() < 2:
        return weight.numel(), weight.numel()
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return int(weight.shape[1]) * receptive, int(weight.shape[0]) * receptive


def init_scale(weight: torch.Tensor, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """``shape``: the whole tensor's, when ``weight`` is one rank's shard of it (fans come from the whole)."""
    w = weight.detach().float()
    fan_in, fan_out = fans(torch.empty(shape, device="meta") if shape is not None else w)
    std = float(w.std()) if w.numel() > 1 else float(w.abs().mean())
    rows = w.reshape(w.shape[0], -1) if w.dim() >= 2 else w.reshape(1, -1)
    # Symmetric units: all output rows (units) identical. Zero weights are the common case.
    spread = float((rows - rows[:1]).abs().max()) if rows.shape[0] > 1 else float("nan")
    return {
        "std": std,
        "mean_abs": float(w.abs().mean()),
        "fan_in": fan_in,
        "fan_out": fan_out,
        "he_std": math.sqrt(2.0 / max(fan_in, 1)),
        "xavier_std": math.sqrt(2.0 / max(fan_in + fan_out, 1)),
        "lecun_std": math.sqrt(1.0 / max(fan_in, 1)),
        "identical_units": bool(rows.shape[0] > 1 and spread <= 1e-12 + 1e-6 * float(rows.abs().max())),
        "shape": list(shape if shape is not None else w.shape),
    }


def model_summary(name: str, model: nn.Module, prefix: bool) -> dict[str, Any]:
    """Layers in order with type, parameter count, following activation, dropout and init scale."""
    m = unwrap(model)
    layers: list[dict[str, Any]] = []
    activations: dict[str, int] = {}
    dropout: list[dict[str, Any]] = []
    norms: list[str] = []
    pending: list[dict[str, Any]] = []  # layers waiting for the activation that follows them
    for path, mod in m.named_modules():
        lname = (f"{name}/{path}" if path else name) if prefix else (path or type(mod).__name__)
        kind = activation_kind(mod)
        if kind is not None and not isinstance(mod, RECURRENT):
            activations[type(mod).__name__] = activations.get(type(mod).__name__, 0) + 1
            for lay in pending:
                lay["activation"] = type(mod).__name__
                lay["activation_kind"] = kind
                lay["activation_module"] = lname  # its name in the activation statistics
            pending = []
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            dropout.append({"layer": lname, "p": float(mod.p)})
        if isinstance(mod, NORM):
            norms.append(lname)
        direct = list(mod.named_parameters(recurse=False))
        if not direct:
            continue
        entry: dict[str, Any] = {
            "name": lname,
            "type": type(mod).__name__,
            "params": sum(p.numel() for _, p in direct),
            "trainable": sum(p.numel() for _, p in direct if p.requires_grad),
            "activation": None,
            "activation_kind": None,
            "conv": isinstance(mod, CONV),
            "norm": isinstance(mod, NORM),
            "recurrent": isinstance(mod, RECURRENT),
        }
        weight = getattr(mod, "weight", None)
        if weight is None and isinstance(mod, RECURRENT):
            weight = getattr(mod, "weight_ih_l0", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2 and not isinstance(mod, NORM):
            # FSDP2: a DTensor's statistics would be collectives; its local rows (sharded on dim 0) stand in
            entry["init"] = init_scale(local(weight), shape=tuple(weight.shape))
        layers.append(entry)
        if not isinstance(mod, NORM):
            pending = [entry]
    total = sum(p.numel() for p in m.parameters())
    return {
        "name": name,
        "type": type(m).__name__,
        "total_params": total,
        "trainable_params": sum(p.numel() for p in m.parameters() if p.requires_grad),
        "layers": layers,
        "activations": activations,
        "dropout": dropout,
        "normalization": norms,
        "device": str(next(m.parameters()).device) if total else "cpu",
        "dtype": str(next(m.parameters()).dtype) if total else None,
        "training": m.training,
    }
