"""Never break training: injected probe faults, determinism, and clear one-line errors for bad input."""

from __future__ import annotations

import sqlite3
import warnings
from typing import Any

import pytest
import torch
from _recorder_helpers import digits, mlp, params_equal, train, watched
from torch import nn

import trainmedic as tm
from trainmedic.errors import RunDirError, TrainmedicError
from trainmedic.probes import activations as act_mod
from trainmedic.probes.optimizer import OptimizerProbe
from trainmedic.store.writer import RunWriter


def _fresh(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = mlp()
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def _boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected fault")


def test_same_seed_same_weights_with_and_without_watch(tmp_path: Any) -> None:
    X, y = digits(256)
    bare, bare_opt = _fresh()
    train(bare, bare_opt, X, y, epochs=2)
    model, opt = _fresh()
    run = watched(model, opt, tmp_path, every=1)
    train(model, opt, X, y, epochs=2, run=run)
    run.close()
    assert params_equal(bare, model)
    assert not tm.open_run(tmp_path).events("internal_error")


@pytest.mark.parametrize(
    "target",
    [
        (OptimizerProbe, "grad_param_norms", "gradients"),
        (OptimizerProbe, "param_stats", "weights"),
        (act_mod, "activation_stats_batch", "activations"),
    ],
    ids=["grad_param_norms", "param_stats", "activation_stats"],
)
def test_probe_fault_never_changes_training(
    target: tuple[Any, str, str], tmp_path: Any, monkeypatch: Any
) -> None:
    owner, attr, probe_name = target
    X, y = digits(256)
    bare, bare_opt = _fresh()
    train(bare, bare_opt, X, y, epochs=2)
    monkeypatch.setattr(owner, attr, _boom)
    model, opt = _fresh()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = watched(model, opt, tmp_path, every=1)
        train(model, opt, X, y, epochs=2, run=run)
        run.close()
    assert params_equal(bare, model), "a failing probe changed the training"
    ours = [w for w in caught if "trainmedic" in str(w.message) and probe_name in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    events = tm.open_run(tmp_path).events("internal_error")
    assert events and all(e["data"]["probe"] == probe_name for e in events)
    assert "injected fault" in events[0]["message"] and "Traceback" in events[0]["data"]["traceback"]
    assert len(events) <= 3  # recorded a few times, then only counted


def test_writer_flush_fault_is_survived_and_recovered(tmp_path: Any, monkeypatch: Any) -> None:
    """While the database refuses writes nothing is lost from memory; once it recovers everything lands."""
    X, y = digits(256)
    bare, bare_opt = _fresh()
    train(bare, bare_opt, X, y, epochs=1)
    original = RunWriter.flush
    broken = {"on": False}

    def flaky(self: RunWriter) -> None:
        if broken["on"]:
            raise sqlite3.OperationalError("disk I/O error (injected)")
        original(self)

    monkeypatch.setattr(RunWriter, "flush", flaky)
    model, opt = _fresh()
    run = watched(model, opt, tmp_path, flush_steps=1)
    broken["on"] = True
    with pytest.warns(RuntimeWarning, match="trainmedic: the 'writer' probe failed"):
        train(model, opt, X, y, epochs=1, run=run)
    broken["on"] = False
    run.close()
    assert params_equal(bare, model)
    r = tm.open_run(tmp_path)
    assert list(r.scalar("loss").steps) == list(range(4))
    assert r.events("internal_error")[0]["data"]["probe"] == "writer"
    assert r.meta["status"] == "closed"


def test_bad_inputs_give_one_line_errors(tmp_path: Any) -> None:
    model, opt = _fresh()
    errors: list[str] = []

    def expect(fn: Any, match: str, kind: type[Exception] = TrainmedicError) -> None:
        with pytest.raises(kind, match=match) as ei:
            fn()
        errors.append(str(ei.value))

    expect(
        lambda: tm.watch("not a model", opt, run_dir=tmp_path / "a", quiet=True),
        "`model` must be a torch.nn.Module",
    )
    other = nn.Linear(3, 3)
    expect(
        lambda: tm.watch(
            model, torch.optim.SGD(other.parameters(), lr=0.1), run_dir=tmp_path / "b", quiet=True
        ),
        "not in the watched model",
    )
    run = watched(model, opt, tmp_path / "c")
    expect(lambda: run.log(loss=torch.ones(3)), r"`loss` must be a scalar .* shape \(3,\)")
    expect(lambda: run.log(loss="high"), "`loss` must be a number")
    run.close()
    expect(lambda: run.log(loss=1.0), r"`log\(\)` was called after `close\(\)`")
    expect(lambda: run.evaluate("val", [0], [0]), r"`evaluate\(\)` was called after `close\(\)`")
    f = tmp_path / "file"
    f.write_text("x")
    expect(lambda: tm.watch(model, opt, run_dir=f, quiet=True), "is a file", RunDirError)
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "run.sqlite").write_bytes(b"this is not a database" * 100)
    expect(lambda: tm.open_run(bad), "corrupted run database", RunDirError)
    expect(
        lambda: tm.watch(model, opt, run_dir=bad, quiet=True, resume=True),
        "corrupted run database",
        RunDirError,
    )
    expect(
        lambda: tm.watch(model, opt, run_dir=tmp_path / "c", quiet=True), "already holds a run", RunDirError
    )
    expect(
        lambda: tm.watch(model, opt, run_dir=tmp_path / "d", every=0), "`every` must be a positive integer"
    )
    assert all("\n" not in e for e in errors), errors


def test_overwrite_and_resume(tmp_path: Any) -> None:
    X, y = digits(256)
    model, opt = _fresh()
    run = watched(model, opt, tmp_path)
    train(model, opt, X, y, epochs=1, run=run)
    run.close()
    run = tm.watch(model, opt, run_dir=tmp_path, resume=True, quiet=True)
    train(model, opt, X, y, epochs=1, run=run)
    run.close()
    r = tm.open_run(tmp_path)
    assert list(r.scalar("loss").steps) == list(range(8))
    assert list(r.scalar("grad_norm").steps) == list(range(8))
    assert r.epochs("train") == [0, 1]
    run = watched(model, opt, tmp_path)
    run.close()
    assert len(tm.open_run(tmp_path).scalar("loss")) == 0
