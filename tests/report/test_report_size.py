"""A 100k-step, 50-layer run: the interactive report stays under 5 MB and keeps what matters."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np

from trainmedic.findings import Diagnosis, Finding, Severity
from trainmedic.report import report

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "report_bench.py"


def _write_run():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("report_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.write_run


def test_a_100k_step_50_layer_report_is_under_5_mb(tmp_path: Path) -> None:
    steps, layers = 100_000, 50
    _write_run()(tmp_path / "run", steps, layers)
    diag = Diagnosis("big", [Finding("exploding_gradient", Severity.ERROR, "spike", step=steps * 3 // 4)])
    html = report(tmp_path / "run", tmp_path / "r.html", diagnosis=diag).read_text(encoding="utf-8")
    size = len(html.encode("utf-8"))
    assert size < 5_000_000, f"{size / 1e6:.2f} MB"
    data = json.loads(
        re.search(r'<script type="application/json" id="tm-data">(.*?)</script>', html, re.S)[1]
    )
    charts = data["charts"]
    for key in (
        "loss-steps",
        "grad-norm",
        "grad-heatmap",
        "update-ratio-steps",
        "step-time",
        "throughput",
        "lr",
    ):
        assert any(k.endswith(key) for k in charts), key
    loss = next(v for k, v in charts.items() if k.endswith("-loss-steps"))["series"][0]
    assert len(loss["x"]) <= 2000 and max(loss["x"]) >= steps - 200  # the whole run, in 100-step buckets
    y = np.array([np.nan if v is None else v for v in loss["y"]])
    x = np.array(loss["x"])
    spike = (x >= steps * 3 // 4) & (x < steps * 3 // 4 + 50)
    assert spike.any() and np.nanmax(y[spike]) > 10 * np.nanmedian(y)  # the 50-step spike survived
    heat = next(v for k, v in charts.items() if k.endswith("-grad-heatmap"))
    assert len(heat["layers"]) == layers and len(heat["steps"]) <= 400
    assert len(heat["values"]) == layers * len(heat["steps"])
    bands = next(v for k, v in charts.items() if v["kind"] == "quantiles")
    assert len(bands["steps"]) <= 200 and set(bands["kinds"]) == {"weights", "gradients"}
