"""The Lightning callback records a real fit on digits: loss, gradients, weights, evals and stop requests."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

import trainmedic as tm  # noqa: E402
from trainmedic.integrations.lightning import TrainmedicCallback  # noqa: E402


class DigitsModule(pl.LightningModule):
    def __init__(self, lr: float = 0.1, return_predictions: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.grad_norms: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        if self.hparams.return_predictions:
            return {"loss": loss, "outputs": logits.detach(), "targets": y}
        return loss

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("val_loss", loss)
        if self.hparams.return_predictions:
            return {"loss": loss, "outputs": logits, "targets": y}
        return None

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def _loaders(digits: Any, batch_size: int = 64) -> tuple[Any, Any]:
    X_tr, y_tr, X_va, y_va = digits
    ds_tr = torch.utils.data.TensorDataset(torch.from_numpy(X_tr[:640]), torch.from_numpy(y_tr[:640]))
    ds_va = torch.utils.data.TensorDataset(torch.from_numpy(X_va), torch.from_numpy(y_va))
    return (
        torch.utils.data.DataLoader(ds_tr, batch_size=batch_size, shuffle=True),
        torch.utils.data.DataLoader(ds_va, batch_size=120),
    )


def _trainer(callback: Any, **kw: Any) -> Any:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_lightning_callback_records_loss_gradients_and_evals(digits: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DigitsModule()
    cb = TrainmedicCallback(tmp_path / "run", quiet=True, every=2)
    train, val = _loaders(digits)
    _trainer(cb, max_epochs=3).fit(model, train, val)

    assert cb.run is not None and cb.run.closed
    with tm.open_run(tmp_path / "run") as r:
        assert r.meta["status"] == "closed"
        loss = r.scalar("loss")
        assert loss.steps.tolist() == list(range(30))  # 10 steps/epoch, one loss per optimizer step
        assert loss.values[-5:].mean() < loss.values[:5].mean()
        # the gradients of step k are step k's own (measured after Lightning's closure ran backward)
        gn = r.scalar("grad_norm")
        assert gn.steps.tolist() == list(range(30))
        np.testing.assert_allclose(gn.values, model.grad_norms, rtol=1e-5)
        assert r.scalar("lr").values[0] == pytest.approx(0.1)
        assert r.scalar("momentum").values[0] == pytest.approx(0.9)
        wn = r.layer_stat("weight_norm")
        assert wn.layers == ["net.0", "net.2"] and wn.steps.tolist() == list(range(0, 30, 2))
        assert np.isfinite(r.layer_stat("update_ratio").values).all()
        assert r.layer_stat("act_dead").layers == ["net.1"]
        # sanity-check validation is skipped: exactly one val evaluation per epoch
        assert r.epochs("val") == [0, 1, 2] and r.epochs("train_running") == [0, 1, 2]
        assert "train" not in r.splits  # running metrics of the batches are never a clean training pass
        # the training batch (64), not the sanity check's validation batch (120) that ran first
        assert r.meta["batch_size"] == 64 and r.meta["batch_size_source"] == "first training batch"
        acc = r.eval_series("val", "accuracy").values
        assert acc[-1] > 0.7 and acc[-1] >= acc[0]
        assert r.confusion_matrix("val").sum() == 360
        assert r.confusion_matrix("train_running").sum() == 640
        val_loss = r.eval_series("val", "loss").values
        assert val_loss[-1] < val_loss[0]
        assert r.meta["config"]["hparams"]["lr"] == pytest.approx(0.1)

    diagnose = getattr(importlib.import_module("trainmedic.checks"), "diagnose", None)
    if diagnose is not None:
        assert isinstance(diagnose(tmp_path / "run"), tm.Diagnosis)


def test_lightning_callback_uses_logged_metrics_without_predictions(digits: Any, tmp_path: Path) -> None:
    """validation_step returning nothing: val loss still comes from self.log("val_loss", ...)."""
    torch.manual_seed(0)
    cb = TrainmedicCallback(tmp_path / "run", quiet=True)
    train, val = _loaders(digits)
    _trainer(cb, max_epochs=2, accumulate_grad_batches=2).fit(
        DigitsModule(return_predictions=False), train, val
    )
    with tm.open_run(tmp_path / "run") as r:
        assert r.scalar("loss").steps.tolist() == list(range(10))  # 20 batches, 2 per optimizer step
        # nor from validation_step: the module's forward output and the batch's labels are scored
        assert len(r.eval_series("val", "loss")) == 2 and len(r.eval_series("val", "accuracy")) == 2
        assert r.confusion_matrix("val").sum() == 360
        # predictions not returned: the module's training forward and the batch's labels are scored
        running = r.eval_series("train_running", "loss").values
        assert len(running) == 2 and running[1] < running[0]
        assert r.confusion_matrix("train_running").sum() == 640


class _StopAtStep:
    """Stands in for a live treatment: requests a stop once the run reached a step."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self, run: Any) -> None:
        if run.step >= self.at:
            run.control.request_stop("test stop", step=run.step)


def test_lightning_callback_honours_control_stop_and_records_failures(digits: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    stopper = _StopAtStep(4)

    class Stopping(TrainmedicCallback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            assert self.run is not None
            if hasattr(self.run, "control"):
                stopper(self.run)
            super().on_train_batch_end(trainer, *args)

    cb = Stopping(tmp_path / "stop", quiet=True)
    train, val = _loaders(digits)
    trainer = _trainer(cb, max_epochs=5)
    trainer.fit(DigitsModule(), train, val)
    if not hasattr(cb.run, "control"):
        pytest.skip("Run.control (remedies) is not available in this tree")
    assert trainer.global_step <= 5  # stopped at the request, not after 5 epochs (50 steps)

    class Exploding(DigitsModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if batch_idx == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    cb2 = TrainmedicCallback(tmp_path / "fail", quiet=True)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(cb2, max_epochs=1).fit(Exploding(), train, val)
    with tm.open_run(tmp_path / "fail") as r:
        assert r.meta["status"] == "failed"
        assert "boom" in r.events("training_exception")[0]["message"]
    failed = tm.diagnose(tmp_path / "fail").by_code("training_failed")
    assert failed and failed[0].severity.value == "error" and "boom" in failed[0].message


def test_lightning_callback_rejects_model_option(tmp_path: Path) -> None:
    with pytest.raises(tm.TrainmedicError, match="`model` must not be given"):
        TrainmedicCallback(tmp_path, model=nn.Linear(2, 2))


DDP_SCRIPT = """
import torch
import lightning.pytorch as pl
from torch import nn
from trainmedic.integrations.lightning import TrainmedicCallback


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        logits = self.net(batch[0])
        return {"loss": nn.functional.cross_entropy(logits, batch[1]), "outputs": logits, "targets": batch[1]}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


g = torch.Generator().manual_seed(0)
X = torch.randn(1000, 8, generator=g)
y = X[:, :3].argmax(dim=1)
train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X[:640], y[:640]), batch_size=64)
val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X[640:], y[640:]), batch_size=90)
torch.manual_seed(0)
cb = TrainmedicCallback({run_dir!r}, quiet=True, every=1)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, callbacks=[cb], logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Module(), train, val)
"""


@pytest.mark.ddp
@pytest.mark.slow
def test_lightning_callback_under_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    """strategy="ddp", devices=2: rank 0 records; val predictions of both ranks are gathered."""
    import subprocess
    import sys

    script = tmp_path / "ddp_fit.py"
    run_dir = tmp_path / "run"
    script.write_text(DDP_SCRIPT.replace("{run_dir!r}", repr(str(run_dir))))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == []  # no per-rank directories
    with tm.open_run(run_dir) as r:
        assert r.meta["status"] == "closed" and r.meta["world_size"] == 2
        assert r.scalar("loss").steps.tolist() == list(range(10))  # 320 samples per rank, batch 64
        assert len(r.scalar("grad_norm")) == 10 and r.layer_stat("weight_norm").values.shape == (10, 2)
        assert r.epochs("val") == [0, 1]
        assert r.confusion_matrix("val").sum() == 360  # 180 per rank: both ranks' shards


class PlainModule(pl.LightningModule):
    """A LightningModule as users write it: the steps return/log only the loss, no predictions."""

    def __init__(self, width: int, classes: int, lr: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, classes))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def test_lightning_parity_overfit_and_collapse_found_healthy_silent(tmp_path: Path) -> None:
    """The three parity fits of parity.py through the callback, with no predictions returned by the steps."""
    import parity

    found = {}
    for name, case in parity.cases().items():
        torch.manual_seed(0)
        tr = torch.utils.data.TensorDataset(torch.from_numpy(case.X_train), torch.from_numpy(case.y_train))
        va = torch.utils.data.TensorDataset(torch.from_numpy(case.X_val), torch.from_numpy(case.y_val))
        cb = TrainmedicCallback(tmp_path / name, quiet=True)
        _trainer(cb, max_epochs=case.epochs, num_sanity_val_steps=0).fit(
            PlainModule(case.width, case.classes, case.lr),
            torch.utils.data.DataLoader(tr, batch_size=case.batch_size, shuffle=True),
            torch.utils.data.DataLoader(va, batch_size=256),
        )
        found[name] = parity.problems(tmp_path / name)
        with tm.open_run(tmp_path / name) as r:
            assert r.epochs("train_running") == list(range(case.epochs))
            assert r.confusion_matrix("train_running").sum() == len(case.y_train)
            assert r.confusion_matrix("val").sum() == len(case.y_val)
    assert not parity.check(found), parity.summary(found)


def test_lightning_callback_failing_inside_never_breaks_training(
    digits: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug inside the callback's own code (here: reading the batch's labels) is recorded and warned about
    once; the fit finishes with the weights of an unwatched fit."""
    import trainmedic.integrations.lightning as tm_pl

    def fit(callbacks: list[Any]) -> torch.Tensor:
        torch.manual_seed(0)
        model = PlainModule(16, 10, 1e-2)
        train, val = _loaders(digits)
        pl.Trainer(
            accelerator="cpu", devices=1, callbacks=callbacks, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, max_epochs=1, num_sanity_val_steps=0,
        ).fit(model, train, val)  # fmt: skip
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    bare = fit([])

    def broken(batch: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(tm_pl, "_batch_targets", broken)
    with pytest.warns(RuntimeWarning, match="injected") as caught:
        watched = fit([TrainmedicCallback(tmp_path / "run", quiet=True)])
    warned = [str(w.message) for w in caught if "injected" in str(w.message)]
    assert warned and len(warned) == len(set(warned))  # once per part (training batches, validation batches)
    assert torch.equal(bare, watched)
    with tm.open_run(tmp_path / "run") as r:
        assert r.meta["status"] == "closed" and len(r.scalar("loss")) == 10
        assert any("injected" in e["message"] for e in r.events("internal_error"))
