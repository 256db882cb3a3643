"""`trainmedic demo` end to end: a faulty run is diagnosed, fixed, verified and reported."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from trainmedic.cli import app


def test_demo_diagnoses_fixes_and_reports(tmp_path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--budget", "3"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "Diagnosis of the faulty run" in text and "What autofix tried" in text
    assert "vanishing_gradient" in text  # the deep sigmoid MLP's root cause is named
    report = out / "report.html"
    assert report.is_file() and report.stat().st_size > 50_000
    html = report.read_text()
    assert "trial-00" in html
    # one offline file: inline scripts only (the interactive charts, allowed by the CSP's hashes), nothing fetched
    assert "<script src" not in html and "Content-Security-Policy" in html
    assert "http://" not in html.split("</head>")[0] and "https://" not in html.split("</head>")[0]
    log = json.loads((out / "autofix" / "autofix.json").read_text())
    trials = log["trials"]
    assert len(trials) >= 2 and trials[0]["metric_after"] < 0.5  # the faulty baseline really is faulty
    assert (out / "autofix" / "best" / "model.pt").is_file()
    best = max(t["metric_after"] for t in trials if t["metric_after"] is not None)
    assert best > trials[0]["metric_after"] + 0.3  # the kept fix really helped on validation data
