"""Keras 3 on the TensorFlow backend: per-step signals computed inside the compiled train step.

Why inside the graph: under ``tf.function`` the gradients exist only within the traced step, and reading a
tensor on the host after every batch would add a device sync to every step. So the callback wraps two
Python entry points that every ``train_step`` (Keras' own and most custom ones) goes through, before the
train function is traced:

* ``model.compute_loss``: writes a training batch's loss into a ring buffer and folds ``argmax(y_pred)``
  against ``y`` into a running confusion matrix (a ``tf.Variable``; out-of-range targets go to a spare cell),
  with the sample-weighted loss sum: the same running training metrics as ``run.log(loss=, outputs=,
  targets=)`` in a plain PyTorch loop. Validation batches (``training=False``: fit's validation pass) are
  counted into a second matrix: the ``val`` confusion matrix without a second pass over the data;
* ``optimizer.apply`` (which ``apply_gradients`` calls): writes each variable's gradient L2 norm into the
  ring buffer row of this step, then counts the step.

The ring buffer (``RING`` rows) is read on the host once every ``RING`` steps, at each capture step and at
epoch ends — one copy, never one per step. Activation statistics are computed in the graph too: each hooked
layer's ``activation`` function is wrapped and, only while the host-set ``capture`` flag is on (the capture
steps), writes the five statistics of its first rows into a ``tf.Variable``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

RING = 32  # steps of loss and per-variable gradient norms kept in the graph between host reads
N_STATS = 5  # act_mean, act_std, act_dead, act_zero, act_saturated (probes.activations.ACT_STATS)


def _dense(g: Any) -> Any:
    """A gradient's values as one float32 tensor (the rows an ``IndexedSlices`` touches, not a dense copy)."""
    if isinstance(g, tf.IndexedSlices):
        g = g.values
    return tf.cast(g, tf.float32)


def act_stats_tf(out: Any, kind: str, rows: int) -> Any:
    """The five activation statistics of the first ``rows`` rows of ``out`` (same rules as the torch probe)."""
    x = tf.cast(out[:rows], tf.float32)
    flat = tf.reshape(x, [-1])
    n = tf.cast(tf.maximum(tf.size(flat), 1), tf.float32)
    mean = tf.reduce_sum(flat) / n
    std = tf.norm(flat - mean) / tf.sqrt(n)
    nan = tf.constant(float("nan"), tf.float32)
    if kind == "relu":
        zero = 1.0 - tf.reduce_sum(tf.cast(flat > 0, tf.float32)) / n
        units = tf.reshape(x, [-1, tf.shape(x)[-1]])  # units on the last axis (channels_last)
        peak = tf.reduce_max(units, axis=0)
        dead = 1.0 - tf.reduce_mean(tf.cast(peak > 0, tf.float32))
    else:
        dead, zero = nan, 1.0 - tf.reduce_sum(tf.cast(flat != 0, tf.float32)) / n
    if kind == "sigmoid":
        sat = tf.reduce_sum(tf.cast(tf.abs(flat - 0.5) > 0.49, tf.float32)) / n
    elif kind in ("tanh", "recurrent"):
        sat = tf.reduce_sum(tf.cast(tf.abs(flat) > 0.99, tf.float32)) / n
    else:
        sat = nan
    return tf.stack([mean, std, dead, zero, sat])


def _classes(model: Any) -> int | None:
    """Classes of a built model's output (2 for one sigmoid unit), None when its shape is not known yet."""
    try:
        shape = model.output_shape
    except Exception:  # a subclassed model: learnt from the first traced batch
        return None
    if not isinstance(shape, tuple) or len(shape) not in (1, 2):
        return None
    last = shape[-1] if len(shape) == 2 else 1
    return 2 if last == 1 else int(last) if isinstance(last, int) else None


class _Counts:
    """One split's running confusion matrix ``(k*k + 1,)`` (the last cell: out-of-range targets), its
    sample-weighted loss sum and batch count, as ``tf.Variable`` s the graph adds to."""

    def __init__(self, k: int, name: str) -> None:
        self.k = k
        self.cm = tf.Variable(tf.zeros([k * k + 1], tf.int64), trainable=False, name=f"trainmedic_cm_{name}")
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name=f"trainmedic_loss_{name}")
        self.loss_n = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"trainmedic_n_{name}")
        self.batches = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"trainmedic_batches_{name}")

    def take(self) -> tuple[np.ndarray, float | None, int] | None:
        """The confusion matrix, sample-weighted mean loss and batch count so far; then zeroed."""
        batches = int(self.batches.numpy())
        if batches == 0:
            return None
        k = self.k
        flat = self.cm.numpy()
        n = int(self.loss_n.numpy())
        loss = float(self.loss_sum.numpy()) / n if n else None
        self.reset()
        return flat[: k * k].reshape(k, k).copy(), loss, batches

    def reset(self) -> None:
        self.cm.assign(tf.zeros_like(self.cm))
        self.loss_sum.assign(0.0)
        self.loss_n.assign(0)
        self.batches.assign(0)


class TFGraphProbe:
    """Variables the compiled train step writes and the callback reads at its cadence."""

    def __init__(
        self, model: Any, variables: Sequence[Any], act_layers: Sequence[tuple[Any, str]], rows: int
    ):
        self.model = model
        self.paths = [v.path for v in variables]
        self._index = {p: i for i, p in enumerate(self.paths)}
        n = len(self.paths)
        self.slot = tf.Variable(0, dtype=tf.int64, trainable=False, name="trainmedic_slot")
        self.loss = tf.Variable(tf.fill([RING], float("nan")), trainable=False, name="trainmedic_loss")
        self.grads = tf.Variable(tf.fill([RING, n], float("nan")), trainable=False, name="trainmedic_grads")
        self.last_n = tf.Variable(0, dtype=tf.int64, trainable=False, name="trainmedic_batch")
        k = _classes(model)
        # split -> running counts; made at the first traced batch when the output shape is not known yet
        self.counts: dict[str, _Counts] = {sp: _Counts(k, sp) for sp in ("train", "val")} if k else {}
        self.capture = tf.Variable(False, trainable=False, name="trainmedic_capture")
        self.acts = tf.Variable(
            tf.fill([max(len(act_layers), 1), N_STATS], float("nan")), trainable=False, name="trainmedic_acts"
        )
        self.rows = rows
        self._act_layers = list(act_layers)
        self._restore: list[Callable[[], None]] = []
        self.base = 0  # slot value of the host's first step in this fit
        # set while the train step is traced: a custom train_step that skips compute_loss or the optimizer's
        # apply leaves its rows unwritten, and the host must not read them as values
        self.traced_loss = False
        self.traced_grads = False

    # ---- wrapping (before the train function is traced) ---------------------------------------
    def install(self) -> None:
        model, opt = self.model, self.model.optimizer
        original_loss = model.compute_loss

        @functools.wraps(original_loss)
        def compute_loss(*args: Any, **kwargs: Any) -> Any:
            loss = original_loss(*args, **kwargs)
            if tf.inside_function():
                names = ("x", "y", "y_pred", "sample_weight")
                given = dict(zip(names, args))
                given.update({k: v for k, v in kwargs.items() if k in names})
                training = bool(kwargs.get("training", True))
                self._fold(loss, given.get("y"), given.get("y_pred"), training)
                self.traced_loss = self.traced_loss or training
            return loss

        model.compute_loss = compute_loss
        self._restore.append(lambda: model.__dict__.pop("compute_loss", None))

        original_apply = opt.apply

        @functools.wraps(original_apply)
        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            if tf.inside_function():
                variables = (
                    trainable_variables if trainable_variables is not None else opt._trainable_variables
                )
                self._write_grads(list(grads), list(variables))
                self.traced_grads = True
            return original_apply(grads, trainable_variables)

        opt.apply = apply
        self._restore.append(lambda: opt.__dict__.pop("apply", None))

        for i, (layer, kind) in enumerate(self._act_layers):
            self._wrap_activation(i, layer, kind)

    def _wrap_activation(self, i: int, layer: Any, kind: str) -> None:
        own = "activation" in layer.__dict__
        fn = getattr(layer, "activation", None)
        if not callable(fn):
            return
        probe = self

        @functools.wraps(fn)
        def activation(x: Any, *args: Any, **kwargs: Any) -> Any:
            out = fn(x, *args, **kwargs)
            if tf.inside_function() and out.shape.rank:

                def write() -> Any:
                    probe.acts[i].assign(act_stats_tf(out, kind, probe.rows))
                    return tf.constant(True)

                tf.cond(probe.capture, write, lambda: tf.constant(False))
            return out

        layer.activation = activation
        if own:
            self._restore.append(lambda: setattr(layer, "activation", fn))
        else:  # an Activation/ReLU layer's call reads a class attribute: put the instance one away again
            self._restore.append(lambda: layer.__dict__.pop("activation", None))

    def remove(self) -> None:
        for undo in reversed(self._restore):
            undo()
        self._restore.clear()

    # ---- in the graph --------------------------------------------------------------------------
    def _fold(self, loss: Any, y: Any, y_pred: Any, training: bool) -> None:
        loss = tf.reshape(tf.cast(loss, tf.float32), [-1])[0]
        if training:
            self.loss.scatter_nd_update([[self.slot % RING]], [loss])
        if y is None or y_pred is None or not hasattr(y_pred, "shape") or y_pred.shape.rank not in (1, 2):
            return
        y_pred = tf.cast(y_pred, tf.float32)
        k = int(y_pred.shape[-1]) if y_pred.shape.rank == 2 and y_pred.shape[-1] is not None else 1
        if k == 1:  # one sigmoid unit: probabilities (> 0.5) or logits (> 0), decided per batch
            p = tf.reshape(y_pred, [-1])
            probs = tf.logical_and(tf.reduce_min(p) >= 0.0, tf.reduce_max(p) <= 1.0)
            pred = tf.cast(p > tf.where(probs, 0.5, 0.0), tf.int64)
            k = 2
        else:
            pred = tf.argmax(y_pred, axis=-1, output_type=tf.int64)
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 2 and y.shape[-1] is not None and y.shape[-1] > 1:  # one-hot targets
            t = tf.argmax(y, axis=-1, output_type=tf.int64)
        else:
            t = tf.cast(tf.reshape(y, [-1]), tf.int64)
        if not self.counts:
            with tf.init_scope():
                self.counts = {sp: _Counts(k, sp) for sp in ("train", "val")}
        c = self.counts["train" if training else "val"]
        if k != c.k:
            return
        valid = tf.logical_and(t >= 0, t < k)
        idx = tf.where(valid, t * k + pred, tf.fill(tf.shape(t), tf.constant(k * k, tf.int64)))
        c.cm.assign_add(tf.math.bincount(idx, minlength=k * k + 1, maxlength=k * k + 1, dtype=tf.int64))
        n = tf.cast(tf.shape(t)[0], tf.int64)
        c.loss_sum.assign_add(tf.cast(loss, tf.float64) * tf.cast(n, tf.float64))
        c.loss_n.assign_add(n)
        c.batches.assign_add(1)
        if training:
            self.last_n.assign(n)

    def _write_grads(self, grads: list[Any], variables: list[Any]) -> None:
        n = len(self.paths)
        cols, norms = [], []
        for g, v in zip(grads, variables):
            i = self._index.get(getattr(v, "path", None))
            if i is None or g is None:
                continue
            cols.append(i)
            norms.append(tf.norm(_dense(g)))
        row = self.slot % RING
        full = tf.fill([n], -1.0)  # -1: no gradient for that variable
        if cols:
            full = tf.tensor_scatter_nd_update(full, [[c] for c in cols], tf.stack(norms))
        self.grads.scatter_nd_update([[row]], [full])
        self.slot.assign_add(1)

    # ---- on the host ---------------------------------------------------------------------------
    def start_fit(self) -> None:
        self.base = int(self.slot.numpy())

    def read(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(loss ring, gradient-norm ring, slot): one host copy of each."""
        return self.loss.numpy(), self.grads.numpy(), int(self.slot.numpy())

    def take_running(self, split: str = "train") -> tuple[np.ndarray, float | None, int] | None:
        """The epoch's confusion matrix of ``split``, its sample-weighted mean loss and batch count; zeroed."""
        c = self.counts.get(split)
        return c.take() if c is not None else None

    def reset(self, split: str) -> None:
        c = self.counts.get(split)
        if c is not None:
            c.reset()

    def set_capture(self, on: bool) -> None:
        self.capture.assign(on)

    def take_activations(self) -> np.ndarray:
        a = self.acts.numpy()
        self.acts.assign(tf.fill(tf.shape(self.acts), float("nan")))
        return a
