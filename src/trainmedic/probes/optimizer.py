"""Gradients, weights, updates and hyperparameters, read through the optimizer's step hooks.

Why the optimizer and not backward hooks: at ``optimizer.step()`` every ``p.grad`` is final (accumulated,
all-reduced under DDP, unscaled by ``GradScaler.step``), reading it costs one fused ``torch._foreach_norm``,
and it works unchanged for compiled models. Everything stays on the device; the recorder moves results to
the host in one batch per flush.

The hot path runs every step, so it avoids Python work that does not change between steps: the parameter
list, the per-parameter layer ids and the hyperparameter layout are built once; hyperparameters are compared
as plain floats and written only when they change (or at the cadence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..distributed import is_sharded, local
from .layers import LayerIndex
from .quantiles import QUANTILE_SAMPLE, QUANTILE_STATS, QUANTILES

__all__ = ["QUANTILES", "QUANTILE_SAMPLE", "QUANTILE_STATS", "OptimizerProbe"]

HP_KEYS = ("lr", "momentum", "weight_decay", "beta1", "beta2")
_HOST_DTYPES = (torch.float32, torch.float64)


@dataclass
class ParamGroupView:
    """The parameters of one optimizer that belong to watched layers, grouped for fused kernels."""

    params: list[torch.nn.Parameter]
    layer_ids: torch.Tensor  # layer index of each param, on the params' device
    n_layers: int


def _stack_norms(norms: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """0-d norms (possibly of several dtypes/devices) as one 1-D float32 tensor on the first one's device."""
    dev = norms[0].device
    if all(n.dtype == torch.float32 and n.device == dev for n in norms):
        return torch.stack(norms)
    return torch.stack([n.to(device=dev, dtype=torch.float32) for n in norms])


def _per_param_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor as one 1-D float32 tensor, with one fused kernel per device/dtype."""
    return _stack_norms(torch._foreach_norm(tensors))


def _host_readable(params: list[torch.nn.Parameter]) -> bool:
    """Whether NumPy views can stand for these parameters: dense, contiguous float32/64 CPU tensors."""
    return bool(params) and all(
        p.device.type == "cpu"
        and p.dtype in (torch.float32, torch.float64)
        and p.layout == torch.strided
        and p.is_contiguous()
        for p in params
    )


def _copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for all i, in one fused call where torch has it (2.2+)."""
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(dst, src)
    else:
        for d, s in zip(dst, src):
            d.copy_(s)


def layer_norms(values: torch.Tensor, layer_ids: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Combine per-parameter L2 norms into per-layer L2 norms: sqrt(sum of squares) per layer.

    ``values`` may be 2-D (``(k, params)``): each row is combined separately, in one kernel.
    """
    v = values.float()
    shape = (*v.shape[:-1], n_layers)
    out = torch.zeros(shape, device=v.device, dtype=torch.float32)
    out.index_add_(v.dim() - 1, layer_ids, v * v)
    return out.sqrt_()


def _as_float(v: Any) -> float | None:
    if isinstance(v, float):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1 and v.device.type == "cpu":
        return float(v)
    return None  # absent, non-numeric, or an accelerator tensor (reading it would sync)


class OptimizerProbe:
    """Computes per-step and per-layer statistics for one optimizer (device tensors only)."""

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, index: LayerIndex) -> None:
        self.name = name
        self.optimizer = optimizer
        self.prefix = ""  # signal prefix ("generator/") when the run watches several optimizers
        self.grad_signal = "grad_norm"  # prefix + "grad_norm", precomputed for the per-step path
        params = [p for g in optimizer.param_groups for p in g["params"] if id(p) in index.param_layer]
        self.params = params
        self.n_layers = len(index.layers)
        dev = params[0].device if params else torch.device("cpu")
        self._layer_id_list = [index.param_layer[id(p)] for p in params]  # host copy: plans read it, no sync
        self.layer_ids = torch.tensor(self._layer_id_list, dtype=torch.long, device=dev)
        self._before: list[torch.Tensor] | None = None
        self._grad_cache: tuple[list[int] | None, list[torch.Tensor]] | None = None
        # host path (CPU float32/64 parameters): NumPy views of the weights, made once, and snapshot buffers
        self._host: list[np.ndarray] | None = None
        self._host_ptrs: list[int] = []
        self._host_before: list[np.ndarray] = []
        self._host_snap = False
        self._grad_vals: list[float] | None = None  # host floats of the cached gradient norms
        self._snap_bufs: list[torch.Tensor] | None = None  # weight snapshot buffers (device path), reused
        # FSDP2: parameters and gradients are DTensor shards; every statistic is taken on the local shard (no
        # collective) and the ranks' partial sums are combined at a sync (trainmedic/distributed.py)
        self.sharded = any(is_sharded(p) for p in params)
        self._host_ok = _host_readable(params) and not self.sharded
        self.steps = 0  # completed steps of this optimizer
        self.next_quantile = 0  # the first capture step at or after this also takes the quantiles
        # steps before these take the recorder's short path in the pre-/post-step hook (no statistics due)
        self.quiet_pre = 0
        self.quiet_post = 0
        self.lr_objects: list[Any] = []  # each group's lr object at the last hyperparameter check
        self._hp_groups = -1
        self._hp_names: list[str] = []
        self._hp_last: list[float | None] = []
        self._hp_raw: list[tuple[Any, ...]] | None = None
        self._hp_tensor = False
        self._qplan: tuple[list[int], list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor] | None = (
            None
        )
        self._qhost: list[tuple[int, np.ndarray, int, int]] = []
        self._qbuf = np.empty((2, 0))
        self._qkth = np.empty(0, dtype=np.intp)
        self._qlids = np.empty(0, dtype=np.intp)

    # ---- per step --------------------------------------------------------------------------------
    def grad_param_norms(self) -> tuple[list[int] | None, list[torch.Tensor]] | None:
        """Indices of params that have a gradient (None: all of them) and their 0-d gradient norms (device).

        One ``torch._foreach_norm``. On the CPU each tensor still costs one kernel launch (~4 µs hot), the
        floor of the per-step overhead on small models; reading small gradients through NumPy instead (one
        ``dot`` each) is cheaper in a tight loop but measured 5–15% dearer inside real training steps, where
        the gradients and the code are no longer in cache (BENCHMARKS.md, "Recording overhead").
        """
        grads = [p.grad for p in self.params]
        if self.sharded:
            grads = [None if g is None else local(g) for g in grads]
        idx: list[int] | None = None
        if not all(g is not None for g in grads):  # not `None in grads`: that calls Tensor.__eq__ per grad
            idx = [i for i, g in enumerate(grads) if g is not None]
            if not idx:
                self._grad_cache = None
                self._grad_vals = None
                return None
            grads = [grads[i] for i in idx]
        norms = list(torch._foreach_norm(grads))  # type: ignore[arg-type]
        self._grad_cache = (idx, norms)
        self._grad_vals = None
        return idx, norms

    def global_norm_host_cached(self) -> float | None:
        """The global L2 norm of the last :meth:`grad_param_norms` as a float (CPU tensors: reading 0-d tensors is
        cheaper than two more kernels), keeping the per-parameter floats for a capture."""
        cache = self._grad_cache
        if cache is None:
            return None
        vals = self._grad_vals
        if vals is None:
            vals = self._grad_vals = [n.item() for n in cache[1]]
        return math.hypot(*vals)

    def hyperparameter_names(self) -> list[str]:
        """Signal names of :meth:`hyperparameter_values`, e.g. ``lr`` or ``lr/1`` with several groups."""
        groups = self.optimizer.param_groups
        if len(groups) != self._hp_groups:
            self._hp_groups = len(groups)
            self._hp_names = [
                f"{self.prefix}{key}{'' if len(groups) == 1 else f'/{gi}'}"
                for gi in range(len(groups))
                for key in HP_KEYS
            ]
            self._hp_last = []
        return self._hp_names

    def hyperparameter_values(self) -> list[float | None]:
        """Learning rate, momentum, weight decay and betas of each group as floats (None: not there). No sync."""
        out: list[float | None] = []
        for g in self.optimizer.param_groups:
            betas = g.get("betas")
            b1 = b2 = None
            if isinstance(betas, (tuple, list)) and len(betas) == 2:
                b1, b2 = _as_float(betas[0]), _as_float(betas[1])
            out += (
                _as_float(g.get("lr")),
                _as_float(g.get("momentum")),
                _as_float(g.get("weight_decay")),
                b1,
                b2,
            )
        return out

    def changed_hyperparameters(self, force: bool) -> list[tuple[str, float]]:
        """``(signal, value)`` of hyperparameters that changed since the last call (all of them if ``force``).

        The hot path is one comparison of the raw group values with the previous step's (plain floats and
        tuples); tensors (``capturable`` optimizers) take the slow path, since they change in place.
        """
        raw = [
            (g.get("lr"), g.get("momentum"), g.get("weight_decay"), g.get("betas"))
            for g in self.optimizer.param_groups
        ]
        self.lr_objects = [g.get("lr") for g in self.optimizer.param_groups]
        if not force and not self._hp_tensor and raw == self._hp_raw:
            return []
        self._hp_raw = raw
        self._hp_tensor = any(isinstance(v, torch.Tensor) for r in raw for v in (*r[:3], *(r[3] or ())))
        names = self.hyperparameter_names()
        vals = self.hyperparameter_values()
        last = self._hp_last
        self._hp_last = vals
        if force or len(last) != len(vals):
            return [(n, v) for n, v in zip(names, vals) if v is not None]
        return [(n, v) for n, v, o in zip(names, vals, last) if v is not None and v != o]

    def hyperparameters(self) -> dict[str, float]:
        """Learning rate, momentum/betas and weight decay per param group (plain Python floats: no sync)."""
        names = self.hyperparameter_names()
        return {
            n[len(self.prefix) :]: v for n, v in zip(names, self.hyperparameter_values()) if v is not None
        }

    # ---- per layer at the cadence ----------------------------------------------------------------
    def _host_views(self) -> list[np.ndarray] | None:
        """Flat NumPy views of the CPU weights, rebuilt when a parameter's storage moved (``p.data = ...``).

        Why: on small CPU models a captured step's cost is the number of calls, and a NumPy call on a cached
        view costs a fraction of a torch kernel launch (a weight snapshot 3 µs instead of 10, the weight and
        update norms 13 µs instead of 24 on a 3-layer MLP).
        """
        if not self._host_ok:
            return None
        views = self._host
        ptrs = [p.data_ptr() for p in self.params]
        if views is None or ptrs != self._host_ptrs:
            if not _host_readable(self.params):
                self._host_ok = False
                self._host = None
                return None
            views = self._host = [p.detach().numpy().reshape(-1) for p in self.params]
            self._host_ptrs = ptrs
            self._host_before = [np.empty_like(v) for v in views]
            self._host_snap = False
        return views

    def snapshot_weights(self, host: bool = True) -> None:
        """Copy the weights before the step so the update can be measured after it (no allocation on the CPU).

        ``host``: the recorder reads values on the host (CPU runs); False keeps everything in torch tensors.
        """
        views = self._host_views() if host else None
        if views is not None:
            for buf, v in zip(self._host_before, views):
                np.copyto(buf, v)
            self._host_snap = True
            return
        if not self.params:
            self._before = None
            return
        weights = (
            [local(p).detach() for p in self.params] if self.sharded else [p.detach() for p in self.params]
        )
        bufs = self._snap_bufs
        if bufs is None or len(bufs) != len(weights):
            bufs = self._snap_bufs = [torch.empty_like(w) for w in weights]
        try:
            _copy_all(bufs, weights)
        except RuntimeError:  # a parameter changed shape or device (p.data = ...): new buffers
            bufs = self._snap_bufs = [torch.empty_like(w) for w in weights]
            _copy_all(bufs, weights)
        self._before = bufs

    def _host_param_stats(self, views: list[np.ndarray]) -> np.ndarray:
        """:meth:`param_stats` for CPU weights with NumPy: ``(3, params)`` float64, no torch kernel."""
        n = len(views)
        out = np.empty((3, n))
        cache, self._grad_cache = self._grad_cache, None
        vals, self._grad_vals = self._grad_vals, None
        if cache is None:
            out[0] = 0.0
        else:
            idx, norms = cache
            g = vals if vals is not None else [n.item() for n in norms]
            if idx is None:
                out[0] = g
            else:
                out[0] = 0.0
                out[0, idx] = g
        snap, self._host_snap = self._host_snap, False
        dot = np.dot
        with np.errstate(
            over="ignore", invalid="ignore"
        ):  # huge weights overflow to inf: recorded, not warned
            out[1] = [dot(v, v) for v in views]
            if snap:
                before, sub = self._host_before, np.subtract
                for v, b in zip(views, before):
                    sub(b, v, out=b)  # before - after = -update: same norm
                out[2] = [dot(b, b) for b in before]
            np.sqrt(out[1:], out=out[1:])
        if not snap:
            out[2] = np.nan
        return out

    def param_stats(self, host: bool = True) -> torch.Tensor | None:
        """Per-parameter ``[grad, weight, update]`` norms after the step: a ``(3, params)`` device tensor.

        ``host`` (CPU runs): float32/64 CPU weights are read through cached NumPy views (see :meth:`_host_views`).

        Gradients are those read in the pre-step hook (0 where a parameter had none); the update is NaN when
        no snapshot was taken. Rows of several steps are combined into layers at flush time
        (:meth:`layer_rows`), so a captured step costs a few fused kernels and no per-layer work.
        """
        if not self.params:
            return None
        if host and (self._host_snap or (self._before is None and self._host_ok)):
            views = self._host_views()
            if views is not None:
                return torch.from_numpy(self._host_param_stats(views))
        weights = (
            [local(p).detach() for p in self.params] if self.sharded else [p.detach() for p in self.params]
        )
        before, self._before = self._before, None
        n = len(weights)
        cache, self._grad_cache = self._grad_cache, None
        gnorms = cache[1] if cache is not None else []
        self._grad_vals = None
        if before is not None and cache is not None and cache[0] is None:
            # the common case: one fused norm over weights and updates, one stack of all 3n norms
            torch._foreach_sub_(before, weights)  # before - after = -update: same norm, no new tensors
            norms = [*gnorms, *torch._foreach_norm(weights + before)]
            return _stack_norms(norms).view(3, n)
        if cache is None:
            grads = torch.zeros(n, device=self.layer_ids.device)
        elif cache[0] is None:
            grads = _stack_norms(gnorms)
        else:
            grads = torch.zeros(n, device=self.layer_ids.device)
            grads[torch.tensor(cache[0], device=grads.device)] = _stack_norms(gnorms).to(grads.device)
        wn = _per_param_norms(weights)
        if before is None:
            un = torch.full((n,), float("nan"), device=wn.device)
        else:
            torch._foreach_sub_(before, weights)
            un = _per_param_norms(before)
        return torch.stack([grads.to(wn.device), wn, un])

    def _quantile_plan(
        self,
    ) -> tuple[list[int], list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which elements the quantiles read, fixed once: a seeded sample of each layer's parameters.

        Returns the params that are sampled, their element offsets, the order that arranges the gathered
        elements layer by layer, the layers with samples, and the sorted-sample positions of the quantiles.
        """
        if self._qplan is not None:
            return self._qplan
        dev = self.layer_ids.device
        ids = self._layer_id_list
        rng = np.random.default_rng(0)  # NumPy on the host: building the plan reads nothing from a device
        by_layer: dict[int, list[int]] = {}
        for i, lid in enumerate(ids):
            by_layer.setdefault(lid, []).append(i)
        used: list[int] = []
        offsets: dict[int, list[int]] = {}
        slot: dict[int, list[int]] = {}
        k = QUANTILE_SAMPLE
        layers = [lid for lid in sorted(by_layer) if sum(self.params[i].numel() for i in by_layer[lid])]
        for li, lid in enumerate(layers):
            sizes = [self.params[i].numel() for i in by_layer[lid]]
            total = sum(sizes)
            picks = np.sort(rng.integers(0, total, size=k))
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            which = np.searchsorted(bounds[1:], picks, side="right")
            for j, pi in enumerate(by_layer[lid]):
                sel = which == j
                if sel.any():
                    offsets.setdefault(pi, []).extend((picks[sel] - bounds[j]).tolist())
                    slot.setdefault(pi, []).extend((li * k + np.flatnonzero(sel)).tolist())
        used = sorted(offsets)
        # host path: each param's picks fill one contiguous run of slots (picks are sorted within a layer)
        self._qhost = [
            (pi, np.asarray(offsets[pi], dtype=np.intp), slot[pi][0], slot[pi][-1] + 1) for pi in used
        ]
        self._qbuf = np.empty((2, len(layers) * k), dtype=np.float32)
        self._qkth = np.array([min(k - 1, round(q * (k - 1))) for q in QUANTILES], dtype=np.intp)
        self._qlids = np.asarray(layers, dtype=np.intp)
        order_src = [s for pi in used for s in slot[pi]]  # destination slot of each gathered element
        order = torch.empty(len(order_src), dtype=torch.long)
        order[torch.tensor(order_src, dtype=torch.long)] = torch.arange(len(order_src))
        pos = torch.tensor([min(k - 1, round(q * (k - 1))) for q in QUANTILES], dtype=torch.long)
        self._qplan = (
            used,
            [torch.tensor(offsets[pi], dtype=torch.long, device=dev) for pi in used],
            order.to(dev),
            torch.tensor(layers, dtype=torch.long, device=dev),
            pos.to(dev),
        )
        return self._qplan

    def _host_quantiles(
        self, views: list[np.ndarray], layers: torch.Tensor, pos: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`param_quantiles` for CPU parameters with NumPy: a take per param and row, one sort of all rows.

        The weight rows and the gradient rows are sorted together (each row on its own, as before); a row
        with a NaN (NaN sorts last) gives NaN quantiles.
        """
        buf, k = self._qbuf, QUANTILE_SAMPLE
        w, gr = buf[0], buf[1]
        params = self.params
        for pi, off, a, b in self._qhost:
            w[a:b] = views[pi].take(off)
            g = params[pi].grad
            if g is None or g.is_sparse or g.dtype not in _HOST_DTYPES:
                gr[a:b] = np.nan
            elif g.is_contiguous():  # NumPy's take (flat indices): a fraction of torch's per-call cost
                gr[a:b] = g.numpy().take(off)
            else:
                gr[a:b] = g.detach().reshape(-1).numpy()[off]
        grid = buf.reshape(-1, k)  # (2 x layers with samples, k): the weight rows, then the gradient rows
        grid.sort(axis=1)  # in place (refilled at the next capture); NumPy's SIMD sort beats partition
        part = grid[:, self._qkth]
        bad = np.isnan(grid[:, -1])
        if bad.any():
            part[bad] = np.nan
        n_q = len(QUANTILES)
        out = np.full((2, n_q, self.n_layers), np.nan)
        out[:, :, self._qlids] = part.reshape(2, -1, n_q).transpose(0, 2, 1)
        return torch.from_numpy(out)

    def param_quantiles(self, host: bool = True) -> torch.Tensor | None:
        """Quantiles (:data:`QUANTILES`) of each layer's weights and gradients: a ``(2, Q, layers)`` device tensor.

        Row 0 the weights, row 1 the gradients (NaN for a layer whose parameters have no gradient, and for
        layers of other optimizers). Read after the step on a capture step only: a few gathers, one sort, no
        host sync (the flush moves the result with the other capture rows).
        """
        if not self.params or self.sharded:  # a sample of a shard is not the layer's (FSDP2)
            return None
        used, offsets, order, layers, pos = self._quantile_plan()
        if not used:
            return None
        if host and self._host_ok:
            views = self._host_views()
            if views is not None:
                return self._host_quantiles(views, layers, pos)
        k = QUANTILE_SAMPLE
        n_q = len(QUANTILES)
        out = torch.full((2, n_q, self.n_layers), float("nan"), device=order.device)
        for row, grads in ((0, False), (1, True)):
            parts = []
            for pi, off in zip(used, offsets):
                p = self.params[pi]
                t = p.grad if grads else p
                if t is None or t.is_sparse:
                    parts.append(torch.full((len(off),), float("nan"), device=off.device))
                else:
                    parts.append(t.detach().reshape(-1)[off].float())
            sample = torch.cat(parts)[order].view(-1, k)
            qs = sample.sort(dim=1).values.index_select(1, pos)  # (layers with samples, Q)
            out[row][:, layers] = qs.T
        return out

    def layer_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Combine stacked :meth:`param_stats` rows ``(T, 3, params)`` into ``(T, 3, layers)`` L2 norms."""
        return layer_norms(rows, self.layer_ids.to(rows.device), self.n_layers)

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
