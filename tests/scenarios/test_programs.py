"""Healthy programs in the shapes real code takes (scenarios/programs.py): each trains normally (its oracle is
checked first, so a wrong config fails as such) and must get no warning or error."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainmedic.scenarios.programs import PROGRAMS, run_program


def test_there_are_enough_shapes() -> None:
    assert len(PROGRAMS) >= 36


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_healthy_program_is_silent(name: str, seed: int, tmp_path: Path) -> None:
    outcome, diagnosis = run_program(name, tmp_path / "run", seed=seed)
    assert outcome.ok, f"the program did not train as it should (a config problem, not a finding): {outcome}"
    alarms = [
        (f.code, f.severity, f.message) for f in diagnosis.findings if f.severity in ("warning", "error")
    ]
    assert not alarms, alarms
    assert diagnosis.verdict == "healthy", diagnosis.verdict
