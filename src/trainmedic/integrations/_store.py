"""What the integrations write that :class:`~trainmedic.watch.Run` has no public method for yet.

Why a separate module: Keras and HF report per-epoch metrics without targets/outputs (``val_loss`` from
``logs``), and Keras needs per-layer statistics that no torch optimizer hook produces. Every access to the
run's private writer is here, in one place, so it can move to public ``Run`` methods (``log_epoch``,
``log_layers``) without touching the callbacks' logic.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import torch

from ..errors import TrainmedicError
from ..watch import Run


def _number(v: Any) -> float | None:
    """A plain float from a Python/numpy/torch scalar, or None for anything else (strings, arrays, bools)."""
    if isinstance(v, bool):
        return None
    try:
        if hasattr(v, "numel") and v.numel() != 1:
            return None
        if isinstance(v, np.ndarray) and v.size != 1:
            return None
        return float(v)
    except (TypeError, ValueError):
        return None


def numeric(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The finite-or-not numeric entries of a framework's ``logs``/``metrics`` dict."""
    out: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        f = _number(v)
        if f is not None:
            out[str(k)] = f
    return out


def log_epoch(run: Run, split: str, metrics: Mapping[str, float], *, epoch: int | None = None) -> int | None:
    """Store per-epoch metrics of ``split`` (no confusion matrix); returns the epoch used.

    Uses the run's own epoch counter, so it interleaves with :meth:`Run.evaluate` of the same split.
    """
    w = run._writer
    if w is None or run.closed or not metrics:
        return None
    if epoch is None:
        epoch = run._epoch_counter[split]
    run._epoch_counter[split] = max(run._epoch_counter[split], epoch + 1)
    run.epoch = epoch if run.epoch is None else max(run.epoch, epoch)
    step = run.step
    for k, v in metrics.items():
        w.add_eval(split, epoch, step, k, v if math.isfinite(v) else float("nan"))
    w.set_meta(steps=step, epochs=run.epoch + 1)
    run.flush()
    return epoch


def evaluate_with_extras(
    run: Run, split: str, targets: Any, outputs: Any, loss: float | None, extra: Mapping[str, float]
) -> dict[str, Any]:
    """:meth:`Run.evaluate`, then the framework's own metrics of that epoch that the evaluation did not compute.

    Why not ``evaluate(**extra)``: a logged ``accuracy`` would be stored twice, and a metric named like one of
    ``evaluate``'s keywords (``threshold``, ``epoch``) would be taken for it.
    """
    result = run.evaluate(split, targets, outputs, loss=loss)
    rest = {k: v for k, v in extra.items() if k not in result["scalars"] and k != "loss"}
    if rest and run._writer is not None:
        log_epoch(run, split, rest, epoch=run._epoch_counter[split] - 1)
    return result


def set_meta(run: Run, **items: Any) -> None:
    if run._writer is not None and not run.closed:
        run._writer.set_meta(**items)


def declare_layers(run: Run, stats: Sequence[str], layers: list[str]) -> None:
    """Fix the layer order of per-layer statistics (once per run)."""
    if run._writer is not None and not run.closed:
        for stat in stats:
            run._writer.set_layer_set(stat, layers)


def log_layers(run: Run, stat: str, step: int, values: np.ndarray) -> None:
    if run._writer is not None and not run.closed:
        run._writer.add_layer_values(stat, step, np.asarray(values, dtype=np.float32))


def fold_running(run: Run, confusion_matrix: np.ndarray, loss: float | None, batches: int) -> None:
    """Hand an epoch of training batches counted outside torch (Keras on TensorFlow: in the graph) to the
    run's running metrics, so that the next epoch boundary stores them as split ``train_running``."""
    from ..running import RunningMetrics

    if run._writer is None or run.closed or not run.enabled:
        return
    cm = np.asarray(confusion_matrix, dtype=np.int64)
    k = int(cm.shape[0])
    rm = run._running
    if rm is None or rm.k != k or rm._cm is None or rm._cm.device.type != "cpu":
        rm = run._running = RunningMetrics()
        rm.k = k
        rm._cm = torch.zeros(k * k + 1, dtype=torch.long)
    rm._cm[: k * k] += torch.from_numpy(cm.reshape(-1))
    n = int(cm.sum())
    if loss is not None and n:
        rm._loss = float(rm._loss) + loss * n
        rm._loss_n += n
    rm.batches += batches


def record_failure(run: Run, error: BaseException, step: int | None = None) -> None:
    """The framework's training raised: a ``training_exception`` event and status ``failed`` (as
    ``with tm.watch(...)`` records it in a plain loop). ``step``: the failing step, for a run without torch
    optimizer hooks (whose own step counter counts log calls)."""
    if run.closed:
        return
    if step is not None and not run._probes:
        run._log_count = step
    run.__exit__(type(error), error, error.__traceback__)


def evaluate_confusion(
    run: Run, split: str, confusion_matrix: np.ndarray, loss: float | None, extra: Mapping[str, float]
) -> dict[str, Any]:
    """:func:`evaluate_with_extras` from a confusion matrix counted elsewhere (in a compiled graph).

    Why through ``Run.evaluate``: one path stores every split. Each cell ``(i, j)`` becomes that many samples
    of class ``i`` scored one-hot at ``j``: every metric of a classification evaluation is a function of the
    matrix alone, so they come out exactly as from the original predictions.
    """
    cm = np.asarray(confusion_matrix, dtype=np.int64)
    k = int(cm.shape[0])
    rows, cols = np.nonzero(cm)
    counts = cm[rows, cols]
    targets = np.repeat(rows, counts)
    outputs = np.zeros((len(targets), k), dtype=np.float32)
    outputs[np.arange(len(targets)), np.repeat(cols, counts)] = 1.0
    return evaluate_with_extras(run, split, torch.from_numpy(targets), torch.from_numpy(outputs), loss, extra)


def fold_batch(run: Run, outputs: Any, targets: Any, loss: Any) -> None:
    """``run.log(outputs=, targets=, loss=)`` without logging ``loss`` as a per-step scalar a second time
    (the callbacks log one loss per optimizer step themselves, e.g. over gradient-accumulation batches)."""
    if not run.closed:
        run._guard("running metrics", lambda: run._fold_batch(outputs, targets, loss))


_F = TypeVar("_F", bound=Callable[..., Any])


def fail_open(probe: str) -> Callable[[_F], _F]:
    """The fail-open boundary of a framework callback's hook (as ``Run``'s ``_boundary``): the user's own
    mistakes (``TrainmedicError``) and requested stops (``TrainingProblemError``, a subclass) pass; any other
    failure inside trainmedic is recorded in the run (``internal_error``), warned about once, and the hook
    returns None, so the framework trains on exactly as without the callback."""

    def deco(fn: _F) -> _F:
        @functools.wraps(fn)
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except TrainmedicError:
                raise
            except Exception as e:  # never break the user's training
                run = getattr(self, "run", None)
                if isinstance(run, Run):
                    run._internal_error(probe, e)
                else:
                    warnings.warn(
                        f"trainmedic: the {probe!r} callback failed ({type(e).__name__}: {e}); training continues",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                return None

        return cast(_F, hook)

    return deco
