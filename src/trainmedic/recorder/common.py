"""The recorder's shared pieces: its constants, the fail-open boundary of the public ``Run`` methods, and
the conversions of user values (tensors, arrays, numbers) to what the store keeps.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch
from torch import nn

from ..errors import TrainmedicError, describe_shape
from ..live import TrainingProblemError
from ..probes.layers import unwrap

if TYPE_CHECKING:
    from ..watch import Run


LAYER_NORM_STATS = ("grad_norm", "weight_norm", "update_norm")


MAX_PROBE_FAILURES = 20


_F = TypeVar("_F", bound=Callable[..., Any])


def _boundary(probe: str, default: Callable[[Any], Any] = lambda run: None) -> Callable[[_F], _F]:
    """The fail-open boundary of a public ``Run`` method (see ``Run._fence``): the user's own mistakes
    (``TrainmedicError``) and requested stops (``TrainingProblemError``) pass; any other failure is recorded,
    warned about once, and the call returns ``default(run)``."""

    def deco(fn: _F) -> _F:
        @functools.wraps(fn)
        def method(self: Run, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except (TrainingProblemError, TrainmedicError):
                raise
            except Exception as e:  # never break the user's training
                self._internal_error(probe, e)
                return default(self)

        return cast(_F, method)

    return deco


def _inline_boundary(fn: _F) -> _F:
    """Marks a public ``Run`` method that holds its fail-open boundary inline: a ``try`` around its whole body
    with :func:`_boundary`'s semantics, which spares the per-step path the wrapper's extra call (``run.log``,
    ``run.evaluate``). The fault-injection test treats it as a boundary (``tests/recorder/test_recorder_fail_open.py``)."""
    fn.__fail_open__ = True  # type: ignore[attr-defined]
    return fn


CLOCK_SECS = 0.02  # the flush clock is read at least this often (quiet steps skip it)


HP_REFRESH = 100  # steps between hyperparameter records when nothing changed (changes are written at once)


def _name_all(objs: Any, kind: str) -> dict[str, Any]:
    if objs is None:
        return {}
    if isinstance(objs, Mapping):
        return {str(k): v for k, v in objs.items()}
    if isinstance(objs, (list, tuple)):
        out: dict[str, Any] = {}
        for o in objs:
            base = type(unwrap(o) if isinstance(o, nn.Module) else o).__name__.lower()
            name, n = base, 1
            while name in out:
                n += 1
                name = f"{base}{n}"
            out[name] = o
        return out
    return {kind: objs}


def _dist_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _record_eval_mode(w: Any, split: str, epoch: int, step: int, train_mode: list[str]) -> None:
    """Which dropout / batch-norm modules were still in training mode while ``split`` was scored (a
    forgotten ``model.eval()``): the diagnosis judges held-out metrics measured that way."""
    w.add_record(
        "eval_mode",
        {"train_mode_modules": len(train_mode), "names": train_mode[:8]},
        epoch=epoch,
        step=step,
        split=split,
    )


def _autocast_dtype(device_type: str) -> str | None:
    """The autocast dtype active for ``device_type`` (``"torch.bfloat16"``), or None."""
    try:
        if torch.is_autocast_enabled(device_type):
            return str(torch.get_autocast_dtype(device_type))
    except (TypeError, RuntimeError):
        return None
    return None


def _version() -> str:
    from .. import __version__

    return __version__


def _global_norms(items: list[tuple[str, int, list[torch.Tensor]]]) -> list[tuple[str, int, torch.Tensor]]:
    """``(signal, step, per-parameter norms)`` of many steps → ``(signal, step, global norm)``, in a few
    kernels per group of same-sized steps (one stack, one reduction), still on the device."""
    groups: dict[tuple[torch.device, int], list[int]] = defaultdict(list)
    for i, (_, _, ns) in enumerate(items):
        groups[(ns[0].device, len(ns))].append(i)
    out: list[tuple[str, int, torch.Tensor] | None] = [None] * len(items)
    for (_, n), idx in groups.items():
        flat = [t if t.dtype == torch.float32 else t.float() for i in idx for t in items[i][2]]
        g = torch.linalg.vector_norm(torch.stack(flat).view(len(idx), n), dim=1)
        for j, i in enumerate(idx):
            out[i] = (items[i][0], items[i][1], g[j])
    return [o for o in out if o is not None]


def _batch_to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """One device→host copy per device for a list of same-shaped-or-not tensors."""
    out: list[np.ndarray | None] = [None] * len(tensors)
    groups: dict[tuple[torch.device, tuple[int, ...]], list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        groups[(t.device, tuple(t.shape))].append(i)
    for (_, _), idx in groups.items():
        stacked = torch.stack([tensors[i].float() for i in idx]).cpu().numpy()
        for j, i in enumerate(idx):
            out[i] = stacked[j]
    return [o for o in out if o is not None] if all(o is not None for o in out) else []


def _to_host(x: Any, arg: str = "value") -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        try:
            return torch.from_numpy(np.ascontiguousarray(x))
        except TypeError:
            raise TrainmedicError(
                f"`{arg}` must be an array of numbers (class indices, scores or logits); got dtype {x.dtype}"
            ) from None
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], Mapping):
        return [{k: _to_host(v) for k, v in d.items()} for d in x]
    if isinstance(x, (list, tuple)):
        try:
            return torch.as_tensor(x)
        except (TypeError, ValueError):
            return x
    return x


def _finite_or_none(values: Any) -> list[float | None]:
    """JSON-friendly floats: None for NaN/Inf (a diverged rank)."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def _gather(x: Any) -> Any:
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, x)
    return _join(parts, x)


def _join(parts: list[Any], x: Any) -> Any:
    """Every rank's ``x`` (gathered in rank order) as one tensor or list."""
    if isinstance(x, torch.Tensor):
        return torch.cat(parts)
    if isinstance(x, list):
        return [item for p in parts for item in p]
    return x


def _scalar_value(name: str, v: Any) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise TrainmedicError(f"`{name}` must be a scalar; got a tensor of shape {describe_shape(v)}")
        return float(v.item())
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TrainmedicError(
            f"`{name}` must be a number or a one-element tensor; got {type(v).__name__}"
        ) from None
    return f if math.isfinite(f) else f
