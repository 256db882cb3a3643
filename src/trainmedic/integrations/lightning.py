"""Lightning: ``Trainer(callbacks=[TrainmedicCallback("runs/exp1")])`` records the run like ``tm.watch`` does.

At ``on_fit_start`` (optimizers exist by then) the callback calls ``tm.watch(pl_module, trainer.optimizers)``,
so gradients, weights, updates, hyperparameters and activations come from the same optimizer and module
hooks as in a plain loop. The training loss comes from ``training_step``'s return value.

Training and validation batches are scored like ``run.log(outputs=, targets=)`` / ``run.evaluate`` in a plain
loop: from the predictions a step returns (``{"loss": …, "outputs": logits, "targets": y}``), else from the
module's own forward output (a forward hook keeps a reference to the last one) against the batch's labels
(``(x, y)`` batches or dicts with ``labels``/``targets``/``y``). Training batches become split
``train_running`` (running metrics of the batches as they were trained on, never a clean ``train`` pass);
validation batches split ``val`` with its confusion matrix. What ``self.log("val_…")`` / ``"train_…"`` put
into ``trainer.callback_metrics`` is stored beside them (``val_loss`` → split ``val``, metric ``loss``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from . import missing_extra

try:
    import lightning.pytorch as pl
except ImportError as _e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("lightning", "lightning", "2.4", _e) from _e

from ..errors import TrainmedicError
from ..running import RUNNING_SPLIT
from ..watch import Run, watch
from ._store import evaluate_with_extras, fail_open, fold_batch, log_epoch, numeric, set_meta

__all__ = ["TrainmedicCallback"]

OUTPUT_KEYS = ("outputs", "logits", "preds")
TARGET_KEYS = ("targets", "labels", "y")


def _first(d: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((d[k] for k in keys if k in d and d[k] is not None), None)


def _detached(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


def _batch_targets(batch: Any) -> torch.Tensor | None:
    """The class labels of a training batch: ``(x, y, …)`` or a dict with ``labels``/``targets``/``y``."""
    y: Any = None
    if isinstance(batch, Mapping):
        y = _first(batch, ("labels", "label", *TARGET_KEYS))
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        y = batch[1]
    if isinstance(y, torch.Tensor) and y.dim() in (1, 2) and not y.is_floating_point():
        return y if y.dim() == 1 else y[:, 0] if y.shape[1] == 1 else None
    return None


def _scores_for(preds: Any, targets: Any) -> bool:
    """Whether ``preds`` are class scores ``(N, C)`` / binary scores ``(N,)`` for class labels ``targets``."""
    return (
        isinstance(preds, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and preds.is_floating_point()
        and preds.dim() in (1, 2)
        and len(preds) == len(targets)
    )


def _batch_len(batch: Any) -> int | None:
    """Samples in a training batch (its first tensor's first dimension)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    items = (
        list(batch.values())
        if isinstance(batch, Mapping)
        else batch
        if isinstance(batch, (tuple, list))
        else []
    )
    for item in items:
        n = _batch_len(item)
        if n is not None:
            return n
    return None


class _SplitCollector:
    """Predictions, targets and the batch-size-weighted loss of one split over one epoch."""

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.loss_sum = 0.0
        self.loss_n = 0

    def add(self, out: Any, fallback: tuple[Any, Any] = (None, None)) -> None:
        """One batch's step output; ``fallback``: the module's forward output and the batch's labels, scored
        when the step returns no predictions."""
        loss: Any = None
        preds: Any = None
        targets: Any = None
        if isinstance(out, torch.Tensor):
            loss = out
        elif isinstance(out, Mapping):
            loss, preds, targets = out.get("loss"), _first(out, OUTPUT_KEYS), _first(out, TARGET_KEYS)
        if not isinstance(preds, torch.Tensor) or not isinstance(targets, torch.Tensor):
            preds, targets = fallback
            if not _scores_for(preds, targets):
                preds, targets = None, None
        n = 1
        if isinstance(preds, torch.Tensor) and isinstance(targets, torch.Tensor):
            self.outputs.append(preds.detach().cpu())
            self.targets.append(targets.detach().cpu())
            n = int(targets.shape[0]) if targets.dim() else 1
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self.loss_sum += float(loss.detach()) * n
            self.loss_n += n

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.loss_n if self.loss_n else None

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


def _prefixed(metrics: Mapping[str, Any], split: str) -> dict[str, float]:
    """``val_loss`` / ``val/acc`` of ``callback_metrics`` → ``{"loss": …, "acc": …}`` for split ``val``."""
    out: dict[str, float] = {}
    for k, v in numeric(metrics).items():
        for sep in ("_", "/"):
            if k.startswith(split + sep) and len(k) > len(split) + 1:
                name = k[len(split) + 1 :]
                for suffix in ("_epoch", "/epoch"):  # self.log(on_step=True, on_epoch=True) adds both
                    if name.endswith(suffix):
                        name = name[: -len(suffix)]
                if not name.endswith(("_step", "/step")):
                    out.setdefault(name, v)
    return out


class TrainmedicCallback(pl.Callback):
    """Records a Lightning fit into a trainmedic run directory.

    Args:
        run_dir: the run directory (default ``runs/<name>-<time>``); rank 0 writes it under DDP.
        **watch_options: passed to :func:`trainmedic.watch` (``every``, ``overwrite``, ``thresholds``,
            ``treat``, ``quiet`` …).

    After ``fit`` the run is in ``callback.run`` (closed); ``callback.run.run_dir`` is where it lies.
    A second ``fit`` with the same callback continues the same run directory.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, **watch_options: Any) -> None:
        super().__init__()
        for bad in ("model", "optimizer"):
            if bad in watch_options:
                raise TrainmedicError(
                    f"`{bad}` must not be given to TrainmedicCallback; the callback watches the "
                    f"LightningModule and trainer.optimizers itself; got {bad}={watch_options[bad]!r}"
                )
        self.run_dir = run_dir
        self.watch_options = watch_options
        self.run: Run | None = None
        self._step_losses: list[torch.Tensor] = []
        self._logged_at = 0
        self._val: dict[int, _SplitCollector] = {}
        self._forward_out: torch.Tensor | None = None  # the LightningModule's last training forward output
        self._handle: Any = None
        self._batch_recorded = False
        self._folded = False

    # ---- start and end ------------------------------------------------------------------------
    @fail_open("lightning callback")
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        options = dict(self.watch_options)
        if self.run is not None:  # a second fit continues the run
            self.run_dir = self.run.run_dir
            options.pop("overwrite", None)
            options["resume"] = True
        if "config" not in options:
            options["config"] = {"framework": "lightning", "hparams": dict(pl_module.hparams)}
        optimizers = list(trainer.optimizers)
        self.run = watch(
            pl_module, optimizers[0] if len(optimizers) == 1 else optimizers or None, self.run_dir, **options
        )
        self._logged_at = self.run.step
        self._step_losses.clear()
        self._val.clear()
        self._batch_recorded = False
        self._folded = False
        # the training forward's output: running training metrics without the user returning predictions
        self._handle = pl_module.register_forward_hook(self._forward_hook)

    def _forward_hook(self, module: Any, args: Any, output: Any) -> None:
        """Keep (a reference to) the last forward output: training and validation batches are scored from it
        when their step returns no predictions."""
        out = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", output)
        self._forward_out = out.detach() if isinstance(out, torch.Tensor) else None

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @fail_open("lightning callback")
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()
        if self.run is not None:
            self.run.close()

    @fail_open("lightning callback")
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._detach()
        if self.run is not None and not self.run.closed:
            self.run.__exit__(type(exception), exception, exception.__traceback__)

    # ---- training ----------------------------------------------------------------------------
    @fail_open("lightning callback")
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._forward_out = None
        run = self.run
        if run is None or run.closed or self._batch_recorded:
            return
        self._batch_recorded = True
        n = _batch_len(batch)
        if n is not None:  # the training batch, not the sanity check's validation batch seen first
            run._batch_size = n
            set_meta(run, batch_size=n, batch_size_source="first training batch")

    @fail_open("lightning callback")
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        run = self.run
        forward, self._forward_out = self._forward_out, None
        if run is None or run.closed or outputs is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        scalar_loss = isinstance(loss, torch.Tensor) and loss.numel() == 1
        # scoring the batch is independent of the loss: a failure there never costs the step's loss
        run._guard("running metrics", lambda: self._score_batch(trainer, pl_module, outputs, batch, forward))
        if isinstance(loss, torch.Tensor) and scalar_loss:
            self._step_losses.append(loss.detach().reshape(()))
        # One loss per optimizer step: with gradient accumulation Lightning hands out loss / k per batch.
        if self._step_losses and (run.step != self._logged_at or not run.optimizers):
            total = torch.stack(self._step_losses).sum()
            value = total if pl_module.automatic_optimization else total / len(self._step_losses)
            self._step_losses.clear()
            self._logged_at = run.step
            run.log(loss=value)
        if trainer.world_size == 1:
            self._honour_stop(trainer)

    def _score_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, forward: Any
    ) -> None:
        """The running training metrics of one batch, as run.log(outputs=, targets=) in a plain loop."""
        assert self.run is not None
        loss, preds, targets = outputs if isinstance(outputs, torch.Tensor) else None, None, None
        if isinstance(outputs, Mapping):
            loss, preds, targets = (
                outputs.get("loss"),
                _first(outputs, OUTPUT_KEYS),
                _first(outputs, TARGET_KEYS),
            )
        if not isinstance(preds, torch.Tensor) or not isinstance(targets, torch.Tensor):
            # not returned: the module's own training forward and the batch's labels
            preds, targets = forward, _batch_targets(batch)
        if not _scores_for(preds, targets):
            return
        assert isinstance(preds, torch.Tensor) and isinstance(targets, torch.Tensor)
        batch_loss = None
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            batch_loss = loss.detach().reshape(())
            if pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1:
                batch_loss = batch_loss * trainer.accumulate_grad_batches  # Lightning hands out loss / k
        fold_batch(self.run, preds.detach(), targets.detach(), batch_loss)
        self._folded = True

    @fail_open("lightning callback")
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self.run
        if run is None or run.closed:
            return
        # the epoch's running metrics (already stored by the epoch's validation, the first evaluation after
        # the batches, when there was one), plus the train_* metrics the module logged
        folded, self._folded = self._folded, False
        run.end_epoch()
        extra = _prefixed(trainer.callback_metrics, "train")
        if folded:
            extra.pop("loss", None)  # the running loss of the folded batches is already there
            counter = run._epoch_counter[RUNNING_SPLIT]
            log_epoch(run, RUNNING_SPLIT, extra, epoch=counter - 1 if counter else None)
        else:  # no predictions to score (a regression, or neither returned nor found): the logged metrics
            log_epoch(run, RUNNING_SPLIT, extra)
        self._honour_stop(trainer)

    # ---- validation --------------------------------------------------------------------------
    @fail_open("lightning callback")
    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._forward_out = None

    @fail_open("lightning callback")
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        forward, self._forward_out = self._forward_out, None
        if trainer.sanity_checking or self.run is None:
            return
        self._val.setdefault(dataloader_idx, _SplitCollector()).add(outputs, (forward, _batch_targets(batch)))

    @fail_open("lightning callback")
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self.run
        if trainer.sanity_checking or run is None or run.closed:
            self._val.clear()
            return
        logged = _prefixed(trainer.callback_metrics, "val")
        for idx, col in sorted(self._val.items()) or [(0, _SplitCollector())]:
            split = "val" if idx == 0 else f"val{idx}"
            extra = dict(logged) if idx == 0 else {}
            if col.loss is not None:
                extra["loss"] = col.loss
            if col.targets:
                targets, outputs = torch.cat(col.targets), torch.cat(col.outputs)
                evaluate_with_extras(run, split, targets, outputs, extra.get("loss"), extra)
            else:
                log_epoch(run, split, extra)
        self._val.clear()
        self._honour_stop(trainer)

    # ---- control -----------------------------------------------------------------------------
    def _honour_stop(self, trainer: pl.Trainer) -> None:
        """``run.control.should_stop`` (a live treatment asked to stop) → ``trainer.should_stop``."""
        control = getattr(self.run, "control", None)
        stop = bool(getattr(control, "should_stop", False))
        if trainer.world_size > 1:  # every rank must agree, or DDP hangs on the next collective
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if stop:
            trainer.should_stop = True
