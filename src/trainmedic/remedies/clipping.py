"""Gradient clipping at a value taken from the run's own healthy history (remedy ``gradient_clipping``).

Why from history: a fixed clip value (1.0, 5.0) is arbitrary — too low and every step is clipped (a hidden
lower learning rate), too high and it never acts. The run's healthy gradient norms say what "normal" is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import TrainmedicError, describe_shape
from ..settings import Thresholds

_DEFAULT_SPIKE_RATIO = Thresholds().explode_ratio  # the same "explosion" the exploding_gradient check uses


def healthy_stretch(
    grad_norms: ArrayLike,
    spike_ratio: float = _DEFAULT_SPIKE_RATIO,
    window: int = 50,
    sustained: int = 3,
) -> np.ndarray:
    """The norms of the first healthy stretch of a run, isolated spikes removed.

    A value is a *spike* when it exceeds ``spike_ratio`` × the median of the (up to) ``window`` finite values
    before it. The stretch ends at the first non-finite value or at the first run of ``sustained``
    consecutive spikes (the run exploded for good); spikes inside it are dropped.
    """
    x = np.asarray(grad_norms, dtype=float).reshape(-1)
    healthy: list[float] = []
    recent: list[float] = []
    run = 0
    for v in x:
        if not np.isfinite(v):
            break
        v = abs(float(v))
        spike = len(recent) >= 1 and v > spike_ratio * float(np.median(recent[-window:]))
        if spike:
            run += 1
            if run >= sustained:
                break
            continue
        run = 0
        healthy.append(v)
        recent.append(v)
    return np.asarray(healthy, dtype=float)


def clip_norm_from_history(
    grad_norms: ArrayLike,
    quantile: float = 0.9,
    factor: float = 1.0,
    spike_ratio: float = _DEFAULT_SPIKE_RATIO,
    min_points: int = 5,
) -> float:
    """A clip value for the global gradient norm: ``factor`` × the ``quantile`` of the healthy norms.

    Rule: take the first healthy stretch of ``grad_norms`` (:func:`healthy_stretch`: up to the first
    non-finite value or sustained explosion, isolated spikes — more than ``spike_ratio`` times the running
    median — removed), then its ``quantile``-quantile, times ``factor``. With the defaults (0.9, 1.0) about one
    healthy step in ten is clipped, lightly, and every spike is clipped hard; ``factor > 1`` clips only
    outliers. The spike ratio is the ``explode_ratio`` threshold of the exploding_gradient check.
    """
    x = np.asarray(grad_norms, dtype=float)
    if x.ndim != 1:
        raise TrainmedicError(f"`grad_norms` must be a 1-D history of norms; got shape {describe_shape(x)}")
    if not 0.0 < quantile <= 1.0:
        raise TrainmedicError(f"`quantile` must be in (0, 1]; got {quantile!r}")
    if not factor > 0.0:
        raise TrainmedicError(f"`factor` must be > 0; got {factor!r}")
    healthy = healthy_stretch(x, spike_ratio=spike_ratio)
    healthy = healthy[healthy > 0]
    if healthy.size < min_points:
        raise TrainmedicError(
            f"`grad_norms` must hold at least {min_points} finite, positive norms before the gradients "
            f"explode; got {healthy.size} (of {x.size}); pass a clip value by hand"
        )
    return float(factor * np.quantile(healthy, quantile))


class GradientClipper:
    """Clips the global gradient norm of all an optimizer's parameters right before each ``step``.

    Install with :meth:`install` (or :func:`install_gradient_clipping`); it runs as an optimizer step
    pre-hook, so the user's loop needs no extra call. Hooks run in registration order: a probe registered
    before it sees unclipped norms. Under AMP, ``GradScaler.step`` unscales before calling ``step``, so the
    hook clips true norms. ``last_norm`` is the norm before clipping; ``clipped_steps`` counts the steps
    that were actually scaled down.
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0) -> None:
        if not float(max_norm) > 0.0:
            raise TrainmedicError(f"`max_norm` must be a positive number; got {max_norm!r}")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)
        self.last_norm: float | None = None
        self.steps = 0
        self.clipped_steps = 0
        self._handle: Any = None

    def clip(self, optimizer: torch.optim.Optimizer) -> float:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return 0.0
        total = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
        norm = float(total)
        self.last_norm = norm
        self.steps += 1
        if norm > self.max_norm:
            self.clipped_steps += 1
        return norm

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.clip(optimizer)

    def install(self, optimizer: torch.optim.Optimizer) -> GradientClipper:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TrainmedicError(
                f"`optimizer` must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
            )
        if self._handle is not None:
            raise TrainmedicError("`GradientClipper` is already installed; call remove() first")
        self._handle = optimizer.register_step_pre_hook(self)
        return self

    def remove(self) -> None:
        """Uninstall (the handle protocol of torch hooks)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def install_gradient_clipping(
    optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float = 2.0
) -> GradientClipper:
    """Clip the global gradient norm at ``max_norm`` before every ``optimizer.step()``.

    Returns the installed :class:`GradientClipper`, which is also the handle: ``.remove()`` uninstalls it.
    """
    return GradientClipper(max_norm, norm_type).install(optimizer)
