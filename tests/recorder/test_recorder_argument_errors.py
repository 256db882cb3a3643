"""Errors name the argument (issue 12, item 7): ``run.log(step="x")``, string targets to ``evaluate``,
``raise_on="panic"``, a 300-character path component. And a run directory that cannot be written at
``tm.watch`` time (disk full) leaves an unrecorded run and a warning, not an exception in the user's code."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import trainmedic as tm
from trainmedic.errors import RunDirError, TrainmedicError
from trainmedic.store import writer as writer_mod
from trainmedic.store.importers import import_csv


def _watched(tmp_path: Path) -> tuple[tm.Run, nn.Module]:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3))
    return tm.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), run_dir=tmp_path / "r", quiet=True), m


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("step", ["x", 1.5, -1, True, 2**70])
def test_log_step_names_the_argument(tmp_path: Path, step: object) -> None:
    run, _ = _watched(tmp_path)
    with pytest.raises(TrainmedicError, match="`step` must be a non-negative integer") as e:
        run.log(step=step, loss=1.0)  # type: ignore[arg-type]
    assert repr(step) in _one_line(e)
    run.log(step=np.int64(3), loss=1.0)  # NumPy integers are integers
    run.close()


@pytest.mark.parametrize(
    ("targets", "arg"),
    [(["cat", "dog"], "targets"), (np.array(["cat", "dog"]), "targets"), ({"a": 1}, "targets")],
)
def test_evaluate_targets_name_the_argument(tmp_path: Path, targets: object, arg: str) -> None:
    run, m = _watched(tmp_path)
    with pytest.raises(TrainmedicError, match=f"`{arg}` must be") as e:
        run.evaluate("val", targets=targets, outputs=m(torch.randn(2, 4)))
    _one_line(e)
    with pytest.raises(TrainmedicError, match="`outputs` must be"):
        run.evaluate("val", targets=[0, 1], outputs=["a", "b"])
    run.close()


def test_raise_on_names_the_argument(tmp_path: Path) -> None:
    with pytest.raises(TrainmedicError, match=r"`raise_on` must be 'warning' or 'error' .* got 'panic'"):
        tm.watch(run_dir=tmp_path / "r", raise_on="panic")


def test_a_300_character_path_component_names_the_argument(tmp_path: Path) -> None:
    long = tmp_path / ("x" * 300) / "run"
    m = nn.Linear(2, 2)
    with pytest.raises(RunDirError, match=r"`run_dir` has a path component of 300 bytes") as e:
        tm.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), run_dir=long)
    _one_line(e)
    with pytest.raises(RunDirError, match="300 bytes"):
        tm.open_run(long)
    csv = tmp_path / "a.csv"
    csv.write_text("step,loss\n0,1\n")
    with pytest.raises(RunDirError, match="`RUN_DIR` has a path component of 300 bytes"):
        import_csv(csv, long)


def test_a_run_dir_that_cannot_be_written_at_watch_time_is_an_unrecorded_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2 at watch time: SQLite's "database or disk is full" no longer comes out of tm.watch."""
    real = writer_mod.RunWriter.flush

    def full(self: writer_mod.RunWriter) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(writer_mod.RunWriter, "flush", full)
    torch.manual_seed(0)
    m = nn.Linear(4, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tm.watch(m, opt, run_dir=tmp_path / "full")
        for _ in range(3):
            opt.zero_grad()
            loss = m(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            run.log(loss=loss)
        run.close()
    monkeypatch.setattr(writer_mod.RunWriter, "flush", real)
    msgs = [str(w.message) for w in caught if "trainmedic" in str(w.message)]
    assert any("disk is full" in m and "training continues unrecorded" in m for m in msgs), msgs
    assert not run.enabled
