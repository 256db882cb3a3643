"""Fuzzed TensorBoard input (issue 12): an event file written by the real library, then damaged byte by byte or
cut short, imports correctly or fails with one clear line — never a traceback, never a half-written run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainmedic as tm
from trainmedic.errors import TrainmedicError
from trainmedic.store.importers import import_file

pytest.importorskip("tensorboard")

VALUES = {"train/loss": [2.0 - 0.1 * i for i in range(12)], "val/accuracy": [0.1 * i for i in range(1, 6)]}


@pytest.fixture(scope="module")
def event_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from torch.utils.tensorboard import SummaryWriter

    d = tmp_path_factory.mktemp("tb")
    w = SummaryWriter(log_dir=str(d))
    for i, v in enumerate(VALUES["train/loss"]):
        w.add_scalar("train/loss", v, i)
    for i, v in enumerate(VALUES["val/accuracy"]):
        w.add_scalar("val/accuracy", v, (i + 1) * 2)
    w.close()
    (f,) = list(d.glob("events.out.tfevents.*"))
    return f.read_bytes()


def _import(d: Path, data: bytes) -> tuple[str | None, list[float], bool]:
    """Import ``data`` as an event file: (the one-line error or None, the imported values, whether anything
    is left in the run directory after an error)."""
    f = d / "events.out.tfevents.0.fuzz"
    f.write_bytes(data)
    run_dir = d / "run"
    try:
        import_file(f, run_dir)
    except TrainmedicError as e:
        return str(e), [], run_dir.exists()
    r = tm.open_run(run_dir)
    values = _imported_values(r)
    r.close()
    tm.diagnose(run_dir)  # an imported run, however damaged its source, is diagnosed without a traceback
    return None, values, False


WRITTEN = {round(float(v), 5) for vs in VALUES.values() for v in vs}


def _imported_values(r: tm.RunReader) -> list[float]:
    """Every value the import stored, per step (scalars) or per epoch (evals), whichever axis it chose."""
    out = [float(v) for name in r.scalar_names for v in r.scalar(name).values]
    out += [
        float(v)
        for split in r.splits
        for name in r.eval_names(split)
        for v in r.eval_series(split, name).values
    ]
    return out


FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


def test_the_undamaged_file_imports_every_value(tmp_path: Path, event_bytes: bytes) -> None:
    f = tmp_path / "events.out.tfevents.0.ok"
    f.write_bytes(event_bytes)
    import_file(f, tmp_path / "run")
    r = tm.open_run(tmp_path / "run")
    assert r.meta["status"] == "imported"
    got = sorted(round(v, 5) for v in _imported_values(r))
    assert got == sorted(round(v, 5) for vs in VALUES.values() for v in vs)
    r.close()


@FUZZ
@given(data=st.data())
def test_damaged_event_file_is_a_clear_error_or_a_correct_import(
    tmp_path_factory: pytest.TempPathFactory, event_bytes: bytes, data: st.DataObject
) -> None:
    b = bytearray(event_bytes)
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        i = data.draw(st.integers(0, len(b) - 1), label="at")
        b[i] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.integers(0, len(b)), label="cut")
    error, values, left = _import(tmp_path_factory.mktemp("tbf"), bytes(b[:cut]))
    if error is not None:
        assert "\n" not in error and not left  # one line, nothing half-written
    # a damaged record may be skipped, never invented: every imported value is one that was written
    assert all(math.isnan(v) or round(v, 5) in WRITTEN for v in values), values


@FUZZ
@given(junk=st.binary(max_size=400))
def test_random_bytes_are_a_clear_error_or_an_empty_import(
    tmp_path_factory: pytest.TempPathFactory, junk: bytes
) -> None:
    error, values, left = _import(tmp_path_factory.mktemp("tbj"), junk)
    if error is not None:
        assert "\n" not in error and not left
    assert values == []  # bytes that were never an event file hold no value to import
