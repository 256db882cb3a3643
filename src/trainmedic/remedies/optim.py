"""Learning rate and optimizer remedies (``lower_learning_rate``, ``raise_learning_rate``, ``add_momentum``,
``switch_optimizer``, ``lr_schedule``).

All edits act on ``optimizer.param_groups`` in place — what every torch optimizer reads at each step — and
return what changed so the caller can log it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import TrainmedicError
from .plateau import Plateau


@dataclass(frozen=True)
class LRChange:
    group: int
    old: float
    new: float


def _check_optimizer(optimizer: object) -> torch.optim.Optimizer:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TrainmedicError(f"`optimizer` must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    return optimizer


def _get_lr(group: dict[str, Any]) -> float:
    lr = group["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


def _put_lr(group: dict[str, Any], lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):  # capturable / fused optimizers keep lr as a tensor
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def set_learning_rate(
    optimizer: torch.optim.Optimizer, lr: float | Sequence[float], scheduler: Any = None
) -> list[LRChange]:
    """Set the learning rate of every group (one value, or one per group).

    A scheduler attached to the optimizer may compute the lr from its ``base_lrs`` and undo the change;
    pass it as ``scheduler`` and its ``base_lrs`` are scaled by the same ratio.
    """
    opt = _check_optimizer(optimizer)
    values = [lr] * len(opt.param_groups) if isinstance(lr, (int, float)) else list(lr)
    if len(values) != len(opt.param_groups):
        raise TrainmedicError(
            f"`lr` must be one value or one per param group ({len(opt.param_groups)}); got {len(values)} values"
        )
    changes: list[LRChange] = []
    for i, (group, new) in enumerate(zip(opt.param_groups, values, strict=False)):
        if not float(new) > 0.0:
            raise TrainmedicError(f"`lr` must be > 0; got {new!r} for group {i}")
        old = _get_lr(group)
        _put_lr(group, float(new))
        if "initial_lr" in group and old > 0:
            group["initial_lr"] = float(group["initial_lr"]) * float(new) / old
        changes.append(LRChange(i, old, float(new)))
    base = getattr(scheduler, "base_lrs", None)
    if isinstance(base, list) and len(base) == len(changes):
        scheduler.base_lrs = [
            b * c.new / c.old if c.old > 0 else c.new for b, c in zip(base, changes, strict=False)
        ]
    return changes


def scale_learning_rate(
    optimizer: torch.optim.Optimizer, factor: float, scheduler: Any = None
) -> list[LRChange]:
    """Multiply every group's learning rate by ``factor`` (e.g. 0.1 to lower it, 3 to raise it)."""
    opt = _check_optimizer(optimizer)
    if not float(factor) > 0.0:
        raise TrainmedicError(f"`factor` must be > 0; got {factor!r}")
    return set_learning_rate(opt, [_get_lr(g) * float(factor) for g in opt.param_groups], scheduler)


@dataclass(frozen=True)
class MomentumChange:
    changed: bool
    detail: str  # what was set, or why nothing was


def add_momentum(
    optimizer: torch.optim.Optimizer,
    momentum: float = 0.9,
    betas: tuple[float, float] | None = None,
    nesterov: bool | None = None,
) -> MomentumChange:
    """Give an SGD/RMSprop optimizer momentum; Adam-family ones only get new ``betas`` if asked.

    Adam already has momentum (beta1); changing it unasked would be a different remedy. SGD keeps its
    momentum buffers in its state, created at the next step. ``nesterov`` (SGD) is left as is unless given.
    """
    opt = _check_optimizer(optimizer)
    if not 0.0 <= momentum < 1.0:
        raise TrainmedicError(f"`momentum` must be in [0, 1); got {momentum!r}")
    groups = opt.param_groups
    if isinstance(opt, (torch.optim.SGD, torch.optim.RMSprop)):
        for g in groups:
            g["momentum"] = float(momentum)
            if nesterov is not None and "nesterov" in g:
                g["nesterov"] = bool(nesterov) and momentum > 0 and g.get("dampening", 0) == 0
        return MomentumChange(True, f"{type(opt).__name__} momentum={momentum}")
    if all("betas" in g for g in groups):
        if betas is None:
            return MomentumChange(
                False, f"{type(opt).__name__} already uses momentum (betas={groups[0]['betas']}); pass betas"
            )
        b1, b2 = float(betas[0]), float(betas[1])
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise TrainmedicError(f"`betas` must be two values in [0, 1); got {betas!r}")
        for g in groups:
            g["betas"] = (b1, b2)
        return MomentumChange(True, f"{type(opt).__name__} betas=({b1}, {b2})")
    return MomentumChange(False, f"{type(opt).__name__} has no momentum setting; use switch_optimizer")


_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2}
_FAMILY = {"adam": "adaptive", "adamw": "adaptive", "sgd": "sgd"}


def _family_of(opt: torch.optim.Optimizer) -> str:
    if isinstance(opt, torch.optim.SGD):
        return "sgd"
    if isinstance(
        opt, (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax)
    ):
        return "adaptive"
    return "other"


def switch_optimizer(
    optimizer: torch.optim.Optimizer,
    model_params: Iterable[nn.Parameter] | Iterable[dict[str, Any]] | None = None,
    to: str = "adam",
    lr: float | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """A new optimizer of kind ``to`` (``adam``, ``adamw``, ``sgd``) over the same parameters.

    Carried over per group: weight decay, and the learning rate when the switch stays within a family
    (Adam ↔ AdamW). Across families an lr does not transfer (SGD's 0.1 diverges under Adam), so the target's
    usual default is used (Adam/AdamW 1e-3, SGD 1e-2 with momentum 0.9) unless ``lr`` is given. Optimizer
    state (moments) is not carried. ``model_params`` defaults to the old optimizer's groups. Anything that
    hooked the old optimizer (a trainmedic run, a clipper, an lr scheduler) must be attached to the new one.
    """
    old = _check_optimizer(optimizer)
    if to not in _DEFAULT_LR:
        raise TrainmedicError(f"`to` must be one of {', '.join(_DEFAULT_LR)}; got {to!r}")
    same_family = _family_of(old) == _FAMILY[to]
    if model_params is None:
        groups: list[dict[str, Any]] = [
            {"params": list(g["params"]), "lr": _get_lr(g), "weight_decay": g.get("weight_decay", 0.0)}
            for g in old.param_groups
        ]
    else:
        items = list(model_params)
        if items and isinstance(items[0], dict):
            groups = [dict(g) for g in items if isinstance(g, dict)]
        else:
            g0 = old.param_groups[0]
            groups = [{"params": items, "lr": _get_lr(g0), "weight_decay": g0.get("weight_decay", 0.0)}]
    for g in groups:
        if lr is not None:
            g["lr"] = float(lr)
        elif not same_family or "lr" not in g:
            g["lr"] = _DEFAULT_LR[to]
        g.setdefault("weight_decay", 0.0)
    if to == "sgd":
        kwargs.setdefault("momentum", 0.9)
        return torch.optim.SGD(groups, **kwargs)
    if to == "adam":
        return torch.optim.Adam(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def add_missing_params(optimizer: torch.optim.Optimizer, model: nn.Module) -> int:
    """Add the trainable parameters of ``model`` that ``optimizer`` does not know (new norm layers, PReLU,
    unfrozen layers) as one new group with the first group's settings; return how many were added."""
    opt = _check_optimizer(optimizer)
    known = {id(p) for g in opt.param_groups for p in g["params"]}
    missing = [p for p in model.parameters() if p.requires_grad and id(p) not in known]
    if missing:
        group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = group["lr"].clone()
        group["params"] = missing
        opt.add_param_group(group)
    return len(missing)


class WarmupThenPlateau:
    """Linear learning-rate warm-up, then reduce-on-plateau — the ``lr_schedule`` remedy.

    Call ``step()`` (no argument) after every optimizer step: for the first ``warmup_steps`` calls the lr
    rises linearly from ``start_factor`` × base lr to the base lr. Call ``step(metric)`` once per evaluation
    (e.g. each epoch's validation loss): after warm-up, when the metric has not improved for ``patience``
    evaluations (the :class:`~trainmedic.remedies.plateau.Plateau` rule, shared with early stopping), every
    group's lr is multiplied by ``factor``, never below ``min_lr``. Metrics fed during warm-up are ignored.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        start_factor: float = 0.1,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 0.0,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        self.optimizer = _check_optimizer(optimizer)
        if warmup_steps < 0:
            raise TrainmedicError(f"`warmup_steps` must be >= 0; got {warmup_steps}")
        if not 0.0 < start_factor <= 1.0:
            raise TrainmedicError(f"`start_factor` must be in (0, 1]; got {start_factor!r}")
        if not 0.0 < factor < 1.0:
            raise TrainmedicError(f"`factor` must be in (0, 1); got {factor!r}")
        self.warmup_steps = int(warmup_steps)
        self.start_factor = float(start_factor)
        self.factor = float(factor)
        self.min_lr = float(min_lr)
        self.base_lrs = [_get_lr(g) for g in self.optimizer.param_groups]
        self.plateau = Plateau(mode=mode, patience=patience, min_delta=min_delta, cooldown=cooldown)
        self.steps = 0
        self.reductions = 0
        if self.warmup_steps > 0:
            self._apply_warmup()

    @property
    def in_warmup(self) -> bool:
        return self.steps < self.warmup_steps

    def _apply_warmup(self) -> None:
        frac = min(1.0, self.steps / self.warmup_steps) if self.warmup_steps else 1.0
        scale = self.start_factor + (1.0 - self.start_factor) * frac
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=False):
            _put_lr(g, base * scale)

    def step(self, metric: float | None = None) -> bool:
        """Advance the schedule; returns True when this call reduced the learning rate."""
        if metric is None:
            if self.in_warmup:
                self.steps += 1
                self._apply_warmup()
            return False
        if self.in_warmup:
            return False
        if not self.plateau.update(float(metric)):
            return False
        changed = False
        for g in self.optimizer.param_groups:
            old = _get_lr(g)
            new = max(old * self.factor, self.min_lr)
            if old - new > 1e-12 * max(old, 1.0):
                _put_lr(g, new)
                changed = True
        self.reductions += int(changed)
        return changed

    def get_last_lr(self) -> list[float]:
        return [_get_lr(g) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "reductions": self.reductions,
            "base_lrs": list(self.base_lrs),
            "plateau": self.plateau.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.reductions = int(state["reductions"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.plateau.load_state_dict(state["plateau"])


def warmup_then_plateau(
    optimizer: torch.optim.Optimizer, warmup_steps: int, **kwargs: Any
) -> WarmupThenPlateau:
    """Build a :class:`WarmupThenPlateau` schedule (keywords as in its constructor)."""
    return WarmupThenPlateau(optimizer, warmup_steps, **kwargs)
