"""Registry consistency (like a linter's rule-table test) and the CLI: diagnose, checks, explain."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trainmedic.checks import all_checks
from trainmedic.checks.explain import SECTIONS, explain_markdown, markdown_all
from trainmedic.cli import app
from trainmedic.codes import PROBLEMS, REMEDIES
from trainmedic.settings import Thresholds

NOT_TRAINING_SIDE = {
    "internal_error",
    "training_failed",
    "mode_collapse",
    "discriminator_overpowering",
    "label_noise",
    "data_leakage",
    "low_data_quality",
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "checks.md"


def test_every_training_code_has_a_check_docs_and_valid_remedies() -> None:
    checks = all_checks()
    assert set(PROBLEMS) - NOT_TRAINING_SIDE <= set(checks)
    fields = set(Thresholds().to_dict())
    docs = DOCS.read_text()
    for code, c in checks.items():
        assert code in PROBLEMS
        assert c.what and c.why and c.evidence, code
        assert set(c.thresholds) <= fields, code
        assert set(c.remedies) <= set(REMEDIES), code
        assert f"`{code}`" in docs, (
            f"docs/checks.md lacks {code}; regenerate with trainmedic explain --all --markdown"
        )
        md = explain_markdown(code)
        for section in SECTIONS:
            assert f"# {section}" in md
        for t in c.thresholds:
            assert f"`{t}`" in md


def test_docs_are_up_to_date() -> None:
    assert DOCS.read_text().strip() == markdown_all().strip()


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainmedic.scenarios import run_scenario

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("runs") / "ok"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_scenario({"epochs": 6, "batch_size": 128, "lr": 3e-3}, d)
    torch.set_num_threads(n)
    return d


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainmedic.store import RunWriter

    d = tmp_path_factory.mktemp("runs") / "nan"
    w = RunWriter(d, mode="overwrite")
    loss = np.linspace(2, 1, 100)
    loss[60:] = np.nan
    w.add_scalars("loss", np.arange(100), loss)
    w.close()
    return d


def test_cli_diagnose_healthy_text_and_fail_on(healthy_run: Path) -> None:
    r = CliRunner().invoke(app, ["diagnose", str(healthy_run), "--fail-on", "warning"])
    assert r.exit_code == 0, r.output
    assert "healthy" in r.output


def test_cli_diagnose_json_and_fail_on_error(broken_run: Path) -> None:
    r = CliRunner().invoke(app, ["diagnose", str(broken_run), "--json"])
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert data["schema_version"] == 1 and data["findings"][0]["code"] == "nonfinite"
    r = CliRunner().invoke(app, ["diagnose", str(broken_run), "--fail-on", "error"])
    assert r.exit_code == 1 and "nonfinite" in r.output
    r = CliRunner().invoke(app, ["diagnose", str(broken_run), "--fail-on", "fatal"])
    assert r.exit_code != 0 and "--fail-on" in str(r.exception)


def test_cli_checks_and_explain() -> None:
    r = CliRunner().invoke(app, ["checks"])
    assert r.exit_code == 0 and "exploding_gradient" in r.output
    r = CliRunner().invoke(app, ["explain", "vanishing_gradient", "--markdown"])
    assert r.exit_code == 0
    for section in SECTIONS:
        assert section in r.output
    assert "vanishing_ratio" in r.output
    r = CliRunner().invoke(app, ["explain", "data_leakage"])
    assert r.exit_code != 0 and "audit" in str(r.exception)
