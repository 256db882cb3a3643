"""The Keras 3 callback (torch backend) records a real fit on digits; its per-step numbers match oracles."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - another backend was chosen before us
    pytest.skip("Keras runs on another backend in this process", allow_module_level=True)

import torch  # noqa: E402

import trainmedic as tm  # noqa: E402
from trainmedic.integrations.keras import TrainmedicCallback, keras_activation_kind  # noqa: E402

BATCH = 64
# keras' torch backend converts tensors with np.array(x) (numpy 2 copy-keyword notice): not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _model(lr: float = 0.1) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)], name="digits"
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class _Oracle(keras.callbacks.Callback):
    """Before each batch (shuffle off: batch b is rows b*64…), the batch's loss and gradient norm in torch."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        super().__init__()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.losses: list[float] = []
        self.grad_norms: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        xb, yb = self.X[batch * BATCH : (batch + 1) * BATCH], self.y[batch * BATCH : (batch + 1) * BATCH]
        params = [v.value for v in self.model.trainable_weights]
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(self.model(xb, training=True), yb)
            grads = torch.autograd.grad(loss, params)
        self.losses.append(float(loss.detach()))
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


def test_keras_callback_records_loss_gradients_weights_and_evals(digits: Any, tmp_path: Path) -> None:
    X_tr, y_tr, X_va, y_va = digits
    X_tr, y_tr = X_tr[:600], y_tr[:600]  # 10 batches: 9 of 64 and one of 24
    model = _model()
    oracle = _Oracle(X_tr, y_tr)
    cb = TrainmedicCallback(tmp_path / "run", validation_data=(X_va, y_va), every=3, quiet=True)
    hist = model.fit(
        X_tr,
        y_tr,
        epochs=2,
        batch_size=BATCH,
        shuffle=False,
        validation_data=(X_va, y_va),
        callbacks=[oracle, cb],
        verbose=0,
    )
    assert cb.run is not None and cb.run.closed
    with tm.open_run(tmp_path / "run") as r:
        assert r.meta["status"] == "closed" and r.meta["batch_size"] == BATCH
        loss = r.scalar("loss")
        assert loss.steps.tolist() == list(range(20))
        # each batch's own loss, recovered from Keras' running mean (the last, short batch included)
        np.testing.assert_allclose(loss.values, oracle.losses, rtol=2e-4, atol=1e-5)
        np.testing.assert_allclose(r.scalar("grad_norm").values, oracle.grad_norms, rtol=1e-4)
        assert r.scalar("lr").values[0] == pytest.approx(0.1) and r.scalar("momentum").values[
            0
        ] == pytest.approx(0.9)
        wn = r.layer_stat("weight_norm")
        assert wn.layers == ["dense", "dense_1"] and wn.steps.tolist() == list(range(0, 20, 3))
        ratio = r.layer_stat("update_ratio").values
        assert np.isfinite(ratio).all() and (ratio > 0).all() and (ratio < 1).all()
        dead = r.layer_stat("act_dead")
        assert dead.layers == ["dense"] and ((dead.values >= 0) & (dead.values <= 1)).all()
        # per-epoch: Keras' own logs and the full evaluation of validation_data
        # the running training metrics of the batches (split train_running, as run.log(outputs=, targets=)):
        # the confusion matrix counted from compute_loss's y/y_pred gives Keras' own running accuracy
        assert "train" not in r.splits
        np.testing.assert_allclose(
            r.eval_series("train_running", "loss").values, hist.history["loss"], rtol=1e-5
        )
        np.testing.assert_allclose(
            r.eval_series("train_running", "accuracy").values, hist.history["accuracy"], atol=1e-6
        )
        assert r.confusion_matrix("train_running", epoch=1).sum() == 600
        np.testing.assert_allclose(r.eval_series("val", "loss").values, hist.history["val_loss"], rtol=1e-6)
        np.testing.assert_allclose(
            r.eval_series("val", "accuracy").values, hist.history["val_accuracy"], atol=1e-6
        )
        assert r.confusion_matrix("val").sum() == len(y_va)
        assert r.eval_series("val", "accuracy").values[-1] > 0.8
        summary = r.meta["models"][0]
        assert [lay["name"] for lay in summary["layers"]] == ["dense", "dense_1"]
        assert summary["layers"][0]["activation_kind"] == "relu"
        assert summary["layers"][0]["init"]["fan_in"] == 64  # Keras (in, out) kernel read as torch (out, in)

    diagnose = getattr(importlib.import_module("trainmedic.checks"), "diagnose", None)
    if diagnose is not None:
        assert isinstance(diagnose(tmp_path / "run"), tm.Diagnosis)


def test_keras_callback_flags_nonfinite_loss_and_stops_on_request(digits: Any, tmp_path: Path) -> None:
    X_tr, y_tr, _, _ = digits
    X_bad = X_tr[:640].copy()
    X_bad[3 * BATCH + 5, 7] = np.nan  # one corrupt row in batch 3: its loss is NaN
    model = _model()
    cb = TrainmedicCallback(tmp_path / "nan", quiet=True)
    model.fit(X_bad, y_tr[:640], epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[cb])
    with tm.open_run(tmp_path / "nan") as r:
        assert r.meta["status"] == "closed"
        loss = r.scalar("loss").values
        assert np.isfinite(loss[:3]).all() and np.isnan(loss[3])
        nonfinite = [e for e in r.events("live_finding") if e["code"] == "nonfinite"]
        assert nonfinite and nonfinite[0]["step"] == 3
    assert "compute_loss" not in model.__dict__  # the loss capture is removed after fit

    class StopAt3(TrainmedicCallback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 2 and self.run is not None and hasattr(self.run, "control"):
                self.run.control.request_stop("test stop")
            super().on_train_batch_end(batch, logs)

    cb2 = StopAt3(tmp_path / "stop", quiet=True)
    model = _model()
    model.fit(X_tr, y_tr, epochs=3, batch_size=BATCH, verbose=0, callbacks=[cb2])
    if not hasattr(cb2.run, "control"):
        pytest.skip("Run.control (remedies) is not available in this tree")
    with tm.open_run(tmp_path / "stop") as r:
        assert len(r.scalar("loss")) == 3  # Keras stops after the batch where the stop was requested


def test_keras_activation_kinds_and_argument_errors(tmp_path: Path) -> None:
    assert keras_activation_kind(keras.layers.Dense(2, activation="tanh")) == "tanh"
    assert keras_activation_kind(keras.layers.Dense(2)) is None
    assert keras_activation_kind(keras.layers.ReLU()) == "relu"
    assert keras_activation_kind(keras.layers.LeakyReLU()) == "leaky"
    assert keras_activation_kind(keras.layers.Activation("sigmoid")) == "sigmoid"
    with pytest.raises(tm.TrainmedicError, match="`validation_data` must be a pair"):
        TrainmedicCallback(tmp_path, validation_data=(1, 2, 3))
    with pytest.raises(tm.TrainmedicError, match="`model` must not be given"):
        TrainmedicCallback(tmp_path, model=object())


def _assert_fits(d: dict[str, Any]) -> None:
    """What keras_fits.main records must hold on every backend that has gradients (torch, tensorflow)."""
    import parity

    o = d["oracle"]
    assert o["status"] == "closed" and o["batch_size"] == BATCH
    assert o["loss_steps"] == list(range(40))
    # each batch's own loss and gradient norm, as the backend's autodiff computes them before the batch
    np.testing.assert_allclose(o["loss"], o["oracle_loss"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(o["grad_norm"], o["oracle_grad_norm"], rtol=1e-4)
    assert o["layers"] == ["hidden", "out"] and o["layer_grad_steps"] == list(range(0, 40, 3))
    np.testing.assert_allclose(
        o["layer_grad"], [o["oracle_layer_grad"][s] for s in range(0, 40, 3)], rtol=1e-4
    )
    assert o["act_layers"] == ["hidden"]
    dead = np.asarray(o["act_dead"])
    assert dead.shape == (14, 1) and ((dead >= 0) & (dead <= 1)).all()
    ratio = np.asarray(o["update_ratio"])
    assert np.isfinite(ratio).all() and (ratio > 0).all() and (ratio < 1).all()
    assert o["lr"][0] == pytest.approx(1e-2)
    # running training metrics and the validation pass counted from compute_loss: Keras' own numbers
    np.testing.assert_allclose(o["running_accuracy"], o["history_accuracy"], atol=1e-6)
    np.testing.assert_allclose(o["running_loss"], o["history_loss"], rtol=1e-5)
    np.testing.assert_allclose(o["val_accuracy"], o["history_val_accuracy"], atol=1e-6)
    assert o["train_samples"] == 600 and o["val_samples"] == 360
    # an exception inside fit: the run is failed and the diagnosis says so
    f = d["failing"]
    assert "99" in f["error"] and f["status"] == "failed"
    assert f["events"] and "training_failed" in f["codes"]
    assert d["report_bytes"] > 10_000  # the HTML report of a Keras run, as of a PyTorch one
    # parity: overfitting and the majority-class collapse found, the healthy fit silent
    assert not parity.check({k: set(v) for k, v in d["parity"].items()}), parity.summary(d["parity"])


def test_keras_torch_backend_records_what_a_plain_loop_does(tmp_path: Path) -> None:
    import keras_fits

    d = keras_fits.main(tmp_path)
    assert d["backend"] == "torch"
    _assert_fits(d)


@pytest.mark.slow
def test_keras_tensorflow_backend_in_a_subprocess(tmp_path: Path) -> None:
    """KERAS_BACKEND=tensorflow (Keras picks its backend once per process): gradients from the compiled step."""
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip('tensorflow is not installed (pip install "trainmedic[tensorflow]")')
    script = Path(__file__).with_name("keras_fits.py")
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    assert d["backend"] == "tensorflow"
    assert any("TensorFlow backend" in n for n in d["oracle"]["notes"])
    # the graph's rows are read at the capture steps (every 3 of 40) and the 4 epoch ends, not per step
    assert 14 <= d["oracle"]["tf_reads"] <= 14 + 4
    _assert_fits(d)
    # a custom train_step without compute_loss: no unwritten ring rows read as NaN losses, gradients still
    # from the optimizer's apply; a ModelCheckpoint saves (and reloads) the model with its wrapped activations
    c = d["custom"]
    assert c["status"] == "closed" and len(c["loss"]) == 46 and np.isfinite(c["loss"]).all()
    assert c["loss"][-1] < c["loss"][0] and c["grad_norm_steps"] == list(range(46))
    assert "nonfinite" not in c["codes"] and c["reloaded_activation"] == "relu"


def test_keras_callback_failing_inside_never_breaks_training(
    digits: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug inside the callback's own per-batch code is recorded and warned about once; the fit finishes
    with the weights of an unwatched fit."""
    X_tr, y_tr, _, _ = digits

    def fit(callbacks: list[Any]) -> np.ndarray:
        model = _model()
        model.fit(
            X_tr[:320], y_tr[:320], epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks
        )
        return np.concatenate([np.asarray(w).ravel() for w in model.get_weights()])

    bare = fit([])

    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(TrainmedicCallback, "_host_batch_end", broken)
    with pytest.warns(RuntimeWarning, match="injected") as caught:
        watched = fit([TrainmedicCallback(tmp_path / "run", quiet=True)])
    assert sum("injected" in str(w.message) for w in caught) == 1
    np.testing.assert_array_equal(bare, watched)
    with tm.open_run(tmp_path / "run") as r:
        assert r.meta["status"] == "closed"
        assert any("injected" in e["message"] for e in r.events("internal_error"))
