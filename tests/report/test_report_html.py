"""tm.report on real recorded runs: sections present, findings listed and marked, escaping, offline page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from report_runs import write_tiny_run
from torch import nn

import trainmedic as tm
from trainmedic.errors import TrainmedicError
from trainmedic.findings import Diagnosis, Finding, RemedySuggestion, Severity
from trainmedic.report import report
from trainmedic.store import RunReader

EVIL = "<script>alert(1)</script>"  # the class name and run-name suffix used by the imbalanced run


def _svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, flags=re.S)


def _section(html: str, anchor_suffix: str) -> str:
    m = re.search(rf'<section id="[^"]*-{anchor_suffix}">(.*?)</section>', html, flags=re.S)
    assert m, f"section {anchor_suffix} missing"
    return m.group(1)


def _scripts(html: str) -> tuple[str, str, str]:
    """(page without its scripts, the JSON data block, the one inline script); asserts there are only those."""
    blocks = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert [attrs for attrs, _ in blocks] == [' type="application/json" id="tm-data"', ""], [
        a for a, _ in blocks
    ]
    rest = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)
    return rest, blocks[0][1], blocks[1][1]


def _assert_offline(html: str) -> None:
    """One inline script allowed by its hash, a JSON data block, no external resource of any kind."""
    import base64
    import hashlib

    rest, data, script = _scripts(html)
    assert "<script" not in rest.lower()
    assert "<" not in data and ">" not in data and "&" not in data  # the JSON cannot close its element
    json.loads(data)
    m = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert m, "no CSP"
    policy = m.group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy
    assert "connect-src" not in policy and "unsafe-eval" not in policy  # the offline file fetches nothing
    # The only URLs allowed are XML namespace names inside the SVGs, which are never fetched.
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", rest))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert set(re.findall(r"https?://[^\s\"'<>)]+", script)) <= {
        "https://github.com/leeoniya/uPlot"
    }  # licence
    assert "fetch(" not in script.replace("fetch(live.url", "")  # only the live view polls
    # Links are in-page anchors or inline data (heatmap rasters); url() only points at in-SVG clip paths.
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#|data:image/png;base64,)""", rest), (
        "external src/href"
    )
    assert "@import" not in html and not re.search(r"url\((?!#)", rest)


def _overfit_diagnosis(run_dir: Path) -> Diagnosis:
    """What the overfitting check would say, computed from the run itself (best val-loss epoch)."""
    with RunReader(run_dir) as r:
        vl = r.eval_series("val", "loss")
        best = int(vl.steps[int(np.argmin(vl.values))])
        rise = float(vl.values[-1] - vl.values.min())
    return Diagnosis(
        str(run_dir),
        [
            Finding(
                "overfitting",
                Severity.WARNING,
                f"val loss rose by {rise:.3f} since its best epoch {best} (threshold 0.1)",
                {"best_epoch": best, "val_loss_rise": rise, "threshold": 0.1},
                [
                    RemedySuggestion.of("early_stopping", "stop at the best epoch"),
                    RemedySuggestion.of("add_dropout"),
                ],
                epoch=best,
                split="val",
            )
        ],
    )


def test_healthy_run_has_every_section(healthy_run: Path, tmp_path: Path) -> None:
    diag = Diagnosis(str(healthy_run), [Finding("low_accuracy", Severity.INFO, "val accuracy 0.93 ≥ 0.60")])
    out = report(healthy_run, tmp_path / "r.html", diagnosis=diag)
    html = out.read_text(encoding="utf-8")
    _assert_offline(html)
    for title in (
        "Summary",
        "Loss and metrics",
        "Gradient flow",
        "Updates and weights",
        "Activations",
        "Classes and predictions",
        "Hyperparameters and configuration",
        "Model",
    ):
        assert f"<h3>{title}</h3>" in html
    assert "Healthy: no problems found" in html
    assert "val accuracy 0.93" in html  # the info finding is listed with its message
    for chart_title in (
        "Loss over training steps",
        "Loss per epoch by split",
        "Metrics per epoch by split",
        "Gradient flow: per-layer gradient norm over time",
        "Gradient norm per layer at chosen steps",
        "Update-to-weight ratio per layer",
        "Dead and saturated units per activation layer",
        "Confusion matrix (counts)",
        "Confusion matrix (row-normalized)",
        "Precision, recall and F1 per class",
    ):
        assert chart_title in html, chart_title
    assert len(_svgs(html)) >= 12
    # Hyperparameters and model summary come from the run's meta.
    config = _section(html, "config")
    assert "Adam" in config and "0.003" in config and "<td>epochs</td><td>6</td>" in config
    assert "Linear" in _section(html, "model")
    # Missing records leave their section out with a reason.
    assert "Left out: no data audit was stored" in _section(html, "audit")
    assert "Left out: no autofix audit log" in _section(html, "autofix")
    assert out.stat().st_size < 2_000_000


def test_findings_are_listed_by_severity_and_marked_on_the_curves(overfit_run: Path, tmp_path: Path) -> None:
    diag = _overfit_diagnosis(overfit_run)
    best = diag.findings[0].epoch
    html = report(overfit_run, tmp_path / "r.html", diagnosis=diag).read_text(encoding="utf-8")
    summary = _section(html, "summary")
    assert 'class="verdict warning"' in summary and "1 warning: overfitting" in summary
    assert "<h3>Warnings (1)</h3>" in summary
    assert "val loss rose by" in summary and f"epoch {best}" in summary
    # remedies ranked, in the given order, with the auto flag
    assert summary.index("Stop early") < summary.index("Add or raise dropout")
    assert "auto-applicable" in summary
    assert "<td>best_epoch</td>" in summary and "<td>threshold</td>" in summary
    # the marker: a dashed line labelled with the code in the epoch charts
    curves = _section(html, "curves")
    marked = [s for s in _svgs(curves) if ">overfitting</text>" in s]
    assert len(marked) >= 2  # loss-per-epoch and metrics-per-epoch (and the step chart via the eval step)


def test_exploding_run_shows_live_alert_and_diagnosis(exploding_run: Path, tmp_path: Path) -> None:
    """No diagnosis passed: the checks judge the run when available; the live alert is shown either way."""
    with RunReader(exploding_run) as r:
        live = [e for e in r.events("live_finding") if e["code"] == "exploding_gradient"]
    assert live, "the provoking run must trip the live explosion check"
    html = report(exploding_run, tmp_path / "r.html").read_text(encoding="utf-8")
    summary = _section(html, "summary")
    assert "exploding_gradient" in summary
    grads = _section(html, "gradients")
    assert any(">exploding_gradient</text>" in s for s in _svgs(grads)), (
        "explosion not marked on the grad-norm chart"
    )
    try:
        from trainmedic.checks import diagnose  # type: ignore[attr-defined]
    except ImportError:
        assert "Left out: no diagnosis" in summary
        return
    d = diagnose(exploding_run)
    for f in d.problems:
        assert f">{f.code}<" in summary or f"{f.code}</span>" in summary, f.code
    assert 'class="verdict error"' in summary


def test_user_strings_are_escaped_in_html_and_svg(imbalanced_run: Path, tmp_path: Path) -> None:
    diag = Diagnosis(
        "x",
        [
            Finding(
                "data_imbalance",
                Severity.ERROR,
                f"class {EVIL} has 5 samples",
                {"class": EVIL, EVIL: 1},
                [RemedySuggestion.of("class_weights", EVIL)],
                layer=EVIL,
                split=EVIL,
            )
        ],
    )
    html = report(imbalanced_run, tmp_path / "r.html", diagnosis=diag).read_text(encoding="utf-8")
    _assert_offline(html)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<title>trainmedic report: imbalanced {escaped}</title>" in html
    assert f"<td>{escaped}</td>" in _section(html, "classes")  # per-class table
    svg_hits = [s for s in _svgs(html) if "&lt;script&gt;" in s]
    assert len(svg_hits) >= 3  # confusion matrices (ticks) and per-class bars
    assert html.count(escaped) >= 6


def test_dollar_signs_in_names_are_text_not_math(tmp_path: Path) -> None:
    """A class named like TeX must render as typed (matplotlib would otherwise parse it, or fail)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    run = tm.watch(model, opt, run_dir=tmp_path / "run", quiet=True, name="$\\frac{1}{0}$")
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("val", y, model(x), loss=loss, class_names=["$x^2$", "a_b"])
    run.close()
    html = report(tmp_path / "run", tmp_path / "r.html", diagnosis=Diagnosis("x")).read_text(encoding="utf-8")
    assert "could not be drawn" not in html
    assert any(">$x^2$</text>" in s for s in _svgs(html))


def test_several_runs_side_by_side(overfit_run: Path, healthy_run: Path, tmp_path: Path) -> None:
    diags = [_overfit_diagnosis(overfit_run), Diagnosis(str(healthy_run))]
    html = report([overfit_run, healthy_run], tmp_path / "r.html", diagnosis=diags).read_text(
        encoding="utf-8"
    )
    compare = re.search(r'<section id="compare">(.*?)</section>', html, flags=re.S)
    assert compare
    body = compare.group(1)
    for title in (
        "Loss per step, runs overlaid",
        "Loss per epoch, runs overlaid",
        "Held-out accuracy per epoch, runs overlaid",
    ):
        assert title in body
    overlaid = [s for s in _svgs(body) if ">overfit</text>" in s and ">healthy</text>" in s]
    assert overlaid, "both runs must be in one overlaid chart's legend"
    # findings per run: overfitting flagged for the first run only
    row = re.search(r"<tr><td>overfitting</td>(.*?)</tr>", body, flags=re.S)
    assert row and "badge warning" in row.group(1) and "<td>—</td>" in row.group(1)
    assert html.count('<details class="run"') == 2
    assert "Run 1: overfit" in html and "Run 2: healthy" in html


def test_missing_signals_leave_sections_out_with_reasons(tmp_path: Path) -> None:
    """A run without activations or evaluations, with odd audit/autofix records, still yields a report."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))  # no activation modules
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tm.watch(model, opt, run_dir=tmp_path / "run", quiet=True, activations=False)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(12):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        run.log(loss=loss)
    run.record(
        "audit",
        Diagnosis(
            "audit", [Finding("data_leakage", Severity.ERROR, "12 samples in train and val")]
        ).to_dict(),
    )
    run.record(
        "autofix",
        {
            "metric": "val_accuracy",
            "trials": [
                {
                    "index": 0,
                    "remedy": "lower_learning_rate",
                    "config_change": {"lr": [0.1, 0.03]},
                    "metric_before": 0.61,
                    "metric_after": 0.74,
                    "kept": True,
                    "diagnosis_codes": ["exploding_gradient"],
                },
                {"remedy": "add_dropout", "metric_before": 0.74, "metric_after": 0.70, "kept": False},
                {"remedy": "weight_decay"},  # most keys missing
                {"index": 4, "remedy": "batch_norm", "kept": False, "error": "RuntimeError: <shapes>"},
                "not a trial",
            ],
        },
    )
    run.close()
    html = report(tmp_path / "run", tmp_path / "r.html", diagnosis=Diagnosis("x")).read_text(encoding="utf-8")
    assert "could not be drawn" not in html
    assert "Left out: no activation statistics were recorded" in _section(html, "activations")
    assert "Left out: no classification or detection evaluations" in _section(html, "classes")
    assert "Loss over training steps" in _section(html, "curves")
    audit = _section(html, "audit")
    assert "Data audit: 1 problem(s)" in audit and "12 samples in train and val" in audit
    autofix = _section(html, "autofix")
    assert autofix.count('<tr class="kept">') == 1 and autofix.count('<tr class="rejected">') == 2
    assert "rolled back" in autofix and "weight_decay" in autofix and "0.13" in autofix  # 0.74 - 0.61
    assert "lr 0.1 → 0.03" in autofix and "exploding_gradient" in autofix
    assert "failed</span> RuntimeError: &lt;shapes&gt;" in autofix


def test_broken_diagnose_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainmedic.checks as checks

    def boom(run_dir: object) -> None:
        raise RuntimeError("checks exploded")

    monkeypatch.setattr(checks, "diagnose", boom, raising=False)
    run_dir = write_tiny_run(tmp_path / "run", "tiny")
    html = report(run_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    summary = _section(html, "summary")
    assert "Left out: no diagnosis: diagnose() failed: RuntimeError: checks exploded" in summary
    assert 'class="verdict unknown"' in summary
    assert "Loss over training steps" in html


def test_bad_arguments_are_one_line_errors(healthy_run: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainmedicError, match="does not exist"):
        report(tmp_path / "nope", tmp_path / "r.html")
    with pytest.raises(TrainmedicError, match="one entry per run"):
        report([healthy_run, healthy_run], tmp_path / "r.html", diagnosis=[Diagnosis("x")])
    with pytest.raises(TrainmedicError, match="`output` must be a file path"):
        report(healthy_run, tmp_path, diagnosis=Diagnosis("x"))
    with pytest.raises(TrainmedicError, match="at least one run"):
        report([], tmp_path / "r.html")
    with pytest.raises(TrainmedicError, match="`diagnosis` must be"):
        report(healthy_run, tmp_path / "r.html", diagnosis=42)


def test_detection_metrics_are_shown_when_recorded(tmp_path: Path) -> None:
    """Detection evaluations (lists of box dicts) give a per-class AP/precision/recall chart and a table."""
    run = tm.watch(run_dir=tmp_path / "run", quiet=True)
    gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 1])}]
    for epoch, shift in enumerate((6.0, 1.0, 0.0)):  # predictions move onto the objects
        pred = [
            {
                "boxes": torch.tensor([[shift, 0, 10 + shift, 10], [20, 20, 30, 30]]),
                "scores": torch.tensor([0.9, 0.8]),
                "labels": torch.tensor([0, 1]),
            }
        ]
        run.log(loss=1.0 / (epoch + 1))
        run.evaluate("val", gt, pred)
    run.close()
    html = report(tmp_path / "run", tmp_path / "r.html", diagnosis=Diagnosis("x")).read_text(encoding="utf-8")
    classes = _section(html, "classes")
    assert "Detection per class, split val, epoch 2" in classes
    assert "<td>map_50</td><td>1</td>" in classes
    assert "mAP@0.5" in _section(html, "curves")  # per-epoch mAP curve


def test_nonfinite_and_empty_signals_do_not_break_figures(tmp_path: Path) -> None:
    from trainmedic.store import RunWriter

    w = RunWriter(tmp_path / "run")
    loss = np.linspace(2, 1, 40)
    loss[25:] = np.nan
    loss[24] = np.inf
    w.add_scalars("loss", np.arange(40), loss)
    w.add_scalars("grad_norm", np.arange(40), np.where(np.arange(40) < 24, 1.0, np.inf))
    w.set_layer_set("grad_norm", ["a", "b"])
    w.set_layer_set("update_ratio", ["a", "b"])
    for s in range(0, 40, 10):
        w.add_layer_values("grad_norm", s, np.array([np.nan, 0.0]))
        w.add_layer_values("update_ratio", s, np.array([np.inf, np.nan]))
    w.add_eval("val", 0, 20, "accuracy", float("nan"))
    w.add_record(
        "classification", {"confusion_matrix": [[0, 0], [0, 0]], "per_class": {}}, epoch=0, split="val"
    )
    w.add_event(
        "live_finding",
        "NaN in the loss at step 25",
        step=25,
        code="nonfinite",
        severity="error",
        data=Finding("nonfinite", Severity.ERROR, "NaN in the loss at step 25", step=25).to_dict(),
    )
    w.close()
    html = report(tmp_path / "run", tmp_path / "r.html", diagnosis=Diagnosis("x")).read_text(encoding="utf-8")
    assert "could not be drawn" not in html
    assert 'class="verdict error"' in html and "NaN in the loss at step 25" in html
    assert any(">nonfinite</text>" in s for s in _svgs(_section(html, "curves")))
