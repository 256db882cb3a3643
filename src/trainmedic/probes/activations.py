"""Activation statistics from forward hooks, sampled: a few rows of the batch, every ``every`` steps.

Reducing whole activation tensors every step costs up to 1.5x on a small CNN; a sample at a cadence of 10
costs a few percent. A sample is the first ``rows`` rows (default 64), fewer when one row is large: at most
``max_elements`` (default 16384) elements per module and capture, and at least one row — all 64 rows of an
MLP's hidden layer, 16 rows of a 16x8x8 feature map, one image of a 64x56x56 one. Conv units are channels,
so a few rows still see every unit at many positions. Per activation module we keep, on the device:
``[mean, std, dead_fraction, zero_fraction, saturated_fraction]``.

* ``dead_fraction`` (ReLU-family): the share of *units* (features or channels) that are ≤ 0 for every sampled
  row and position — a unit that never fires passes no gradient.
* ``zero_fraction``: the share of elements ≤ 0 (ReLU-family) or == 0 (others).
* ``saturated_fraction`` (sigmoid: outside [0.01, 0.99]; tanh and recurrent outputs: |x| > 0.99): the share of
  elements in the flat regions where the derivative is nearly 0.
Values that do not apply to an activation kind are NaN.

Why the samples are buffered: on small models the cost of a statistic is the number of kernel launches, not
the arithmetic. A capture therefore costs one copy of the sampled rows — none when the sample is the whole
output (an MLP's hidden layer): it is kept by reference, and its autograd version counter, checked before the
statistics are computed, drops it if anything wrote into it in place since; the statistics of up to
``BUFFER_SAMPLES`` captures of the same module and shape are computed together, in one set of kernels, when
the buffer fills or the recorder flushes. Hooks are attached only while a capture is pending, so the forward
passes in between run on PyTorch's hook-free fast path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ACT_STATS = ("act_mean", "act_std", "act_dead", "act_zero", "act_saturated")
BUFFER_SAMPLES = 32  # captures of one module buffered before their statistics are computed together
BUFFER_ELEMENTS = 1 << 22  # ... or fewer, when the buffered samples would exceed this many elements


def _count_positive(x: torch.Tensor) -> torch.Tensor:
    """Number of elements > 0 per row of a float ``(K, n)`` tensor.

    ``sign(max(x, 0))`` is 1 exactly where x > 0: two vectorised float passes and a sum, about 3x faster on the
    CPU than counting a boolean mask (comparisons that produce ``bool`` are not vectorised there).
    """
    return x.clamp(min=0).sign_().sum(dim=1)


def _count_above(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Number of elements with ``x > threshold`` per row of ``x`` (consumed: modified in place)."""
    return x.sub_(threshold).clamp_(min=0).sign_().sum(dim=1)


def activation_stats_batch(x: torch.Tensor, kind: str, unit_dim: int) -> torch.Tensor:
    """Statistics of K stacked samples ``x`` of shape ``(K, rows, ...)``: a float32 ``(K, 5)`` tensor.

    ``unit_dim`` is the unit (feature/channel) dimension of one sample ``(rows, ...)``; -1 for the last.
    Written for speed on large samples: sums and norms instead of ``std_mean`` (10x slower on CPU), a max
    over rows and positions for dead units instead of ``any`` over a boolean tensor, counts from float passes
    (``sign``/``clamp``) instead of boolean masks.
    """
    k = x.shape[0]
    flat = x.reshape(k, -1)
    n = max(flat.shape[1], 1)
    mean = flat.sum(dim=1) / n
    std = torch.linalg.vector_norm(flat - mean[:, None], dim=1) / math.sqrt(n)
    nan = torch.full((k,), float("nan"), device=x.device)
    if kind == "relu":
        zero = 1.0 - _count_positive(flat) / n
        if x.dim() >= 3:
            d = unit_dim + 1 if unit_dim >= 0 else x.dim() - 1
            peak = x.amax(dim=[i for i in range(1, x.dim()) if i != d])  # (K, units), no copy
            dead = 1.0 - _count_positive(peak) / peak.shape[1]
        else:
            dead = zero
    else:
        dead, zero = nan, 1.0 - flat.abs().sign_().sum(dim=1) / n
    if kind == "sigmoid":
        sat = _count_above((flat - 0.5).abs_(), 0.49) / n
    elif kind in ("tanh", "recurrent"):
        sat = _count_above(flat.abs(), 0.99) / n
    else:
        sat = nan
    return torch.stack([mean, std, dead, zero, sat], dim=1).float()


def activation_stats(out: torch.Tensor, kind: str, unit_dim: int, rows: int = 64) -> torch.Tensor:
    """The five statistics of one activation output (its first ``rows`` rows), float32 on its device."""
    return activation_stats_batch(out.detach()[:rows].float().unsqueeze(0), kind, unit_dim)[0]


def _reraise(e: Exception) -> None:
    raise e


class ActivationProbe:
    """Forward hooks on activation modules, attached only while the recorder asks for a capture."""

    def __init__(
        self,
        modules: list[nn.Module],
        kinds: list[str],
        unit_dims: list[int],
        guard: Callable[[str, Callable[[], Any]], Any],
        rows: int = 64,
        max_elements: int = 16384,
        fence: Callable[[Callable[..., None]], Callable[..., None]] | None = None,
    ) -> None:
        self.capture = False
        self._fence = fence or (lambda hook: hook)  # the recorder's fail-open boundary around each hook
        self.step = 0
        self.rows = rows
        self.max_elements = max_elements
        self._rows: dict[int, int] = {}
        self.modules = modules
        self.kinds = kinds
        self.unit_dims = unit_dims
        self._guard = guard
        self._done: set[int] = set()
        # per (module, sample shape): steps, samples, and the version counter of samples kept by reference
        self._buffers: dict[tuple[int, tuple[int, ...]], tuple[list[int], list[torch.Tensor], list[int]]] = {}
        self._results: list[tuple[int, list[int], torch.Tensor]] = []  # (module index, steps, (K, 5) stats)
        self.handles: list[Any] = []
        self._hooks: list[Callable[..., None]] | None = None
        # units per module (the size of its unit dimension), seen at its first sample; the recorder writes
        # them to meta["activation_widths"] (the checks tell a model's output activation by it)
        self.widths: dict[int, int] = {}
        self.widths_new = False

    def start_capture(self, step: int) -> None:
        """Sample each activation module once, at its next training forward pass (attributed to ``step``)."""
        self._done.clear()
        self.step = step
        self.capture = True
        if not self.handles:
            hooks = self._hooks
            if hooks is None:  # made (and fenced) once; attached at each capture, removed after it
                hooks = self._hooks = [self._fence(self._make_hook(i)) for i in range(len(self.modules))]
            self.handles = [m.register_forward_hook(h) for m, h in zip(self.modules, hooks)]

    def stop_capture(self) -> None:
        self.capture = False
        self.remove()

    def _make_hook(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.capture or i in self._done or not module.training or not torch.is_grad_enabled():
                return
            if torch.compiler.is_compiling():  # traced into a compiled graph: stay out of it
                return
            self._done.add(i)
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, nn.utils.rnn.PackedSequence):
                out = out.data
            if isinstance(out, torch.Tensor):
                try:
                    self._keep(i, out)
                except Exception as e:  # never break the user's training
                    self._guard("activations", lambda e=e: _reraise(e))  # type: ignore[misc]

        return hook

    def _keep(self, i: int, out: torch.Tensor) -> None:
        rows = self._rows.get(i)
        if rows is None:  # bounded elements per capture: all rows of an MLP, fewer of a big feature map
            per_row = max(1, out[0].numel()) if out.dim() > 0 and len(out) else 1
            rows = self._rows[i] = max(1, min(self.rows, self.max_elements // per_row))
            self.widths[i] = int(out.shape[self.unit_dims[i]]) if out.dim() > 1 else 1
            self.widths_new = True
        whole = out.dim() > 0 and len(out) <= rows
        if whole and out.dtype == torch.float32 and out._base is None:
            # the whole (small) output: keep a reference, no copy. Its version counter tells at compute time
            # whether anything wrote into it since (then the sample is dropped, never misreported).
            sample = out.detach()
            version = sample._version
        else:
            sample = (out.detach() if whole else out.detach()[:rows]).to(torch.float32, copy=True)
            version = -1
        key = (i, tuple(sample.shape))
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = ([], [], [])
        steps, samples, versions = buf
        steps.append(self.step)
        samples.append(sample)
        versions.append(version)
        if len(samples) >= BUFFER_SAMPLES or len(samples) * sample.numel() >= BUFFER_ELEMENTS:
            self._compute(key)

    def _compute(self, key: tuple[int, tuple[int, ...]]) -> None:
        steps, samples, versions = self._buffers.pop(key)
        if any(v >= 0 and s._version != v for s, v in zip(samples, versions)):
            kept = [(st, s) for st, s, v in zip(steps, samples, versions) if v < 0 or s._version == v]
            if not kept:
                return
            steps, samples = [st for st, _ in kept], [s for _, s in kept]
        i = key[0]
        stats = activation_stats_batch(torch.stack(samples), self.kinds[i], self.unit_dims[i])
        self._results.append((i, steps, stats))

    def drain(self) -> list[tuple[int, list[int], torch.Tensor]]:
        """Statistics of every capture so far, as ``(module index, steps, (K, 5) device tensor)``."""
        for key in list(self._buffers):
            self._compute(key)
        out, self._results = self._results, []
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
