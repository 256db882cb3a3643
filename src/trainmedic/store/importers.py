"""Importing logs written by other tools into a run directory, so the same checks run on them.

* CSV, wide: a ``step`` column (or ``global_step``/``iteration``) and one column per signal, optionally an
  ``epoch`` column; or per-epoch rows (an ``epoch`` column and no step column).
* CSV, TensorBoard's export (``Wall time, Step, Value``): one signal per file, named after the file.
* TensorBoard event files (``events.out.tfevents.*`` or a directory of them): scalars of every tag; needs the
  ``tensorboard`` package (imported only here).

Column or tag names with a split prefix (``val_loss``, ``val/accuracy``, ``test_acc``, ``train/loss_epoch``)
become per-epoch evaluations of that split; every other numeric column is a per-step signal (``loss``,
``lr``, ``grad_norm`` … under their own names). ``acc`` is read as ``accuracy`` and ``valid``/``validation``
as ``val``, the names the checks look for.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import TrainmedicError
from .writer import RunWriter

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


def _number(cell: str) -> float | None:
    cell = cell.strip()
    if not cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


class _Importer:
    """Collects per-step signals and per-epoch evaluations, then writes one run directory."""

    def __init__(self) -> None:
        self.scalars: dict[str, dict[int, float]] = defaultdict(dict)
        self.evals: dict[tuple[str, str], dict[int, tuple[int | None, float]]] = defaultdict(dict)
        self.train_steps: dict[str, dict[int, float]] = defaultdict(dict)

    def add(self, name: str, step: int | None, epoch: int | None, value: float) -> None:
        sp = split_of(name)
        if sp is not None and sp[1].endswith("_step"):  # Lightning's per-step twin: train_loss_step
            name, sp = sp[1][: -len("_step")], None
        if sp is not None:
            ep = epoch if epoch is not None else len(self.evals[sp])
            self.evals[sp][ep] = (step, value)
            if sp[0] == "train" and step is not None:
                self.train_steps[sp[1]][step] = value
        elif step is not None:
            self.scalars[name][step] = value

    def _per_step_train_loss(self) -> None:
        """A ``train_loss`` logged every step (more values than epochs) is the per-step ``loss``."""
        cand = self.train_steps.get("loss", {})
        if "loss" not in self.scalars and len(cand) > len(self.evals.get(("train", "loss"), {})):
            self.scalars["loss"] = dict(cand)

    def write(self, run_dir: str | os.PathLike[str], source: str, overwrite: bool) -> dict[str, Any]:
        if not self.scalars and not self.evals:
            raise TrainmedicError(
                f"`{source}` holds no numeric signals to import; got only empty or text columns"
            )
        self._per_step_train_loss()
        w = RunWriter(run_dir, mode="overwrite" if overwrite else "new")
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
            name=Path(run_dir).name,
            status="imported",
            created=time.time(),
            imported_from=source,
            steps=steps,
            epochs=epochs,
            notes=[f"imported from {source}: only logged scalars, no per-layer statistics or model summary"],
        )
        w.close(status="imported")
        return {
            "signals": sorted(self.scalars),
            "evals": sorted(f"{s}/{m}" for s, m in self.evals),
            "steps": steps,
            "epochs": epochs,
        }


def import_csv(
    path: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Import a CSV of per-step and/or per-epoch scalars into ``run_dir``; returns what was imported."""
    p = Path(path)
    if not p.is_file():
        raise TrainmedicError(f"`FILE` must be an existing .csv file; got {str(p)!r} (no such file)")
    with p.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise TrainmedicError(
            f"`{p}` must be a CSV with a header row and at least one data row; got {len(rows)} row(s)"
        )
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    imp = _Importer()
    if {"step", "value"} <= set(lower) and len(header) <= 3:  # TensorBoard's per-tag export
        name = p.stem
        si, vi = lower.index("step"), lower.index("value")
        for r in rows[1:]:
            s, v = _number(r[si]), _number(r[vi])
            if s is not None and v is not None:
                imp.add(name, int(s), None, v)
        return imp.write(run_dir, str(p), overwrite)
    step_col = next((lower.index(c) for c in STEP_COLUMNS if c in lower), None)
    epoch_col = lower.index("epoch") if "epoch" in lower else None
    if step_col is None and epoch_col is None:
        raise TrainmedicError(
            f"`{p}` must have a `step` (or `global_step`/`iteration`) or an `epoch` column; got columns {header}"
        )
    skip = {step_col, epoch_col} | {i for i, h in enumerate(lower) if h in ("wall time", "time", "timestamp")}
    for r in rows[1:]:
        step = _number(r[step_col]) if step_col is not None and step_col < len(r) else None
        epoch = _number(r[epoch_col]) if epoch_col is not None and epoch_col < len(r) else None
        st = (
            int(step)
            if step is not None
            else (int(epoch) if step_col is None and epoch is not None else None)
        )
        ep = int(epoch) if epoch is not None else None
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
        for ev in acc.Scalars(tag):
            imp.add(tag, int(ev.step), None, float(ev.value))
    return imp.write(run_dir, str(path), overwrite)


def import_file(
    path: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Import a CSV or a TensorBoard event file / directory, chosen by its name."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return import_csv(p, run_dir, overwrite=overwrite)
    if p.is_dir() or "tfevents" in p.name:
        return import_tensorboard(p, run_dir, overwrite=overwrite)
    raise TrainmedicError(
        f"`FILE` must be a .csv file or a TensorBoard event file/directory (events.out.tfevents.*); got {str(p)!r}"
    )
