"""``trainmedic import`` never half-writes a run and never shows a traceback (issue 12, item 5): a huge integer
step, a non-UTF-8 CSV, a 200 kB field, a UTF-8 byte-order mark. The run is written into a temporary directory
and renamed into place, so a failure leaves ``RUN_DIR`` as it was and a retry is not refused. Hypothesis fuzzes
CSV input: a clear error or a correct import."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainmedic as tm
from trainmedic.errors import TrainmedicError
from trainmedic.store.importers import import_csv


def _csv(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


GOOD = "step,loss\n0,2.0\n1,1.5\n2,1.0\n"


def test_a_huge_step_is_one_error_and_leaves_nothing_behind(
    tmp_path: Path, run_cli: Callable[[list[str]], tuple[int, str]]
) -> None:
    bad = _csv(tmp_path / "huge.csv", "step,loss\n0,2.0\n1,1.5\n99999999999999999999999,1.0\n")
    run_dir = tmp_path / "run"
    code, out = run_cli(["import", str(bad), str(run_dir)])
    assert code == 2 and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert "`step` must hold whole numbers" in out and "row 4" in out
    assert not run_dir.exists() and list(tmp_path.iterdir()) == [bad]  # no half-written run, no temp dir
    good = _csv(tmp_path / "good.csv", GOOD)
    code, out = run_cli(["import", str(good), str(run_dir)])  # the retry is not refused
    assert code == 0, out
    assert list(tm.open_run(run_dir).scalar("loss").values) == [2.0, 1.5, 1.0]


def test_a_failed_overwrite_keeps_the_old_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    import_csv(_csv(tmp_path / "good.csv", GOOD), run_dir)
    bad = _csv(tmp_path / "inf.csv", "step,loss\ninf,1.0\n")
    with pytest.raises(TrainmedicError, match="`step` must hold whole numbers"):
        import_csv(bad, run_dir, overwrite=True)
    assert list(tm.open_run(run_dir).scalar("loss").values) == [2.0, 1.5, 1.0]
    import_csv(_csv(tmp_path / "new.csv", "step,loss\n0,9.0\n"), run_dir, overwrite=True)
    assert list(tm.open_run(run_dir).scalar("loss").values) == [9.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv", "inf.csv", "new.csv", "run"]


def test_a_non_utf8_csv_is_one_error(tmp_path: Path) -> None:
    bad = _csv(tmp_path / "latin1.csv", "step,loss,note\n0,1.0,caf\xe9\n".encode("latin-1"))
    with pytest.raises(TrainmedicError, match=r"must be UTF-8 text; .* byte 0xe9 at offset 24 \(line 2\)"):
        import_csv(bad, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_200kb_field_is_imported(tmp_path: Path) -> None:
    f = _csv(tmp_path / "wide.csv", "step,loss,note\n0,1.0," + "x" * 200_000 + "\n1,0.5,y\n")
    res = import_csv(f, tmp_path / "run")
    assert res["signals"] == ["loss"] and res["steps"] == 2


def test_a_csv_with_a_utf8_bom_is_imported(tmp_path: Path) -> None:
    f = _csv(tmp_path / "bom.csv", b"\xef\xbb\xbf" + GOOD.encode())
    res = import_csv(f, tmp_path / "run")
    assert res["signals"] == ["loss"] and res["steps"] == 3


# ---- fuzzing --------------------------------------------------------------------------------------------
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "x", "1,5", '"', "\x00", "\ufeff"]),
)


@FUZZ
@given(
    header=st.lists(
        st.one_of(
            st.sampled_from(["step", "epoch", "loss", "val_loss", "val/acc", "Wall time", "Value"]),
            st.text(max_size=8),
        ),
        min_size=1,
        max_size=5,
    ),
    rows=st.lists(st.lists(NUMBERS, min_size=0, max_size=6), max_size=6),
    bom=st.booleans(),
)
def test_fuzzed_csv_is_a_clear_error_or_a_correct_import(
    tmp_path_factory: pytest.TempPathFactory, header: list[str], rows: list[list[str]], bom: bool
) -> None:
    d = tmp_path_factory.mktemp("csv")
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    f = _csv(d / "in.csv", ("\ufeff" if bom else "") + buf.getvalue())
    run_dir = d / "run"
    try:
        import_csv(f, run_dir)
    except TrainmedicError as e:
        assert "\n" not in str(e)
        assert not run_dir.exists()  # nothing half-written
        assert [p.name for p in d.iterdir()] == ["in.csv"]
        return
    # a correct import: every stored per-step value is a value of its column, at an integer step
    r = tm.open_run(run_dir)
    assert r.meta["status"] == "imported"
    for name in r.scalar_names:
        s = r.scalar(name)
        assert len(s) and all(float(v) == v for v in s.steps)
        col = [h.strip() for h in header].index(name)  # names are stored without surrounding whitespace
        cells = {float(row[col]) for row in rows if col < len(row) and _is_number(row[col])}
        assert all(v in cells or math.isnan(v) for v in s.values), (name, s.values, cells)
    r.close()
    tm.diagnose(run_dir)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
