"""train_fn honours its config keys (the autofix engine relies on every key doing what it says)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.scenarios import DEFAULTS, build_model, resolve_config, train_fn
from trainmedic.scenarios.datasets import digits, sequences, tokens
from trainmedic.store import RunReader, open_run
from trainmedic.watch import watch  # not tm.watch: an imported trainmedic.watch submodule shadows it


def _train(cfg: dict, tmp_path: Path) -> tuple[nn.Module, RunReader]:
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = watch(run_dir=tmp_path / "r", overwrite=True, quiet=True)
        model = train_fn(cfg, run)
        run.close()
    return model, open_run(tmp_path / "r")


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(TrainmedicError, match="unknown key"):
        resolve_config({"learning_rate": 0.1})


def test_module_docstring_documents_every_key() -> None:
    import trainmedic.scenarios.train as t

    for key in DEFAULTS:
        assert f"``{key}``" in (t.__doc__ or ""), key


def test_optimizer_lr_momentum_weight_decay_recorded(tmp_path: Path) -> None:
    cfg = {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.5,
        "weight_decay": 1e-3,
        "epochs": 1,
        "batch_size": 256,
    }
    _, r = _train(cfg, tmp_path)
    opt = r.meta["optimizers"][0]
    assert opt["type"] == "SGD"
    g = opt["param_groups"][0]
    assert g["lr"] == 0.05 and g["momentum"] == 0.5 and g["weight_decay"] == 1e-3
    assert len(r.epochs("val")) == 1


@pytest.mark.parametrize(
    ("cfg", "module_type"),
    [
        ({"norm": "batch"}, nn.BatchNorm1d),
        ({"norm": "layer"}, nn.LayerNorm),
        ({"dropout": 0.3}, nn.Dropout),
        ({"activation": "silu"}, nn.SiLU),
        ({"arch": "cnn", "norm": "batch"}, nn.BatchNorm2d),
    ],
)
def test_model_options(cfg: dict, module_type: type) -> None:
    m = build_model({**cfg, "input_shape": (1, 8, 8), "num_classes": 10})
    assert any(isinstance(x, module_type) for x in m.modules())


def test_init_options_change_weight_scale() -> None:
    def std(init: str) -> float:
        m = build_model({"init": init, "input_shape": (1, 8, 8), "num_classes": 10})
        return float(m.net[1].weight.detach().std())  # type: ignore[index]

    assert std("zeros") == 0.0
    assert std("tiny") < 1e-3 < std("default") < std("huge")


def test_class_weights_sampler_clip_and_augmentation_run(tmp_path: Path) -> None:
    cfg = {
        "data": {"imbalance": 10},
        "class_weights": True,
        "sampler": "oversample",
        "grad_clip": 0.5,
        "augmentation": True,
        "epochs": 2,
        "lr_schedule": "plateau",
        "early_stopping": True,
        "restore_best": True,
    }
    _, r = _train(cfg, tmp_path)
    gn = r.scalar("grad_norm").values
    assert gn.max() <= 0.5 + 1e-4  # the clip runs before the probe: recorded norms are clipped
    assert len(r.epochs("train")) == 2


def test_datasets_shapes_and_options() -> None:
    d = digits(train_per_class=5)
    assert d.x_train.shape == (50, 1, 8, 8) and torch.bincount(d.y_train).tolist() == [5] * 10
    imb = digits(imbalance=10)
    counts = torch.bincount(imb.y_train)
    assert counts.max() / counts.min() >= 9
    assert torch.bincount(imb.y_val).min() >= 40  # the validation split stays balanced
    s = sequences()
    assert s.x_train.shape[1:] == (12, 1) and s.num_classes == 2
    t = tokens()
    assert t.x_train.dtype == torch.long and t.vocab == 12


def test_sampler_rejects_unknown_value(tmp_path: Path) -> None:
    with pytest.raises(TrainmedicError, match="sampler"):
        _train({"sampler": "smote", "epochs": 1}, tmp_path)
