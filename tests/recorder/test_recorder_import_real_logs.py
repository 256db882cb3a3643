"""Importing logs written by the real libraries: per-step and per-epoch signals are sorted by their step axis,
not their name (issue 14: a per-step ``train/loss`` TensorBoard tag became 200 training "epochs" beside 10
val epochs, and overfitting was judged on epochs that did not line up).

* ``torch.utils.tensorboard.SummaryWriter`` from a real overfitting loop that is also watched: the imported
  run's per-epoch series line up with the watched run's and the overfitting verdict (best epoch) is the same;
* Lightning's ``CSVLogger`` from a real ``Trainer.fit`` (``train_loss`` on_step and on_epoch, ``val_*``);
* Hugging Face ``Trainer``'s ``trainer_state.json`` from a real fit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _recorder_helpers import digits
from torch import nn

import trainmedic as tm
from trainmedic.store.importers import import_file

EPOCHS = 10
STEPS = 20  # per epoch


def _overfit_loop(tb_dir: Path, run_dir: Path) -> None:
    """A real loop that overfits 64 digits, logged to TensorBoard (per-step ``train/loss``, per-epoch
    ``train/accuracy``, ``val/loss``, ``val/accuracy``) and watched by trainmedic at the same time."""
    from torch.utils.tensorboard import SummaryWriter

    X, y = digits(512)
    Xtr, ytr, Xva, yva = X[:64], y[:64], X[256:], y[256:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    writer = SummaryWriter(log_dir=str(tb_dir))
    with tm.watch(model, opt, run_dir=run_dir, quiet=True) as run:
        step = 0
        for _ in range(EPOCHS):
            for _ in range(STEPS):
                idx = torch.randint(0, 64, (16,))
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(Xtr[idx]), ytr[idx])
                loss.backward()
                opt.step()
                run.log(loss=loss)
                writer.add_scalar("train/loss", float(loss.detach()), step)
                step += 1
            with torch.no_grad():
                for split, Xs, ys in (("train", Xtr, ytr), ("val", Xva, yva)):
                    out = model(Xs)
                    vloss = nn.functional.cross_entropy(out, ys)
                    run.evaluate(split, ys, out, loss=vloss)
                    acc = float((out.argmax(1) == ys).float().mean())
                    writer.add_scalar(f"{split}/accuracy", acc, step - 1)
                    if split == "val":  # written one step later than train's, as loggers often do
                        writer.add_scalar("val/loss", float(vloss), step)
    writer.close()


def test_tensorboard_per_step_and_per_epoch_tags_line_up(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    _overfit_loop(tmp_path / "tb", tmp_path / "watched")
    res = import_file(tmp_path / "tb", tmp_path / "imported")
    assert res["axes"]["train/loss"] == "step (loss)"
    assert res["axes"]["val/loss"] == res["axes"]["val/accuracy"].replace("accuracy", "loss")
    imp, ref = tm.open_run(tmp_path / "imported"), tm.open_run(tmp_path / "watched")
    assert list(imp.scalar("loss").steps) == list(range(EPOCHS * STEPS))  # 200 steps, not 200 epochs
    np.testing.assert_allclose(imp.scalar("loss").values, ref.scalar("loss").values, rtol=1e-6)
    assert imp.epochs("train") == imp.epochs("val") == list(range(EPOCHS))
    for split, metric in (("train", "accuracy"), ("val", "accuracy"), ("val", "loss")):
        np.testing.assert_allclose(
            imp.eval_series(split, metric).values, ref.eval_series(split, metric).values, rtol=1e-6
        )
    found = {f.code: f for f in tm.diagnose(tmp_path / "imported").findings}
    watched = {f.code: f for f in tm.diagnose(tmp_path / "watched").findings}
    assert "overfitting" in found and "overfitting" in watched
    assert found["overfitting"].evidence["best_epoch"] == watched["overfitting"].evidence["best_epoch"]


def test_lightning_csv_logger_metrics_by_step_axis(tmp_path: Path) -> None:
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    X, y = digits(256)

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            xb, yb = batch
            out = self.net(xb)
            loss = nn.functional.cross_entropy(out, yb)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            self.log("train_acc", (out.argmax(1) == yb).float().mean(), on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            xb, yb = batch
            out = self.net(xb)
            self.log("val_loss", nn.functional.cross_entropy(out, yb))
            self.log("val_acc", (out.argmax(1) == yb).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    train = DataLoader(TensorDataset(X[:192], y[:192]), batch_size=16)  # 12 steps an epoch
    val = DataLoader(TensorDataset(X[192:], y[192:]), batch_size=64)
    trainer = L.Trainer(
        max_epochs=4,
        logger=CSVLogger(str(tmp_path), name="csv"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(Net(), train, val)
    (metrics,) = list(tmp_path.glob("csv/*/metrics.csv"))
    rows = list(csv.DictReader(metrics.open()))
    res = import_file(metrics, tmp_path / "run")
    r = tm.open_run(tmp_path / "run")
    per_step = [float(row["train_loss_step"]) for row in rows if row["train_loss_step"]]
    assert len(per_step) == 48
    np.testing.assert_allclose(r.scalar("loss").values, per_step, rtol=1e-6)
    assert r.epochs("val") == r.epochs("train") == [0, 1, 2, 3]
    val_loss = [float(row["val_loss"]) for row in rows if row["val_loss"]]
    np.testing.assert_allclose(r.eval_series("val", "loss").values, val_loss, rtol=1e-6)
    train_epoch = [float(row["train_loss_epoch"]) for row in rows if row["train_loss_epoch"]]
    np.testing.assert_allclose(r.eval_series("train", "loss").values, train_epoch, rtol=1e-6)
    assert len(r.eval_series("train", "accuracy").values) == 4
    assert res["axes"]["val_acc"] == "epoch (val/accuracy)"
    tm.diagnose(tmp_path / "run")


def test_hf_trainer_state_json(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    X, y = digits(256)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
            logits = self.net(x)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = nn.functional.cross_entropy(logits, labels)
            return out

    def ds(a: int, b: int) -> list[dict[str, Any]]:
        return [{"x": X[i], "labels": y[i]} for i in range(a, b)]

    def accuracy(p: Any) -> dict[str, float]:
        return {"accuracy": float((np.argmax(p.predictions, 1) == p.label_ids).mean())}

    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        num_train_epochs=3,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=0.05,
        eval_strategy="epoch",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=Net(), args=args, train_dataset=ds(0, 192), eval_dataset=ds(192, 256), compute_metrics=accuracy
    )
    trainer.train()
    state_file = tmp_path / "hf" / "trainer_state.json"
    trainer.state.save_to_json(str(state_file))
    history = json.loads(state_file.read_text())["log_history"]
    res = import_file(tmp_path / "hf", tmp_path / "run")  # the output directory holding it
    r = tm.open_run(tmp_path / "run")
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    assert len(losses) == 36  # 12 steps x 3 epochs, logging_steps=1
    assert list(r.scalar("loss").steps) == [s for s, _ in losses]
    np.testing.assert_allclose(r.scalar("loss").values, [v for _, v in losses], rtol=1e-6)
    assert len(r.scalar("lr")) == 36 and len(r.scalar("grad_norm")) == 36
    evals = [h for h in history if "eval_loss" in h]
    assert r.epochs("val") == [0, 1, 2]
    np.testing.assert_allclose(r.eval_series("val", "accuracy").values, [h["eval_accuracy"] for h in evals])
    np.testing.assert_allclose(r.eval_series("val", "loss").values, [h["eval_loss"] for h in evals])
    assert "val/runtime" not in res["evals"] and "train_loss" not in res["signals"]
    assert r.meta["batch_size"] == 16
    tm.diagnose(tmp_path / "run")
