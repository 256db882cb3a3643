"""A full disk (issue 12, item 2), simulated with a connection that fails like SQLite does (``SQLITE_FULL``
rolls the transaction back itself): the real error is reported (not "cannot rollback"), buffers stay bounded
with a counter of what was dropped, schema rows are written in the same transaction as their data, and
recording resumes when space returns. As root, the same on a real 2 MiB tmpfs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
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


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (root only: mount tmpfs); skipped where it cannot be mounted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    with path.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


def test_a_real_full_disk_then_space_again(small_tmpfs: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    filler = small_tmpfs / "filler"

    def steps(run: Any, n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            run.log(loss=loss)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tm.watch(model, opt, run_dir=small_tmpfs / "r", every=1, flush_steps=10, quiet=True)
        steps(run, 20)
        _fill(filler)  # the disk is full
        steps(run, 200)
        filler.unlink()  # space returns
        steps(run, 30)
        run.close()
    msgs = [str(w.message) for w in caught if str(w.message).startswith("trainmedic")]
    assert all("cannot rollback" not in m for m in msgs), msgs
    assert any("full" in m for m in msgs), msgs  # the disk really was full, and the warning says so
    r = tm.open_run(small_tmpfs / "r")
    assert r.meta["status"] == "closed"
    assert r.scalar("loss").steps[-1] == 249  # recording resumed
    g = r.layer_stat("update_ratio")  # every chunk has its layer set
    assert g.values.shape == (len(g.steps), 2)
    r.close()
