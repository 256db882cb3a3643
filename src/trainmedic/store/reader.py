"""Reading a run directory: every signal as numpy arrays.

The reader opens the database read-only, so it can inspect a run while it is being written, and after a
crash (SQLite's WAL keeps the last committed flush).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunDirError
from . import schema
from .writer import check_path


def expand_classification(data: Any) -> Any:
    """A compact ``classification`` record (``run.evaluate`` stores the confusion matrix, and ``"compact":
    true``) with everything derived from it put back: the scalars, ``per_class``, the classes without
    samples or predictions — the same numbers the record held when they were stored (``metrics_dict``)."""
    if not isinstance(data, dict) or not data.pop("compact", False) or "confusion_matrix" not in data:
        return data
    data.pop("derived", None)
    from ..metrics.classification import metrics_dict

    full = metrics_dict(np.asarray(data["confusion_matrix"], dtype=np.int64))
    full.update(data)
    return full


@dataclass
class Series:
    """A per-step series: ``steps[i]`` is the step of ``values[i]``."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class LayerSeries:
    """A per-layer statistic over steps: ``values[i, j]`` is layer ``layers[j]`` at ``steps[i]``."""

    stat: str
    layers: list[str]
    steps: np.ndarray
    values: np.ndarray  # shape (len(steps), len(layers))

    def layer(self, name: str) -> Series:
        return Series(self.steps, self.values[:, self.layers.index(name)])


# The types of the meta values that readers (inspect, diagnose, report) rely on.
META_TYPES: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "steps": (int,),
    "epochs": (int,),
    "every": (int,),
    "batch_size": (int,),
    "name": (str,),
    "status": (str,),
    "device": (str,),
    "created": (int, float),
    "closed_at": (int, float),
    "thresholds": (dict,),
    "config": (dict,),
    "cadence": (dict,),
    "amp": (dict,),
    "models": (list,),
    "layers": (list,),
    "activations": (list,),
    "optimizers": (list,),
    "notes": (list,),
    "compiled": (list,),
}


class RunReader:
    """Read-only access to one run directory."""

    def __init__(self, run_dir: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """Open ``run_dir``; ``read_only`` opens SQLite read-only (a live viewer beside a running writer)."""
        self.run_dir = Path(run_dir)
        check_path(self.run_dir, "run_dir")
        try:
            exists, is_dir = self.run_dir.exists(), self.run_dir.is_dir()
        except OSError as e:  # e.g. a path component longer than the file system allows
            raise RunDirError(
                f"run directory {str(self.run_dir)!r} cannot be read: {e.strerror or e}"
            ) from None
        if not exists:
            raise RunDirError(f"run directory {str(self.run_dir)!r} does not exist")
        if not is_dir:
            raise RunDirError(f"`run_dir` must be a directory; {str(self.run_dir)!r} is a file")
        db = self.run_dir / schema.DB_NAME
        self.db = db
        if not db.is_file():
            raise RunDirError(f"{str(self.run_dir)!r} is not a trainmedic run: it has no {schema.DB_NAME}")
        try:
            # Not read-only at the SQLite level: a reader must be able to replay a WAL left by a killed writer.
            if read_only:  # WAL: readers never block the writer, and mode=ro never checkpoints or writes
                self.con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=10.0)
            else:
                self.con = sqlite3.connect(str(db), timeout=10.0)
        except sqlite3.DatabaseError as e:
            raise RunDirError(f"{str(db)!r} cannot be opened as a run database ({e})") from None
        try:
            tables = {r[0] for r in self._rows("SELECT name FROM sqlite_master WHERE type='table'")}
            lacking = [t for t in schema.TABLES if t not in tables]
            if lacking:
                raise RunDirError(
                    f"{str(db)!r} is not a trainmedic run database: it lacks the table(s) {', '.join(lacking)}"
                    + (f" (it holds {', '.join(sorted(tables))})" if tables else " (it holds no tables)")
                )
            self.meta  # noqa: B018 -- decoded now, so a bad meta value is an error at open, not later
        except BaseException:
            self.con.close()
            raise

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """All rows of a query; a damaged database becomes one :class:`RunDirError` naming the file."""
        try:
            return self.con.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            raise RunDirError(f"{str(self.db)!r} holds a corrupted run database ({e})") from None

    def _json(self, text: Any, where: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError) as e:
            raise RunDirError(
                f"{str(self.db)!r} holds a corrupted run database: {where} is not JSON ({e})"
            ) from None

    def _blob(self, blob: Any, dtype: str, where: str) -> np.ndarray:
        try:
            return np.frombuffer(blob, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise RunDirError(f"{str(self.db)!r} holds a corrupted run database: {where} ({e})") from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- meta ------------------------------------------------------------------------------------
    @cached_property
    def meta(self) -> dict[str, Any]:
        out = {
            str(k): self._json(v, f"meta value {k!r}") for k, v in self._rows("SELECT key, value FROM meta")
        }
        for key, kinds in META_TYPES.items():  # what the readers of meta rely on; null is always allowed
            v = out.get(key)
            if v is not None and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
                raise RunDirError(
                    f"{str(self.db)!r} holds a corrupted run database: meta value {key!r} must be "
                    f"{' or '.join(k.__name__ for k in kinds)}; got {type(v).__name__} {v!r:.60}"
                )
        return out

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.run_dir.name)

    # ---- per-step scalars ------------------------------------------------------------------------
    @cached_property
    def scalar_names(self) -> list[str]:
        return [str(r[0]) for r in self._rows("SELECT DISTINCT name FROM scalar_chunks ORDER BY name")]

    def scalar(self, name: str) -> Series:
        """The full series of a per-step signal (empty arrays when it was never recorded)."""
        rows = self._rows("SELECT steps, vals FROM scalar_chunks WHERE name=? ORDER BY id", (name,))
        if not rows:
            return Series(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
        where = f"a chunk of the signal {name!r}"
        steps = np.concatenate([self._blob(r[0], "<i8", where) for r in rows])
        vals = np.concatenate([self._blob(r[1], "<f8", where) for r in rows])
        if len(steps) != len(vals):
            raise RunDirError(
                f"{str(self.db)!r} holds a corrupted run database: {where} has {len(steps)} steps and {len(vals)} values"
            )
        return Series(steps, vals)

    def has_scalar(self, name: str) -> bool:
        return name in self.scalar_names

    # ---- per-layer statistics --------------------------------------------------------------------
    @cached_property
    def layer_stats(self) -> dict[str, list[str]]:
        """Each recorded per-layer statistic and its layer order."""
        out: dict[str, list[str]] = {}
        for stat, layers in self._rows("SELECT stat, layers FROM layer_sets"):
            value = self._json(layers, f"the layer list of {stat!r}")
            if not isinstance(value, list):
                raise RunDirError(
                    f"{str(self.db)!r} holds a corrupted run database: the layer list of {stat!r} is not a list"
                )
            out[str(stat)] = [str(x) for x in value]
        return out

    def layer_stat(self, stat: str) -> LayerSeries:
        layers = self.layer_stats.get(stat, [])
        rows = self._rows("SELECT steps, vals FROM layer_chunks WHERE stat=? ORDER BY id", (stat,))
        if not rows:
            return LayerSeries(
                stat, layers, np.zeros(0, dtype=np.int64), np.zeros((0, len(layers)), dtype=np.float32)
            )
        where = f"a chunk of the per-layer statistic {stat!r}"
        steps = np.concatenate([self._blob(r[0], "<i8", where) for r in rows])
        flat = np.concatenate([self._blob(r[1], "<f4", where) for r in rows])
        if flat.size != len(steps) * len(layers):
            raise RunDirError(
                f"{str(self.db)!r} holds a corrupted run database: {where} has {flat.size} values for "
                f"{len(steps)} steps × {len(layers)} layers"
            )
        return LayerSeries(stat, layers, steps, flat.reshape(len(steps), len(layers)))

    # ---- evaluations ----------------------------------------------------------------------------
    @cached_property
    def _evals(self) -> dict[str, dict[str, list[tuple[int, int | None, float]]]]:
        """Every evaluation value, split → name → ``[(epoch, step, value)]`` in epoch order (stable: in the
        order written within an epoch), read once.

        Two sources: the ``evals`` table (losses, the user's scalars, detection metrics; every metric of runs
        written before derived records), and the metrics of the compact ``classification`` records marked
        ``"derived": true`` — ``run.evaluate`` stores the confusion matrix alone and the scalars
        (``CLASSIFICATION_SCALARS``) are derived here, all records at once (``classification_scalars``: the
        same numbers, bit for bit, as ``metrics_dict``).
        """
        from .writer import CLASSIFICATION_SCALARS, classification_scalars

        rows: list[tuple[int, int, int, str, int | None, str, float]] = []  # (epoch, source, id, split, …)
        for rid, epoch, step, split, name, value in self._rows(
            "SELECT id, epoch, step, split, name, value FROM evals ORDER BY id"
        ):
            rows.append((int(epoch), 0, rid, str(split), step, str(name), np.nan if value is None else value))
        derived = [
            (rid, epoch, step, split, data)
            for rid, epoch, step, split, data in self._rows(
                "SELECT id, epoch, step, split, data FROM records WHERE kind='classification' ORDER BY id"
            )
            if '"derived": true' in data
        ]
        cms: list[np.ndarray] = []
        for rid, _, _, _, data in derived:
            value = self._json(data, "a 'classification' record")
            try:
                cm = np.asarray(value["confusion_matrix"], dtype=np.int64)
                if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
                    raise ValueError(f"shape {cm.shape}")
            except (KeyError, TypeError, ValueError) as e:
                raise RunDirError(
                    f"{str(self.db)!r} holds a corrupted run database: classification record {rid} has no "
                    f"square confusion matrix ({e})"
                ) from None
            cms.append(cm)
        for (rid, epoch, step, split, _), vals in zip(derived, classification_scalars(cms), strict=True):
            for name, v in zip(CLASSIFICATION_SCALARS, vals):
                rows.append((int(epoch), 1, rid, str(split), step, name, v))
        rows.sort(key=lambda r: r[:3])
        out: dict[str, dict[str, list[tuple[int, int | None, float]]]] = {}
        for epoch, _, _, split, step, name, value in rows:
            out.setdefault(split, {}).setdefault(name, []).append((epoch, step, float(value)))
        return out

    @cached_property
    def splits(self) -> list[str]:
        """The evaluated splits in the order of their first evaluation."""
        return list(self._evals)

    def eval_names(self, split: str | None = None) -> list[str]:
        if split is None:
            return sorted({n for names in self._evals.values() for n in names})
        return sorted(self._evals.get(split, {}))

    def eval_series(self, split: str, name: str) -> Series:
        """``name`` (e.g. ``"accuracy"``, ``"loss"``) of ``split`` per epoch: ``steps`` holds the epochs."""
        rows = self._evals.get(split, {}).get(name, [])
        return Series(
            np.array([r[0] for r in rows], dtype=np.int64), np.array([r[2] for r in rows], dtype=np.float64)
        )

    def eval_steps(self, split: str) -> dict[int, int]:
        """Epoch → global step at which ``split`` was evaluated."""
        out: dict[int, int] = {}
        for rows in self._evals.get(split, {}).values():
            for epoch, step, _ in rows:
                if step is not None and (epoch not in out or step > out[epoch]):
                    out[epoch] = int(step)
        return dict(sorted(out.items()))

    def epochs(self, split: str) -> list[int]:
        return sorted({r[0] for rows in self._evals.get(split, {}).values() for r in rows})

    # ---- records and events ----------------------------------------------------------------------
    def records(self, kind: str, split: str | None = None) -> list[dict[str, Any]]:
        """JSON records of a kind, oldest first, each with ``epoch``, ``step``, ``split`` and ``data``."""
        if split is None:
            q = self._rows("SELECT epoch, step, split, data FROM records WHERE kind=? ORDER BY id", (kind,))
        else:
            q = self._rows(
                "SELECT epoch, step, split, data FROM records WHERE kind=? AND split=? ORDER BY id",
                (kind, split),
            )
        out = [
            {"epoch": e, "step": s, "split": sp, "data": self._json(d, f"a {kind!r} record")}
            for e, s, sp, d in q
        ]
        if kind == "classification":
            for rec in out:
                rec["data"] = expand_classification(rec["data"])
        return out

    def record(self, kind: str, split: str | None = None) -> Any:
        """The newest record of a kind (its data), or ``None``."""
        recs = self.records(kind, split)
        return recs[-1]["data"] if recs else None

    def confusion_matrix(self, split: str, epoch: int | None = None) -> np.ndarray | None:
        """The confusion matrix of ``split`` at ``epoch`` (the last one when ``None``)."""
        recs = self.records("classification", split)
        if epoch is not None:
            recs = [r for r in recs if r["epoch"] == epoch]
        if not recs:
            return None
        return np.asarray(recs[-1]["data"]["confusion_matrix"], dtype=np.int64)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT time, step, epoch, kind, code, severity, message, data FROM events"
        q = (
            self._rows(sql + " WHERE kind=? ORDER BY id", (kind,))
            if kind
            else self._rows(sql + " ORDER BY id")
        )
        return [
            {
                "time": t,
                "step": s,
                "epoch": e,
                "kind": k,
                "code": c,
                "severity": sv,
                "message": m,
                "data": self._json(d, f"a {k!r} event") if d else None,
            }
            for t, s, e, k, c, sv, m, d in q
        ]

    def has_evidence(self) -> bool:
        """True when the run stored anything to judge: a per-step value, a per-layer row or an evaluation."""
        rows = self._rows(
            "SELECT EXISTS(SELECT 1 FROM scalar_chunks) OR EXISTS(SELECT 1 FROM layer_chunks)"
            " OR EXISTS(SELECT 1 FROM evals) OR EXISTS(SELECT 1 FROM records WHERE kind='classification')"
        )
        return bool(rows[0][0])

    # ---- summary ---------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What was recorded: signals, layers, steps, epochs, hyperparameters (used by ``trainmedic inspect``)."""
        steps = self.scalar("loss").steps if self.has_scalar("loss") else np.zeros(0)
        n_steps = int(steps.max()) + 1 if len(steps) else int(self.meta.get("steps", 0) or 0)
        return {
            "run": self.name,
            "run_dir": str(self.run_dir),
            "status": self.meta.get("status"),
            "schema_version": int(self.meta.get("schema_version", schema.SCHEMA_VERSION)),
            "steps": max(n_steps, int(self.meta.get("steps", 0) or 0)),
            "signals": {n: len(self.scalar(n)) for n in self.scalar_names},
            "layer_stats": {s: len(layers) for s, layers in self.layer_stats.items()},
            "layers": sorted({lay for layers in self.layer_stats.values() for lay in layers}),
            "splits": {sp: self.epochs(sp) for sp in self.splits},
            "hyperparameters": self.meta.get("optimizers"),
            "model": self.meta.get("models"),
            "batch_size": self.meta.get("batch_size"),
            "events": len(self.events()),
            "internal_errors": len(self.events("internal_error")),
        }


def open_run(run_dir: str | os.PathLike[str]) -> RunReader:
    return RunReader(run_dir)
