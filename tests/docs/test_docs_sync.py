"""Generated docs must match the code they are generated from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_thresholds_doc_is_in_sync() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_thresholds_doc.py"), "--check"], cwd=ROOT)
    assert r.returncode == 0, "docs/thresholds.md is stale: run python scripts/gen_thresholds_doc.py"


def test_every_threshold_is_documented() -> None:
    from dataclasses import fields

    from trainmedic.data.thresholds import AuditThresholds
    from trainmedic.settings import Thresholds

    text = (ROOT / "docs" / "thresholds.md").read_text()
    for cls in (Thresholds, AuditThresholds):
        for f in fields(cls):
            assert f"`{f.name}`" in text, f.name


def test_readme_starts_with_the_two_setup_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:6]
    assert any("scripts/demo.sh" in line for line in head)
    assert any("scripts/test.sh" in line for line in head)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
