"""``tm.fit``: a small, honest training loop that understands every hyperparameter of the remedy catalogue.

Why: a remedy such as "insert batch norm" or "oversample the minority class" is a config change only if some
loop knows what the config key means. :class:`FitConfig` names those keys once; :func:`fit` applies them with
the plain remedy functions of this package (``swap_activations``, ``reinit``, ``insert_normalization``,
``add_dropout``, ``install_gradient_clipping``, ``class_weights``, ``balanced_sampler``,
``make_augmentation``, ``EarlyStopping``, ``save_checkpoint``, ...), records everything through a watched
:class:`~trainmedic.watch.Run`, and honours the run's :class:`~trainmedic.remedies.control.Control`.
``tm.autofix`` changes these keys; a ``train_fn`` that calls ``tm.fit(model, config=config, run=run)`` gets
every remedy without code of its own.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import TrainmedicError, describe_shape


@dataclass
class FitConfig:
    """The hyperparameters :func:`fit` understands (all optional; the config keys of ``tm.autofix``)."""

    lr: float | None = None  # learning rate; None: 1e-3 for Adam/AdamW, 1e-2 for SGD/RMSprop
    epochs: int = 10  # passes over the training data
    batch_size: int = 32  # samples per step
    optimizer: str = "adam"  # adam | adamw | sgd | rmsprop (when fit builds the optimizer)
    momentum: float | None = None  # SGD/RMSprop momentum (None: the optimizer's own)
    weight_decay: float | None = None  # L2 / decoupled weight decay (None: the optimizer's own)
    dropout: float = 0.0  # > 0: insert dropout after activations (or raise existing rates) to this rate
    activation: str | None = None  # swap activation modules to leaky_relu | silu | relu | gelu | elu | ...
    init: str | None = None  # he | xavier | auto: re-initialize Linear/Conv/RNN layers
    grad_clip: float | None = None  # clip the global gradient norm at this value
    norm: str | None = None  # batch | layer | auto: insert normalization after weight layers
    class_weights: bool | str = False  # True or inverse | sqrt_inverse | effective: weight the training loss
    sampler: str | None = None  # oversample | undersample: balance the classes drawn per epoch
    augmentation: str | None = None  # auto | image | tabular | sequence: batch augmentation while training
    early_stopping: int | None = (
        None  # patience (epochs of no val-loss improvement); restores the best weights
    )
    lr_schedule: str | None = None  # plateau: lr x0.1 after 3 epochs without val-loss improvement
    normalize_inputs: bool = False  # standardize features with the training split's mean and std
    seed: int | None = None  # seed torch, numpy and random before training

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def resolve(cls, config: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> FitConfig:
        """Defaults ← ``config`` ← explicit keyword arguments (``None`` keywords do not override).

        Keys are read one by one (``config.get``), so a tracking mapping sees which keys fit understands;
        keys fit does not know (``width``, ``depth`` …) are the model builder's business and are left alone.
        """
        values: dict[str, Any] = {}
        for k in cls.names():
            if config is not None and k in config:
                v = config.get(k)
                if v is not None:
                    values[k] = v
            if overrides.get(k) is not None:
                values[k] = overrides[k]
        for k in ("norm", "sampler", "lr_schedule", "init", "activation", "augmentation"):
            if values.get(k) in ("none", "default", False):
                values.pop(k)  # the "off" spellings of other train_fns (scenarios use "none" / False)
        if values.get("augmentation") is True:
            values["augmentation"] = "auto"
        if values.get("early_stopping") is True:
            values["early_stopping"] = int(
                config.get("patience", 5) if config is not None and "patience" in config else 5
            )
        elif values.get("early_stopping") is False:
            values.pop("early_stopping")
        try:
            cfg = cls(**values)
        except TypeError as e:  # pragma: no cover - keys come from fields()
            raise TrainmedicError(f"`config` has an invalid key: {e}") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise TrainmedicError(f"`epochs` must be a positive integer; got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise TrainmedicError(f"`batch_size` must be a positive integer; got {self.batch_size!r}")
        if self.lr is not None and not float(self.lr) > 0:
            raise TrainmedicError(f"`lr` must be a positive number; got {self.lr!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise TrainmedicError(
                f"`optimizer` must be one of {', '.join(_OPTIMIZERS)}; got {self.optimizer!r}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise TrainmedicError(f"`dropout` must be in [0, 1); got {self.dropout!r}")
        if self.sampler not in (None, "oversample", "undersample"):
            raise TrainmedicError(f"`sampler` must be 'oversample' or 'undersample'; got {self.sampler!r}")
        if self.lr_schedule not in (None, "plateau"):
            raise TrainmedicError(f"`lr_schedule` must be 'plateau'; got {self.lr_schedule!r}")
        if self.early_stopping is not None and (
            not isinstance(self.early_stopping, int) or self.early_stopping < 1
        ):
            raise TrainmedicError(
                f"`early_stopping` must be a patience in epochs (>= 1); got {self.early_stopping!r}"
            )
        if self.grad_clip is not None and not float(self.grad_clip) > 0:
            raise TrainmedicError(f"`grad_clip` must be a positive number; got {self.grad_clip!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.names()}


_OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2, "rmsprop": 1e-2}


@dataclass
class FitResult:
    """What :func:`fit` did: the trained model, the per-epoch history and why it stopped."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    run_dir: Path | None
    config: dict[str, Any]
    history: list[dict[str, float | None]] = field(default_factory=list)
    epochs_run: int = 0
    best_epoch: int | None = None
    best_val_loss: float | None = None
    restored_epoch: int | None = None
    stop_reason: str | None = None
    seconds: float = 0.0
    changes: dict[str, Any] = field(default_factory=dict)

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    def final(self, key: str) -> float | None:
        """The value of ``key`` (``val_accuracy``, ``train_loss`` …) for the returned model's epoch."""
        if not self.history:
            return None
        epoch = self.restored_epoch if self.restored_epoch is not None else len(self.history) - 1
        return self.history[epoch].get(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "config": self.config,
            "history": self.history,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "restored_epoch": self.restored_epoch,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
            "changes": self.changes,
        }


# ---- data ----------------------------------------------------------------------------------------
def _as_tensor(x: Any, arg: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError):
        raise TrainmedicError(f"`{arg}` must be a tensor or an array; got {type(x).__name__}") from None


def _split_xy(data: Any, arg: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(X, y) tensors for a tuple or a TensorDataset; None for other datasets/loaders."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = _as_tensor(data[0], f"{arg}[0]"), _as_tensor(data[1], f"{arg}[1]")
        if x.shape[0] != y.shape[0]:
            raise TrainmedicError(
                f"`{arg}` must be (X, y) with as many labels as samples; got X {describe_shape(x)} and y {describe_shape(y)}"
            )
        if x.is_floating_point() is False and x.dtype not in (torch.long, torch.int32, torch.int64):
            x = x.float()
        if x.dtype == torch.float64:
            x = x.float()
        if y.is_floating_point() and bool(torch.all(y == y.round())):
            y = y.long()
        return x, y
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data.tensors[0], data.tensors[1]
    return None


def _labels_of(data: Any, xy: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    if xy is not None:
        return xy[1]
    ds: Any = data.dataset if isinstance(data, DataLoader) else data
    return torch.as_tensor([int(ds[i][1]) for i in range(len(ds))])


def _make_loader(
    data: Any,
    xy: tuple[torch.Tensor, torch.Tensor] | None,
    batch_size: int,
    sampler: Any,
    generator: torch.Generator | None,
) -> DataLoader:
    if isinstance(data, DataLoader) and sampler is None:
        return data
    ds: Dataset[Any]
    if xy is not None:
        ds = TensorDataset(*xy)
    elif isinstance(data, DataLoader):
        ds = data.dataset
    elif isinstance(data, Dataset):
        ds = data
    else:
        raise TrainmedicError(f"`train` must be (X, y), a Dataset or a DataLoader; got {type(data).__name__}")
    if sampler is not None:
        return DataLoader(ds, batch_size=batch_size, sampler=sampler)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=generator)


def _eval_batches(
    data: Any, xy: tuple[torch.Tensor, torch.Tensor] | None, limit: int | None
) -> list[tuple[Any, Any]]:
    """Batches for evaluation (no shuffling; at most ``limit`` samples)."""
    if xy is not None:
        x, y = xy
        if limit is not None and x.shape[0] > limit:
            x, y = x[:limit], y[:limit]
        return [(x[i : i + 1024], y[i : i + 1024]) for i in range(0, x.shape[0], 1024)]
    ds: Any = data.dataset if isinstance(data, DataLoader) else data
    n = len(ds) if limit is None else min(len(ds), limit)
    loader = DataLoader(torch.utils.data.Subset(ds, range(n)), batch_size=1024, shuffle=False)
    return list(loader)


# ---- model and optimizer -------------------------------------------------------------------------
def _build_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    lr = float(cfg.lr) if cfg.lr is not None else _DEFAULT_LR[cfg.optimizer]
    wd = float(cfg.weight_decay or 0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg.momentum or 0.0), weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=float(cfg.momentum or 0.0), weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd if cfg.weight_decay is not None else 1e-2)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def _apply_model_config(model: nn.Module, cfg: FitConfig, example: torch.Tensor | None) -> dict[str, Any]:
    """Architecture remedies, in an order that keeps each one meaningful: activations first (init reads
    them), then normalization, then init, then dropout."""
    import warnings

    from .activations import swap_activations
    from .init import reinit
    from .normalization import insert_normalization
    from .regularization import add_dropout, set_dropout

    changes: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RemedyWarning "nothing to swap" is reported in `changes`
        if cfg.activation:
            changes["activation"] = swap_activations(model, to=str(cfg.activation))
        if cfg.norm:
            changes["norm"] = insert_normalization(model, kind=str(cfg.norm), example_input=example)
        if cfg.init:
            scheme = {
                "he": "he",
                "kaiming": "he",
                "xavier": "xavier",
                "glorot": "xavier",
                "auto": "auto",
            }.get(str(cfg.init))
            if scheme is None:
                raise TrainmedicError(f"`init` must be he, xavier or auto; got {cfg.init!r}")
            changes["init"] = {k: v.scheme for k, v in reinit(model, scheme=scheme).items()}
        if cfg.dropout and float(cfg.dropout) > 0:
            changes["dropout"] = set_dropout(model, float(cfg.dropout)) + add_dropout(
                model, float(cfg.dropout)
            )
    return changes


def _apply_optimizer_config(
    opt: torch.optim.Optimizer, model: nn.Module, cfg: FitConfig, explicit: set[str]
) -> None:
    """Config keys applied to an optimizer the caller built (only keys that were actually given)."""
    from .optim import add_missing_params, add_momentum, set_learning_rate
    from .regularization import set_weight_decay

    add_missing_params(opt, model)  # new norm layers / PReLU must train too
    if "lr" in explicit and cfg.lr is not None:
        set_learning_rate(opt, float(cfg.lr))
    if "momentum" in explicit and cfg.momentum is not None:
        add_momentum(opt, float(cfg.momentum))
    if "weight_decay" in explicit and cfg.weight_decay is not None:
        set_weight_decay(opt, float(cfg.weight_decay))


def _public_watch() -> tuple[Any, Any]:
    """``Run`` and ``watch`` from ``trainmedic.watch``, keeping ``tm.watch`` the function.

    Importing the submodule ``trainmedic.watch`` for the first time makes Python set the package attribute
    ``watch`` to the module, shadowing the lazily exported function; put the function back.
    """
    import sys
    import types

    from ..watch import Run, watch

    pkg = sys.modules[__name__.split(".")[0]]
    if isinstance(pkg.__dict__.get("watch"), types.ModuleType):
        pkg.__dict__["watch"] = watch
    return Run, watch


def _seed_all(seed: int) -> None:
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | str | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    train: Any = None,
    val: Any = None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    early_stopping: int | bool | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
    run: Any = None,
    run_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    treat: Any = None,
    device: str | torch.device | None = None,
    eval_train_samples: int | None = 4096,
    **hyperparameters: Any,
) -> FitResult:
    """Train ``model`` on ``train`` (``(X, y)``, a Dataset or a DataLoader), evaluating ``val`` every epoch.

    Every key of :class:`FitConfig` may come from ``config`` (a dict, e.g. autofix's) or a keyword
    (``dropout=0.3``, ``optimizer="sgd"``); keywords win. ``optimizer`` may be an optimizer you built (config
    keys ``lr``/``momentum``/``weight_decay`` are then applied to it only when given) or a name. ``loss_fn``
    defaults to cross-entropy. Recording: into ``run`` (a ``tm.watch`` Run, attached here if it watches
    nothing yet), else a new run in ``run_dir``. ``treat="safe"`` turns on live treatment; a stop request
    (``run.control.should_stop``) ends training. ``early_stopping`` (patience; ``True`` = 5) stops when the
    validation loss stops improving and restores the best weights. ``checkpoint_dir`` receives ``last.pt``
    every epoch and ``best.pt`` at each new best, atomically, with optimizer and RNG state.
    """
    from .checkpoint import EarlyStopping, save_checkpoint
    from .treatment import make_treatment

    Run, watch = _public_watch()
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TrainmedicError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    if train is None:
        raise TrainmedicError("`train` must be (X, y), a Dataset or a DataLoader; got None")
    overrides: dict[str, Any] = dict(hyperparameters)
    unknown = sorted(set(overrides) - set(FitConfig.names()))
    if unknown:
        raise TrainmedicError(
            f"unknown hyperparameter(s) {', '.join(unknown)}; fit understands {', '.join(FitConfig.names())}"
        )
    overrides.update(epochs=epochs, batch_size=batch_size, lr=lr)
    if early_stopping is not None:
        overrides["early_stopping"] = (
            5 if early_stopping is True else (None if early_stopping is False else early_stopping)
        )
    if isinstance(optimizer, str):
        overrides["optimizer"] = optimizer
        optimizer = None
    cfg = FitConfig.resolve(config, overrides)
    explicit = {
        k
        for k in FitConfig.names()
        if (config is not None and config.get(k) is not None) or overrides.get(k) is not None
    }
    if cfg.early_stopping and val is None:
        raise TrainmedicError("`early_stopping` needs a validation split; pass val=(X_val, y_val)")
    if cfg.seed is not None:
        _seed_all(int(cfg.seed))
    dev = torch.device(device) if device is not None else next(model.parameters()).device

    # data
    train_xy = _split_xy(train, "train")
    val_xy = _split_xy(val, "val") if val is not None else None
    if val is not None and val_xy is None and not isinstance(val, (Dataset, DataLoader)):
        raise TrainmedicError(f"`val` must be (X, y), a Dataset or a DataLoader; got {type(val).__name__}")
    changes: dict[str, Any] = {}
    if cfg.normalize_inputs:
        if train_xy is None or not train_xy[0].is_floating_point():
            raise TrainmedicError(
                "`normalize_inputs` needs float (X, y) tensors for train; got a Dataset/DataLoader"
            )
        x = train_xy[0]
        dims = tuple(i for i in range(x.dim()) if i != (1 if x.dim() == 4 else x.dim() - 1))
        mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True).clamp_min(1e-6)
        train_xy = ((x - mean) / std, train_xy[1])
        if val_xy is not None:
            val_xy = ((val_xy[0] - mean) / std, val_xy[1])
        changes["normalize_inputs"] = True
    labels: torch.Tensor | None = None
    if cfg.class_weights or cfg.sampler:
        labels = _labels_of(train, train_xy)
    sampler = None
    if cfg.sampler:
        from .sampling import balanced_sampler

        sampler = balanced_sampler(labels, mode=cfg.sampler, seed=int(cfg.seed or 0))  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(int(cfg.seed)) if cfg.seed is not None else None
    loader = _make_loader(train, train_xy, cfg.batch_size, sampler, gen)
    example = train_xy[0][:8].to(dev) if train_xy is not None else None
    if example is None:
        first = next(iter(loader))[0]
        example = first[:8].to(dev) if isinstance(first, torch.Tensor) else None

    # model, optimizer, loss
    changes.update(_apply_model_config(model, cfg, example))
    model.to(dev)
    if optimizer is None:
        optimizer = _build_optimizer(model, cfg)
    elif isinstance(optimizer, torch.optim.Optimizer):
        _apply_optimizer_config(optimizer, model, cfg, explicit)
    else:
        raise TrainmedicError(
            f"`optimizer` must be a torch.optim.Optimizer or a name; got {type(optimizer).__name__}"
        )
    eval_loss = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    train_loss = eval_loss
    if cfg.class_weights:
        if loss_fn is not None and not isinstance(loss_fn, nn.CrossEntropyLoss):
            raise TrainmedicError(
                f"`class_weights` needs a CrossEntropyLoss; got loss_fn {type(loss_fn).__name__}"
            )
        from .sampling import class_weights

        scheme = "inverse" if cfg.class_weights is True else str(cfg.class_weights)
        w = class_weights(labels, scheme=scheme).to(dev)
        train_loss = nn.CrossEntropyLoss(weight=w)
        changes["class_weights"] = w.tolist()
    augment = None
    if cfg.augmentation:
        if example is None:
            raise TrainmedicError("`augmentation` needs tensor inputs; got a dataset without tensors")
        from .augmentation import make_augmentation

        augment = make_augmentation(tuple(example.shape[1:]), kind=str(cfg.augmentation), generator=gen)

    # the run
    own_run = run is None
    resolved = cfg.to_dict()
    if own_run:
        run = watch(
            model,
            optimizer,
            run_dir=run_dir,
            quiet=True,
            treat=treat,
            config=resolved,
            batch_size=cfg.batch_size,
        )
    elif not isinstance(run, Run):
        raise TrainmedicError(f"`run` must be a trainmedic Run (tm.watch(...)); got {type(run).__name__}")
    else:
        if not run.models:
            run.watch(model, optimizer)
        elif model not in run.models.values():
            raise TrainmedicError(
                "`run` already watches another model; pass a fresh run (tm.watch(run_dir=...))"
            )
        if treat is not None and run.treatment is None:
            run.treatment = make_treatment(treat)
        if run._writer is not None:
            run._writer.set_meta(config={**dict(config or {}), **resolved})
    clipper = None
    if cfg.grad_clip:
        from .clipping import install_gradient_clipping

        clipper = install_gradient_clipping(
            optimizer, float(cfg.grad_clip)
        )  # after the run's hooks: it sees raw norms
    schedule = None
    if cfg.lr_schedule == "plateau":
        from .optim import WarmupThenPlateau

        schedule = WarmupThenPlateau(optimizer, warmup_steps=0, patience=3, factor=0.1)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stopper = None
    if cfg.early_stopping:
        stopper = EarlyStopping("val_loss", patience=int(cfg.early_stopping), restore_best=True)

    result = FitResult(
        model=model, optimizer=optimizer, run_dir=run.run_dir, config=resolved, changes=changes
    )
    best_val: float | None = None
    train_eval = _eval_batches(train, train_xy, eval_train_samples)
    val_eval = _eval_batches(val, val_xy, None) if val is not None else []
    bar = _Progress(progress, cfg.epochs)
    try:
        for epoch in range(cfg.epochs):
            model.train()
            for xb, yb in loader:
                xb, yb = xb.to(dev), yb.to(dev)
                if augment is not None:
                    xb, yb = augment(xb, yb)
                optimizer.zero_grad(set_to_none=True)
                loss = train_loss(model(xb), yb)
                loss.backward()
                optimizer.step()
                run.log(loss=loss)
                if run.control.should_stop:
                    break
            row: dict[str, float | None] = {"epoch": epoch}
            for split, batches in (("train", train_eval), ("val", val_eval)):
                if batches:
                    res, lv = _evaluate(run, split, model, batches, eval_loss, dev)
                    row[f"{split}_loss"] = lv
                    row[f"{split}_accuracy"] = res["scalars"].get("accuracy") if res is not None else None
            row["lr"] = float(optimizer.param_groups[0]["lr"])
            result.history.append(row)
            result.epochs_run = epoch + 1
            vl = row.get("val_loss")
            if vl is not None and math.isfinite(vl) and (best_val is None or vl < best_val):
                best_val, result.best_epoch, result.best_val_loss = vl, epoch, vl
                if ckpt is not None:
                    save_checkpoint(
                        ckpt / "best.pt", model, optimizer, extra={"epoch": epoch, "val_loss": vl}
                    )
            if ckpt is not None:
                save_checkpoint(
                    ckpt / "last.pt",
                    model,
                    optimizer,
                    extra={"epoch": epoch, "val_loss": vl if vl is not None else math.nan},
                )
            bar.update(row)
            if run.control.should_stop:
                result.stop_reason = run.control.stop_reason
                result.restored_epoch = run.control.restored_epoch
                break
            if schedule is not None and vl is not None:
                schedule.step(vl)
            if stopper is not None and vl is not None and stopper.update(vl, model, optimizer, epoch):
                result.restored_epoch = stopper.best_epoch
                result.stop_reason = (
                    f"early stopping: validation loss has not improved on {stopper.best:.4g} (epoch "
                    f"{stopper.best_epoch}) for {cfg.early_stopping} epochs; restored those weights"
                )
                run.event(
                    "fit", result.stop_reason, best_epoch=stopper.best_epoch, patience=cfg.early_stopping
                )
                break
            if not _finite_params(model):
                result.stop_reason = (
                    f"the weights became non-finite in epoch {epoch}; further training cannot recover"
                )
                run.event("fit", result.stop_reason, epoch=epoch)
                break
    finally:
        bar.close()
        if clipper is not None:
            clipper.remove()
        result.seconds = time.perf_counter() - t0
        if not run.closed:
            run.record("fit", result.to_dict())
        if own_run:
            run.close()
    return result


def _evaluate(
    run: Any,
    split: str,
    model: nn.Module,
    batches: list[tuple[Any, Any]],
    loss_fn: Callable[..., torch.Tensor],
    dev: torch.device,
) -> tuple[dict[str, Any] | None, float]:
    was = model.training
    model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for xb, yb in batches:
            outs.append(model(xb.to(dev)))
            ys.append(yb.to(dev))
    model.train(was)
    out, y = torch.cat(outs), torch.cat(ys)
    lv = float(loss_fn(out, y))
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        return None, lv  # NaN scores cannot be evaluated; the caller stops training
    return run.evaluate(split, y, out, loss=lv), lv


class _Progress:
    """A rich progress bar over epochs (nothing when disabled or not a terminal)."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self._p: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(
            TextColumn("epoch {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task = self._p.add_task("fit", total=epochs, info="")
        self._p.start()

    def update(self, row: Mapping[str, float | None]) -> None:
        if self._p is None:
            return
        info = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float))
        self._p.update(self._task, advance=1, info=info)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
