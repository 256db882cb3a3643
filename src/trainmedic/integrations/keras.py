"""Keras 3 (torch backend): ``model.fit(..., callbacks=[TrainmedicCallback("runs/exp1")])``.

Why a callback of its own rather than ``tm.watch``: under ``KERAS_BACKEND=torch`` Keras layers are
``torch.nn.Module`` s, so forward hooks fire on them, but the optimizer is a Keras optimizer with no torch step
hooks. The callback therefore takes, around each training batch:

* per step: ``loss`` (the batch's own loss, recovered from Keras's running epoch mean and the batch size),
  ``grad_norm`` (global L2 norm of ``variable.value.grad``, which Keras' torch trainer leaves in place after
  the update), ``lr`` / ``momentum`` / ``beta1`` / ``beta2`` / ``weight_decay`` at the cadence and on change;
* per layer every ``every`` steps: ``grad_norm``, ``weight_norm``, ``update_norm`` (weights snapshotted before
  the batch and compared after it), ``update_ratio``; activation statistics (``act_mean`` … ``act_saturated``)
  from torch forward hooks on layers whose activation is ReLU/sigmoid/tanh-like;
* per epoch: ``logs`` metrics of split ``train`` (Keras' running means over the epoch) and ``val`` (``val_*``),
  and — with ``validation_data=(x, y)`` — the full classification metrics and confusion matrix of ``val``.

Importing this module sets ``KERAS_BACKEND=torch`` when Keras is not imported yet and the variable is unset.
"""

from __future__ import annotations

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
from ..watch import Run, watch
from ._store import declare_layers, evaluate_with_extras, log_epoch, log_layers, numeric, set_meta

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

NOT_RECORDED = (
    "Keras: gradients are read from variable.value.grad after each batch (the gradient Keras applied, before "
    "any optimizer-side clipping or loss scaling is undone); per-step loss is recovered from Keras' running "
    "mean; activations are measured only on layers with a built-in activation (custom layers' internals "
    "and jit_compile=True models are not hooked); an exception inside fit leaves the run 'unclosed'."
)


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


class TrainmedicCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Records a Keras 3 ``fit`` (``KERAS_BACKEND=torch``) into a trainmedic run directory.

    Args:
        run_dir: the run directory (default ``runs/<name>-<time>``).
        validation_data: optional ``(x, y)``; each epoch ``model.predict(x)`` is scored against ``y`` (class
            indices or one-hot) for the full metrics and confusion matrix of split ``val``.
        every: per-layer statistics cadence in steps (default 10).
        activations: hook activation layers (default True); ``activation_rows`` rows are sampled.
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
        if backend != "torch":
            raise TrainmedicError(
                f"the Keras backend must be 'torch' for trainmedic's Keras callback; got {backend!r}; set "
                "KERAS_BACKEND=torch before keras is first imported"
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
        self.run_dir = run_dir
        self.validation_data = validation_data
        self.every = every
        self.activations = activations
        self.activation_rows = activation_rows
        self.watch_options = watch_options
        self.run: Run | None = None
        self._layers: list[str] = []
        self._params: list[torch.Tensor] = []
        self._layer_ids = torch.zeros(0, dtype=torch.long)
        self._act_names: list[str] = []
        self._act_pending: dict[int, torch.Tensor] = {}
        self._capture = False
        self._handles: list[Any] = []
        self._before: list[torch.Tensor] | None = None
        self._step = 0
        self._batch_n: int | None = None
        self._mean_prev = 0.0
        self._seen = 0
        self._last_hp: dict[str, float] = {}
        self._input_recorded = False
        self._batch_loss: torch.Tensor | None = None
        self._unwrap: Callable[[], Any] | None = None

    # ---- start -------------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        options = dict(self.watch_options)
        if self.run is not None:  # a second fit continues the run
            self.run_dir = self.run.run_dir
            options.pop("overwrite", None)
            options["resume"] = True
            self._step = self.run.step
        options.setdefault("config", {"framework": "keras", "keras_version": keras.__version__})
        self.run = watch(None, None, self.run_dir, every=self.every, **options)
        self._attach()

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
        self._params = [v.value for v in weights]
        self._layer_ids = torch.tensor([self._layers.index(p) for p in parents], dtype=torch.long)
        declare_layers(run, LAYER_STATS, self._layers)

        act_layers = [(lay, kind) for lay in _walk(model) if (kind := keras_activation_kind(lay)) is not None]
        if self.activations and act_layers:
            self._act_names = [lay.name for lay, _ in act_layers]
            declare_layers(run, ACT_STATS, self._act_names)
            for i, (lay, kind) in enumerate(act_layers):
                unit_dim = 1 if getattr(lay, "data_format", None) == "channels_first" else -1
                self._handles.append(lay.register_forward_hook(self._act_hook(i, kind, unit_dim)))
        self._handles.append(model.register_forward_pre_hook(self._input_hook))
        self._wrap_compute_loss()

        notes = [NOT_RECORDED]
        if getattr(model, "jit_compile", False):
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
            device=str(self._params[0].device),
            notes=notes,
        )
        run.record("model_summary", [summary])

    # ---- hooks -------------------------------------------------------------------------------
    def _wrap_compute_loss(self) -> None:
        """Capture each training batch's loss tensor as ``compute_loss`` returns it (restored at the end).

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
            if torch.is_grad_enabled() and kwargs.get("training", True) and isinstance(loss, torch.Tensor):
                self._batch_loss = loss.detach()
            return loss

        compute_loss._trainmedic = True  # type: ignore[attr-defined]
        model.compute_loss = compute_loss
        self._unwrap = lambda: model.__dict__.pop("compute_loss", None)

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
                batch_size_source="first forward input",
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
    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._mean_prev, self._seen = 0.0, 0

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        if run is None or run.closed:
            return
        self._batch_n = None
        if self._step % self.every == 0:
            self._capture = True
            self._act_pending.clear()
            self._before = [p.detach().clone() for p in self._params]

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        if run is None or run.closed:
            return
        step, capture = self._step, self._before is not None
        values: dict[str, float] = {}
        logs = numeric(logs)
        if "loss" in logs:
            # Keras reports the running mean of the epoch, weighted by batch size: undo it (the fallback).
            n = self._batch_n or 1
            seen = self._seen + n
            values["loss"] = (logs["loss"] * seen - self._mean_prev * self._seen) / n
            self._mean_prev, self._seen = logs["loss"], seen
        if self._batch_loss is not None and self._batch_loss.numel() == 1:
            values["loss"] = float(self._batch_loss)
            self._batch_loss = None
        grads = run._guard("gradients", lambda: self._grad_norms(capture))
        if grads is not None:
            values["grad_norm"] = grads
        for k, v in self._hyperparameters().items():
            if capture or self._last_hp.get(k) != v:
                self._last_hp[k] = v
                values[k] = v
        if capture:
            run._guard("weights", self._weight_stats)
            self._write_activations(step)
        self._capture, self._before = False, None
        self._step += 1
        if values:
            run.log(step=step, **values)
        self._honour_stop()

    def _grad_norms(self, capture: bool) -> float | None:
        idx = [i for i, p in enumerate(self._params) if p.grad is not None]
        if not idx:
            return None
        grads = [self._params[i].grad for i in idx]
        norms = torch.stack([n.float() for n in torch._foreach_norm(grads)])  # type: ignore[arg-type]
        if capture:
            per_layer = torch.zeros(len(self._layers), dtype=torch.float32)
            per_layer.index_add_(0, self._layer_ids[idx], norms.cpu() ** 2)
            assert self.run is not None
            log_layers(self.run, "grad_norm", self._step, per_layer.sqrt().numpy())
        return float(torch.linalg.vector_norm(norms))

    def _weight_stats(self) -> None:
        assert self.run is not None and self._before is not None
        weights = [p.detach() for p in self._params]
        n = len(self._layers)
        w = _layer_norms(weights, self._layer_ids, n)
        u = _layer_norms(list(torch._foreach_sub(weights, self._before)), self._layer_ids, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(w.numpy() > 0, u.numpy() / w.numpy(), np.nan)
        log_layers(self.run, "weight_norm", self._step, w.numpy())
        log_layers(self.run, "update_norm", self._step, u.numpy())
        log_layers(self.run, "update_ratio", self._step, ratio)

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
        group["num_params"] = int(sum(p.numel() for p in self._params))
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
                "conv": cls.startswith("Conv"),
                "norm": "Normalization" in cls,
                "recurrent": cls in ("LSTM", "GRU", "SimpleRNN"),
            }
            kernel = getattr(lay, "kernel", None)
            if kernel is not None and len(kernel.shape) >= 2 and not entry["norm"]:
                entry["init"] = init_scale(_torch_layout(kernel.value.detach()))
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
            "device": str(self._params[0].device),
            "dtype": str(self._params[0].dtype),
            "training": True,
            "framework": "keras",
        }

    # ---- per epoch and end -------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        if run is None or run.closed:
            return
        metrics = numeric(logs)
        train = {k: v for k, v in metrics.items() if not k.startswith("val_") and k != "learning_rate"}
        val = {k[4:]: v for k, v in metrics.items() if k.startswith("val_")}
        log_epoch(run, "train", train)
        if self.validation_data is not None:
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

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._unwrap is not None:
            self._unwrap()
            self._unwrap = None
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self.run is not None:
            self.run.close()

    def _honour_stop(self) -> None:
        control = getattr(self.run, "control", None)
        if bool(getattr(control, "should_stop", False)):
            self.model.stop_training = True
