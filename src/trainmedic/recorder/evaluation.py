"""Evaluation: ``run.evaluate`` (confusion matrix by bincount, metrics, the eval-mode record, rows buffered
until the next flush) and the running training metrics of ``run.log(outputs=, targets=)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import TrainmedicError
from ..findings import Finding, Severity
from ..running import RUNNING_SPLIT, RunningMetrics, output_scale
from .common import _record_eval_mode, _scalar_value, _to_host

if TYPE_CHECKING:
    from ..watch import Run


def evaluate(
    run: Run,
    split: str,
    targets: Any,
    outputs: Any,
    loss: Any = None,
    *,
    epoch: int | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    threshold: float = 0.5,
    **scalars: Any,
) -> dict[str, Any]:
    """Score one split at the end of an epoch and store the metrics and the confusion matrix.

    ``outputs`` may be logits, probabilities or class indices; ``targets`` class indices. For object
    detection pass lists of dicts (``{"boxes", "labels"}`` and ``{"boxes", "scores", "labels"}``).
    Under ``torch.distributed`` call it on every rank: the shards are gathered before scoring.
    Returns the metrics (``result["scalars"]["accuracy"]`` …).
    """
    if run.closed:
        raise TrainmedicError("`evaluate()` was called after `close()`; start a new run with tm.watch(...)")
    if not isinstance(split, str) or not split:
        raise TrainmedicError(f"`split` must be a non-empty string such as 'train' or 'val'; got {split!r}")
    if run.world_size == 1 and isinstance(targets, torch.Tensor) and isinstance(outputs, torch.Tensor):
        cm = _host_confusion_matrix(targets, outputs, num_classes)
        if cm is not None and cm is not _NONFINITE:
            # the common case on the CPU (see _host_confusion_matrix): the same matrix and the same rows as
            # below, with less Python in between
            return _record_classification(run, split, cm, loss, epoch, class_names, scalars, outputs)
    targets, outputs = _to_host(targets, "targets"), _to_host(outputs, "outputs")
    if run.world_size > 1:
        targets, outputs = run._gather(targets), run._gather(outputs)
    from ..metrics import evaluate_classification, evaluate_detection
    from ..metrics.classification import fast_confusion_matrix

    detection = isinstance(outputs, list) and (not outputs or isinstance(outputs[0], Mapping))
    for arg, value in (("targets", targets), ("outputs", outputs)):
        if not detection and not isinstance(value, torch.Tensor):
            raise TrainmedicError(
                f"`{arg}` must be a tensor, array or list of numbers (class indices, scores or logits); got "
                f"{type(value).__name__}"
                + (f" of {type(value[0]).__name__}" if isinstance(value, list) and value else "")
            )
    if (
        not detection
        and isinstance(outputs, torch.Tensor)
        and outputs.is_floating_point()
        # one reduction: a finite sum means finite values (an overflowing sum takes the full look)
        and not math.isfinite(float(outputs.sum()))
        and not bool(torch.isfinite(outputs).all())
    ):
        return run._evaluate_nonfinite(split, outputs, epoch)
    cm = None if detection else fast_confusion_matrix(targets, outputs, num_classes)
    if cm is not None:
        return _record_classification(run, split, cm, loss, epoch, class_names, scalars, outputs)
    result: dict[str, Any]
    if detection:
        result = evaluate_detection(targets, outputs, iou_threshold=run.thresholds.iou_match)
    else:
        result = evaluate_classification(targets, outputs, num_classes=num_classes, threshold=threshold)
    loss_value, evals = _eval_values(loss, scalars)
    if not run.enabled:
        return result
    epoch, step, train_mode = _begin(run, split, epoch)

    def record() -> None:
        w = run._writer
        assert w is not None
        _note_eval_mode(run, split, epoch, step, train_mode)
        for k, v in result["scalars"].items():
            w.add_eval(split, epoch, step, k, v)
        for k, v in evals:
            w.add_eval(split, epoch, step, k, v)
        data = dict(result)
        if class_names is not None:
            data["class_names"] = [str(c) for c in class_names]
        w.add_record(
            "detection" if detection else "classification", data, epoch=epoch, step=step, split=split
        )
        _recorded(
            run, split, epoch, None if detection else result["per_class"]["support"], result, loss_value
        )

    run._guard("evaluate", record)
    return _after_evaluate(run, split, epoch, result, loss_value)


def evaluate_fast(run: Run, split: str, targets: Any, outputs: Any, loss: Any) -> dict[str, Any] | None:
    """``run.evaluate(split, targets, outputs[, loss])`` in the most common case, in one function: one process,
    CPU tensors scored as a confusion matrix (``_host_confusion_matrix``), no treatment, no running metrics, no
    probe switched off. It stores what :func:`evaluate` stores (the same matrix, rows and records, in the same
    order) and returns the same ``EvalResult``; None when anything else holds (the general path decides then).

    Why a second path: an evaluation runs once per split and epoch, between the user's own calls, with cold
    caches, and there each Python call it makes costs several times its warm cost; the general path passes
    through ~20 of them, this one through ~9.
    """
    if (
        run.closed
        or run._disabled
        or run.treatment is not None
        or run._running is not None
        or run.world_size != 1
        or not run.enabled
        or type(split) is not str
        or not split
        or not isinstance(targets, torch.Tensor)
        or not isinstance(outputs, torch.Tensor)
    ):
        return None
    if loss is None:
        loss_value = None
    elif isinstance(loss, torch.Tensor) and loss.numel() == 1:
        loss_value = float(loss.item())
    else:
        return None
    cm = _host_confusion_matrix(targets, outputs, None)
    if cm is None or cm is _NONFINITE:
        return None
    epoch = claim_epoch(run, split, None)
    step = run.step
    train_mode = train_mode_modules(run)
    if run._eval_modes.get(split) != train_mode:
        _note_eval_mode(run, split, epoch, step, train_mode)
    evals = [] if loss_value is None else [("loss", loss_value)]
    if _scale_epoch(epoch):
        scale = _outputs_scale(outputs)
        if scale is not None:
            evals.append(("output_scale", scale))
    w = run._writer
    assert w is not None
    w.add_classification(split, epoch, step, cm, evals)
    result = EvalResult(cm)
    _recorded(run, split, epoch, None, result, loss_value)
    if run._pending_problem is not None:
        run._raise_pending()
    return result


def _recorded(
    run: Run,
    split: str,
    epoch: int,
    counts: list[int] | None,
    result: dict[str, Any],
    loss_value: float | None,
) -> None:
    """The bookkeeping after an evaluation's rows are added: split sizes, progress meta, the console line."""
    w = run._writer
    assert w is not None
    if counts is not None:  # (the fast path's are written at the flush, from the buffered matrices)
        w.note_split_counts(split, counts)
    meta = w._meta
    meta["steps"] = str(run.step)  # ints: their JSON is str()
    meta["epochs"] = str(run.epoch + 1 if run.epoch is not None else 0)
    # no commit here: the rows go with the next flush (flush_secs / flush_steps, or close), so an
    # evaluation costs no SQLite transaction; a kill -9 loses at most one flush interval, as for steps
    if run._console is not None:
        shown = dict(result["scalars"])
        if loss_value is not None:
            shown["loss"] = loss_value
        run._console.on_evaluate(split, epoch, shown)


def _eval_values(loss: Any, scalars: dict[str, Any]) -> tuple[float | None, list[tuple[str, float]]]:
    """The loss and the user's extra scalars of an evaluation as floats: (loss, rows to store, loss first)."""
    loss_value = _scalar_value("loss", loss) if loss is not None else None
    evals = [(k, _scalar_value(k, v)) for k, v in scalars.items()] if scalars else []
    if loss_value is not None:
        evals.insert(0, ("loss", loss_value))
    return loss_value, evals


def _after_evaluate(run: Run, split: str, epoch: int, result: Any, loss_value: float | None) -> Any:
    """The treatment sees the evaluation; a live problem pending raises here."""
    if run.treatment is not None:
        run._guard("treatment", lambda: run.treatment.after_evaluate(run, split, epoch, result, loss_value))
    if run._pending_problem is not None:
        run._raise_pending()
    return result


_NONFINITE: Any = object()  # _host_confusion_matrix: the scores hold NaN/Inf (the checked path records that)
_FLOAT_DTYPES = (torch.float32, torch.float64)
_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _host_confusion_matrix(targets: torch.Tensor, outputs: torch.Tensor, num_classes: int | None) -> Any:
    """``fast_confusion_matrix`` for the most common call on the CPU — integer class indices ``(N,)`` and
    float32/64 scores ``(N, C)``, C >= 2 — on NumPy views, with the finiteness check folded in: the ``(C, C)``
    matrix, ``_NONFINITE`` when a score is NaN/Inf, or None (anything else: the general path decides).

    The same matrix as ``fast_confusion_matrix``: the same ``argmax`` (first maximum; with two classes
    ``o[:, 1] > o[:, 0]``, which picks the same class) and the same ``bincount`` of ``target * C + prediction``.
    """
    if not (outputs.is_cpu and targets.is_cpu) or outputs.ndim != 2 or targets.ndim != 1:
        return None
    if outputs.dtype not in _FLOAT_DTYPES or targets.dtype not in _INDEX_DTYPES:
        return None
    n, k = outputs.shape
    if n == 0 or k < 2 or targets.shape[0] != n or (num_classes is not None and num_classes != k):
        return None
    try:  # (integer targets never require grad; scored outputs rarely do)
        o = outputs.detach().numpy() if outputs.requires_grad else outputs.numpy()
        t = targets.numpy()
    except (RuntimeError, TypeError):  # e.g. a tensor with its negative bit set
        return None
    # one reduction: a finite sum means finite values (an overflowing sum takes the full look)
    if not math.isfinite(_add_reduce(o, axis=None)) and not np.isfinite(o).all():
        return _NONFINITE
    codes = np.multiply(t, k, dtype=np.int64)  # target * C + prediction, in one buffer
    if k == 2:
        codes += o[:, 1] > o[:, 0]
    else:
        codes += o.argmax(axis=1)
    try:
        counts = np.bincount(codes, minlength=k * k)
    except ValueError:  # a negative target
        return None
    if counts.size != k * k:  # a target >= k
        return None
    return counts.reshape(k, k)


_add_reduce = np.add.reduce


def _scale_epoch(epoch: int) -> bool:
    """Epochs whose evaluations record ``output_scale`` (the same for every split, so they compare epoch by
    epoch): the first four, the powers of two and every 32nd — a dozen in a 300-epoch run."""
    return epoch < 4 or epoch & (epoch - 1) == 0 or epoch % 32 == 0


def _outputs_scale(outputs: torch.Tensor) -> float | None:
    """:func:`~trainmedic.running.output_scale` of float scores on the host (None otherwise)."""
    if not outputs.is_floating_point() or outputs.ndim not in (1, 2):
        return None
    o = outputs.detach()
    if o.device.type != "cpu":
        o = o.cpu()
    try:
        arr = o.numpy() if o.dtype in _FLOAT_DTYPES else o.float().numpy()
    except (RuntimeError, TypeError):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        v = output_scale(arr)
    return v if v is not None and math.isfinite(v) else None


# the eval_mode record of an evaluation with every dropout / batch-norm module in eval mode (the common case)
_EVAL_MODE_NONE = json.dumps({"train_mode_modules": 0, "names": []})


def _note_eval_mode(run: Run, split: str, epoch: int, step: int, train_mode: list[str]) -> None:
    """The ``eval_mode`` record of a split, written when it changes: at the split's first evaluation and
    whenever the dropout / batch-norm modules left in training mode differ from its previous evaluation's.
    Each evaluation's state is the last record at or before its epoch (``checks/fit.py``)."""
    if run._eval_modes.get(split) == train_mode:
        return
    run._eval_modes[split] = train_mode
    w = run._writer
    assert w is not None
    if train_mode:
        _record_eval_mode(w, split, epoch, step, train_mode)
    else:
        w.add_record_json("eval_mode", _EVAL_MODE_NONE, epoch=epoch, step=step, split=split)


def _record_classification(
    run: Run,
    split: str,
    cm: np.ndarray,
    loss: Any,
    epoch: int | None,
    class_names: list[str] | None,
    scalars: dict[str, Any],
    outputs: Any = None,
) -> dict[str, Any]:
    """What ``evaluate`` stores for a classification scored as a confusion matrix ``cm`` (one bincount): the
    matrix is buffered, and the writer derives the metrics of all buffered evaluations at the next flush; the
    ``classification`` record is compact (the reader derives ``per_class``: ``expand_classification``). The
    dict returned derives its metrics when first read (``EvalResult``)."""
    result = EvalResult(cm)
    loss_value, evals = _eval_values(loss, scalars)
    if not run.enabled:
        return result
    epoch, step, train_mode = _begin(run, split, epoch)

    def record() -> None:
        w = run._writer
        assert w is not None
        _note_eval_mode(run, split, epoch, step, train_mode)
        scale = _outputs_scale(outputs) if isinstance(outputs, torch.Tensor) and _scale_epoch(epoch) else None
        names = [str(c) for c in class_names] if class_names is not None else None
        w.add_classification(
            split,
            epoch,
            step,
            cm,
            evals if scale is None else [*evals, ("output_scale", scale)],
            class_names=names,
        )
        _recorded(run, split, epoch, None, result, loss_value)

    run._guard("evaluate", record)
    return _after_evaluate(run, split, epoch, result, loss_value)


def _filled(name: str) -> Any:
    base = getattr(dict, name)

    def method(self: EvalResult, *args: Any, **kwargs: Any) -> Any:
        if self._cm is not None:
            self._fill()
        return base(self, *args, **kwargs)

    method.__name__ = name
    return method


class EvalResult(dict):  # type: ignore[type-arg]
    """What ``run.evaluate`` returns for a classification: a ``dict`` (``result["scalars"]["accuracy"]`` …)
    whose metrics are derived from the confusion matrix when it is first read (``metrics_dict``, ~25 µs), so a
    loop that does not read them does not pay for them. Every way of reading it — item access, iteration,
    ``dict(result)``, ``json.dumps``, ``copy``, pickling — sees the full metrics."""

    __slots__ = ("_cm",)

    def __init__(self, cm: Any) -> None:
        # one key at once: json's C encoder reads a dict subclass through items() only when it is not empty
        super().__init__(task="classification")
        self._cm = cm

    def _fill(self) -> None:
        from ..metrics.classification import metrics_dict

        cm, self._cm = self._cm, None
        dict.update(self, metrics_dict(cm))

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (dict, (dict(self.items()),))

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> dict[str, Any]:
        return dict(self.items())

    def __deepcopy__(self, memo: Any) -> dict[str, Any]:
        import copy

        return copy.deepcopy(dict(self.items()), memo)

    __getitem__ = _filled("__getitem__")
    __iter__ = _filled("__iter__")
    __len__ = _filled("__len__")
    __contains__ = _filled("__contains__")
    __eq__ = _filled("__eq__")
    __ne__ = _filled("__ne__")
    __repr__ = _filled("__repr__")
    __setitem__ = _filled("__setitem__")
    __delitem__ = _filled("__delitem__")
    __or__ = _filled("__or__")
    __ror__ = _filled("__ror__")
    __ior__ = _filled("__ior__")
    __reversed__ = _filled("__reversed__")
    keys = _filled("keys")
    values = _filled("values")
    items = _filled("items")
    get = _filled("get")
    copy = _filled("copy")
    pop = _filled("pop")
    popitem = _filled("popitem")
    setdefault = _filled("setdefault")
    update = _filled("update")
    __hash__ = None  # type: ignore[assignment]


def train_mode_modules(run: Run) -> list[str]:
    """Names of the watched models' dropout and batch-norm modules that are in training mode now."""
    mods = run._mode_sensitive
    if mods is None:
        kinds = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
        mods = run._mode_sensitive = [
            (f"{mname}/{n}" if len(run.models) > 1 else n, m)
            for mname, model in run.models.items()
            for n, m in model.named_modules()
            if isinstance(m, kinds)
        ]
    return [n for n, m in mods if m.training]


def claim_epoch(run: Run, split: str, epoch: int | None) -> int:
    """The epoch of this evaluation of ``split``: the one given, else one past the last."""
    if epoch is None:
        epoch = run._epoch_counter[split]
    run._epoch_counter[split] = max(run._epoch_counter[split], epoch + 1)
    run.epoch = epoch if run.epoch is None else max(run.epoch, epoch)
    return epoch


def _begin(run: Run, split: str, epoch: int | None) -> tuple[int, int, list[str]]:
    """What every evaluation record starts from: its epoch, the step, the running metrics stored up to here
    (an evaluation is an epoch boundary), and which dropout/batch-norm modules are in training mode."""
    epoch = run._claim_epoch(split, epoch)
    if run._running is not None:  # (nothing to store otherwise)
        run._guard("running metrics", lambda: run._store_running(epoch))
    return epoch, run.step, run._guard("evaluate", run._train_mode_modules) or []


def evaluate_nonfinite(run: Run, split: str, outputs: torch.Tensor, epoch: int | None) -> dict[str, Any]:
    """A diverged model's outputs hold NaN/Inf: nothing can be scored, so record that instead of raising."""
    share = float((~torch.isfinite(outputs)).float().mean())
    result: dict[str, Any] = {
        "task": "classification",
        "nonfinite": True,
        "nonfinite_share": share,
        "scalars": {},
    }
    if not run.enabled:
        return result
    epoch, step, train_mode = _begin(run, split, epoch)

    def record() -> None:
        w = run._writer
        assert w is not None
        _note_eval_mode(run, split, epoch, step, train_mode)
        w.add_eval(split, epoch, step, "nonfinite_outputs", share)
        w.add_event(
            "nonfinite_outputs",
            f"{share:.2%} of the {split} output values are NaN/Inf at epoch {epoch}; metrics not computed",
            step=step,
            epoch=epoch,
            code="nonfinite",
            severity="error",
            data={"split": split, "share": share},
        )
        if run._monitor is not None and "nonfinite" not in run._monitor.fired:
            run._monitor.fired.add("nonfinite")
            run._emit(
                Finding(
                    code="nonfinite",
                    severity=Severity.ERROR,
                    message=f"the model's {split} outputs are NaN/Inf ({share:.2%} of the values) at epoch {epoch}",
                    evidence={"signal": f"{split} outputs", "share": share, "first_step": step},
                    step=step,
                    epoch=epoch,
                    split=split,
                    source="live",
                )
            )
        run.flush()

    run._guard("evaluate", record)
    run._raise_pending()
    return result


def fold_batch(run: Run, outputs: Any, targets: Any, loss: Any) -> None:
    """``log(outputs=, targets=)``: fold the batch into the epoch's running confusion matrix (no host sync)."""
    if run.closed:
        raise TrainmedicError("`log()` was called after `close()`; start a new run with tm.watch(...)")
    if outputs is None or targets is None:
        raise TrainmedicError(
            "`log(outputs=..., targets=...)` needs both: the batch's scores and its class indices"
        )
    if not run.enabled or "running metrics" in run._disabled:
        return
    if run._running is None:
        run._running = RunningMetrics()
    try:
        run._running.fold(outputs, targets, loss)
    except TrainmedicError:
        raise
    except Exception as e:  # never break the user's training
        run._internal_error("running metrics", e)


def store_running(run: Run, epoch: int | None = None) -> None:
    """Epoch boundary: store the running metrics folded since the last one as split ``train_running``."""
    running = run._running
    w = run._writer
    if running is None or w is None:
        return
    ep = running.take()
    if ep is None:
        return
    from ..metrics.classification import metrics_dict

    epoch = run._claim_epoch(RUNNING_SPLIT, epoch)
    step = run.step
    data = metrics_dict(ep.confusion_matrix) if ep.confusion_matrix.sum() > 0 else {"scalars": {}}
    for k, v in data["scalars"].items():
        w.add_eval(RUNNING_SPLIT, epoch, step, k, v)
    if ep.loss is not None:
        w.add_eval(RUNNING_SPLIT, epoch, step, "loss", ep.loss)
    if ep.output_scale is not None and _scale_epoch(epoch):
        w.add_eval(RUNNING_SPLIT, epoch, step, "output_scale", ep.output_scale)
    data.update(running=True, batches=ep.batches, invalid_targets=ep.invalid_targets)
    w.add_record("classification", data, epoch=epoch, step=step, split=RUNNING_SPLIT)
