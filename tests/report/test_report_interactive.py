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
