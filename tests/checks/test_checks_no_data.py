"""A run with no data is never "healthy" (issue 12, item 6): a zero-step run, a run killed before its first
flush, a run whose writer failed. Its verdict is "no data: N checks skipped", `--fail-on` fails on it at any
level unless `--allow-no-data`, and the terminal, the JSON and the report say so."""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import trainmedic as tm
from trainmedic.cli import app
from trainmedic.findings import Diagnosis
from trainmedic.store.writer import RunWriter

runner = CliRunner()


def _model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return m, torch.optim.SGD(m.parameters(), lr=0.1)


def _steps(m: nn.Module, opt: torch.optim.Optimizer, run: tm.Run, n: int) -> None:
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    for _ in range(n):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        run.log(loss=loss)


@pytest.fixture
def zero_step(tmp_path: Path) -> Path:
    m, opt = _model()
    tm.watch(m, opt, run_dir=tmp_path / "zero").close()
    return tmp_path / "zero"


def _assert_no_data(d: Diagnosis) -> None:
    assert d.no_data and not d.healthy and d.verdict == "no_data"
    assert d.summary == f"no data: {len(d.skipped)} checks skipped" and len(d.skipped) >= 10
    assert d.fails("error") and d.fails("warning") and not d.fails("error", allow_no_data=True)
    js = json.loads(d.to_json())
    assert js["verdict"] == "no_data" and js["no_data"] is True and js["healthy"] is False
    assert Diagnosis.from_dict(js).no_data


def test_a_zero_step_run_has_no_data(zero_step: Path) -> None:
    _assert_no_data(tm.diagnose(zero_step))


def test_a_run_killed_before_its_first_flush_has_no_data(tmp_path: Path) -> None:
    m, opt = _model()
    run = tm.watch(m, opt, run_dir=tmp_path / "killed", flush_secs=1e9, flush_steps=10**6)
    _steps(m, opt, run, 30)  # buffered, never committed: what a kill -9 now would leave
    _assert_no_data(tm.diagnose(tmp_path / "killed"))
    run.close()
    assert tm.diagnose(tmp_path / "killed").verdict != "no_data"  # once flushed, there is data


def test_a_run_whose_writer_failed_has_no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, opt = _model()
    run = tm.watch(m, opt, run_dir=tmp_path / "failed")

    def fail(self: RunWriter) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(RunWriter, "flush", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _steps(m, opt, run, 5)
        run.close()
    monkeypatch.undo()
    _assert_no_data(tm.diagnose(tmp_path / "failed"))


def test_cli_fail_on_fails_on_no_data_unless_allowed(zero_step: Path) -> None:
    for level in ("warning", "error"):
        r = runner.invoke(app, ["diagnose", str(zero_step), "--fail-on", level])
        assert r.exit_code == 1, r.output
        assert "no data" in r.output and "checks skipped" in r.output and "healthy:" not in r.output
    r = runner.invoke(app, ["diagnose", str(zero_step), "--fail-on", "error", "--allow-no-data"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["diagnose", str(zero_step), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["verdict"] == "no_data"


def test_report_says_no_data(zero_step: Path, tmp_path: Path) -> None:
    html = tm.report(zero_step, tmp_path / "r.html").read_text()
    assert "No data:" in html and "checks skipped" in html and "Healthy: no problems found" not in html
