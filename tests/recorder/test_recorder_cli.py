"""``trainmedic inspect RUN_DIR [--json]`` and ``trainmedic import FILE RUN_DIR`` (CSV, TensorBoard)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _recorder_helpers import digits, mlp, train, watched
from typer.testing import CliRunner

import trainmedic as tm
from trainmedic.cli import app
from trainmedic.errors import TrainmedicError
from trainmedic.store.importers import import_csv, import_file, split_of

runner = CliRunner()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inspect") / "run"
    torch.manual_seed(0)
    X, y = digits(256)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run = watched(model, opt, d, every=2)
    train(model, opt, X, y, epochs=2, run=run)
    run.close()
    return d


def test_inspect_json_lists_what_was_recorded(recorded: Path) -> None:
    res = runner.invoke(app, ["inspect", str(recorded), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["steps"] == 8 and info["epochs"] == 2 and info["status"] == "closed"
    assert info["signals"]["loss"]["points"] == 8 and info["signals"]["grad_norm"]["last_step"] == 7
    assert info["signals"]["lr"]["last"] == pytest.approx(0.1)
    assert info["layer_stats"]["grad_norm"] == {"layers": 3, "captures": 4}
    assert [lay["name"] for lay in info["layers"]] == ["0", "2", "4"]
    assert info["optimizers"][0]["type"] == "SGD"
    assert info["splits"]["train"]["epochs"] == [0, 1] and info["splits"]["train"]["samples"] == 256
    assert info["batch_size"] == 64 and info["schema_version"] == 1


def test_inspect_rich_summary_and_errors(recorded: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["inspect", str(recorded)])
    assert res.exit_code == 0, res.output
    for text in ("per-step signals", "grad_norm", "per-layer statistics", "optimizer", "split train"):
        assert text in res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "missing")])
    assert res.exit_code != 0 and isinstance(res.exception, TrainmedicError)
    assert "does not exist" in str(res.exception)


def test_split_names() -> None:
    assert split_of("val_loss") == ("val", "loss")
    assert split_of("validation/acc") == ("val", "accuracy")
    assert split_of("test-accuracy") == ("test", "accuracy")
    assert split_of("loss") is None and split_of("lr") is None


def test_import_csv_then_diagnose_sees_the_signals(tmp_path: Path) -> None:
    """A Lightning-style CSVLogger file: per-step rows and per-epoch validation rows."""
    lines = ["epoch,step,train_loss_step,lr,val_loss,val_acc,train_loss_epoch,train_acc_epoch"]
    rng = np.random.default_rng(0)
    step = 0
    for epoch in range(6):
        for _ in range(10):
            lines.append(f"{epoch},{step},{2.0 / (step + 1) + 0.01 * rng.random():.5f},0.01,,,,")
            step += 1
        val = f"{0.5 + 0.1 * epoch:.3f},{0.9 - 0.05 * epoch:.3f}"
        lines.append(f"{epoch},{step - 1},,,{val},{0.4 / (epoch + 1):.3f},{0.9 + 0.015 * epoch:.3f}")
    csv_file = tmp_path / "metrics.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["import", str(csv_file), str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "2 per-step signal(s) over 60 steps" in res.output
    r = tm.open_run(tmp_path / "run")
    assert list(r.scalar("loss").steps) == list(range(60)) and r.scalar("lr").values[0] == 0.01
    assert list(r.eval_series("val", "loss").values) == pytest.approx([0.5 + 0.1 * e for e in range(6)])
    assert list(r.eval_series("val", "accuracy").steps) == list(range(6))
    assert r.meta["status"] == "imported"
    again = runner.invoke(app, ["import", str(csv_file), str(tmp_path / "run")])
    assert isinstance(again.exception, TrainmedicError) and "already holds a run" in str(again.exception)
    diagnosis = tm.diagnose(tmp_path / "run")
    assert "overfitting" in {f.code for f in diagnosis.findings}


def test_import_tensorboard_style_csv_and_per_epoch_csv(tmp_path: Path) -> None:
    tb = tmp_path / "grad_norm.csv"
    tb.write_text("Wall time,Step,Value\n1.0,0,0.5\n2.0,1,0.7\n3.0,2,nan\n")
    import_csv(tb, tmp_path / "a")
    s = tm.open_run(tmp_path / "a").scalar("grad_norm")
    assert list(s.steps) == [0, 1, 2] and np.isnan(s.values[2])
    per_epoch = tmp_path / "epochs.csv"
    per_epoch.write_text("epoch,loss,val_loss,train_accuracy\n0,1.0,1.1,0.5\n1,0.8,0.9,0.6\n")
    res = import_csv(per_epoch, tmp_path / "b")
    assert res["evals"] == ["train/accuracy", "val/loss"] and res["steps"] == 2
    r = tm.open_run(tmp_path / "b")
    assert list(r.scalar("loss").values) == [1.0, 0.8] and list(r.eval_series("val", "loss").values) == [
        1.1,
        0.9,
    ]


def test_import_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    for fn, match in (
        (lambda: import_csv(bad, tmp_path / "x"), "must have a `step`"),
        (lambda: import_csv(tmp_path / "nope.csv", tmp_path / "x"), "no such file"),
        (lambda: import_file(tmp_path / "log.txt", tmp_path / "x"), "must be a .csv file or a TensorBoard"),
    ):
        with pytest.raises(TrainmedicError, match=match) as ei:
            fn()
        assert "\n" not in str(ei.value)


def test_import_tensorboard_event_file(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for step in range(5):
        w.add_scalar("loss", 1.0 / (step + 1), step)
    w.add_scalar("val/accuracy", 0.8, 4)
    w.close()
    res = import_file(tmp_path / "tb", tmp_path / "run")
    r = tm.open_run(tmp_path / "run")
    assert res["steps"] == 5 and len(r.scalar("loss")) == 5
    assert r.eval_series("val", "accuracy").values.tolist() == pytest.approx([0.8])  # stored as float32
