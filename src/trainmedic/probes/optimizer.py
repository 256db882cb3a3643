"""Gradients, weights, updates and hyperparameters, read through the optimizer's step hooks.

Why the optimizer and not backward hooks: at ``optimizer.step()`` every ``p.grad`` is final (accumulated,
all-reduced under DDP, unscaled by ``GradScaler.step``), reading it costs one fused ``torch._foreach_norm``,
and it works unchanged for compiled models. Everything stays on the device; the recorder moves results to
the host in one batch per flush.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .layers import LayerIndex


@dataclass
class ParamGroupView:
    """The parameters of one optimizer that belong to watched layers, grouped for fused kernels."""

    params: list[torch.nn.Parameter]
    layer_ids: torch.Tensor  # layer index of each param, on the params' device
    n_layers: int


def _per_param_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor as one 1-D tensor, with one fused kernel per device/dtype."""
    norms = torch._foreach_norm(tensors)
    dev = tensors[0].device
    return torch.stack([n.to(device=dev, dtype=torch.float32) for n in norms])


def layer_norms(values: torch.Tensor, layer_ids: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Combine per-parameter L2 norms into per-layer L2 norms: sqrt(sum of squares) per layer."""
    out = torch.zeros(n_layers, device=values.device, dtype=torch.float32)
    out.index_add_(0, layer_ids, values.float() ** 2)
    return out.sqrt()


class OptimizerProbe:
    """Computes per-step and per-layer statistics for one optimizer (device tensors only)."""

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, index: LayerIndex) -> None:
        self.name = name
        self.optimizer = optimizer
        params = [p for g in optimizer.param_groups for p in g["params"] if id(p) in index.param_layer]
        self.params = params
        self.n_layers = len(index.layers)
        dev = params[0].device if params else torch.device("cpu")
        self.layer_ids = torch.tensor(
            [index.param_layer[id(p)] for p in params], dtype=torch.long, device=dev
        )
        self._before: list[torch.Tensor] | None = None
        self._grad_cache: tuple[list[int], torch.Tensor] | None = None

    # ---- per step --------------------------------------------------------------------------------
    def grad_param_norms(self) -> tuple[list[int], torch.Tensor] | None:
        """Indices of params that have a gradient and their gradient norms (device tensor)."""
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return None
        grads = [self.params[i].grad for i in idx]
        norms = _per_param_norms(grads)  # type: ignore[arg-type]
        self._grad_cache = (idx, norms)
        return idx, norms

    @staticmethod
    def global_norm(norms: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(norms)

    def hyperparameters(self) -> dict[str, float]:
        """Learning rate, momentum/betas and weight decay per param group (plain Python floats: no sync)."""
        out: dict[str, float] = {}
        groups = self.optimizer.param_groups
        for gi, g in enumerate(groups):
            suffix = "" if len(groups) == 1 else f"/{gi}"
            for key in ("lr", "momentum", "weight_decay"):
                v = g.get(key)
                if isinstance(v, (int, float)) or (
                    isinstance(v, torch.Tensor) and v.numel() == 1 and v.device.type == "cpu"
                ):
                    out[f"{key}{suffix}"] = float(v)
            betas = g.get("betas")
            if isinstance(betas, (tuple, list)) and len(betas) == 2:
                out[f"beta1{suffix}"] = float(betas[0])
                out[f"beta2{suffix}"] = float(betas[1])
        return out

    # ---- per layer at the cadence ----------------------------------------------------------------
    def layer_grad_norms(self) -> torch.Tensor | None:
        cache = self._grad_cache
        if cache is None:
            return None
        idx, norms = cache
        ids = (
            self.layer_ids
            if len(idx) == len(self.params)
            else self.layer_ids[torch.tensor(idx, device=self.layer_ids.device)]
        )
        return layer_norms(norms, ids, self.n_layers)

    def snapshot_weights(self) -> None:
        """Copy the weights before the step so the update can be measured after it."""
        self._before = [p.detach().clone() for p in self.params]

    def layer_weight_and_update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-layer weight norms after the step and update norms (None when no snapshot was taken)."""
        if not self.params:
            z = torch.zeros(self.n_layers)
            return z, None
        weights = [p.detach() for p in self.params]
        w = layer_norms(_per_param_norms(weights), self.layer_ids, self.n_layers)
        if self._before is None:
            return w, None
        diffs = list(torch._foreach_sub(weights, self._before))
        u = layer_norms(_per_param_norms(diffs), self.layer_ids, self.n_layers)
        self._before = None
        return w, u

    def describe(self) -> dict[str, Any]:
        opt = self.optimizer
        groups = []
        for g in opt.param_groups:
            groups.append(
                {
                    k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in g.items()
                    if k != "params" and isinstance(v, (int, float, str, bool, tuple, type(None)))
                }
                | {"num_params": sum(p.numel() for p in g["params"])}
            )
        return {"name": self.name, "type": type(opt).__name__, "param_groups": groups}
