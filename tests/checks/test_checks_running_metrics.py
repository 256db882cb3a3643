"""The README's loop — ``run.log(loss=, outputs=, targets=)`` and a val score per epoch, no clean training pass —
gets fit problems judged from the running training metrics (split ``train_running``): overfitting is found on a
real overfitting run, and a healthy one stays silent (scenarios/programs.py holds more healthy shapes)."""

from __future__ import annotations

from pathlib import Path

import trainmedic as tm
from trainmedic.running import RUNNING_SPLIT
from trainmedic.scenarios.programs import readme_loop, run_program


def test_readme_loop_finds_overfitting_from_running_metrics(tmp_path: Path) -> None:
    val_acc = readme_loop(
        tmp_path / "over", data="digits_noisy", train_n=60, width=256, epochs=80, lr=3e-3, batch=16
    )
    r = tm.open_run(tmp_path / "over")
    assert RUNNING_SPLIT in r.splits and "train" not in r.splits  # no clean pass: running metrics only
    assert r.eval_series(RUNNING_SPLIT, "accuracy").values[-1] > 0.95 > val_acc + 0.2
    r.close()
    found = {f.code: f for f in tm.diagnose(tmp_path / "over").findings if f.severity in ("warning", "error")}
    assert "overfitting" in found, sorted(found)
    assert found["overfitting"].evidence["accuracy_gap"] > 0.2


def test_readme_loop_stays_silent_on_a_healthy_run(tmp_path: Path) -> None:
    outcome, diagnosis = run_program("readme_running_metrics", tmp_path / "ok")
    assert outcome.ok, outcome
    assert not [f.code for f in diagnosis.findings if f.severity in ("warning", "error")]
    r = tm.open_run(tmp_path / "ok")
    assert RUNNING_SPLIT in r.splits and len(r.eval_series(RUNNING_SPLIT, "accuracy")) == 15
    r.close()
