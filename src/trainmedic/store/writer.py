"""Writing a run directory: batched, crash-safe inserts into SQLite.

The writer buffers rows in memory and commits them in one transaction per :meth:`RunWriter.flush`; a
``kill -9`` loses at most what was buffered since the last flush. The watch layer decides *when* to flush.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunDirError
from . import schema


def _dumps(value: Any) -> str:
    try:  # plain JSON (the common case: run.evaluate's metrics) without the walk below
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):  # numpy/torch values, NaN/Inf (stored as strings), other objects
        from ..findings import _jsonable

        return json.dumps(_jsonable(value), allow_nan=False)


# the scalars every classification evaluation stores (evals table), in metrics_dict's order
CLASSIFICATION_SCALARS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_micro",
    "recall_micro",
    "f1_micro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "num_samples",
)


def classification_scalars(cms: list[np.ndarray]) -> list[list[float]]:
    """The scalars of ``metrics_dict`` for many ``(k, k)`` confusion matrices (same k grouped, the divisions
    vectorised): the same numbers, bit for bit, as ``metrics_dict(cm)["scalars"]`` (the same NumPy
    reductions on the same per-class vectors)."""
    out: list[list[float]] = [[] for _ in cms]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, cm in enumerate(cms):
        groups[cm.shape[0]].append(i)
    add = np.add.reduce
    for k, idx in groups.items():
        m = np.stack([cms[i] for i in idx]).astype(np.int64, copy=False)
        tp = np.diagonal(m, axis1=1, axis2=2)
        support = add(m, axis=2)
        predicted = add(m, axis=1)
        both = support + predicted
        z = np.zeros((len(idx), k))
        p = np.divide(tp, predicted, out=z.copy(), where=predicted > 0)
        r = np.divide(tp, support, out=z.copy(), where=support > 0)
        f = np.divide(2 * tp, both, out=z, where=both > 0)
        ns = add(support, axis=1).tolist()
        tps = add(tp, axis=1).tolist()
        # the sums of each row: the same pairwise sums as add(p[j]) (a reduction along a contiguous row)
        sp, sr, sf = add(p, axis=1).tolist(), add(r, axis=1).tolist(), add(f, axis=1).tolist()
        for j, i in enumerate(idx):
            n, sj = ns[j], support[j]
            if n == 0:
                continue
            pj, rj, fj = p[j], r[j], f[j]
            acc = tps[j] / n
            out[i] = [
                acc,
                sp[j] / k,
                sr[j] / k,
                sf[j] / k,
                acc,
                acc,
                acc,
                float(np.dot(pj, sj)) / n,
                float(np.dot(rj, sj)) / n,
                float(np.dot(fj, sj)) / n,
                float(n),
            ]
    return out


def compact_classification_json(
    cm: np.ndarray, class_names: list[str] | None = None, *, derived: bool = False
) -> str:
    """The JSON of a compact ``classification`` record, ``{"task": "classification", "num_classes": k,
    "confusion_matrix": [[...]], "compact": true[, "derived": true][, "class_names": [...]]}``: the text
    ``json.dumps`` writes for that dict (a list of lists of Python ints prints the same in both), without its
    encoder per record. ``derived``: the evaluation's metrics are not rows of the ``evals`` table; the reader
    derives them from the matrix (``RunReader._evals``)."""
    return _compact_text(int(cm.shape[0]), np.asarray(cm, dtype=np.int64).tolist(), class_names, derived)


def _compact_text(k: int, matrix: list[list[int]], class_names: list[str] | None, derived: bool) -> str:
    """:func:`compact_classification_json` of a matrix already a list of lists of Python ints."""
    text = f'{{"task": "classification", "num_classes": {k}, "confusion_matrix": {matrix!s}, "compact": true'
    if derived:
        text += ', "derived": true'
    if class_names is not None:
        text += f', "class_names": {json.dumps(class_names)}'
    return text + "}"


MAX_BUFFERED = 1_000_000  # values kept in memory while flushes fail (a full disk); older ones are dropped
NAME_MAX = 255  # bytes per path component on the common file systems (ext4, xfs, APFS, NTFS)


def check_path(path: Path, what: str = "run_dir") -> None:
    """One error naming the argument for a path no file system would take (instead of ``Errno 36``)."""
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            raise RunDirError(
                f"`{what}` has a path component of {size} bytes ({part[:24]}…); file systems allow at most "
                f"{NAME_MAX}: use a shorter name"
            )
    if "\x00" in str(path):
        raise RunDirError(f"`{what}` must not contain a NUL character; got {str(path)!r}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunWriter:
    """Owns one run directory for writing.

    ``mode``: ``"new"`` refuses a directory that already holds a run; ``"overwrite"`` deletes it first;
    ``"resume"`` appends to it (steps continue from what is stored).
    """

    def __init__(self, run_dir: str | os.PathLike[str], mode: str = "new") -> None:
        if mode not in ("new", "overwrite", "resume"):
            raise RunDirError(f"`mode` must be 'new', 'overwrite' or 'resume'; got {mode!r}")
        self.run_dir = Path(run_dir)
        check_path(self.run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"`run_dir` must be a directory; {str(self.run_dir)!r} is a file")
        db = self.run_dir / schema.DB_NAME
        existed = db.exists()
        if existed:
            if mode == "new":
                raise RunDirError(
                    f"`run_dir` {str(self.run_dir)!r} already holds a run; pass overwrite=True to replace it "
                    "or resume=True to continue it"
                )
            self._check_not_in_use()
            if mode == "overwrite":
                for name in os.listdir(self.run_dir):
                    p = self.run_dir / name
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(
                f"`run_dir` {str(self.run_dir)!r} cannot be created: {e.strerror or e}"
            ) from None
        fresh = not existed or mode == "overwrite"  # a new file (overwrite deleted the old one)
        try:
            self.con = schema.connect(str(db), fresh=fresh)
            schema.create_or_migrate(self.con)
            if fresh:
                schema.durable(self.con)
        except sqlite3.DatabaseError as e:
            raise RunDirError(
                f"`run_dir` {str(self.run_dir)!r} holds a corrupted run database ({e}); "
                "choose another directory or pass overwrite=True"
            ) from None
        self.resumed = mode == "resume" and db.exists()
        self._scalars: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        self._layers: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        self._rows_evals: list[tuple[Any, ...]] = []
        # run.evaluate results waiting for the flush: (split, epoch, step, confusion matrix, other evals, names)
        self._rows_cls: list[
            tuple[str, int, int | None, np.ndarray, list[tuple[str, float]], list[str] | None]
        ] = []
        self._rows_records: list[tuple[Any, ...]] = []
        self._rows_events: list[tuple[Any, ...]] = []
        self._meta: dict[str, str] = {}
        self._split_counts: dict[str, list[int]] = {}  # the class counts last written per split (meta)
        self._known_layer_sets: dict[str, list[str]] = {
            stat: json.loads(layers)
            for stat, layers in self.con.execute("SELECT stat, layers FROM layer_sets")
        }
        self._pending_layer_sets: dict[
            str, list[str]
        ] = {}  # written with the first chunks, in their transaction
        self.max_buffered = MAX_BUFFERED
        self.dropped = 0  # values dropped because flushes failed while the buffers were full
        self.closed = False
        self.set_meta(lock={"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})

    def _check_not_in_use(self) -> None:
        try:
            con = schema.connect(str(self.run_dir / schema.DB_NAME), readonly=True)
            row = con.execute("SELECT value FROM meta WHERE key='lock'").fetchone()
            status = con.execute("SELECT value FROM meta WHERE key='status'").fetchone()
            con.close()
        except sqlite3.DatabaseError:
            return
        if row and status and json.loads(status[0]) == "running":
            lock = json.loads(row[0])
            if (
                lock.get("host") == socket.gethostname()
                and lock.get("pid") != os.getpid()
                and _pid_alive(int(lock["pid"]))
            ):
                raise RunDirError(
                    f"`run_dir` {str(self.run_dir)!r} is in use by process {lock['pid']}; use another directory"
                )

    # ---- buffering -------------------------------------------------------------------------------
    def set_meta(self, **items: Any) -> None:
        for k, v in items.items():
            self._meta[k] = _dumps(v)

    def add_scalar(self, name: str, step: int, value: float) -> None:
        steps, vals = self._scalars[name]
        steps.append(step)
        vals.append(value)

    def add_scalars(self, name: str, steps: np.ndarray | list[int], values: np.ndarray | list[float]) -> None:
        s, v = self._scalars[name]
        s.extend(np.asarray(steps, dtype=np.int64).tolist())
        v.extend(np.asarray(values, dtype=np.float64).tolist())

    def set_layer_set(self, stat: str, layers: list[str]) -> None:
        """Declare the layer order of a per-layer statistic (fixed for the run)."""
        known = self._known_layer_sets.get(stat)
        if known is not None and known != layers:
            raise RunDirError(f"layer set of {stat!r} changed within a run: {known} → {layers}")
        if known is None:
            self._known_layer_sets[stat] = list(layers)
            self._pending_layer_sets[stat] = list(layers)

    def add_layer_values(self, stat: str, step: int, values: np.ndarray) -> None:
        steps, rows = self._layers[stat]
        steps.append(step)
        rows.append(np.asarray(values, dtype=np.float32))

    def add_layer_rows(self, stat: str, steps: list[int] | np.ndarray, values: np.ndarray) -> None:
        """Several steps of a per-layer statistic at once: ``values`` has shape ``(len(steps), layers)``."""
        s, rows = self._layers[stat]
        s.extend(int(x) for x in steps)
        rows.extend(np.asarray(values, dtype=np.float32))

    def add_eval(self, split: str, epoch: int, step: int | None, name: str, value: float) -> None:
        self._rows_evals.append((epoch, step, split, name, float(value)))

    def add_classification(
        self,
        split: str,
        epoch: int,
        step: int | None,
        cm: np.ndarray,
        evals: list[tuple[str, float]],
        *,
        class_names: list[str] | None = None,
    ) -> None:
        """One classification evaluation: its ``(k, k)`` confusion matrix and the other values to store beside
        it (loss, the user's scalars), encoded at the next flush. The record is the compact one with derived
        metrics (``compact_classification_json``: the matrix, ``class_names``): the metrics are not stored as
        ``evals`` rows, the reader derives them from the matrix (``RunReader._evals``)."""
        self._rows_cls.append((split, epoch, step, cm, evals, class_names))

    def note_split_counts(self, split: str, counts: list[int]) -> None:
        """A split's class counts (samples per true class) as ``meta["split/<split>"]``, written when they change."""
        if self._split_counts.get(split) != counts:
            self._split_counts[split] = counts
            self.set_meta(**{f"split/{split}": {"samples": int(sum(counts)), "class_counts": list(counts)}})

    def _drain_classification(self) -> None:
        rows, self._rows_cls = self._rows_cls, []
        if not rows:
            return
        ev, rec = self._rows_evals, self._rows_records
        shape = rows[0][3].shape
        if len(rows) > 1 and all(r[3].shape == shape for r in rows):
            # one task (the common case): every matrix of this flush at once, as Python ints
            stack = np.stack([r[3] for r in rows]).astype(np.int64, copy=False)
            counts_all = stack.sum(axis=2).tolist()
            mats = stack.tolist()
        else:
            counts_all = [np.add.reduce(r[3], axis=1).tolist() for r in rows]
            mats = [np.asarray(r[3], dtype=np.int64).tolist() for r in rows]
        for (split, epoch, step, _cm, evals, class_names), counts, m in zip(rows, counts_all, mats):
            self.note_split_counts(split, counts)
            if evals:
                ev.extend([(epoch, step, split, name, float(v)) for name, v in evals])
            rec.append(("classification", epoch, step, split, _compact_text(len(m), m, class_names, True)))

    def add_record_json(
        self,
        kind: str,
        text: str,
        epoch: int | None = None,
        step: int | None = None,
        split: str | None = None,
    ) -> None:
        """:meth:`add_record` of data already encoded as JSON (``text``)."""
        self._rows_records.append((kind, epoch, step, split, text))

    def add_record(
        self,
        kind: str,
        data: Any,
        epoch: int | None = None,
        step: int | None = None,
        split: str | None = None,
    ) -> None:
        self._rows_records.append((kind, epoch, step, split, _dumps(data)))

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        step: int | None = None,
        epoch: int | None = None,
        code: str | None = None,
        severity: str | None = None,
        data: Any = None,
    ) -> None:
        self._rows_events.append((time.time(), step, epoch, kind, code, severity, message, _dumps(data)))

    # ---- committing ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Commit everything buffered in one transaction."""
        if self.closed:
            return
        con = self.con
        self._drain_classification()  # in order: before the rows added after it by this flush
        try:
            con.execute("BEGIN")
            # one executemany per table (the same rows, in the same order, as one execute per row)
            if self._pending_layer_sets:
                con.executemany(
                    "INSERT OR REPLACE INTO layer_sets(stat, layers) VALUES(?, ?)",
                    [(stat, json.dumps(layers)) for stat, layers in self._pending_layer_sets.items()],
                )
            chunks = [
                (
                    name,
                    np.asarray(steps, dtype="<i8").tobytes(),
                    np.asarray(vals, dtype="<f8").tobytes(),
                )
                for name, (steps, vals) in self._scalars.items()
                if steps
            ]
            if chunks:
                con.executemany("INSERT INTO scalar_chunks(name, steps, vals) VALUES(?, ?, ?)", chunks)
            chunks = [
                (
                    stat,
                    np.asarray(steps, dtype="<i8").tobytes(),
                    np.stack(rows).astype("<f4").tobytes(),
                )
                for stat, (steps, rows) in self._layers.items()
                if steps
            ]
            if chunks:
                con.executemany("INSERT INTO layer_chunks(stat, steps, vals) VALUES(?, ?, ?)", chunks)
            if self._rows_evals:
                con.executemany(
                    "INSERT INTO evals(epoch, step, split, name, value) VALUES(?,?,?,?,?)", self._rows_evals
                )
            if self._rows_records:
                con.executemany(
                    "INSERT INTO records(kind, epoch, step, split, data) VALUES(?,?,?,?,?)",
                    self._rows_records,
                )
            if self._rows_events:
                con.executemany(
                    "INSERT INTO events(time, step, epoch, kind, code, severity, message, data) VALUES(?,?,?,?,?,?,?,?)",
                    self._rows_events,
                )
            if self._meta:
                con.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", list(self._meta.items())
                )
            con.execute("COMMIT")
        except BaseException as e:
            # SQLite may have rolled back already (a full disk does): a second ROLLBACK would raise "cannot
            # rollback - no transaction is active" and hide the real error
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            self._bound(e)
            raise
        self._pending_layer_sets.clear()
        self._scalars.clear()
        self._layers.clear()
        self._rows_evals.clear()
        self._rows_records.clear()
        self._rows_events.clear()
        self._meta.clear()

    def buffered(self) -> int:
        """Values waiting for the next flush (per-step points, per-layer rows, evaluation/record/event rows)."""
        return (
            sum(len(s) for s, _ in self._scalars.values())
            + sum(len(s) for s, _ in self._layers.values())
            + len(self._rows_evals)
            + len(self._rows_cls)
            + len(self._rows_records)
            + len(self._rows_events)
        )

    def _bound(self, error: BaseException) -> None:
        """After a failed flush: keep at most ``max_buffered`` values, dropping the oldest of each buffer in
        proportion, and say so in ``meta["dropped"]`` (written by the next flush that succeeds)."""
        total = self.buffered()
        if total <= self.max_buffered:
            return
        keep = self.max_buffered / total
        dropped = 0
        pairs: list[tuple[list[Any], list[Any]]] = [*self._scalars.values(), *self._layers.values()]
        for a, b in pairs:
            n = len(a) - int(len(a) * keep)
            del a[:n], b[:n]  # in place: the recorder's short path appends to these very lists
            dropped += n
        for rows in (self._rows_evals, self._rows_cls, self._rows_records, self._rows_events):
            n = len(rows) - int(len(rows) * keep)
            del rows[:n]
            dropped += n
        self.dropped += dropped
        self.set_meta(
            dropped={
                "values": self.dropped,
                "reason": f"{type(error).__name__}: {error}",
                "note": "flushes failed and the buffers were full: the oldest values were dropped",
            }
        )

    def close(self, status: str = "closed") -> None:
        if self.closed:
            return
        self.set_meta(status=status, closed_at=time.time())
        self.flush()
        # Closing checkpoints the WAL into the database file. Without the fsync of that checkpoint (~3 ms on a
        # virtual disk, a tenth of a small run's whole recording cost): what was committed stays safe from a
        # killed process, as every commit during the run is (synchronous=NORMAL does not fsync commits either);
        # only an OS crash in the seconds before the kernel writes the pages back could lose the run.
        with contextlib.suppress(sqlite3.Error):
            self.con.execute("PRAGMA synchronous=OFF")
        self.con.close()
        self.closed = True
