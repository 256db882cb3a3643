"""Bad run directories give one clear error, never a traceback (issue 12, item 4): a damaged page inside
``run.sqlite``, a foreign SQLite file, a ``meta`` value that is not JSON. The API raises a ``RunDirError``
(a ``TrainmedicError``) naming the file and the problem; the CLI prints one line and exits 2. Hypothesis
fuzzes the bytes of a real ``run.sqlite`` and foreign schemas."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import trainmedic as tm
from trainmedic.errors import RunDirError, TrainmedicError
from trainmedic.store.commands import inspect_run

PAGE = 4096


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, closed run with enough rows to span many database pages."""
    d = tmp_path_factory.mktemp("bad-files") / "good"
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    with tm.watch(m, opt, run_dir=d, every=1, flush_steps=10, quiet=True) as run:
        for _epoch in range(4):
            for _ in range(30):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(m(x), y)
                loss.backward()
                opt.step()
                run.log(loss=loss)
            run.evaluate("train", targets=y, outputs=m(x))
            run.evaluate("val", targets=y, outputs=m(x))
    assert (d / "run.sqlite").stat().st_size > 8 * PAGE
    return d


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "run.sqlite", dst / "run.sqlite")
    return dst


def read_everything(run_dir: Path) -> None:
    """What ``trainmedic inspect`` and ``diagnose`` do with a run directory (the report: in the CLI test)."""
    inspect_run(run_dir)
    tm.diagnose(run_dir)


def assert_clear_error_or_success(fn: Callable[[], Any], path: Path) -> None:
    """Either it works or it raises one TrainmedicError, on one line, naming the file: any other exception
    (the traceback a user would see) propagates and fails the calling test."""
    try:
        fn()
    except TrainmedicError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert str(path) in msg, msg


def _damage_page(run_dir: Path, page: int) -> None:
    db = run_dir / "run.sqlite"
    data = bytearray(db.read_bytes())
    data[page * PAGE : (page + 1) * PAGE] = bytes([0xA5]) * PAGE
    db.write_bytes(bytes(data))


def test_a_damaged_page_is_one_error_naming_the_file(
    good_run: Path, tmp_path: Path, run_cli: Callable[[list[str]], tuple[int, str]]
) -> None:
    seen = 0
    n_pages = (good_run / "run.sqlite").stat().st_size // PAGE
    for page in range(1, n_pages, 2):
        d = _copy(good_run, tmp_path / f"p{page}")
        _damage_page(d, page)
        try:
            read_everything(d)
        except RunDirError as e:
            assert str(d / "run.sqlite") in str(e) and "\n" not in str(e)
            seen += 1
    assert seen > 0  # some pages hold data that is read: each is one clear error
    d = _copy(good_run, tmp_path / "cli")
    for page in range(1, n_pages):
        _damage_page(d, page)
    for cmd in (
        ["inspect", str(d)],
        ["diagnose", str(d)],
        ["report", str(d), "-o", str(tmp_path / "r.html")],
    ):
        code, out = run_cli(cmd)
        assert code == 2 and "Traceback" not in out, (cmd, out)
        assert len(out.strip().splitlines()) == 1 and "run.sqlite" in out, (cmd, out)


def test_a_foreign_sqlite_file_is_not_a_run(tmp_path: Path) -> None:
    d = tmp_path / "foreign"
    d.mkdir()
    con = sqlite3.connect(d / "run.sqlite")
    con.executescript(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users(name) VALUES('x');"
        "CREATE TABLE meta(key TEXT, value TEXT); INSERT INTO meta VALUES('name', 'plain text');"
    )
    con.commit()
    con.close()
    with pytest.raises(
        RunDirError, match=r"is not a trainmedic run database: it lacks the table\(s\) scalar_chunks"
    ):
        tm.diagnose(d)


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("status", "{not json", "meta value 'status' is not JSON"),
        ("steps", '"many"', "meta value 'steps' must be int"),
        ("thresholds", "[1, 2]", "meta value 'thresholds' must be dict"),
    ],
)
def test_a_bad_meta_value_is_one_error(
    good_run: Path, tmp_path: Path, key: str, value: str, expect: str
) -> None:
    d = _copy(good_run, tmp_path / "meta")
    con = sqlite3.connect(d / "run.sqlite")
    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))
    con.commit()
    con.close()
    for fn in (lambda: tm.diagnose(d), lambda: inspect_run(d), lambda: tm.open_run(d)):
        with pytest.raises(RunDirError, match=expect) as ex:
            fn()
        assert str(d / "run.sqlite") in str(ex.value)


def test_damaged_chunks_are_one_error(good_run: Path, tmp_path: Path) -> None:
    d = _copy(good_run, tmp_path / "chunks")
    con = sqlite3.connect(d / "run.sqlite")
    con.execute("UPDATE scalar_chunks SET vals = x'0102' WHERE name='loss'")
    con.execute("UPDATE layer_sets SET layers = '[]'")
    con.commit()
    con.close()
    r = tm.open_run(d)
    with pytest.raises(RunDirError, match="a chunk of the signal 'loss'"):
        r.scalar("loss")
    with pytest.raises(RunDirError, match=r"values for \d+ steps × 0 layers"):
        r.layer_stat("grad_norm")
    r.close()


# ---- fuzzing --------------------------------------------------------------------------------------------
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=64)),
        min_size=1,
        max_size=6,
    ),
    truncate=st.one_of(st.none(), st.floats(0, 1)),
)
def test_fuzzed_run_sqlite_bytes_never_give_a_traceback(
    good_run: Path,
    tmp_path_factory: pytest.TempPathFactory,
    edits: list[tuple[float, bytes]],
    truncate: float | None,
) -> None:
    d = _copy(good_run, tmp_path_factory.mktemp("fuzz"))
    db = d / "run.sqlite"
    data = bytearray(db.read_bytes())
    for where, junk in edits:
        i = int(where * len(data))
        data[i : i + len(junk)] = junk
    if truncate is not None:
        data = data[: int(truncate * len(data))]
    db.write_bytes(bytes(data))
    assert_clear_error_or_success(lambda: read_everything(d), db)


TABLE_NAMES = ["meta", "scalar_chunks", "layer_sets", "layer_chunks", "evals", "records", "events", "users"]
COLUMNS = [
    "key",
    "value",
    "name",
    "steps",
    "vals",
    "stat",
    "layers",
    "epoch",
    "step",
    "split",
    "kind",
    "data",
    "x",
]
CELLS = st.one_of(
    st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20), st.binary(max_size=24)
)


@FUZZ
@given(
    tables=st.dictionaries(
        st.sampled_from(TABLE_NAMES),
        st.tuples(
            st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=5, unique=True),
            st.lists(st.lists(CELLS, min_size=5, max_size=5), max_size=3),
        ),
        min_size=1,
    )
)
def test_foreign_schemas_never_give_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, tables: dict[str, tuple[list[str], list[list[Any]]]]
) -> None:
    d = tmp_path_factory.mktemp("foreign")
    con = sqlite3.connect(d / "run.sqlite")
    for name, (cols, rows) in tables.items():
        con.execute(f"CREATE TABLE {name} ({', '.join(cols)})")
        for row in rows:
            con.execute(f"INSERT INTO {name} VALUES ({', '.join('?' * len(cols))})", row[: len(cols)])
    con.commit()
    con.close()
    assert_clear_error_or_success(lambda: read_everything(d), d / "run.sqlite")


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(
                ["scalar_chunks", "layer_chunks", "layer_sets", "evals", "records", "events", "meta"]
            ),
            st.lists(CELLS, min_size=8, max_size=8),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_hostile_rows_in_a_real_schema_never_give_a_traceback(
    good_run: Path, tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, list[Any]]]
) -> None:
    """Valid SQLite, the trainmedic schema, rows of any type in any column (what a buggy writer could leave)."""
    d = _copy(good_run, tmp_path_factory.mktemp("rows"))
    con = sqlite3.connect(d / "run.sqlite")
    for table, cells in rows:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
        with contextlib.suppress(sqlite3.IntegrityError):  # NOT NULL: a row the schema itself refuses
            con.execute(
                f"INSERT OR REPLACE INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                cells[: len(cols)],
            )
    con.commit()
    con.close()
    assert_clear_error_or_success(lambda: read_everything(d), d / "run.sqlite")
