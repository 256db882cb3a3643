"""Keras 3: ``model.fit(..., callbacks=[TrainmedicCallback("runs/exp1")])`` on the torch, TensorFlow or JAX backend.

Why a callback of its own rather than ``tm.watch``: the optimizer is a Keras optimizer with no torch step
hooks, and on TensorFlow the train step is a compiled graph. The callback records, on every backend:

* per step: ``loss`` (the batch's own loss), ``lr`` / ``momentum`` / ``beta1`` / ``beta2`` / ``weight_decay``
  at the cadence and on change;
* per layer every ``every`` steps: ``weight_norm``, ``update_norm`` (weights snapshotted before the batch and
  compared after it), ``update_ratio``;
* per epoch: split ``train_running`` — the running training metrics of the epoch's batches (accuracy,
  precision/recall/F1, confusion matrix, loss), the same as ``run.log(loss=, outputs=, targets=)`` in a plain
  loop — and ``val`` (``val_*`` logs; with ``validation_data=(x, y)`` the full metrics and confusion matrix);
* the training batch size, and ``status="failed"`` with a ``training_exception`` event when ``fit`` raises.

Where the gradients come from depends on the backend:

* **torch**: ``variable.value.grad`` after the batch (Keras' torch trainer leaves the applied gradient in
  place); activation statistics from torch forward hooks on activation layers; ``y``/``y_pred`` and the loss
  from a wrapper around ``model.compute_loss``.
* **tensorflow**: inside the compiled step (:mod:`trainmedic.integrations._keras_tf`): wrappers around
  ``model.compute_loss`` and ``optimizer.apply`` write the loss, the running confusion matrix and each
  variable's gradient norm into ``tf.Variable`` s that the callback reads every 32 steps and at the capture
  steps (no host sync per step); activation statistics from wrapped activation functions at capture steps.
* **jax**: the train step is a pure function, so gradients are not reachable: loss from Keras' running mean,
  weights/updates from the variables, epoch metrics from ``logs`` (``train_running`` from Keras' own
  training metrics).

Importing this module sets ``KERAS_BACKEND=torch`` when Keras is not imported yet and the variable is unset.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from . import missing_extra

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "torch")

try:
    import keras
except ImportError as _e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("keras", "keras", "3.5", _e) from _e

from ..errors import TrainmedicError
from ..probes.activations import ACT_STATS, activation_stats
from ..probes.summary import init_scale
from ..running import RUNNING_SPLIT
from ..watch import Run, watch
from ._store import (
    declare_layers,
    evaluate_confusion,
    evaluate_with_extras,
    fail_open,
    fold_running,
    log_epoch,
    log_layers,
    numeric,
    record_failure,
    set_meta,
)

__all__ = ["TrainmedicCallback", "keras_activation_kind"]

LAYER_STATS = ("grad_norm", "weight_norm", "update_norm", "update_ratio")
_RELU = {"relu", "relu6"}
_LEAKY = {
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "mish",
    "softplus",
    "hard_silu",
    "celu",
    "glu",
}
_SIGMOID = {"sigmoid", "hard_sigmoid"}
_TANH = {"tanh", "softsign", "hard_tanh"}

BACKENDS = ("torch", "tensorflow", "jax")
# Keras' names of a compiled accuracy metric -> trainmedic's
_ACCURACY_NAMES = {
    "acc": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "binary_accuracy": "accuracy",
}
NOT_RECORDED = {
    "torch": "Keras (torch backend): gradients are read from variable.value.grad after each batch (before any "
    "optimizer-side clipping; scaled under mixed precision); activations only on layers with a built-in "
    "activation (custom layers' internals and jit_compile=True models are not hooked).",
    "tensorflow": "Keras (TensorFlow backend): gradients are the ones passed to optimizer.apply (before "
    "optimizer-side clipping); the per-step loss and gradient norms are read from the graph every 32 steps, so "
    "live NaN/explosion alarms come up to 31 steps late; activations only on layers with a built-in activation "
    "function; with steps_per_execution > 1 the graph probes are off (loss from Keras' running mean, no gradient "
    "norms).",
    "jax": "Keras (JAX backend): the train step is a pure function, so no gradient norms and no activation "
    "statistics; the per-step loss is recovered from Keras' running mean; training metrics are Keras' own.",
}


def keras_activation_kind(layer: Any) -> str | None:
    """``"relu"``, ``"leaky"``, ``"sigmoid"`` or ``"tanh"`` for a Keras layer's output, else None."""
    cls = type(layer).__name__
    if cls == "ReLU":
        return "leaky" if float(getattr(layer, "negative_slope", 0.0) or 0.0) > 0 else "relu"
    if cls in ("LeakyReLU", "PReLU", "ELU", "Softmax"):
        return None if cls == "Softmax" else "leaky"
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None) if callable(fn) else fn if isinstance(fn, str) else None
    if not name:
        return None
    if name in _RELU:
        return "relu"
    if name in _LEAKY:
        return "leaky"
    if name in _SIGMOID:
        return "sigmoid"
    if name in _TANH:
        return "tanh"
    return None


def _walk(layer: Any) -> list[Any]:
    """Every layer inside a model, depth first (nested Sequential/Functional models included)."""
    out: list[Any] = []
    for sub in getattr(layer, "layers", None) or []:
        out.append(sub)
        out.extend(_walk(sub))
    return out


def _torch_layout(kernel: torch.Tensor) -> torch.Tensor:
    """Keras kernels are (in, out) / (k…, in, out); torch's fan rules want (out, in, k…)."""
    if kernel.dim() < 2:
        return kernel
    d = kernel.dim()
    return kernel.permute(d - 1, d - 2, *range(d - 2))


def _layer_norms(tensors: list[torch.Tensor], layer_ids: torch.Tensor, n_layers: int) -> torch.Tensor:
    norms = torch.stack([n.float() for n in torch._foreach_norm(tensors)])
    out = torch.zeros(n_layers, dtype=torch.float32)
    out.index_add_(0, layer_ids, norms.cpu() ** 2)
    return out.sqrt()


def _per_layer(norms: np.ndarray, layer_ids: np.ndarray, n_layers: int) -> np.ndarray:
    """Per-parameter L2 norms → per-layer L2 norms (NaN where no parameter of the layer had a value)."""
    sq = np.zeros(n_layers, dtype=np.float64)
    have = np.zeros(n_layers, dtype=bool)
    ok = ~(norms < 0)  # negative: no value for that parameter; NaN/Inf are kept (non-finite gradients)
    np.add.at(sq, layer_ids[ok], norms[ok].astype(np.float64) ** 2)
    have[layer_ids[ok]] = True
    return np.where(have, np.sqrt(sq), np.nan).astype(np.float32)


def _to_numpy(v: Any) -> np.ndarray:
    """A Keras variable's value on the host, on any backend."""
    value = getattr(v, "value", v)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(keras.ops.convert_to_numpy(value))


def _targets_and_outputs(y: Any, y_pred: Any, first: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``compute_loss``'s ``y``/``y_pred`` (torch backend) as class indices and scores, or None when they are
    not a single-output classification (regression targets, several outputs). Whether float targets are
    whole class indices is looked at on the ``first`` batch only (a host sync)."""
    if (
        not isinstance(y, torch.Tensor)
        or not isinstance(y_pred, torch.Tensor)
        or not y_pred.is_floating_point()
    ):
        return None
    o, t = y_pred.detach(), y.detach()
    if o.dim() not in (1, 2) or len(o) != len(t):
        return None
    if t.dim() == 2 and t.shape[1] > 1:  # one-hot (CategoricalCrossentropy)
        t = t.argmax(dim=1)
    t = t.reshape(-1)
    if first and t.is_floating_point() and not bool((t == t.round()).all()):
        return None  # regression targets
    return t.long(), o


class TrainmedicCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Records a Keras 3 ``fit`` (torch, TensorFlow or JAX backend) into a trainmedic run directory.

    Args:
        run_dir: the run directory (default ``runs/<name>-<time>``).
        validation_data: optional ``(x, y)``; each epoch ``model.predict(x)`` is scored against ``y`` (class
            indices or one-hot) for the full metrics and confusion matrix of split ``val``.
        every: per-layer statistics cadence in steps (default 10).
        activations: measure activation layers (default True); ``activation_rows`` rows are sampled.
        **watch_options: passed to :func:`trainmedic.watch` (``overwrite``, ``thresholds``, ``quiet`` …).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        validation_data: tuple[Any, Any] | None = None,
        every: int = 10,
        activations: bool = True,
        activation_rows: int = 64,
        **watch_options: Any,
    ) -> None:
        super().__init__()
        backend = keras.backend.backend()
        if backend not in BACKENDS:
            raise TrainmedicError(
                f"the Keras backend must be one of {', '.join(BACKENDS)} for trainmedic's Keras callback; got "
                f"{backend!r}; set KERAS_BACKEND before keras is first imported"
            )
        if validation_data is not None and (
            not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2
        ):
            raise TrainmedicError(
                "`validation_data` must be a pair (x, y) of inputs and class labels; got "
                f"{type(validation_data).__name__}"
                + (f" of length {len(validation_data)}" if isinstance(validation_data, (tuple, list)) else "")
            )
        for bad in ("model", "optimizer"):
            if bad in watch_options:
                raise TrainmedicError(
                    f"`{bad}` must not be given to TrainmedicCallback; Keras passes the model to the callback; "
                    f"got {bad}={watch_options[bad]!r}"
                )
        self.backend = backend
        self.run_dir = run_dir
        self.validation_data = validation_data
        self.every = every
        self.activations = activations
        self.activation_rows = activation_rows
        self.watch_options = watch_options
        self.run: Run | None = None
        self._layers: list[str] = []
        self._vars: list[Any] = []
        self._params: list[torch.Tensor] = []  # torch backend: the variables' torch tensors
        self._layer_ids = torch.zeros(0, dtype=torch.long)
        self._act_names: list[str] = []
        self._act_pending: dict[int, torch.Tensor] = {}
        self._capture = False
        self._handles: list[Any] = []
        self._before: list[Any] | None = None
        self._step = 0
        self._batch_n: int | None = None
        self._mean_prev = 0.0
        self._seen = 0
        self._last_hp: dict[str, float] = {}
        self._input_recorded = False
        self._batch_loss: torch.Tensor | None = None
        self._batch_pred: tuple[torch.Tensor, torch.Tensor] | None = None
        self._val_batches: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # torch: fit's validation pass
        self._classification: bool | None = None  # torch: compute_loss's y/y_pred are class targets/scores
        self._folded = False  # this epoch's running metrics came from the batches (not Keras' logs)
        self._restore: list[Callable[[], Any]] = []
        self._tf: Any = None  # TFGraphProbe on the TensorFlow backend
        self.tf_reads = (
            0  # TensorFlow: host reads of the graph's ring buffer (at the cadence, never per step)
        )
        self._unread: list[int] = []  # TF: steps whose ring-buffer rows are not read yet
        self._logs_loss: dict[int, float] = {}  # TF, custom train_step without compute_loss: loss from logs
        self._tf_base_step = 0

    # ---- start -------------------------------------------------------------------------------
    @fail_open("keras callback")
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        options = dict(self.watch_options)
        if self.run is not None:  # a second fit continues the run
            self.run_dir = self.run.run_dir
            options.pop("overwrite", None)
            options["resume"] = True
            self._step = self.run.step
        options.setdefault(
            "config",
            {"framework": "keras", "keras_version": keras.__version__, "keras_backend": self.backend},
        )
        self.run = watch(None, None, self.run_dir, every=self.every, **options)
        self.run._guard("watch", self._attach)
        self._wrap_train_function()

    def _attach(self) -> None:
        run, model = self.run, self.model
        assert run is not None
        weights = list(model.trainable_weights)
        if not weights:
            raise TrainmedicError(
                f"`model` {model.name!r} has no trainable weights when fit starts; build it first (give it "
                "a keras.Input or call model.build(input_shape))"
            )
        parents = [v.path.rsplit("/", 1)[0] if "/" in v.path else v.path for v in weights]
        prefix = model.name + "/"
        if all(p.startswith(prefix) for p in parents):
            parents = [p[len(prefix) :] for p in parents]
        self._layers = list(dict.fromkeys(parents))
        self._vars = weights
        if self.backend == "torch":
            self._params = [v.value for v in weights]
        self._layer_ids = torch.tensor([self._layers.index(p) for p in parents], dtype=torch.long)
        declare_layers(run, LAYER_STATS, self._layers)

        act_layers = [(lay, kind) for lay in _walk(model) if (kind := keras_activation_kind(lay)) is not None]
        measured = self.activations and act_layers and self.backend != "jax"
        if measured:
            self._act_names = [lay.name for lay, _ in act_layers]
            declare_layers(run, ACT_STATS, self._act_names)
        if self.backend == "torch":
            if measured:
                for i, (lay, kind) in enumerate(act_layers):
                    unit_dim = 1 if getattr(lay, "data_format", None) == "channels_first" else -1
                    self._handles.append(lay.register_forward_hook(self._act_hook(i, kind, unit_dim)))
            self._handles.append(model.register_forward_pre_hook(self._input_hook))
            self._wrap_compute_loss()
        elif self.backend == "tensorflow" and int(getattr(model, "steps_per_execution", 1) or 1) == 1:
            from ._keras_tf import TFGraphProbe

            self._tf = TFGraphProbe(model, weights, act_layers if measured else [], self.activation_rows)
            self._tf.install()
            self._restore.append(self._tf.remove)
            model.make_train_function(force=True)  # trace the step again, with the probes inside
            self._tf.start_fit()
            self._tf_base_step = self._step

        notes = [NOT_RECORDED[self.backend]]
        if getattr(model, "jit_compile", False) and self.backend == "torch":
            notes.append("the model is jit-compiled: activation hooks may not fire")
        if not act_layers:
            notes.append(
                "no layer with a ReLU/sigmoid/tanh-like activation: dead/saturated units not measured"
            )
        summary = self._summary(weights)
        set_meta(
            run,
            models=[summary],
            layers=self._layers,
            activations=self._act_names,
            optimizers=[self._describe_optimizer()],
            device=self._device(),
            notes=notes,
        )
        run.record("model_summary", [summary])

    def _device(self) -> str:
        if self._params:
            return str(self._params[0].device)
        return (
            str(getattr(getattr(self._vars[0], "value", None), "device", "") or "cpu")
            if self._vars
            else "cpu"
        )

    def _wrap_train_function(self) -> None:
        """An exception inside ``fit`` (Keras has no exception hook) closes the run as ``failed``.

        ``fit`` looks ``model.train_function`` up at every batch, so an instance attribute wrapping the
        function Keras made is called instead (put back at the end of ``fit``).
        """
        model = self.model
        original = getattr(model, "train_function", None)
        if original is None or getattr(original, "_trainmedic", False):
            return

        def train_function(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except BaseException as e:
                if not isinstance(e, StopIteration) and self.run is not None:
                    with contextlib.suppress(Exception):  # the user's exception is what propagates
                        if self._tf is not None:
                            self.run._guard("gradients", self._tf_read)  # the steps before the failure
                        record_failure(self.run, e, step=self._step)
                        self._detach()
                raise

        train_function._trainmedic = True  # type: ignore[attr-defined]
        model.train_function = train_function

        def undo() -> None:
            if getattr(model, "train_function", None) is train_function:
                # TensorFlow: the traced step holds the probes; a later fit traces a clean one
                model.train_function = None if self.backend == "tensorflow" else original

        self._restore.append(undo)

    # ---- hooks (torch backend) ---------------------------------------------------------------
    def _wrap_compute_loss(self) -> None:
        """Capture each training batch's loss, targets and predictions as ``compute_loss`` sees them.

        Why: ``logs["loss"]`` is a float32 running mean over the epoch; undoing it loses every later batch
        once one batch's loss is huge. The running mean stays the fallback for a ``train_step`` that does
        not call ``compute_loss``.
        """
        model = self.model
        original = model.compute_loss
        if getattr(original, "_trainmedic", False):
            return

        @functools.wraps(original)
        def compute_loss(*args: Any, **kwargs: Any) -> Any:
            loss = original(*args, **kwargs)
            if not isinstance(loss, torch.Tensor):
                return loss
            names = ("x", "y", "y_pred")
            given = dict(zip(names, args))
            given.update({k: v for k, v in kwargs.items() if k in names})
            training = torch.is_grad_enabled() and kwargs.get("training", True)
            if training:
                self._batch_loss = loss.detach()
            if self._classification is not False and (training or kwargs.get("training") is False):
                pair = _targets_and_outputs(given.get("y"), given.get("y_pred"), self._classification is None)
                self._classification = pair is not None
                if training:
                    self._batch_pred = pair
                elif (
                    pair is not None
                ):  # fit's validation pass: the val confusion matrix without a second pass
                    self._val_batches.append(
                        (pair[0].cpu(), pair[1].cpu(), float(loss.detach()) * len(pair[0]))
                    )
            return loss

        compute_loss._trainmedic = True  # type: ignore[attr-defined]
        model.compute_loss = compute_loss
        self._restore.append(lambda: model.__dict__.pop("compute_loss", None))

    def _input_hook(self, module: Any, args: Any) -> None:
        if not torch.is_grad_enabled():  # Keras' symbolic build and predict run without autograd
            return
        t = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if t is None or t.dim() == 0:
            return
        self._batch_n = int(t.shape[0])
        if self.run is not None and not self.run.closed and not self._input_recorded:
            self._input_recorded = True
            set_meta(
                self.run,
                batch_size=self._batch_n,
                batch_size_source="first training batch",
                **{"input_shape/model": list(t.shape), "input_dtype/model": str(t.dtype)},
            )

    def _act_hook(self, i: int, kind: str, unit_dim: int) -> Callable[..., None]:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            if not self._capture or i in self._act_pending or not torch.is_grad_enabled():
                return
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor) and self.run is not None:
                self.run._guard(
                    "activations",
                    lambda: self._act_pending.__setitem__(
                        i, activation_stats(out, kind, unit_dim, self.activation_rows)
                    ),
                )

        return hook

    # ---- per batch ---------------------------------------------------------------------------
    @fail_open("keras callback")
    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._mean_prev, self._seen = 0.0, 0

    @fail_open("keras callback")
    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """fit's validation pass starts: count its batches afresh."""
        self._val_batches.clear()
        if self._tf is not None and self.run is not None:
            self.run._guard("running metrics", lambda: self._tf.reset("val"))

    @fail_open("keras callback")
    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        if run is None or run.closed:
            return
        self._batch_n = None
        if self._step % self.every == 0:
            self._capture = True
            self._act_pending.clear()
            self._before = run._guard("weights", self._snapshot)
            if self._tf is not None and self._act_names:
                run._guard("activations", lambda: self._tf.set_capture(True))

    def _snapshot(self) -> list[Any]:
        if self._params:
            return [p.detach().clone() for p in self._params]
        return [_to_numpy(v) for v in self._vars]

    @fail_open("keras callback")
    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        if run is None or run.closed:
            return
        step, capture = self._step, self._before is not None
        self._step += 1
        if self._tf is not None:
            if not self._tf.traced_loss:  # a custom train_step that never calls compute_loss
                loss = self._undo_running_mean(numeric(logs))
                if loss is not None:
                    self._logs_loss[step] = loss
            run._guard("gradients", lambda: self._tf_batch_end(step, capture))
        else:
            self._host_batch_end(run, step, capture, numeric(logs))
        self._capture, self._before = False, None
        self._honour_stop()

    def _host_batch_end(self, run: Run, step: int, capture: bool, logs: dict[str, float]) -> None:
        values: dict[str, float] = {}
        loss = self._undo_running_mean(logs)
        if loss is not None:
            values["loss"] = loss
        if self._batch_loss is not None and self._batch_loss.numel() == 1:
            values["loss"] = float(self._batch_loss)
            self._batch_loss = None
        if self.backend == "torch":
            grads = run._guard("gradients", lambda: self._grad_norms(step, capture))
            if grads is not None:
                values["grad_norm"] = grads
        values.update(self._changed_hyperparameters(capture))
        if capture:
            run._guard("weights", lambda: self._weight_stats(step))
            self._write_activations(step)
        batch: dict[str, Any] = {}
        if self._batch_pred is not None:  # the running training metrics, as run.log(outputs=, targets=)
            batch = {"targets": self._batch_pred[0], "outputs": self._batch_pred[1]}
            self._batch_pred = None
            self._folded = True
        if values or batch:
            run.log(step=step, **values, **batch)

    def _undo_running_mean(self, logs: Mapping[str, float]) -> float | None:
        """The batch's loss from Keras' running epoch mean (weighted by batch size): the fallback when the
        batch's own loss is not seen (exact for equal batch sizes; unknown sizes count as equal)."""
        if "loss" not in logs:
            return None
        n = self._batch_n or 1
        seen = self._seen + n
        value = (logs["loss"] * seen - self._mean_prev * self._seen) / n
        self._mean_prev, self._seen = logs["loss"], seen
        return float(value)

    def _changed_hyperparameters(self, capture: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in self._hyperparameters().items():
            if capture or self._last_hp.get(k) != v:
                self._last_hp[k] = v
                out[k] = v
        return out

    # ---- TensorFlow: the graph's ring buffer, read at the cadence ------------------------------
    def _tf_batch_end(self, step: int, capture: bool) -> None:
        from ._keras_tf import RING

        self._unread.append(step)
        if capture or len(self._unread) >= RING - 1:
            self._tf_read(capture_step=step if capture else None)

    def _tf_read(self, capture_step: int | None = None) -> None:
        """Move the graph's rows of the unread steps to the run: one host copy of the ring buffer."""
        from ._keras_tf import RING

        run, probe = self.run, self._tf
        if run is None or probe is None or not self._unread:
            return
        self.tf_reads += 1
        losses, grads, slot = probe.read()
        done = slot - probe.base  # optimizer steps the graph has taken in this fit
        if not self._input_recorded:
            n = int(probe.last_n.numpy())
            if n > 0:
                self._input_recorded = True
                self._batch_n = n
                set_meta(run, batch_size=n, batch_size_source="first training batch")
        ids = self._layer_ids.numpy()
        for s in self._unread:
            k = s - self._tf_base_step
            if k >= done or k < done - RING:  # not applied (no optimizer step), or overwritten
                continue
            row = (probe.base + k) % RING
            values: dict[str, float] = {}
            if probe.traced_loss:
                values["loss"] = float(losses[row])
            elif s in self._logs_loss:  # a train_step without compute_loss: undone from Keras' running mean
                values["loss"] = self._logs_loss[s]
            g = grads[row]
            have = ~(g < 0)  # -1: the variable had no gradient; NaN/Inf stay (a non-finite gradient)
            if probe.traced_grads and have.any():
                values["grad_norm"] = float(np.sqrt(np.sum(g[have].astype(np.float64) ** 2)))
            if probe.traced_grads and s % self.every == 0:
                log_layers(run, "grad_norm", s, _per_layer(g, ids, len(self._layers)))
            if values:
                run.log(step=s, **values)
        self._unread.clear()
        self._logs_loss.clear()
        last = self._step - 1
        hp = self._changed_hyperparameters(capture_step is not None)
        if hp:
            run.log(step=last, **hp)
        if capture_step is not None:
            run._guard("weights", lambda: self._weight_stats(capture_step))
            if self._act_names:
                acts = probe.take_activations()
                probe.set_capture(False)
                for si, stat in enumerate(ACT_STATS):
                    log_layers(run, stat, capture_step, acts[: len(self._act_names), si])

    def _grad_norms(self, step: int, capture: bool) -> float | None:
        idx = [i for i, p in enumerate(self._params) if p.grad is not None]
        if not idx:
            return None
        grads = [self._params[i].grad for i in idx]
        norms = torch.stack([n.float() for n in torch._foreach_norm(grads)])  # type: ignore[arg-type]
        if capture:
            per_layer = torch.zeros(len(self._layers), dtype=torch.float32)
            per_layer.index_add_(0, self._layer_ids[idx], norms.cpu() ** 2)
            assert self.run is not None
            log_layers(self.run, "grad_norm", step, per_layer.sqrt().numpy())
        return float(torch.linalg.vector_norm(norms))

    def _weight_stats(self, step: int) -> None:
        assert self.run is not None
        before = self._before
        if before is None:
            return
        n = len(self._layers)
        if self._params:
            weights = [p.detach() for p in self._params]
            w = _layer_norms(weights, self._layer_ids, n).numpy()
            u = _layer_norms(list(torch._foreach_sub(weights, before)), self._layer_ids, n).numpy()
        else:
            after = [_to_numpy(v) for v in self._vars]
            ids = self._layer_ids.numpy()
            w = _per_layer(np.array([np.linalg.norm(a) for a in after]), ids, n)
            u = _per_layer(np.array([np.linalg.norm(a - b) for a, b in zip(after, before)]), ids, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(w > 0, u / w, np.nan)
        log_layers(self.run, "weight_norm", step, w)
        log_layers(self.run, "update_norm", step, u)
        log_layers(self.run, "update_ratio", step, ratio)

    def _write_activations(self, step: int) -> None:
        if not self._act_names or not self._act_pending or self.run is None:
            return
        arr = np.full((len(ACT_STATS), len(self._act_names)), np.nan, dtype=np.float32)
        for i, stats in self._act_pending.items():
            arr[:, i] = stats.detach().cpu().numpy()
        for si, stat in enumerate(ACT_STATS):
            log_layers(self.run, stat, step, arr[si])
        self._act_pending.clear()

    def _hyperparameters(self) -> dict[str, float]:
        opt = getattr(self.model, "optimizer", None)
        out: dict[str, float] = {}
        if opt is None:
            return out
        for key, attr in (
            ("lr", "learning_rate"),
            ("momentum", "momentum"),
            ("beta1", "beta_1"),
            ("beta2", "beta_2"),
            ("weight_decay", "weight_decay"),
        ):
            try:
                v = numeric({key: getattr(opt, attr, None)})
            except Exception:  # a schedule that cannot be evaluated here
                continue
            out.update(v)
        return out

    def _describe_optimizer(self) -> dict[str, Any]:
        opt = getattr(self.model, "optimizer", None)
        group: dict[str, Any] = dict(self._hyperparameters())
        group["num_params"] = int(sum(int(np.prod(v.shape)) for v in self._vars))
        return {
            "name": "optimizer",
            "type": type(opt).__name__ if opt is not None else None,
            "param_groups": [group],
        }

    def _summary(self, weights: Sequence[Any]) -> dict[str, Any]:
        """The same shape as :func:`trainmedic.probes.summary.model_summary`, from Keras layers."""
        model = self.model
        layers: list[dict[str, Any]] = []
        activations: dict[str, int] = {}
        dropout: list[dict[str, Any]] = []
        norms: list[str] = []
        for lay in _walk(model):
            cls = type(lay).__name__
            kind = keras_activation_kind(lay)
            if "Dropout" in cls:
                dropout.append({"layer": lay.name, "p": float(getattr(lay, "rate", 0.0))})
            if "Normalization" in cls:
                norms.append(lay.name)
            own = list(getattr(lay, "weights", []) or [])
            if not own or getattr(lay, "layers", None):
                if kind is not None:
                    activations[cls] = activations.get(cls, 0) + 1
                continue
            fn = getattr(lay, "activation", None)
            act_name = getattr(fn, "__name__", None) if kind is not None else None
            if act_name:
                activations[act_name] = activations.get(act_name, 0) + 1
            entry: dict[str, Any] = {
                "name": lay.name,
                "type": cls,
                "params": int(sum(int(np.prod(v.shape)) for v in own)),
                "trainable": int(sum(int(np.prod(v.shape)) for v in lay.trainable_weights)),
                "activation": act_name,
                "activation_kind": kind,
                "activation_module": lay.name if act_name else None,  # its activation statistics' name
                "conv": cls.startswith("Conv"),
                "norm": "Normalization" in cls,
                "recurrent": cls in ("LSTM", "GRU", "SimpleRNN"),
            }
            kernel = getattr(lay, "kernel", None)
            if kernel is not None and len(kernel.shape) >= 2 and not entry["norm"]:
                entry["init"] = init_scale(_torch_layout(torch.from_numpy(np.array(_to_numpy(kernel)))))
            layers.append(entry)
        total = int(sum(int(np.prod(v.shape)) for v in model.weights))
        return {
            "name": model.name,
            "type": type(model).__name__,
            "total_params": total,
            "trainable_params": int(sum(int(np.prod(v.shape)) for v in weights)),
            "layers": layers,
            "activations": activations,
            "dropout": dropout,
            "normalization": norms,
            "device": self._device(),
            "dtype": str(getattr(weights[0], "dtype", "")) if weights else "",
            "training": True,
            "framework": "keras",
            "backend": self.backend,
        }

    # ---- per epoch and end -------------------------------------------------------------------
    @fail_open("keras callback")
    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        if run is None or run.closed:
            return
        metrics = numeric(logs)
        train = {k: v for k, v in metrics.items() if not k.startswith("val_") and k != "learning_rate"}
        val = {k[4:]: v for k, v in metrics.items() if k.startswith("val_")}
        if self._tf is not None:
            run._guard("gradients", self._tf_read)
            running = run._guard("running metrics", lambda: self._tf.take_running("train"))
            if running is not None:
                fold_running(run, *running)
                self._folded = True
        if self._folded:
            # the batches' running metrics (like run.log(outputs=, targets=)), then Keras' other training
            # metrics of the same epoch beside them
            run.end_epoch()
            self._folded = False
            ep = run._epoch_counter[RUNNING_SPLIT] - 1
            if ep >= 0:
                rest = {k: v for k, v in train.items() if k not in ("loss", "accuracy")}
                log_epoch(run, RUNNING_SPLIT, rest, epoch=ep)
        else:
            # no batch predictions (a custom train_step, the JAX backend): Keras' own running means
            log_epoch(run, RUNNING_SPLIT, {_ACCURACY_NAMES.get(k, k): v for k, v in train.items()})
        val_counts = None
        if self._tf is not None:
            val_counts = run._guard("running metrics", lambda: self._tf.take_running("val"))
        val_batches, self._val_batches = self._val_batches, []
        if self.validation_data is None and val_batches:
            # fit's own validation pass, as compute_loss saw it (loss: Keras' val_loss, the same mean)
            vt = torch.cat([t for t, _, _ in val_batches])
            vo = torch.cat([o for _, o, _ in val_batches])
            loss = val.get("loss", sum(s for _, _, s in val_batches) / max(len(vt), 1))
            evaluate_with_extras(run, "val", vt, vo, loss, val)
        elif self.validation_data is None and val_counts is not None:
            cm, loss_mean, _ = val_counts
            evaluate_confusion(run, "val", cm, val.get("loss", loss_mean), val)
        elif self.validation_data is not None:
            x, y = self.validation_data
            outputs = np.asarray(self.model.predict(x, verbose=0))
            targets = np.asarray(y)
            if outputs.ndim == 2 and outputs.shape[1] == 1:  # one sigmoid unit: probabilities of class 1
                outputs = outputs.reshape(-1)
            if targets.ndim == 2 and targets.shape[1] > 1:  # one-hot labels
                targets = targets.argmax(axis=1)
            evaluate_with_extras(run, "val", targets.reshape(-1), outputs, val.get("loss"), val)
        else:
            log_epoch(run, "val", val)
        self._honour_stop()

    @fail_open("keras callback")
    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._tf is not None and self.run is not None and not self.run.closed:
            self.run._guard("gradients", self._tf_read)
        self._detach()
        if self.run is not None:
            self.run.close()

    def _detach(self) -> None:
        for undo in reversed(self._restore):
            undo()
        self._restore.clear()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._tf = None

    def _honour_stop(self) -> None:
        control = getattr(self.run, "control", None)
        if bool(getattr(control, "should_stop", False)):
            self.model.stop_training = True
