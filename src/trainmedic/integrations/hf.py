"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[TrainmedicCallback("runs/exp1")], compute_metrics=compute_metrics)``.

At ``on_train_begin`` the callback calls ``tm.watch(model, optimizer)`` (the optimizer unwrapped from
Accelerate's ``AcceleratedOptimizer``), so gradients, weights, updates and hyperparameters come from the same
optimizer hooks as in a plain loop. Why a forward hook for the loss: ``on_log`` only sees the loss averaged
over ``logging_steps``; the model's own ``output.loss`` gives every optimizer step its loss (the mean over the
step's gradient-accumulation micro-batches). ``on_log``'s loss is the fallback when the model returns none.

:func:`compute_metrics` scores evaluation predictions with :mod:`trainmedic.metrics` and hands them to the
active callback, which stores the full metrics and confusion matrix at ``on_evaluate``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from . import missing_extra

try:
    import transformers
except ImportError as _e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("transformers", "hf", "4.40", _e) from _e

from ..errors import TrainmedicError
from ..metrics import evaluate_classification
from ..running import RUNNING_SPLIT
from ..watch import Run, watch
from ._store import evaluate_with_extras, fail_open, fold_batch, log_epoch, numeric, record_failure, set_meta

__all__ = ["TrainmedicCallback", "compute_metrics"]

# Trainer bookkeeping in on_evaluate's metrics, not model quality.
_NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time")
_METRIC_ALIASES = {
    "accuracy": "accuracy",
    "precision": "precision_macro",
    "recall": "recall_macro",
    "f1": "f1_macro",
}

_active: TrainmedicCallback | None = None


def _unwrap_optimizer(opt: Any) -> Any:
    """Accelerate's ``AcceleratedOptimizer`` (and similar wrappers) → the torch optimizer whose hooks fire."""
    for _ in range(5):
        inner = getattr(opt, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            opt = inner
        else:
            break
    return opt


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """``Trainer(compute_metrics=compute_metrics)``: accuracy, macro precision/recall/F1 of the predictions.

    ``eval_pred`` is the Trainer's ``EvalPrediction`` (or a ``(predictions, label_ids)`` pair); predictions
    may be logits, probabilities or class indices (the first array when the model returns several). The
    active :class:`TrainmedicCallback` also receives the predictions, to store the confusion matrix.
    """
    if hasattr(eval_pred, "predictions"):
        preds, labels = eval_pred.predictions, eval_pred.label_ids
    elif isinstance(eval_pred, (tuple, list)) and len(eval_pred) == 2:
        preds, labels = eval_pred
    else:
        raise TrainmedicError(
            f"`eval_pred` must be an EvalPrediction or a (predictions, label_ids) pair; got {type(eval_pred).__name__}"
        )
    if isinstance(preds, (tuple, list)):
        preds = preds[0]
    if labels is None:
        raise TrainmedicError(
            "`eval_pred.label_ids` must hold the labels; got None (does the eval dataset have a 'labels' column?)"
        )
    if isinstance(labels, (tuple, list)):
        labels = labels[0]
    targets, outputs = _as_numpy(labels).reshape(-1), _as_numpy(preds)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = outputs.reshape(-1)
    result = evaluate_classification(targets, outputs)
    if _active is not None:
        _active._pending_eval = (targets, outputs)
    return {alias: float(result["scalars"][name]) for alias, name in _METRIC_ALIASES.items()}


class TrainmedicCallback(transformers.TrainerCallback):  # type: ignore[misc]
    """Records a Hugging Face ``Trainer`` run into a trainmedic run directory.

    Args:
        run_dir: the run directory (default ``runs/<name>-<time>``).
        **watch_options: passed to :func:`trainmedic.watch` (``every``, ``overwrite``, ``thresholds``, ``quiet`` …).

    Evaluations are stored per evaluation call (``epoch`` in the run = 0, 1, 2 … evaluations of that split):
    split ``val`` for the ``eval_`` prefix, ``val_<name>`` for a dict of eval datasets, ``<prefix>`` otherwise.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, **watch_options: Any) -> None:
        for bad in ("model", "optimizer"):
            if bad in watch_options:
                raise TrainmedicError(
                    f"`{bad}` must not be given to TrainmedicCallback; the Trainer passes its model and "
                    f"optimizer to the callback; got {bad}={watch_options[bad]!r}"
                )
        self.run_dir = run_dir
        self.watch_options = watch_options
        self.run: Run | None = None
        self._pending_eval: tuple[np.ndarray, np.ndarray] | None = None
        self._micro_losses: list[torch.Tensor] = []
        self._model_gives_loss = False
        self._epoch_losses: list[float] = []
        self._handle: Any = None
        self._folded = False  # this epoch's training batches were scored (logits + labels)
        self._batch_recorded = False
        self._unwrap: Any = None

    # ---- start and end ------------------------------------------------------------------------
    @fail_open("hf callback")
    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kwargs: Any
    ) -> None:
        global _active
        if model is None:
            raise TrainmedicError("`model` must be passed to on_train_begin by the Trainer; got None")
        options = dict(self.watch_options)
        if self.run is not None:  # a second train() continues the run
            self.run_dir = self.run.run_dir
            options.pop("overwrite", None)
            options["resume"] = True
        if "config" not in options:
            options["config"] = {
                "framework": "transformers",
                "transformers_version": transformers.__version__,
                "training_args": {
                    k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool))
                },
            }
        self.run = watch(
            model, _unwrap_optimizer(optimizer) if optimizer is not None else None, self.run_dir, **options
        )
        self._handle = model.register_forward_hook(self._loss_hook, with_kwargs=True)
        self._batch_recorded = False
        self._wrap_forward(model)
        _active = self

    def _wrap_forward(self, model: Any) -> None:
        """An exception inside the model's forward (the Trainer has no exception hook) closes the run as
        ``failed``; the instance attribute is put back exactly as it was at the end of ``train()``."""
        had = "forward" in model.__dict__
        previous = model.__dict__.get("forward")
        inner = model.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            try:
                return inner(*args, **kwargs)
            except Exception as e:
                if self.run is not None and model.training:
                    with contextlib.suppress(Exception):  # the user's exception is what propagates
                        record_failure(self.run, e)
                        self._detach()
                raise

        model.forward = forward

        def undo() -> None:
            if model.__dict__.get("forward") is forward:
                if had:
                    model.forward = previous
                else:
                    del model.forward

        self._unwrap = undo

    @fail_open("hf callback")
    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        global _active
        self._detach()
        if _active is self:
            _active = None
        if self.run is not None:
            self.run.close()

    def _detach(self) -> None:
        """Remove the loss hook and the forward wrapper (the model is as it was before ``train()``)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._unwrap is not None:
            self._unwrap()
            self._unwrap = None

    # ---- training ----------------------------------------------------------------------------
    def _loss_hook(self, module: Any, args: Any, kwargs: Mapping[str, Any], output: Any) -> None:
        if not module.training or not torch.is_grad_enabled():
            return
        loss = getattr(output, "loss", None)
        logits = getattr(output, "logits", None)
        if isinstance(output, Mapping):
            loss, logits = output.get("loss", loss), output.get("logits", logits)
        batch_loss = (
            loss.detach().reshape(()) if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None
        )
        if batch_loss is not None:
            self._micro_losses.append(batch_loss)
        labels = kwargs.get("labels")
        run = self.run
        if run is None or run.closed:
            return
        if not self._batch_recorded:
            self._record_batch(run, kwargs, args)
        if (
            isinstance(logits, torch.Tensor)
            and isinstance(labels, torch.Tensor)
            and logits.is_floating_point()
            and logits.dim() == 2
            and labels.dim() == 1
            and len(labels) == len(logits)
            and not labels.is_floating_point()
        ):
            # sequence classification: the running training metrics, as run.log(outputs=, targets=)
            fold_batch(run, logits.detach(), labels.detach(), batch_loss)
            self._folded = True

    def _record_batch(self, run: Run, kwargs: Mapping[str, Any], args: Any) -> None:
        """The first training micro-batch's size (the Trainer calls the model with keywords only)."""
        self._batch_recorded = True
        first = next(
            (v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.dim() >= 1), None
        )
        if first is not None:
            run._batch_size = int(first.shape[0])
            set_meta(
                run,
                batch_size=int(first.shape[0]),
                batch_size_source="first training batch",
                **{"input_shape/model": list(first.shape), "input_dtype/model": str(first.dtype)},
            )

    @fail_open("hf callback")
    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        run = self.run
        if run is None or run.closed:
            return None
        if self._micro_losses:
            loss = torch.stack(self._micro_losses).float().mean()
            self._micro_losses.clear()
            self._model_gives_loss = True
            run.log(loss=loss)
            self._epoch_losses.append(float(loss))
        return self._honour_stop(control)

    @fail_open("hf callback")
    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        run = self.run
        if run is None or run.closed or self._model_gives_loss:
            return
        values = numeric(logs)
        if "loss" in values:  # the model returned no loss: the Trainer's average over logging_steps
            run.log(step=max(state.global_step - 1, 0), loss=values["loss"])
            self._epoch_losses.append(values["loss"])

    @fail_open("hf callback")
    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is not None and not run.closed:
            if self._folded:
                run.end_epoch()  # stored already when this epoch's evaluation came first
            elif self._epoch_losses:  # no logits/labels to score: the epoch's mean training loss
                log_epoch(run, RUNNING_SPLIT, {"loss": float(np.mean(self._epoch_losses))})
        self._folded = False
        self._epoch_losses.clear()

    # ---- evaluation --------------------------------------------------------------------------
    @fail_open("hf callback")
    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        run = self.run
        pending, self._pending_eval = self._pending_eval, None
        if run is None or run.closed:
            return None
        values = numeric(metrics)
        prefix = "eval"
        if not any(k.startswith("eval_") for k in values):
            prefix = next((k[: -len("_runtime")] for k in values if k.endswith("_runtime")), "eval")
        for k in values:  # a dict of eval datasets: eval_<name>_runtime
            if k.startswith("eval_") and k.endswith("_runtime") and k != "eval_runtime":
                prefix = k[: -len("_runtime")]
        split = "val" + prefix[len("eval") :] if prefix.startswith("eval") else prefix
        scores = {
            k[len(prefix) + 1 :]: v
            for k, v in values.items()
            if k.startswith(prefix + "_") and not k[len(prefix) + 1 :].endswith(_NOT_METRICS)
        }
        if pending is not None:
            extra = {k: v for k, v in scores.items() if k not in _METRIC_ALIASES}
            evaluate_with_extras(run, split, pending[0], pending[1], scores.get("loss"), extra)
        else:
            log_epoch(run, split, scores)
        return self._honour_stop(control)

    # ---- control -----------------------------------------------------------------------------
    def _honour_stop(self, control: Any) -> Any:
        """``run.control.should_stop`` (a live treatment asked to stop) → ``control.should_training_stop``."""
        run_control = getattr(self.run, "control", None)
        if bool(getattr(run_control, "should_stop", False)):
            control.should_training_stop = True
        return control
