"""`trainmedic audit` on .npz/.csv files, and the small parts: confident learning, hashing, LSH."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from trainmedic.cli import app
from trainmedic.data import find_label_issues
from trainmedic.data._inputs import as_split
from trainmedic.data.duplicates import Pooled, exact_groups, hash_rows, near_duplicate_pairs

runner = CliRunner()


def _write(tmp_path: Path, splits: Any, leak: int = 0) -> tuple[Path, Path, Path]:
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    if leak:
        xte, yte = np.concatenate([xte, xtr[:leak]]), np.concatenate([yte, ytr[:leak]])
    np.savez(tmp_path / "train.npz", X=xtr, y=ytr)
    np.savez(tmp_path / "test.npz", X=xte, y=yte)
    header = ",".join([f"f{i}" for i in range(xva.shape[1])] + ["target"])
    np.savetxt(tmp_path / "val.csv", np.c_[xva, yva], delimiter=",", header=header, comments="")
    return tmp_path / "train.npz", tmp_path / "val.csv", tmp_path / "test.npz"


def test_cli_table_json_and_fail_on(tmp_path: Path, digits_splits: Any) -> None:
    tr, va, te = _write(tmp_path, digits_splits)
    args = [
        "audit",
        str(tr),
        "--val",
        str(va),
        "--test",
        str(te),
        "--label-column",
        "target",
        "--label-check",
        "off",
    ]
    ok = runner.invoke(app, [*args, "--fail-on", "warning"])
    assert ok.exit_code == 0, ok.output
    assert "data_imbalance" in ok.output and "healthy" in ok.output
    out = runner.invoke(app, [*args, "--json"])
    doc = json.loads(out.output)
    assert doc["healthy"] is True and doc["signals"]["splits"]["val"]["n"] == len(digits_splits[1][1])
    tr2, va2, te2 = _write(tmp_path, digits_splits, leak=40)
    bad = runner.invoke(
        app, ["audit", str(tr2), "--test", str(te2), "--label-check", "off", "--fail-on", "error"]
    )
    assert bad.exit_code == 1 and "data_leakage" in bad.output


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["audit", str(tmp_path / "missing.csv")])
    assert r.exit_code != 0 and isinstance(r.exception, Exception) and "missing.csv" in str(r.exception)
    (tmp_path / "bad.npz").write_bytes(b"")
    np.savez(tmp_path / "bad.npz", A=np.zeros(3))
    r2 = runner.invoke(app, ["audit", str(tmp_path / "bad.npz")])
    assert "must hold arrays `X` and `y`" in str(r2.exception)
    r3 = runner.invoke(app, ["audit", str(tmp_path / "bad.npz"), "--fail-on", "info"])
    assert "--fail-on" in str(r3.exception)


def test_csv_default_label_column_is_label_or_last(tmp_path: Path) -> None:
    from trainmedic.data.commands import load_table

    p = tmp_path / "t.csv"
    p.write_text("a,label,b\n1,0,2\n3,1,4\n")
    x, y = load_table(p)
    assert y.tolist() == [0, 1] and x.tolist() == [[1, 2], [3, 4]]
    p.write_text("1,2,0\n3,4,1\n")
    x, y = load_table(p)
    assert y.tolist() == [0, 1] and x.shape == (2, 2)


def test_confident_learning_finds_the_planted_errors() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), y_true] = 0.9
    given = y_true.copy()
    wrong = np.arange(0, 300, 10)
    given[wrong] = (given[wrong] + 1) % 3
    issues = find_label_issues(probs, given)
    assert set(issues.suspects.tolist()) == set(wrong.tolist())
    assert issues.noise_rate == np.float64(len(wrong) / 300)
    clean = find_label_issues(probs, y_true)
    assert len(clean.suspects) == 0 and clean.noise_rate == 0


def test_row_hashes_round_and_group() -> None:
    a = np.array([[1.0, 2.0], [1.0 + 1e-9, 2.0], [-0.0, 0.0], [0.0, 0.0], [1.0, 2.1]])
    h = hash_rows(a)
    assert h[0] == h[1] and h[2] == h[3] and h[0] != h[4]
    groups = sorted(sorted(g.tolist()) for g in exact_groups(h))
    assert groups == [[0, 1], [2, 3]]


def test_lsh_finds_near_duplicates_in_chunks() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000, 16))
    copies = x[:100] + rng.normal(0, 0.01, (100, 16))
    y = np.zeros(5000, dtype=int)
    pooled = Pooled([as_split((x, y), "train"), as_split((copies, y[:100]), "test")])
    hashes = np.concatenate([hash_rows(x), hash_rows(copies)])
    a, b = near_duplicate_pairs(pooled, np.zeros(16), np.ones(16), 0.3, hashes, chunk_rows=700)
    pairs = set(zip(a.tolist(), b.tolist()))
    expected = {(i, 5000 + i) for i in range(100)}
    assert len(expected & pairs) >= 97  # LSH recall
    assert len(pairs - expected) == 0  # every reported pair is confirmed on the real distance
