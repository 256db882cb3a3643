"""The report in a real headless Chromium: it renders, logs no console message and fetches nothing.

What is checked, and how:
- rendering: a 1280×2000 screenshot has thousands of distinct colours and is mostly not blank;
- content: ``--dump-dom`` (the DOM after parsing) holds the sections, the figures as ``<svg>`` elements, the
  hostile class name as text and not one ``<script>`` element;
- console: with ``--enable-logging=stderr`` Chromium writes every console message (errors, CSP violations)
  as a ``CONSOLE`` line; there must be none;
- network: ``--log-net-log`` records every URL request; the requests the *page* made are those whose network
  isolation key is the ``file://`` page (the browser's own background requests carry another key) and there
  must be none. A control page with one remote image and one console error proves both detectors fire.
Install Chromium with ``scripts/install_chromium.sh``; without it the test is skipped, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from trainmedic.findings import Diagnosis, Finding, RemedySuggestion, Severity
from trainmedic.report import report

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (run scripts/install_chromium.sh); browser check not run")
    return exe


def _run(exe: str, page: Path, tmp: Path, name: str, *extra: str) -> tuple[str, str, list[str]]:
    """Open ``page`` once; return stdout, stderr and the URLs the page itself requested."""
    net = tmp / f"{name}.netlog.json"
    cmd = [
        exe,
        *FLAGS,
        f"--user-data-dir={tmp / (name + '-profile')}",
        f"--log-net-log={net}",
        *extra,
        page.as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    events = json.loads(net.read_text(encoding="utf-8"))["events"]
    urls = [
        e["params"]["url"]
        for e in events
        if "url" in e.get("params", {}) and "file://" in str(e["params"].get("network_isolation_key", ""))
    ]
    return res.stdout, res.stderr, urls


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Refused to" in line]


def test_report_renders_offline_in_headless_chromium(imbalanced_run: Path, tmp_path: Path) -> None:
    exe = _chromium()
    evil = "<script>alert(1)</script>"
    diag = Diagnosis(
        "x",
        [
            Finding(
                "data_imbalance",
                Severity.ERROR,
                f"class {evil} is rare",
                {"class": evil},
                [RemedySuggestion.of("class_weights", "rare classes count more")],
            )
        ],
    )
    page = report(imbalanced_run, tmp_path / "report.html", diagnosis=diag)

    shot = tmp_path / "shot.png"
    _, stderr, urls = _run(exe, page, tmp_path, "shot", f"--screenshot={shot}", "--window-size=1280,2000")
    assert urls == [], f"the report requested {urls}"
    assert _console_lines(stderr) == []
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1280)
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 500, f"only {len(colours)} colours: blank or unstyled page"
    assert (img.min(axis=2) < 235).mean() > 0.08  # plenty of ink, not an empty white page

    dom, stderr, urls = _run(exe, page, tmp_path, "dom", "--dump-dom")
    assert urls == [] and _console_lines(stderr) == []
    assert "<script" not in dom.lower()  # the hostile names stayed text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert dom.count("<svg") >= 10
    for title in ("Summary", "Loss and metrics", "Gradient flow", "Classes and predictions"):
        assert f"<h3>{title}</h3>" in dom


def test_the_browser_checks_can_fail(tmp_path: Path) -> None:
    """Control: a page that fetches a remote image and logs a console error trips both detectors."""
    exe = _chromium()
    page = tmp_path / "control.html"
    page.write_text(
        '<!DOCTYPE html><html><body><p>control</p><img src="http://127.0.0.1:9/x.png">'
        '<script>console.error("control error")</script></body></html>',
        encoding="utf-8",
    )
    _, stderr, urls = _run(exe, page, tmp_path, "control", "--dump-dom")
    assert "http://127.0.0.1:9/x.png" in urls
    assert any("control error" in line for line in _console_lines(stderr))
