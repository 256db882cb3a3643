"""Importing logs written by other tools into a run directory, so the same checks run on them.

* CSV, wide: a ``step`` column (or ``global_step``/``iteration``) and one column per signal, optionally an
  ``epoch`` column; or per-epoch rows (an ``epoch`` column and no step column).
* CSV, TensorBoard's export (``Wall time, Step, Value``): one signal per file, named after the file.
* TensorBoard event files (``events.out.tfevents.*`` or a directory of them): scalars of every tag; needs the
  ``tensorboard`` package (imported only here).
* Hugging Face ``trainer_state.json`` (``log_history``), or a checkpoint/output directory holding one.

Column or tag names with a split prefix (``val_loss``, ``val/accuracy``, ``test_acc``, ``train/loss_epoch``)
say the split; whether a value is per-step or per-epoch is read from its **step axis**, not its name (see
:class:`_Importer`): a ``train/loss`` tag logged every step is the per-step ``loss``, one logged at the end of
each epoch a per-epoch evaluation, numbered by its step alongside the held-out ones. Every other numeric
column is a per-step signal (``loss``, ``lr``, ``grad_norm`` … under their own names). ``acc`` is read as ``accuracy`` and ``valid``/``validation``
as ``val``, the names the checks look for.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import RunDirError, TrainmedicError
from . import schema
from .writer import RunWriter, check_path

STEP_COLUMNS = ("step", "global_step", "iteration", "iter", "steps")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
METRIC_ALIASES = {
    "acc": "accuracy",
    "loss_epoch": "loss",
    "acc_epoch": "accuracy",
    "accuracy_epoch": "accuracy",
}
_SPLIT_RE = re.compile(r"^(train|training|val|valid|validation|test)[/_\-.](.+)$", re.IGNORECASE)


def split_of(name: str) -> tuple[str, str] | None:
    """``("val", "loss")`` for ``val_loss`` / ``val/loss``; None for a per-step signal."""
    m = _SPLIT_RE.match(name.strip())
    if m is None:
        return None
    metric = m.group(2).strip().lower()
    return SPLIT_ALIASES[m.group(1).lower()], METRIC_ALIASES.get(metric, metric)


MAX_STEP = 2**62  # steps and epochs are stored as int64; a larger one is a unit or parsing mistake


def _index(value: float, column: str, row: int, source: str) -> int:
    """A step or epoch cell as an int, or one error naming the column, the row and the value."""
    if not math.isfinite(value) or value != int(value) or abs(value) > MAX_STEP:
        raise TrainmedicError(
            f"`{column}` must hold whole numbers below 2^62; got {value!r} in row {row} of {source}"
        )
    return int(value)


def _number(cell: str) -> float | None:
    cell = cell.strip()
    if not cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


class _Importer:
    """Collects the logged points of every signal, decides from each one's **step axis** whether it is a
    per-step signal or a per-epoch evaluation, then writes one run directory.

    Names say which split a value belongs to (``val/loss``, ``train_acc``); they do not say how often it was
    logged: Lightning's ``train_loss`` may be logged every step, a TensorBoard ``train/loss`` tag too. So:

    * with an ``epoch`` column (CSV), a split-named signal with at most one value per epoch is per-epoch,
      one with several values in an epoch is per-step;
    * without one (TensorBoard, a CSV of steps), held-out signals (``val``/``test``) set the evaluation axis:
      a split-named signal with more than 1.5x the points of the densest held-out signal is per-step, others
      are per-epoch; with no held-out signal, a train signal is per-epoch only when it has at most half the
      points of the densest other signal;
    * per-epoch values without an epoch number get one from their **step**: the steps of all per-epoch values
      are sorted and clustered (steps closer than half the typical gap are one evaluation), so a train and a
      val value logged at the end of the same epoch share it, whatever their order or count.

    A per-step train signal becomes the signal of its metric (``train/loss`` → ``loss``) unless that name is
    taken; Lightning's ``*_step`` twins are per-step by name, ``*_epoch`` twins per-epoch.
    """

    def __init__(self) -> None:
        # name -> [(step, epoch, value)] in logging order
        self.points: dict[str, list[tuple[int | None, int | None, float]]] = defaultdict(list)
        self.scalars: dict[str, dict[int, float]] = defaultdict(dict)
        self.evals: dict[tuple[str, str], dict[int, tuple[int | None, float]]] = defaultdict(dict)
        self.meta: dict[str, Any] = {}
        self.axes: dict[str, str] = {}  # name -> "step" | "epoch": what the import decided, and why

    def add(self, name: str, step: int | None, epoch: int | None, value: float) -> None:
        self.points[name].append((step, epoch, value))

    def _resolve(self) -> None:
        """Sort every signal onto its axis (see the class docstring); idempotent."""
        if not self.points:
            return
        per_epoch: dict[str, tuple[str, str]] = {}
        per_step: dict[str, str] = {}
        split_named: dict[str, tuple[str, str]] = {}
        for name in self.points:
            sp = split_of(name)
            if sp is not None and sp[1].endswith("_step"):  # Lightning's per-step twin: train_loss_step
                per_step[name] = sp[1][: -len("_step")] if sp[0] == "train" else name
            elif sp is not None:
                split_named[name] = sp
            else:
                per_step[name] = name
        counts = {n: sum(1 for st, _, _ in p if st is not None) or len(p) for n, p in self.points.items()}
        heldout = max((counts[n] for n, sp in split_named.items() if sp[0] != "train"), default=0)
        others = max((counts[n] for n in per_step), default=0)
        for name, sp in split_named.items():
            pts = self.points[name]
            epochs = [ep for _, ep, _ in pts if ep is not None]
            if epochs and len(epochs) == len(pts):
                dense = len(set(epochs)) < len(epochs)  # several values in one epoch: logged per step
            elif heldout:
                dense = counts[name] > 1.5 * heldout
            else:
                dense = sp[0] == "train" and counts[name] > others / 2
            if sp[1].endswith("_epoch"):  # Lightning's per-epoch twin: train_loss_epoch
                dense, sp = False, (sp[0], METRIC_ALIASES.get(sp[1], sp[1][: -len("_epoch")]))
            if dense and any(st is not None for st, _, _ in pts):
                per_step[name] = sp[1] if sp[0] == "train" else name
            else:
                per_epoch[name] = sp
        # per-step signals: a train metric takes its metric's name unless a signal of that name exists
        for name, target in per_step.items():
            if target != name and (target in self.points and target not in split_named):
                target = name
            if target in self.scalars and target != name:
                target = name
            for st, _, v in self.points[name]:
                if st is not None:
                    self.scalars[target][st] = v
            self.axes[name] = f"step ({target})"
        # per-epoch values: their epoch, else the cluster of their step among all per-epoch steps
        clusters = _step_clusters(
            [(st, n) for n in per_epoch for st, ep, _ in self.points[n] if ep is None and st is not None],
            max((len(self.points[n]) for n in per_epoch), default=0),
        )
        for name, sp in per_epoch.items():
            for i, (st, ep, v) in enumerate(self.points[name]):
                if ep is None:
                    ep = clusters[st] if st is not None else i
                self.evals[sp][ep] = (st, v)
            self.axes[name] = f"epoch ({sp[0]}/{sp[1]})"
        self.points.clear()

    def write(self, run_dir: str | os.PathLike[str], source: str, overwrite: bool) -> dict[str, Any]:
        """Write the run atomically: into a temporary directory beside ``run_dir``, then renamed into place,
        so a failure at any point leaves ``run_dir`` as it was (and a retry is not refused)."""
        self._resolve()
        if not self.scalars and not self.evals:
            raise TrainmedicError(
                f"`{source}` holds no numeric signals to import; got only empty or text columns"
            )
        target = Path(run_dir)
        check_path(target, "RUN_DIR")
        if target.exists() and not target.is_dir():
            raise RunDirError(f"`RUN_DIR` must be a directory; {str(target)!r} is a file")
        if (target / schema.DB_NAME).exists() and not overwrite:
            raise RunDirError(
                f"`RUN_DIR` {str(target)!r} already holds a run; pass --overwrite (overwrite=True) to replace it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:40]}.importing-", dir=target.parent))
        try:
            result = self._write(tmp, target.name, source)
            _move_into_place(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return result

    def _write(self, run_dir: Path, name: str, source: str) -> dict[str, Any]:
        w = RunWriter(run_dir, mode="new")
        steps = 0
        for name, series in self.scalars.items():
            order = sorted(series)
            w.add_scalars(name, order, [series[s] for s in order])
            steps = max(steps, order[-1] + 1)
        epochs = 0
        for (split, metric), per_epoch in self.evals.items():
            for ep in sorted(per_epoch):
                st, v = per_epoch[ep]
                w.add_eval(split, ep, st, metric, v)
                epochs = max(epochs, ep + 1)
        w.set_meta(
            name=name,
            status="imported",
            created=time.time(),
            imported_from=source,
            steps=steps,
            epochs=epochs,
            notes=[f"imported from {source}: only logged scalars, no per-layer statistics or model summary"],
            import_axes=self.axes,
            **self.meta,
        )
        w.close(status="imported")
        return {
            "signals": sorted(self.scalars),
            "evals": sorted(f"{s}/{m}" for s, m in self.evals),
            "steps": steps,
            "epochs": epochs,
            "axes": dict(self.axes),
        }


def _step_clusters(points: list[tuple[int, str]], evaluations: int) -> dict[int, int]:
    """``(step, signal)`` of per-epoch values -> step -> evaluation index. ``evaluations``: the most values
    any per-epoch signal has. Steps closer than half the typical spacing of evaluations are one (a train and
    a val value logged a step apart at an epoch's end), unless a signal has a value at both."""
    at: dict[int, set[str]] = defaultdict(set)
    for st, name in points:
        at[st].add(name)
    u = sorted(at)
    if not u:
        return {}
    typical = (u[-1] - u[0]) / (evaluations - 1) if evaluations > 1 else math.inf
    out, k, members = {u[0]: 0}, 0, set(at[u[0]])
    for a, b in zip(u, u[1:]):
        if b - a >= typical / 2 or members & at[b]:
            k, members = k + 1, set()
        members |= at[b]
        out[b] = k
    return out


def _move_into_place(tmp: Path, target: Path) -> None:
    """``tmp`` (a finished run directory) becomes ``target``: one rename of the directory, or of its database
    file into an existing directory (its old WAL files removed first: they belong to the old database)."""
    if not target.exists():
        os.rename(tmp, target)
        return
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            (target / (schema.DB_NAME + suffix)).unlink()
    for f in tmp.iterdir():
        os.replace(f, target / f.name)


def _read_csv(p: Path) -> list[list[str]]:
    """The non-empty rows of a UTF-8 CSV (a byte-order mark, as spreadsheets write it, is dropped)."""
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a long cell (a JSON blob, a stack trace) is no reason to fail
    try:
        text = p.read_bytes().decode("utf-8-sig")
        return [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise TrainmedicError(
            f"`FILE` must be UTF-8 text; {str(p)!r} has the byte 0x{e.object[e.start]:02x} at offset {e.start} "
            f"(line {line}); save it as UTF-8"
        ) from None
    except csv.Error as e:
        raise TrainmedicError(f"`FILE` {str(p)!r} is not a readable CSV: {e}") from None
    except OSError as e:
        raise TrainmedicError(f"`FILE` {str(p)!r} cannot be read: {e.strerror or e}") from None
    finally:
        csv.field_size_limit(limit)


def import_csv(
    path: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Import a CSV of per-step and/or per-epoch scalars into ``run_dir``; returns what was imported."""
    p = Path(path)
    if not p.is_file():
        raise TrainmedicError(f"`FILE` must be an existing .csv file; got {str(p)!r} (no such file)")
    rows = _read_csv(p)
    if len(rows) < 2:
        raise TrainmedicError(
            f"`{p}` must be a CSV with a header row and at least one data row; got {len(rows)} row(s)"
        )
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    if dupes:
        raise TrainmedicError(
            f"`FILE` {str(p)!r} must have distinct column names; got {dupes} more than once"
        )
    imp = _Importer()
    if {"step", "value"} <= set(lower) and len(header) <= 3:  # TensorBoard's per-tag export
        name = p.stem
        si, vi = lower.index("step"), lower.index("value")
        for n, r in enumerate(rows[1:], 2):
            s = _number(r[si]) if si < len(r) else None
            v = _number(r[vi]) if vi < len(r) else None
            if s is not None and v is not None:
                imp.add(name, _index(s, header[si], n, str(p)), None, v)
        return imp.write(run_dir, str(p), overwrite)
    step_col = next((lower.index(c) for c in STEP_COLUMNS if c in lower), None)
    epoch_col = lower.index("epoch") if "epoch" in lower else None
    if step_col is None and epoch_col is None:
        raise TrainmedicError(
            f"`{p}` must have a `step` (or `global_step`/`iteration`) or an `epoch` column; got columns {header}"
        )
    # unnamed columns (a spreadsheet's trailing comma) have no signal name: they are not imported
    skip = {step_col, epoch_col} | {
        i for i, h in enumerate(lower) if not h or h in ("wall time", "time", "timestamp")
    }
    for n, r in enumerate(rows[1:], 2):
        step = _number(r[step_col]) if step_col is not None and step_col < len(r) else None
        epoch = _number(r[epoch_col]) if epoch_col is not None and epoch_col < len(r) else None
        ep = (
            _index(epoch, header[epoch_col], n, str(p))
            if epoch is not None and epoch_col is not None
            else None
        )
        st = (
            _index(step, header[step_col], n, str(p))
            if step is not None and step_col is not None
            else (ep if step_col is None else None)
        )
        for i, cell in enumerate(r):
            if i in skip or i >= len(header):
                continue
            v = _number(cell)
            if v is not None and (math.isfinite(v) or cell.strip().lower() in ("nan", "inf", "-inf")):
                imp.add(header[i], st, ep, v)
    return imp.write(run_dir, str(p), overwrite)


def import_tensorboard(
    path: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Import the scalars of a TensorBoard event file (or a directory of them) into ``run_dir``."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise TrainmedicError(
            "importing TensorBoard event files needs the `tensorboard` package; got it not installed "
            "(pip install tensorboard, or export the scalars to CSV)"
        ) from None
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    imp = _Importer()
    for tag in acc.Tags().get("scalars", []):
        for n, ev in enumerate(acc.Scalars(tag), 1):
            imp.add(tag, _index(float(ev.step), f"{tag} step", n, str(path)), None, float(ev.value))
    return imp.write(run_dir, str(path), overwrite)


HF_SKIP = re.compile(r"(_runtime|_samples_per_second|_steps_per_second|total_flos|num_input_tokens_seen)$")
HF_NAMES = {"learning_rate": "lr"}


def import_hf_trainer_state(
    path: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Import a Hugging Face ``trainer_state.json`` (or a checkpoint/output directory holding one).

    ``log_history`` entries with ``loss``/``learning_rate``/``grad_norm`` are per-step signals (``loss``,
    ``lr``, ``grad_norm``) at their ``step``; ``eval_*`` entries are evaluations of split ``val``
    (``eval_accuracy`` → ``val/accuracy``), numbered by their step (see :class:`_Importer`); ``test_*`` of
    split ``test``. Timing entries and the final ``train_loss`` summary are left out; ``train_batch_size``
    becomes the run's batch size.
    """
    import json

    p = Path(path)
    if p.is_dir():
        p = p / "trainer_state.json"
    if not p.is_file():
        raise TrainmedicError(
            f"`FILE` must be a trainer_state.json file or a directory with one; got {str(p)!r}"
        )
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TrainmedicError(f"`FILE` {str(p)!r} is not a readable trainer_state.json: {e}") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise TrainmedicError(
            f"`FILE` {str(p)!r} must hold a `log_history` list (a trainer_state.json); got none"
        )
    imp = _Importer()
    for n, entry in enumerate(history, 1):
        if not isinstance(entry, dict) or "train_runtime" in entry:  # the final summary (train_loss: a mean)
            continue
        step = entry.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            continue
        st = _index(float(step), "step", n, str(p))
        for key, value in entry.items():
            if key in ("step", "epoch") or HF_SKIP.search(key):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key.startswith("eval_"):
                name = f"val/{key[len('eval_') :]}"
            elif key.startswith("test_"):
                name = f"test/{key[len('test_') :]}"
            else:
                name = HF_NAMES.get(str(key), str(key))
            imp.add(name, st, None, float(value))
    batch = state.get("train_batch_size")
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
        imp.meta.update(
            batch_size=batch, batch_size_source="trainer_state.json train_batch_size (per device)"
        )
    return imp.write(run_dir, str(p), overwrite)


def import_file(
    path: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Import a CSV, a Hugging Face ``trainer_state.json`` (or a directory with one) or a TensorBoard event
    file / directory, chosen by its name."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return import_csv(p, run_dir, overwrite=overwrite)
    if p.name == "trainer_state.json" or (p.is_dir() and (p / "trainer_state.json").is_file()):
        return import_hf_trainer_state(p, run_dir, overwrite=overwrite)
    if p.is_dir() or "tfevents" in p.name:
        return import_tensorboard(p, run_dir, overwrite=overwrite)
    raise TrainmedicError(
        f"`FILE` must be a .csv file or a TensorBoard event file/directory (events.out.tfevents.*); got {str(p)!r}"
    )
