"""tm.fit applies every catalogue hyperparameter with the remedy functions and records the run."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import trainmedic as tm
from trainmedic.remedies.checkpoint import load_checkpoint
from trainmedic.remedies.fit import FitConfig, fit


def _data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    x, y = load_digits(return_X_y=True)
    X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)  # raw pixels 0..16: normalize_inputs matters
    return (X[:1000], Y[:1000]), (X[1000:1400], Y[1000:1400])


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10))


def test_fit_applies_config_remedies_and_records(tmp_path):  # type: ignore[no-untyped-def]
    train, val = _data()
    model = _mlp()
    config = {
        "epochs": 3,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "activation": "leaky_relu",
        "norm": "batch",
        "init": "he",
        "dropout": 0.1,
        "grad_clip": 5.0,
        "class_weights": True,
        "sampler": "oversample",
        "augmentation": True,
        "normalize_inputs": True,
        "seed": 3,
        "width": 32,  # not fit's business: left to the model builder
    }
    res = fit(
        model,
        train=train,
        val=val,
        config=config,
        run_dir=tmp_path / "run",
        checkpoint_dir=tmp_path / "ck",
        progress=False,
    )
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "BatchNorm1d", "LeakyReLU", "Dropout", "Linear"]
    opt = res.optimizer
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0]["weight_decay"] == 1e-4
    assert not opt._optimizer_step_pre_hooks  # the clipper is removed at the end
    assert res.epochs_run == 3 and res.final("val_accuracy") > 0.8
    r = tm.open_run(tmp_path / "run")
    assert r.meta["config"]["norm"] == "batch" and r.meta["config"]["sampler"] == "oversample"
    assert r.eval_series("val", "accuracy").steps.tolist() == [0, 1, 2]
    assert r.record("fit")["changes"]["class_weights"]
    fresh = nn.Sequential(
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.LeakyReLU(), nn.Dropout(0.1), nn.Linear(32, 10)
    )
    fresh._modules = {"0": fresh[0], "0_norm": fresh[1], "1": fresh[2], "1_dropout": fresh[3], "2": fresh[4]}  # type: ignore[assignment]
    extra = load_checkpoint(tmp_path / "ck" / "best.pt", fresh)
    assert extra["epoch"] == res.best_epoch


def test_fit_early_stopping_restores_best(tmp_path):  # type: ignore[no-untyped-def]
    train, val = _data()
    small = (train[0][:40], train[1][:40])  # 40 samples, a wide model: it overfits within a few epochs
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    res = fit(
        model,
        train=small,
        val=val,
        epochs=60,
        lr=1e-2,
        batch_size=8,
        early_stopping=3,
        normalize_inputs=True,
        run_dir=tmp_path / "r",
        progress=False,
    )
    assert res.stopped_early and res.epochs_run < 60
    losses = [h["val_loss"] for h in res.history]
    assert res.restored_epoch == losses.index(min(losses))
    assert res.final("val_loss") == min(losses)
    assert tm.open_run(tmp_path / "r").record("fit")["restored_epoch"] == res.restored_epoch


def test_fit_errors_name_the_argument(tmp_path):  # type: ignore[no-untyped-def]
    train, val = _data()
    with pytest.raises(tm.TrainmedicError, match="unknown hyperparameter"):
        fit(_mlp(), train=train, dropuot=0.2, run_dir=tmp_path / "a", progress=False)
    with pytest.raises(tm.TrainmedicError, match="`early_stopping` needs a validation split"):
        fit(_mlp(), train=train, early_stopping=3, run_dir=tmp_path / "b", progress=False)
    with pytest.raises(tm.TrainmedicError, match="`epochs` must be a positive integer"):
        fit(_mlp(), train=train, val=val, epochs=0, run_dir=tmp_path / "c", progress=False)
    assert "grad_clip" in FitConfig.names()
