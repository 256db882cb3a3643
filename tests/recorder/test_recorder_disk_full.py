"""A full disk (issue 12, item 2), simulated with a connection that fails like SQLite does (``SQLITE_FULL``
rolls the transaction back itself): the real error is reported (not "cannot rollback"), buffers stay bounded
with a counter of what was dropped, schema rows are written in the same transaction as their data, and
recording resumes when space returns."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import trainmedic as tm
from trainmedic.store.writer import RunWriter


class FullDisk:
    """A sqlite3 connection whose inserts fail with "database or disk is full" while ``full`` is set."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con
        self.full = True

    def _fail(self, sql: str) -> None:
        if self.full and sql.lstrip().upper().startswith("INSERT"):
            if self.con.in_transaction:
                self.con.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args: Any) -> Any:
        self._fail(sql)
        return self.con.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._fail(sql)
        return self.con.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def test_the_writer_reports_the_real_error_bounds_its_buffers_and_recovers(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "r")
    disk = FullDisk(w.con)
    w.con = disk  # type: ignore[assignment]
    w.max_buffered = 1000
    w.set_layer_set("grad_norm", ["a", "b", "c"])  # schema row: buffered, not written outside a transaction
    step = 0
    for _ in range(10):
        for _ in range(300):
            w.add_scalar("loss", step, float(step))
            step += 1
        w.add_layer_values("grad_norm", step, np.ones(3, dtype=np.float32))
        try:
            w.flush()
        except sqlite3.OperationalError as e:
            assert "disk is full" in str(
                e
            )  # the real error, not "cannot rollback - no transaction is active"
        else:
            raise AssertionError("the flush should have failed")
        assert w.buffered() <= 1000
    assert w.dropped >= 3010 - 1000
    disk.full = False
    w.flush()
    w.close()
    r = tm.open_run(tmp_path / "r")
    loss = r.scalar("loss")
    assert loss.steps[-1] == 2999 and len(loss) <= 1000  # the newest values were kept
    assert r.meta["dropped"]["values"] == w.dropped and "disk is full" in r.meta["dropped"]["reason"]
    g = r.layer_stat("grad_norm")  # the schema row arrived with its data
    assert g.layers == ["a", "b", "c"] and g.values.shape == (len(g.steps), 3)


def test_a_full_disk_during_training_is_warned_with_the_real_error_and_training_goes_on(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tm.watch(model, opt, run_dir=tmp_path / "r", every=1, flush_steps=5, quiet=True)
        assert run._writer is not None
        disk = FullDisk(run._writer.con)
        run._writer.con = disk  # type: ignore[assignment]
        for i in range(40):
            if i == 30:
                disk.full = False  # space returns
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            run.log(loss=loss)
        run.close()
    msgs = [str(w.message) for w in caught if str(w.message).startswith("trainmedic")]
    assert msgs and all("cannot rollback" not in m for m in msgs), msgs
    assert any("disk is full" in m for m in msgs), msgs
    r = tm.open_run(tmp_path / "r")
    assert list(r.scalar("loss").steps) == list(range(40))  # nothing was lost: the buffers were not full
    assert r.layer_stat("update_ratio").values.shape[1] == 2  # per-layer rows with their layer set
    assert r.meta["status"] == "closed"
