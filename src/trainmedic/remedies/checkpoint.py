"""Checkpoints, rollback and early stopping (remedies ``restore_best_checkpoint``, ``early_stopping``).

A rollback must be exact: weights, optimizer state *and* every random number generator, so that training
again from a checkpoint repeats the same steps bit for bit (the same dropout masks, the same shuffling).
Files are loaded with ``torch.load(weights_only=True)`` — no pickled code runs — so everything is stored
as tensors and plain Python values.
"""

from __future__ import annotations

import copy
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TrainmedicError
from .plateau import Plateau

CHECKPOINT_FORMAT = 1


def rng_state() -> dict[str, Any]:
    """The state of torch (CPU and every CUDA device), numpy's global and Python's ``random`` generators,
    as tensors and plain values only."""
    np_state: Any = np.random.get_state(legacy=True)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "algorithm": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` recorded (missing parts are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        s = state["numpy"]
        keys = s["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(
            (s["algorithm"], keys, int(s["pos"]), int(s["has_gauss"]), float(s["cached_gaussian"]))
        )
    if "python" in state:
        s = state["python"]
        internal = tuple(int(v) for v in s["internal"].tolist())
        gauss = s["gauss_next"]
        random.setstate((int(s["version"]), internal, None if gauss is None else float(gauss)))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([t.cpu() for t in cuda_states])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file next to ``path``, fsync it, then rename over ``path``: a crash leaves the
    old checkpoint or the new one, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable; not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    extra: Mapping[str, Any] | None = None,
    scheduler: Any = None,
    include_rng: bool = True,
) -> Path:
    """Write model weights, optimizer state, RNG states and ``extra`` to ``path`` atomically.

    ``extra`` (epoch, metrics, ...) must hold only tensors and plain values (what ``weights_only``
    loading accepts). ``scheduler`` is anything with ``state_dict()``.
    """
    if not isinstance(model, nn.Module):
        raise TrainmedicError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    obj: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "model": model.state_dict()}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        obj["scheduler"] = scheduler.state_dict()
    if include_rng:
        obj["rng"] = rng_state()
    obj["extra"] = dict(extra or {})
    p = Path(path)
    _atomic_torch_save(obj, p)
    return p


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
    scheduler: Any = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into ``model`` (and ``optimizer``, ``scheduler``, the RNGs);
    return its ``extra`` dict. Tensors are mapped onto the model's device."""
    p = Path(path)
    if not p.is_file():
        raise TrainmedicError(f"`path` must be an existing checkpoint file; got {str(p)!r} (not found)")
    ref = next(model.parameters(), None)
    map_location = ref.device if ref is not None else "cpu"
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        raise TrainmedicError(
            f"`path` must be a readable checkpoint; got {str(p)!r} ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(obj, dict) or "model" not in obj:
        raise TrainmedicError(f"`path` must be a trainmedic checkpoint with a 'model' entry; got {str(p)!r}")
    model.load_state_dict(obj["model"], strict=strict)
    if optimizer is not None:
        if "optimizer" not in obj:
            raise TrainmedicError(
                f"`optimizer` was given but the checkpoint {str(p)!r} holds no optimizer state"
            )
        optimizer.load_state_dict(obj["optimizer"])
    if scheduler is not None and "scheduler" in obj:
        scheduler.load_state_dict(obj["scheduler"])
    if restore_rng and "rng" in obj:
        set_rng_state(obj["rng"])
    return dict(obj.get("extra") or {})


def _cpu_copy(obj: Any) -> Any:
    """Deep copy with every tensor detached and moved to the CPU (the best state must not follow training)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` epochs; keep and restore the best state.

    ``update(value, model, optimizer, epoch)`` returns True when training should stop. Epochs before
    ``start_from_epoch`` are ignored (neither best nor counted). The improvement rule is
    :func:`~trainmedic.remedies.plateau.improved` (by more than ``min_delta``, in direction ``mode``); a
    non-finite value never improves. The best state is a CPU deep copy kept in memory, or — with
    ``checkpoint_path`` — an atomic checkpoint on disk. With ``restore_best``, the best state is put back
    automatically when ``update`` says stop.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        start_from_epoch: int = 0,
        restore_best: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.monitor = monitor
        self.start_from_epoch = int(start_from_epoch)
        self.restore_best = restore_best
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.plateau = Plateau(mode=mode, patience=patience, min_delta=min_delta)
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self._epoch = -1
        self._best_state: dict[str, Any] | None = None

    @property
    def best(self) -> float | None:
        return self.plateau.best

    @property
    def should_stop(self) -> bool:
        return self.stopped_epoch is not None

    def update(
        self,
        value: float | torch.Tensor,
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        epoch: int | None = None,
    ) -> bool:
        """Record this epoch's ``value``; True when training should stop (at this epoch)."""
        self._epoch = self._epoch + 1 if epoch is None else int(epoch)
        epoch = self._epoch
        v = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
        if epoch < self.start_from_epoch:
            return False
        stop = self.plateau.update(v)
        if self.plateau.last_improved:
            self.best_epoch = epoch
            if model is not None:
                self._save_best(model, optimizer, epoch)
        if stop:
            self.stopped_epoch = epoch
            if self.restore_best and model is not None and self.has_best_state:
                self.restore(model, optimizer)
        return stop

    @property
    def has_best_state(self) -> bool:
        if self.checkpoint_path is not None:
            return self.best_epoch is not None and self.checkpoint_path.is_file()
        return self._best_state is not None

    def _save_best(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, epoch: int) -> None:
        extra = {"epoch": epoch, "monitor": self.monitor, "best": float(self.plateau.best or 0.0)}
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, model, optimizer, extra=extra, include_rng=False)
            return
        self._best_state = {
            "model": _cpu_copy(model.state_dict()),
            "optimizer": _cpu_copy(optimizer.state_dict()) if optimizer is not None else None,
            "extra": extra,
        }

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Put the best weights (and optimizer state, if it was recorded) back; return the best epoch."""
        if not self.has_best_state or self.best_epoch is None:
            raise TrainmedicError(
                "`EarlyStopping.restore` needs a best state; got none (call update with a model)"
            )
        if self.checkpoint_path is not None:
            load_checkpoint(self.checkpoint_path, model, optimizer, restore_rng=False)
            return self.best_epoch
        assert self._best_state is not None
        model.load_state_dict(self._best_state["model"])
        if optimizer is not None and self._best_state["optimizer"] is not None:
            optimizer.load_state_dict(copy.deepcopy(self._best_state["optimizer"]))
        return self.best_epoch
