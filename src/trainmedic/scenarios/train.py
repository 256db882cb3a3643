"""``train_fn(config, run)``: build data, model and optimizer from a config dict and train under ``run``.

The autofix engine calls this with changed configs, so every key below is honoured (unknown keys are an
error, so a typo never silently does nothing). Defaults make a healthy MLP on digits.

==================  =========================================================================================
key                 meaning (default)
==================  =========================================================================================
``dataset``         ``digits`` | ``sequences`` | ``tokens`` (``digits``)
``data``            options of the data builder in :mod:`trainmedic.scenarios.datasets` (``{}``), e.g.
                    ``{"imbalance": 20}``, ``{"train_per_class": 5}``, ``{"label_noise": 0.4}``
``normalize_inputs`` standardize inputs with training statistics (``True``); ``False`` feeds raw pixel
                    values 0..16 (remedy ``normalize_inputs`` turns it back on)
``arch``            ``mlp`` | ``cnn`` | ``lstm`` | ``transformer`` (``mlp``)
``width``           hidden units / channels / model width (64)
``depth``           hidden layers / conv layers / LSTM layers / encoder layers (2)
``activation``      ``relu`` | ``leaky_relu`` | ``silu`` | ``sigmoid`` | ``tanh`` (``relu``)
``init``            ``default`` | ``he`` | ``xavier`` | ``zeros`` | ``constant`` | ``tiny`` | ``huge``
``dropout``         dropout rate after each hidden layer (0.0)
``norm``            ``none`` | ``batch`` | ``layer`` (``none``)
``optimizer``       ``sgd`` | ``adam`` | ``adamw`` (``adam``)
``lr``              learning rate (1e-3)
``momentum``        SGD momentum (0.0; ignored by Adam/AdamW)
``weight_decay``    L2 / decoupled weight decay (0.0)
``grad_clip``       clip the global gradient norm at this value before each step (``None``: off); the clip
                    runs before trainmedic's probe, so recorded gradient norms are the clipped ones
``lr_schedule``     ``none`` | ``plateau`` (warm-up for one epoch, then ×0.3 on a validation-loss plateau)
``early_stopping``  stop when validation loss has not improved for ``patience`` epochs (``False``)
``patience``        epochs without improvement for early stopping / the plateau schedule (3)
``restore_best``    put back the weights of the best validation-loss epoch at the end (``False``)
``class_weights``   weight the loss by inverse class frequency (``False``)
``sampler``         ``none`` | ``oversample`` | ``undersample`` (balanced sampling of the training set)
``augmentation``    augment training batches (``False``): noise/crop/flip for images, feature noise for
                    sequences, random token replacement for tokens
``epochs``          epochs (10)
``resume_from``     a checkpoint (:func:`~trainmedic.remedies.checkpoint.save_checkpoint`) whose model weights
                    training starts from (``None``); autofix's ``train_longer`` continues a model this way
``batch_size``      batch size (64)
``seed``            seed of data, model and batch order (0)
==================  =========================================================================================

Each epoch the model is scored on the full train and val splits (``run.evaluate``) in eval mode; when its
outputs turn non-finite, training stops (nothing can be scored any more, and a NaN model never recovers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TrainmedicError
from .datasets import Data, load
from .models import build_model

DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "data": {},
    "normalize_inputs": True,
    "arch": "mlp",
    "width": 64,
    "depth": 2,
    "activation": "relu",
    "init": "default",
    "dropout": 0.0,
    "norm": "none",
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "grad_clip": None,
    "lr_schedule": "none",
    "early_stopping": False,
    "patience": 3,
    "restore_best": False,
    "class_weights": False,
    "sampler": "none",
    "augmentation": False,
    "epochs": 10,
    "resume_from": None,
    "batch_size": 64,
    "seed": 0,
}


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in; unknown keys rejected (a typo must not silently do nothing)."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise TrainmedicError(
            f"`config` has unknown key(s) {unknown}; known keys: {', '.join(sorted(DEFAULTS))}"
        )
    out = {**DEFAULTS, **dict(config)}
    out["data"] = dict(out["data"] or {})
    return out


def build_data(cfg: Mapping[str, Any]) -> Data:
    data = load(str(cfg["dataset"]), seed=int(cfg["seed"]), **dict(cfg["data"]))
    if not cfg["normalize_inputs"] and data.kind == "image":
        from .datasets import _digits_arrays

        # undo the standardization: raw pixel scale (0..16) is what an un-normalized pipeline feeds
        x, _ = _digits_arrays()
        mean = torch.from_numpy(x.mean(0) * 16.0).reshape(1, 1, 8, 8)
        data.x_train = data.x_train * 16.0 * 4.0 + mean
        data.x_val = data.x_val * 16.0 * 4.0 + mean
    return data


def _optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    name, lr, wd = str(cfg["optimizer"]), float(cfg["lr"]), float(cfg["weight_decay"])
    if not lr > 0:
        raise TrainmedicError(f"`lr` must be a positive number; got {cfg['lr']!r}")
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    raise TrainmedicError(f"`optimizer` must be 'sgd', 'adam' or 'adamw'; got {name!r}")


def _augmenter(cfg: Mapping[str, Any], data: Data, gen: torch.Generator) -> Any:
    if not cfg["augmentation"]:
        return None
    if data.kind == "tokens":
        vocab = data.vocab

        def replace_tokens(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mask = torch.rand(x.shape, generator=gen) < 0.05
            return torch.where(mask, torch.randint(0, vocab, x.shape, generator=gen), x), y

        return replace_tokens
    from ..remedies.augmentation import make_augmentation

    return make_augmentation(data.input_shape, generator=gen)


def _batches(
    cfg: Mapping[str, Any], y: torch.Tensor, sampler: Any, rng: np.random.Generator
) -> list[np.ndarray]:
    order = (
        np.asarray(list(iter(sampler)), dtype=np.int64) if sampler is not None else rng.permutation(len(y))
    )
    bs = int(cfg["batch_size"])
    if bs < 1:
        raise TrainmedicError(f"`batch_size` must be a positive integer; got {cfg['batch_size']!r}")
    return [order[i : i + bs] for i in range(0, len(order), bs)]


def train_fn(config: Mapping[str, Any], run: Any) -> nn.Module:
    """Train the scenario ``config`` while ``run`` (a :class:`trainmedic.watch.Run`) records it."""
    cfg = resolve_config(config)
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    data = build_data(cfg)
    model = build_model(
        {**cfg, "input_shape": data.input_shape, "num_classes": data.num_classes, "vocab": data.vocab}
    )
    if cfg["resume_from"] is not None:
        from ..remedies.checkpoint import load_checkpoint

        load_checkpoint(str(cfg["resume_from"]), model, restore_rng=False)
    optimizer = _optimizer(cfg, model)
    if cfg["grad_clip"] is not None:
        from ..remedies.clipping import install_gradient_clipping

        install_gradient_clipping(optimizer, float(cfg["grad_clip"]))
    run.watch(model, optimizer)

    weight = None
    if cfg["class_weights"]:
        from ..remedies.sampling import class_weights

        weight = class_weights(data.y_train, num_classes=data.num_classes)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    eval_loss = nn.CrossEntropyLoss()
    sampler = None
    if cfg["sampler"] != "none":
        from ..remedies.sampling import balanced_sampler

        if cfg["sampler"] not in ("oversample", "undersample"):
            raise TrainmedicError(
                f"`sampler` must be 'none', 'oversample' or 'undersample'; got {cfg['sampler']!r}"
            )
        sampler = balanced_sampler(data.y_train, mode=str(cfg["sampler"]), seed=seed)
    augment = _augmenter(cfg, data, gen)
    schedule = None
    if cfg["lr_schedule"] == "plateau":
        from ..remedies.optim import warmup_then_plateau

        steps_per_epoch = max(1, -(-len(data.y_train) // int(cfg["batch_size"])))
        schedule = warmup_then_plateau(optimizer, steps_per_epoch, factor=0.3, patience=int(cfg["patience"]))
    elif cfg["lr_schedule"] != "none":
        raise TrainmedicError(f"`lr_schedule` must be 'none' or 'plateau'; got {cfg['lr_schedule']!r}")
    stopper = None
    if cfg["early_stopping"] or cfg["restore_best"]:
        from ..remedies.checkpoint import EarlyStopping

        patience = int(cfg["patience"]) if cfg["early_stopping"] else 10**9
        stopper = EarlyStopping(monitor="val_loss", patience=patience, restore_best=bool(cfg["restore_best"]))

    epochs = int(cfg["epochs"])
    for epoch in range(epochs):
        model.train()
        for idx in _batches(cfg, data.y_train, sampler, rng):
            xb, yb = data.x_train[idx], data.y_train[idx]
            if augment is not None:
                xb, yb = augment(xb, yb)
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            run.log(loss=loss)
            if schedule is not None:
                schedule.step()
        model.eval()
        with torch.no_grad():
            out_tr, out_va = model(data.x_train), model(data.x_val)
            if not (torch.isfinite(out_tr).all() and torch.isfinite(out_va).all()):
                # a diverged model cannot be scored (and will not recover): stop like a real loop would
                run.event("note", f"training stopped at epoch {epoch}: the model's outputs are non-finite")
                break
            run.evaluate(
                "train",
                data.y_train,
                out_tr,
                loss=eval_loss(out_tr, data.y_train),
                num_classes=data.num_classes,
            )
            val_loss = eval_loss(out_va, data.y_val)
            run.evaluate("val", data.y_val, out_va, loss=val_loss, num_classes=data.num_classes)
        if schedule is not None and torch.isfinite(val_loss):
            schedule.step(float(val_loss))
        if stopper is not None and stopper.update(float(val_loss), model, optimizer, epoch):
            break
    if stopper is not None and cfg["restore_best"] and stopper.has_best_state and not stopper.should_stop:
        stopper.restore(model, optimizer)
    if stopper is not None:
        # the checks judge the model this run returns: say which epoch's weights that is
        restored = stopper.best_epoch if cfg["restore_best"] and stopper.has_best_state else None
        run.record(
            "fit",
            {
                "restored_epoch": restored,
                "stopped_epoch": stopper.stopped_epoch,
                "early_stopping": bool(cfg["early_stopping"]),
                "monitor": "val_loss",
            },
        )
    return model


train_fn.defaults = DEFAULTS  # type: ignore[attr-defined]  # autofix reads the keys a remedy may change
