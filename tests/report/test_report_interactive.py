"""The interactive layer's data: safe JSON, compact numbers, epoch alignment, the CLI's serve command."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from report_runs import write_tiny_run

from trainmedic.report.interactive import encode, nums, script_hash


def test_encode_cannot_close_its_script_element() -> None:
    hostile = {"label": "</script><script>alert(1)</script>&amp;\u2028\u2029"}
    text = encode(hostile)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == hostile  # and it decodes to exactly the user's string


def test_a_stray_nan_becomes_a_gap_not_a_broken_page() -> None:
    assert json.loads(encode({"hline": [float("nan"), "t"], "band": (1e-4, float("inf"))})) == {
        "hline": [None, "t"],
        "band": [0.0001, None],
    }


def test_numbers_are_short_and_gaps_are_null() -> None:
    assert nums([120.0, 0.123456789, np.nan, np.inf, -2.5e-7]) == [120, 0.12346, None, None, -2.5e-07]
    assert json.dumps(nums(np.arange(3, dtype=np.float64))) == "[0, 1, 2]"


def test_script_hash_is_the_csp_sha256_of_the_text() -> None:
    import base64
    import hashlib

    want = base64.b64encode(hashlib.sha256(b"x = 1").digest()).decode()
    assert script_hash("x = 1") == f"'sha256-{want}'"


def test_trainmedic_serve_binds_localhost_and_serves_the_live_page(tmp_path: Path) -> None:
    run = write_tiny_run(tmp_path / "run", "tiny <b>run</b>")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainmedic.cli", "serve", str(run), "--port", "0", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        port = int(m.group(1))
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        con.request("GET", "/")
        res = con.getresponse()
        html = res.read().decode()
        assert res.status == 200 and res.getheader("Cache-Control") == "no-store"
        assert "connect-src 'self'" in html and "tiny &lt;b&gt;run&lt;/b&gt;" in html
        con.request("GET", "/api/live")
        doc = json.loads(con.getresponse().read())
        assert doc["runs"] == [{"label": "tiny <b>run</b>", "steps": 30, "status": "closed"}]
        assert any(k.endswith("-loss-steps") for k in doc["charts"])
        con.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_a_missing_run_directory(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out = run_cli(["serve", str(tmp_path / "nope"), "--port", "0"])
    assert code == 2 and "does not exist" in out and "Traceback" not in out


def test_running_training_metrics_share_the_axes_with_validation(tmp_path: Path) -> None:
    """No clean training pass: the running metrics of run.log(outputs=, targets=) are the training curve."""
    import torch
    from torch import nn

    import trainmedic as tm
    from trainmedic.report import report

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run = tm.watch(model, opt, run_dir=tmp_path / "run", quiet=True)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    xv, yv = torch.randn(128, 8), torch.randint(0, 3, (128,))
    for _ in range(3):
        for i in range(0, 256, 32):
            opt.zero_grad()
            out = model(x[i : i + 32])
            loss = nn.functional.cross_entropy(out, y[i : i + 32])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=y[i : i + 32])
        with torch.no_grad():
            run.evaluate("val", yv, model(xv), loss=nn.functional.cross_entropy(model(xv), yv))
    run.close()
    html = report(tmp_path / "run", tmp_path / "r.html").read_text(encoding="utf-8")
    charts = json.loads(re.search(r'id="tm-data">(.*?)</script>', html, re.S)[1])["charts"]

    def labels(key: str) -> list[str]:
        return [s["label"] for k, v in charts.items() if k.endswith(key) for s in v["series"]]

    assert labels("-loss-epochs") == ["train (running) loss", "val loss"]
    assert labels("-loss-steps") == [
        "loss per step",
        "train (running) loss (epoch end)",
        "val loss (epoch end)",
    ]
    assert labels("-metrics-epochs") == [
        "train (running) accuracy",
        "train (running) macro F1",
        "val accuracy",
        "val macro F1",
    ]
    # the running loss is the sample-weighted mean of the logged batch losses of each epoch
    with tm.open_run(tmp_path / "run") as r:
        per_step = r.scalar("loss").values
        running = r.eval_series("train_running", "loss").values
    ys = next(v for k, v in charts.items() if k.endswith("-loss-epochs"))["series"][0]["y"]
    assert np.allclose(ys, running, rtol=1e-4)
    assert np.allclose(running, per_step.reshape(3, 8).mean(axis=1), rtol=1e-4)


def test_static_report_has_no_script_at_all(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    run = write_tiny_run(tmp_path / "run", "tiny")
    code, out = run_cli(["report", str(run), "-o", str(tmp_path / "s.html"), "--static"])
    assert code == 0, out
    html = (tmp_path / "s.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "script-src 'none'" in html and "data-tm=" not in html
    assert html.count("<svg") >= 2 and "no scripts" in html
    code, out = run_cli(["report", str(run), "-o", str(tmp_path / "i.html")])
    assert code == 0 and "data-tm=" in (tmp_path / "i.html").read_text(encoding="utf-8")


def test_serve_overlays_several_runs(tmp_path: Path) -> None:
    from trainmedic.report.serve import LiveReport

    a = write_tiny_run(tmp_path / "a", "before", slope=1.0)
    b = write_tiny_run(tmp_path / "b", "after", slope=3.0)
    live = LiveReport([a, b])
    doc = json.loads(live.live())
    assert [r["label"] for r in doc["runs"]] == ["before", "after"]
    overlay = doc["charts"]["compare-loss"]
    assert [s["label"] for s in overlay["series"]] == ["before", "after"]
    assert all("xe" in s for s in overlay["series"])  # each run placed on an epoch axis by its own epochs
    # the tiny runs evaluate after steps 10, 20 and 30 (epochs 0-2); their last loss, step 29, is 2.8 epochs in
    xe = overlay["series"][0]["xe"]
    assert xe[0] == 0 and xe[-1] == 2.8
    page = live.page().decode()
    assert 'id="compare"' in page and 'data-tm="compare-loss"' in page
