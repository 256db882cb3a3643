"""Turn what users pass (arrays, tensors, torch Datasets) into one streaming view of a split.

The audit never needs a whole split in memory as float64: it reads features in chunks (:meth:`SplitData.chunks`)
and fetches single rows by index (:meth:`SplitData.rows`); only the labels (one int64 per sample) are held.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..errors import TrainmedicError, describe_shape

DEFAULT_CHUNK_ROWS = 65_536
CHUNK_VALUES = 2**22  # values per chunk: bounds the float64 working set to ~32 MiB (x a few temporaries)


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Return a numpy view of an array-like without copying when it is already an array or CPU tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception:
        raise TrainmedicError(
            f"`{name}` must be an array, a tensor or a torch Dataset; got {type(x).__name__}"
        ) from None


def as_labels(y: Any, name: str, n: int | None = None) -> np.ndarray:
    """Validate labels: class indices of shape (N,), finite, integral, non-negative."""
    arr = to_numpy(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise TrainmedicError(
            f"`{name}` must be class indices of shape (N,); got shape {describe_shape(arr)}"
        )
    if n is not None and arr.shape[0] != n:
        raise TrainmedicError(f"`{name}` must have one label per sample ({n}); got {arr.shape[0]} labels")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind in "fc":
        if not np.all(np.isfinite(arr)):
            bad = int(np.sum(~np.isfinite(arr)))
            raise TrainmedicError(f"`{name}` must be finite class indices; got {bad} NaN/Inf labels")
        if not np.all(arr == np.round(arr)):
            raise TrainmedicError(
                f"`{name}` must be integer class indices; got non-integer values such as {arr[arr != np.round(arr)][0]!r}"
            )
    elif arr.dtype.kind not in "iu":
        raise TrainmedicError(f"`{name}` must be integer class indices; got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise TrainmedicError(f"`{name}` must be non-negative class indices; got minimum {int(out.min())}")
    return out


def _tensor_dataset_parts(ds: Dataset[Any]) -> tuple[Any, Any] | None:
    """(X, y) arrays behind a TensorDataset or a (nested) Subset of one, so they can be read without a loop."""
    if isinstance(ds, TensorDataset) and len(ds.tensors) >= 2:
        return ds.tensors[0], ds.tensors[1]
    if isinstance(ds, Subset):
        inner = _tensor_dataset_parts(ds.dataset)
        if inner is not None:
            idx = torch.as_tensor(list(ds.indices), dtype=torch.long)
            return inner[0][idx], inner[1][idx]
    return None


def dataset_labels(ds: Dataset[Any], name: str) -> np.ndarray:
    """Labels of a torch Dataset: ``.targets``/``.labels`` when present, else ``ds[i][1]`` for each item."""
    if isinstance(ds, Subset):
        parent = dataset_labels(ds.dataset, name)
        return parent[np.asarray(list(ds.indices), dtype=np.int64)]
    if isinstance(ds, TensorDataset) and len(ds.tensors) >= 2:
        return as_labels(ds.tensors[1], f"{name} labels")
    for attr in ("targets", "labels"):
        if hasattr(ds, attr):
            return as_labels(getattr(ds, attr), f"{name}.{attr}", len(ds))  # type: ignore[arg-type]
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise TrainmedicError(
            f"`{name}` must be a map-style Dataset with a length; got {type(ds).__name__}"
        ) from None
    values = []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TrainmedicError(f"`{name}[{i}]` must be an (input, label) pair; got {type(item).__name__}")
        lab = item[1]
        values.append(lab.item() if isinstance(lab, torch.Tensor) else lab)
    return as_labels(np.asarray(values), f"{name} labels", n)


class SplitData:
    """One split, read in chunks of flattened float64 rows; labels held in memory."""

    name: str
    n: int
    y: np.ndarray
    sample_shape: tuple[int, ...]

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape)) if self.sample_shape else 1

    def chunks(self, rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` with ``block`` of shape (m, n_features) as float64, at most ``rows`` rows
        and about ``CHUNK_VALUES`` values (32 MiB), whichever is smaller."""
        rows = max(1, min(rows, CHUNK_VALUES // max(self.n_features, 1)))
        for start in range(0, self.n, rows):
            yield start, self.rows(np.arange(start, min(self.n, start + rows)))

    def rows(self, idx: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class ArraySplit(SplitData):
    """A split held as an array (numpy or tensor); chunks are converted on the fly, never the whole array."""

    def __init__(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        self.name, self.x, self.y, self.n = name, x, y, int(x.shape[0])
        self.sample_shape = tuple(int(s) for s in x.shape[1:])

    def rows(self, idx: np.ndarray) -> np.ndarray:
        block = self.x[idx] if not (idx.size and np.all(np.diff(idx) == 1)) else self.x[idx[0] : idx[-1] + 1]
        return np.asarray(block, dtype=np.float64).reshape(len(idx), -1)


class DatasetSplit(SplitData):
    """A generic map-style Dataset: inputs fetched item by item, so only one chunk is in memory at a time."""

    def __init__(self, name: str, ds: Dataset[Any], y: np.ndarray) -> None:
        self.name, self.ds, self.y, self.n = name, ds, y, len(y)
        first = self._input(0) if self.n else np.zeros(0)
        self.sample_shape = tuple(int(s) for s in first.shape)

    def _input(self, i: int) -> np.ndarray:
        item = self.ds[int(i)]
        x = item[0] if isinstance(item, (tuple, list)) else item
        return np.asarray(to_numpy(x, f"{self.name}[{i}][0]"), dtype=np.float64)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.n_features), dtype=np.float64)
        for k, i in enumerate(idx):
            v = self._input(int(i)).reshape(-1)
            if v.size != self.n_features:
                raise TrainmedicError(
                    f"`{self.name}` inputs must all have shape {self.sample_shape}; item {int(i)} has {v.size} values"
                )
            out[k] = v
        return out


def as_split(data: Any, name: str) -> SplitData:
    """Accept ``(X, y)`` (arrays or tensors) or a torch Dataset and check them; raise one-line errors."""
    if isinstance(data, Dataset) and not isinstance(data, (tuple, list)):
        parts = _tensor_dataset_parts(data)
        if parts is not None:
            return as_split(parts, name)
        y = dataset_labels(data, name)
        if len(y) == 0:
            raise TrainmedicError(f"`{name}` must hold at least one sample; got an empty split")
        return DatasetSplit(name, data, y)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TrainmedicError(
            f"`{name}` must be an (X, y) pair of arrays/tensors or a torch Dataset; got {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
        )
    x = to_numpy(data[0], f"{name} X")
    if x.ndim == 0:
        raise TrainmedicError(f"`{name}` X must have a sample axis, shape (N, ...); got a scalar")
    if x.dtype.kind not in "biuf":
        raise TrainmedicError(f"`{name}` X must be numeric; got dtype {x.dtype}")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    y_raw = to_numpy(data[1], f"{name} y")
    if y_raw.shape[:1] != x.shape[:1]:
        raise TrainmedicError(
            f"`{name}` X and y must have the same length; got X {describe_shape(x)} and y {describe_shape(y_raw)}"
        )
    if x.shape[0] == 0:
        raise TrainmedicError(f"`{name}` must hold at least one sample; got an empty split")
    y = as_labels(y_raw, f"{name} y", x.shape[0])
    return ArraySplit(name, x, y)


def channel_layout(sample_shape: Sequence[int]) -> tuple[int, bool] | None:
    """For image/sequence samples, ``(channels, channel_last)``; ``None`` for tabular ``(F,)`` samples.

    ``(C, H, W)`` is channel-first (torch); ``(H, W, C)`` with ``C <= 4 < H`` is channel-last; ``(H, W)`` and
    sequences ``(T, F)`` are one channel.
    """
    if len(sample_shape) == 3:
        if sample_shape[-1] <= 4 < sample_shape[0]:
            return int(sample_shape[-1]), True
        return int(sample_shape[0]), False
    if len(sample_shape) >= 2:
        return 1, False
    return None
