"""Keras fits through the callback, on whatever backend ``KERAS_BACKEND`` chose (run as a script for the
TensorFlow backend: Keras picks its backend once per process).

``python keras_fits.py OUT_DIR`` prints one JSON line: the parity verdicts of :mod:`parity`'s three cases,
and for a short fit with ``shuffle=False`` the recorded per-step loss, global and per-layer gradient norms
beside an oracle computed before each batch with the backend's own autodiff.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import keras  # noqa: E402
import parity  # noqa: E402

import trainmedic as tm  # noqa: E402
from trainmedic.integrations.keras import TrainmedicCallback  # noqa: E402

BATCH = 64


def mlp(case: Any, seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(case.width, activation="relu", name="hidden"),
            keras.layers.Dense(case.classes, name="out"),
        ],
        name="mlp",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(case.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def fit_case(case: Any, run_dir: Path) -> set[str]:
    model = mlp(case)
    cb = TrainmedicCallback(run_dir, quiet=True, overwrite=True)
    model.fit(
        case.X_train,
        case.y_train,
        epochs=case.epochs,
        batch_size=case.batch_size,
        validation_data=(case.X_val, case.y_val),
        callbacks=[cb],
        verbose=0,
    )
    return parity.problems(run_dir)


class Oracle(keras.callbacks.Callback):  # type: ignore[misc]
    """Before each batch (shuffle off: batch b is rows b*64…): its loss and gradient norms by the backend."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        super().__init__()
        self.X, self.y = X, y
        self.losses: list[float] = []
        self.norms: list[list[float]] = []  # per trainable variable

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        xb = self.X[batch * BATCH : (batch + 1) * BATCH]
        yb = self.y[batch * BATCH : (batch + 1) * BATCH]
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = loss_fn(yb, self.model(xb, training=True))
            grads = tape.gradient(loss, [v.value for v in self.model.trainable_weights])
            self.norms.append([float(tf.norm(g)) for g in grads])
        else:
            import torch

            params = [v.value for v in self.model.trainable_weights]
            with torch.enable_grad():
                loss = loss_fn(torch.from_numpy(yb), self.model(torch.from_numpy(xb), training=True))
                grads = torch.autograd.grad(loss, params)
            self.norms.append([float(g.norm()) for g in grads])
        self.losses.append(float(np.asarray(keras.ops.convert_to_numpy(loss))))


def oracle_fit(out: Path) -> dict[str, Any]:
    X_tr, y_tr, X_va, y_va = parity.digits_split()
    X_tr, y_tr = X_tr[:600], y_tr[:600]  # 10 batches: 9 of 64 and one of 24
    case = parity.Case("oracle", X_tr, y_tr, X_va, y_va, width=32, epochs=4, lr=1e-2, batch_size=BATCH)
    model = mlp(case)
    oracle = Oracle(X_tr, y_tr)
    cb = TrainmedicCallback(out / "oracle", quiet=True, overwrite=True, every=3)
    hist = model.fit(
        X_tr,
        y_tr,
        epochs=case.epochs,
        batch_size=BATCH,
        shuffle=False,
        validation_data=(X_va, y_va),
        callbacks=[oracle, cb],
        verbose=0,
    )
    layer_of = [0, 0, 1, 1]  # hidden/kernel, hidden/bias, out/kernel, out/bias
    per_layer = [
        [float(np.sqrt(sum(n[i] ** 2 for i in range(4) if layer_of[i] == lay))) for lay in range(2)]
        for n in oracle.norms
    ]
    with tm.open_run(out / "oracle") as r:
        gl = r.layer_stat("grad_norm")
        acts = r.layer_stat("act_dead")
        return {
            "status": r.meta["status"],
            "batch_size": r.meta.get("batch_size"),
            "loss_steps": r.scalar("loss").steps.tolist(),
            "loss": r.scalar("loss").values.tolist(),
            "grad_norm": r.scalar("grad_norm").values.tolist(),
            "layer_grad_steps": gl.steps.tolist(),
            "layer_grad": gl.values.tolist(),
            "layers": gl.layers,
            "act_layers": acts.layers,
            "act_dead": acts.values.tolist(),
            "update_ratio": r.layer_stat("update_ratio").values.tolist(),
            "running_accuracy": r.eval_series("train_running", "accuracy").values.tolist(),
            "running_loss": r.eval_series("train_running", "loss").values.tolist(),
            "history_accuracy": hist.history["accuracy"],
            "history_loss": hist.history["loss"],
            "oracle_loss": oracle.losses,
            "oracle_grad_norm": [float(np.sqrt(sum(x**2 for x in n))) for n in oracle.norms],
            "oracle_layer_grad": per_layer,
            "lr": r.scalar("lr").values.tolist(),
            "val_accuracy": r.eval_series("val", "accuracy").values.tolist(),
            "history_val_accuracy": hist.history["val_accuracy"],
            "val_samples": int(r.confusion_matrix("val").sum()),
            "train_samples": int(r.confusion_matrix("train_running").sum()),
            "notes": r.meta.get("notes", []),
            "tf_reads": cb.tf_reads,
        }


def failing_fit(out: Path) -> dict[str, Any]:
    """A fit whose sixth batch carries a label out of range: the loss raises inside the train step; the run
    is closed as failed and the diagnosis says so."""
    X_tr, y_tr, X_va, y_va = parity.digits_split()
    case = parity.Case("fail", X_tr, y_tr, X_va, y_va, width=16, epochs=2, lr=1e-2, batch_size=BATCH)

    def batches() -> Any:
        for i in range(8):
            yb = y_tr[i * BATCH : (i + 1) * BATCH].copy()
            if i == 5:
                yb[3] = 99
            yield X_tr[i * BATCH : (i + 1) * BATCH], yb

    model = mlp(case)
    cb = TrainmedicCallback(out / "fail", quiet=True, overwrite=True)
    error = ""
    try:
        model.fit(batches(), epochs=1, shuffle=False, callbacks=[cb], verbose=0)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    with tm.open_run(out / "fail") as r:
        events = [e["message"] for e in r.events("training_exception")]
        status = r.meta["status"]
    codes = sorted(f.code for f in tm.diagnose(out / "fail").findings)
    return {"error": error, "status": status, "events": events, "codes": codes}


def custom_step_fit(out: Path) -> dict[str, Any]:
    """TensorFlow: a ``train_step`` that computes its own loss (no ``compute_loss``) and applies gradients
    through the optimizer, with a ModelCheckpoint saving the model (its config: wrapped activations) each
    epoch. The loss falls back to Keras' running mean; gradients still come from the optimizer's apply."""
    import tensorflow as tf

    X_tr, y_tr, X_va, y_va = parity.digits_split()

    class Custom(keras.Model):  # type: ignore[misc]
        def train_step(self, data: Any) -> Any:
            x, y = data
            with tf.GradientTape() as tape:
                logits = self(x, training=True)
                loss = tf.reduce_mean(
                    tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
                )
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}

        @property
        def metrics(self) -> list[Any]:
            return [self.loss_tracker]

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    model = Custom(inputs, keras.layers.Dense(10, name="out")(hidden))
    model.loss_tracker = keras.metrics.Mean(name="loss")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    saver = keras.callbacks.ModelCheckpoint(str(out / "custom.keras"))
    cb = TrainmedicCallback(out / "custom", quiet=True, overwrite=True)
    model.fit(X_tr, y_tr, epochs=2, batch_size=BATCH, callbacks=[cb, saver], verbose=0)
    reloaded = keras.models.load_model(out / "custom.keras", custom_objects={"Custom": Custom})
    with tm.open_run(out / "custom") as r:
        return {
            "status": r.meta["status"],
            "loss": r.scalar("loss").values.tolist(),
            "grad_norm_steps": r.scalar("grad_norm").steps.tolist(),
            "codes": sorted(f.code for f in tm.diagnose(out / "custom").problems),
            "reloaded_activation": reloaded.get_layer("hidden").get_config()["activation"],
        }


def main(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": keras.backend.backend()}
    result["oracle"] = oracle_fit(out)
    result["failing"] = failing_fit(out)
    if keras.backend.backend() == "tensorflow":
        result["custom"] = custom_step_fit(out)
    result["report_bytes"] = tm.report(out / "oracle", out / "oracle.html").stat().st_size
    result["parity"] = {name: sorted(fit_case(case, out / name)) for name, case in parity.cases().items()}
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
