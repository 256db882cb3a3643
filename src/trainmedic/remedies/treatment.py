"""Live treatment while training runs: ``tm.watch(model, optimizer, treat="safe")``.

The :class:`~trainmedic.watch.Run` calls three hooks: ``before_step`` (optimizer step pre-hook, gradients
final), ``after_step`` (step post-hook) and ``after_evaluate`` (after each ``run.evaluate``). What the
treatment does:

- **bad update** (non-finite global gradient norm, or a spike above ``explode_ratio`` × the running median
  while no clipping is installed): the pre-hook cannot cancel ``optimizer.step()``, so it snapshots the
  parameters and the optimizer state *only then* and the post-hook puts them back — the update is skipped.
  It then requests a lower learning rate and gradient clipping (at a value from the run's healthy gradient
  history) through :class:`~trainmedic.remedies.control.Control`, at most ``max_retries`` times; after that
  it restores the best weights and requests a stop.
- **overfitting confirmed** (validation loss has not improved for ``overfit_patience`` evaluations, sits
  ``overfit_val_loss_rise`` above its best, and training loss kept falling or the accuracy gap reached
  ``overfit_gap``): restore the best weights and optimizer state, request a stop.
- **plateau** (no validation improvement for ``plateau_patience`` evaluations, no overfitting): request
  ``lr × plateau_factor``, at most ``max_lr_reductions`` times. A plateau must also be long in optimizer steps
  (at least ``plateau_min_steps`` since the best evaluation or the last reduction, and a quarter of the steps
  taken before the best), and the training loss (its mean between evaluations) must have stopped falling: a
  loop that evaluates every step, or a small validation set whose accuracy moves in coarse steps, does not
  look flat for three evaluations while the model is still learning.

Every action is recorded as a ``treatment`` event with its evidence and the thresholds used. The one cost in
the hot path is one host sync per step (reading the global gradient norm).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any

import numpy as np
import torch

from ..errors import TrainmedicError
from ..settings import Thresholds
from .plateau import improved

TREAT_MODES = ("safe",)


def _clone_state(state: dict[Any, Any]) -> dict[Any, Any]:
    return {
        k: (v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in state.items()
    }


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def _lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [float(g["lr"]) for g in opt.param_groups]


class Treatment:
    """The ``treat="safe"`` policy. Pass an instance as ``treat=`` to change its settings."""

    def __init__(
        self,
        *,
        max_retries: int = 5,
        lr_factor: float = 0.1,
        clip_quantile: float = 0.9,
        skip_spikes: bool = True,
        monitor_split: str = "val",
        stop_on_overfitting: bool = True,
        overfit_patience: int = 3,
        reduce_on_plateau: bool = True,
        plateau_patience: int = 3,
        plateau_factor: float = 0.1,
        max_lr_reductions: int = 2,
        min_history: int = 20,
        plateau_min_steps: int = 100,
    ) -> None:
        if max_retries < 0:
            raise TrainmedicError(f"`max_retries` must be >= 0; got {max_retries}")
        for name, f in (("lr_factor", lr_factor), ("plateau_factor", plateau_factor)):
            if not 0.0 < f < 1.0:
                raise TrainmedicError(f"`{name}` must be in (0, 1); got {f!r}")
        self.max_retries = int(max_retries)
        self.lr_factor = float(lr_factor)
        self.clip_quantile = float(clip_quantile)
        self.skip_spikes = skip_spikes
        self.monitor_split = monitor_split
        self.stop_on_overfitting = stop_on_overfitting
        self.overfit_patience = int(overfit_patience)
        self.reduce_on_plateau = reduce_on_plateau
        self.plateau_patience = int(plateau_patience)
        self.plateau_factor = float(plateau_factor)
        self.max_lr_reductions = int(max_lr_reductions)
        self.min_history = int(min_history)
        self.plateau_min_steps = int(plateau_min_steps)
        # state
        self.retries = 0
        self.skipped_steps: list[int] = []
        self.lr_reductions = 0
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.best_mode = "min"
        self.wait = 0
        self.actions: list[dict[str, Any]] = []
        self._norms: deque[float] = deque(maxlen=200)
        self._snapshots: dict[int, dict[str, Any]] = {}
        self._best_state: dict[str, Any] | None = None
        self._initial_state: dict[str, Any] | None = None
        self._last_bad: dict[int, int] = {}
        self._train: dict[int, tuple[float | None, float | None]] = {}
        self._stopped = False
        self.best_step = 0
        self._last_cut_step = 0
        self._loss_sum: float | torch.Tensor = 0.0  # training loss logged since the last evaluation
        self._loss_n = 0
        self._interval_loss: dict[int, float] = {}  # epoch -> mean training loss logged before its evaluation

    # ---- the bad-update path ---------------------------------------------------------------------
    def before_step(self, run: Any, probe: Any, step: int) -> None:
        """Snapshot parameters and optimizer state when this step's gradient is bad (one sync per step)."""
        opt: torch.optim.Optimizer = probe.optimizer
        if self._initial_state is None:
            self._initial_state = self._copy_state(run)  # the fallback "last good" state before any epoch
        grads = [p.grad for p in _params(opt) if p.grad is not None]
        if not grads:
            return
        gnorm = float(torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)])))
        t: Thresholds = run.thresholds
        kind: str | None = None
        median = float(np.median(self._norms)) if len(self._norms) >= self.min_history else None
        if not math.isfinite(gnorm):
            kind = "nonfinite"
        elif self.skip_spikes and median is not None and median > 0 and gnorm > t.explode_ratio * median:
            kind = "explosion"
        if kind is None:
            self._norms.append(gnorm)
            return
        if kind == "explosion" and run.control.clipping(opt) is not None:
            # gradient clipping is on (installed at the first skip, or by the user): it already bounds this
            # update, so a large but finite gradient is taken, not skipped. A gradient that stays large (full
            # batch, or a net leaving a plateau as learning starts) is the landscape, not a spike of one batch;
            # skipping it again and again, each time cutting the lr, would stall a healthy run
            self._norms.append(gnorm)
            return
        params = _params(opt)
        self._snapshots[id(opt)] = {
            "kind": kind,
            "grad_norm": gnorm,
            "median": median,
            "params": [p.detach().clone() for p in params],
            "state": {id(p): _clone_state(opt.state[p]) for p in params if p in opt.state},
        }

    def after_step(self, run: Any, probe: Any, step: int) -> None:
        """Undo the update of a bad step, then lower the learning rate / enable clipping (bounded)."""
        opt: torch.optim.Optimizer = probe.optimizer
        snap = self._snapshots.pop(id(opt), None)
        if snap is None:
            if run.control.pending:
                run.control.honour(run.optimizers)
            return
        params = _params(opt)
        with torch.no_grad():
            for p, saved in zip(params, snap["params"]):
                p.copy_(saved)
        for p in params:
            saved_state = snap["state"].get(id(p))
            if saved_state is None:
                opt.state.pop(p, None)
            else:
                opt.state[p] = saved_state
        self.retries += 1
        self.skipped_steps.append(step)
        control = run.control
        t: Thresholds = run.thresholds
        what = (
            f"non-finite gradient norm ({snap['grad_norm']})"
            if snap["kind"] == "nonfinite"
            else f"gradient norm {snap['grad_norm']:.3g} > {t.explode_ratio:g} x running median {snap['median']:.3g}"
        )
        evidence: dict[str, Any] = {
            "action": "skip_update",
            "cause": snap["kind"],
            "grad_norm": snap["grad_norm"],
            "running_median": snap["median"],
            "threshold_explode_ratio": t.explode_ratio,
            "retry": self.retries,
            "max_retries": self.max_retries,
            "optimizer": probe.name,
            "lr_before": _lrs(opt),
        }
        restored_from = "the weights and optimizer state from before the step"
        weights_finite = all(bool(torch.isfinite(p).all()) for p in params)
        self._last_bad[id(opt)] = step
        if not weights_finite:
            # the weights before this step are already damaged (non-finite): go back to the last good state —
            # the best evaluated one, else the state at the first step. (A bad step right after a skipped one
            # is not damage: the skip put the weights back as they were.)
            good = self._best_state if self._best_state is not None else self._initial_state
            why = "the weights were non-finite"
            if good is not None:
                self._put_state(run, good, keep_lr=True)
                when = f"epoch {self.best_epoch}" if self._best_state is not None else "the first step"
                restored_from = f"the last good weights and optimizer state ({when}; {why})"
                weights_finite = True
            else:
                restored_from = f"nothing more ({why}; no good state is kept)"
        evidence["restored"] = restored_from
        if self.retries > self.max_retries or not weights_finite:
            reason = (
                f"{snap['kind']}: {self.retries} bad updates skipped (limit {self.max_retries}); "
                "stopping with the best weights kept"
            )
            if self._best_state is not None and weights_finite:
                self._restore_best(run)
                control.note_restore(self.best_epoch, reason, step=step)
            control.request_stop(reason, step=step, epoch=run.epoch)
            evidence["action"] = "stop"
            self._record(run, f"step {step}: {what}; {reason}", evidence)
            return
        control.request_lr_scale(self.lr_factor, f"{snap['kind']} at step {step}", step=step, epoch=run.epoch)
        clip_note = ""
        if control.clipping(opt) is None:
            from .clipping import clip_norm_from_history

            try:
                clip = clip_norm_from_history(np.asarray(self._norms), quantile=self.clip_quantile)
            except TrainmedicError:
                clip = None
            if clip is not None:
                control.request_clipping(clip, f"{snap['kind']} at step {step}", step=step, epoch=run.epoch)
                clip_note = f", clip the gradient norm at {clip:.3g} (q{self.clip_quantile:g} of {len(self._norms)} healthy norms)"
                evidence["clip_norm"] = clip
                evidence["clip_quantile"] = self.clip_quantile
        done = control.honour(run.optimizers)
        evidence["applied"] = done
        evidence["lr_after"] = _lrs(opt)
        self._record(
            run,
            f"step {step}: {what}; skipped the update, restored {restored_from}, lr x{self.lr_factor:g}{clip_note} "
            f"(retry {self.retries} of {self.max_retries})",
            evidence,
        )

    # ---- the per-epoch path ----------------------------------------------------------------------
    def observe_loss(self, value: float | torch.Tensor) -> None:
        """The training loss of one step (``run.log(loss=...)``), summed on its device until an evaluation."""
        if isinstance(value, torch.Tensor):
            value = value.detach().float().reshape(())
        self._loss_sum = self._loss_sum + value
        self._loss_n += 1

    def _take_interval_loss(self, epoch: int) -> None:
        if self._loss_n:
            mean = float(self._loss_sum) / self._loss_n
            if math.isfinite(mean):
                self._interval_loss[epoch] = mean
        self._loss_sum, self._loss_n = 0.0, 0

    def _still_learning(self, epoch: int) -> bool:
        """The training loss logged before this evaluation is at least 1% below the one logged before the best."""
        now = self._interval_loss.get(epoch)
        then = self._interval_loss.get(self.best_epoch if self.best_epoch is not None else -1)
        return now is not None and then is not None and now < then - 0.01 * abs(then)

    def after_evaluate(
        self, run: Any, split: str, epoch: int, result: dict[str, Any], loss_value: float | None
    ) -> None:
        """Keep the best state; stop on confirmed overfitting; lower the lr on a plateau."""
        acc = result.get("scalars", {}).get("accuracy")
        acc = None if acc is None else float(acc)
        if split == "train":
            self._train[epoch] = (loss_value, acc)
            return
        if split != self.monitor_split or self._stopped:
            return
        self._take_interval_loss(epoch)
        use_loss = loss_value is not None
        value = float(loss_value) if loss_value is not None else (acc if acc is not None else math.nan)
        self.best_mode = "min" if use_loss else "max"
        if improved(value, self.best_value, self.best_mode):
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            self.best_step = run.step
            self._save_best(run)
            return
        self.wait += 1
        t: Thresholds = run.thresholds
        control = run.control
        if (
            self.stop_on_overfitting
            and use_loss
            and self.best_value is not None
            and self.wait >= self.overfit_patience
        ):
            best = self.best_value
            rise = (value - best) / abs(best) if best != 0 else math.inf
            tr_best = self._train.get(self.best_epoch if self.best_epoch is not None else -1, (None, None))
            tr_now = self._train.get(epoch, (None, None))
            train_falling = tr_best[0] is not None and tr_now[0] is not None and tr_now[0] < tr_best[0]
            gap = tr_now[1] - acc if (tr_now[1] is not None and acc is not None) else None
            gap_open = gap is not None and gap >= t.overfit_gap
            if math.isfinite(value) and rise >= t.overfit_val_loss_rise and (train_falling or gap_open):
                why = (
                    "training loss still falling"
                    if train_falling
                    else f"accuracy gap {gap:.3f} >= {t.overfit_gap:g}"
                )
                reason = (
                    f"overfitting: validation loss {value:.4g} is {rise:.1%} above its best {best:.4g} "
                    f"(epoch {self.best_epoch}; threshold {t.overfit_val_loss_rise:.0%}) for {self.wait} "
                    f"evaluations (patience {self.overfit_patience}), {why}"
                )
                self._restore_best(run)
                self._stopped = True
                control.note_restore(self.best_epoch, reason, step=run.step)
                control.request_stop(reason, step=run.step, epoch=epoch)
                self._record(
                    run,
                    f"epoch {epoch}: {reason}; restored the weights of epoch {self.best_epoch} and stopped",
                    {
                        "action": "stop_restore_best",
                        "cause": "overfitting",
                        "best_epoch": self.best_epoch,
                        "best_val_loss": best,
                        "val_loss": value,
                        "rise": rise,
                        "threshold_overfit_val_loss_rise": t.overfit_val_loss_rise,
                        "patience": self.overfit_patience,
                        "train_loss_at_best": tr_best[0],
                        "train_loss": tr_now[0],
                        "accuracy_gap": gap,
                        "threshold_overfit_gap": t.overfit_gap,
                    },
                )
                return
        flat_since = max(self.best_step, self._last_cut_step)
        if (
            self.reduce_on_plateau
            and self.wait >= self.plateau_patience
            and self.lr_reductions < self.max_lr_reductions
            and run.step - flat_since >= max(self.plateau_min_steps, self.best_step // 4)
            and not self._still_learning(epoch)
        ):
            before = {n: _lrs(o) for n, o in run.optimizers.items()}
            reason = (
                f"plateau: validation {'loss' if use_loss else 'accuracy'} has not improved on its best "
                f"{self.best_value:.4g} (epoch {self.best_epoch}) for {self.wait} evaluations (patience "
                f"{self.plateau_patience}) and {run.step - self.best_step} steps, and the training loss stopped falling"
            )
            control.request_lr_scale(self.plateau_factor, reason, step=run.step, epoch=epoch)
            done = control.honour(run.optimizers)
            self.lr_reductions += 1
            self.wait = 0
            self._last_cut_step = run.step
            self._record(
                run,
                f"epoch {epoch}: {reason}; lr x{self.plateau_factor:g} (reduction {self.lr_reductions} of {self.max_lr_reductions})",
                {
                    "action": "lower_lr",
                    "cause": "plateau",
                    "best_epoch": self.best_epoch,
                    "best_value": self.best_value,
                    "value": value,
                    "patience": self.plateau_patience,
                    "steps_since_best": run.step - self.best_step,
                    "min_steps": max(self.plateau_min_steps, self.best_step // 4),
                    "train_loss_at_best": self._interval_loss.get(
                        self.best_epoch if self.best_epoch is not None else -1
                    ),
                    "train_loss": self._interval_loss.get(epoch),
                    "factor": self.plateau_factor,
                    "lr_before": before,
                    "applied": done,
                },
            )

    # ---- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _copy_state(run: Any) -> dict[str, Any]:
        return {
            "models": {n: _cpu_copy(m.state_dict()) for n, m in run.models.items()},
            "optimizers": {n: _cpu_copy(o.state_dict()) for n, o in run.optimizers.items()},
        }

    def _save_best(self, run: Any) -> None:
        self._best_state = self._copy_state(run)

    def _restore_best(self, run: Any, keep_lr: bool = False) -> None:
        """Put the best weights and optimizer state back (``keep_lr``: keep the current learning rates)."""
        if self._best_state is not None:
            self._put_state(run, self._best_state, keep_lr)

    @staticmethod
    def _put_state(run: Any, state: dict[str, Any], keep_lr: bool = False) -> None:
        for n, m in run.models.items():
            m.load_state_dict(state["models"][n])
        for n, o in run.optimizers.items():
            lrs = _lrs(o)
            o.load_state_dict(copy.deepcopy(state["optimizers"][n]))
            if keep_lr:
                for g, lr in zip(o.param_groups, lrs):
                    g["lr"] = lr

    @property
    def has_best(self) -> bool:
        return self._best_state is not None

    def _record(self, run: Any, message: str, evidence: dict[str, Any]) -> None:
        self.actions.append({"message": message, **evidence})
        run.event("treatment", message, **evidence)


def make_treatment(treat: Any) -> Treatment | None:
    """``None`` → no treatment; ``"safe"`` → :class:`Treatment` with defaults; a Treatment → itself."""
    if treat is None or treat is False:
        return None
    if isinstance(treat, Treatment):
        return treat
    if treat is True or treat in TREAT_MODES:
        return Treatment()
    raise TrainmedicError(f"`treat` must be None, 'safe' or a trainmedic Treatment; got {treat!r}")
