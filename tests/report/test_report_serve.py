"""``trainmedic serve`` beside a real training process: new steps show up, the writer never waits or fails."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import trainmedic as tm
from trainmedic.report.serve import LiveReport, LiveServer

EVIL = "<script>window.__pwned=1</script>"

TRAIN = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from torch import nn
    import trainmedic as tm

    run_dir, stop = Path(sys.argv[1]), Path(sys.argv[2])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(512, 16), torch.randint(0, 4, (512,))
    run = tm.watch(model, opt, run_dir=run_dir, quiet=True, flush_secs=0.1, every=5,
                   name=RUN_NAME, batch_size=32)
    worst = 0.0
    step = 0
    while not stop.exists() and step < 20000:
        t0 = time.perf_counter()
        idx = torch.randint(0, 512, (32,))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        run.log(loss=loss)
        step += 1
        if step % 50 == 0:
            with torch.no_grad():
                run.evaluate("val", y, model(x), loss=nn.functional.cross_entropy(model(x), y))
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.004)
    run.close()
    print(json.dumps({"steps": step, "worst_step_s": worst}))
    """
).replace("RUN_NAME", repr(f"live {EVIL}"))


@contextmanager
def training(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    """A watched training loop in another process that runs until ``stop`` exists."""
    run_dir, stop = tmp_path / "run", tmp_path / "stop"
    script = tmp_path / "train.py"
    script.write_text(TRAIN, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (run_dir / "run.sqlite").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "the training process never created its run"
            time.sleep(0.1)
        yield run_dir, stop, proc
    finally:
        stop.touch()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(server: LiveServer, path: str, host: str | None = None) -> tuple[int, bytes]:
    con = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        con.request("GET", path, headers={"Host": host or f"127.0.0.1:{server.port}"})
        res = con.getresponse()
        return res.status, res.read()
    finally:
        con.close()


def _live(server: LiveServer) -> dict:
    status, body = _get(server, "/api/live")
    assert status == 200, body[:500]
    return json.loads(body)


def _page_steps(html: str) -> int:
    m = re.search(r"<td>steps</td><td>(\d+)</td>", html)
    assert m, "the summary has no step count"
    return int(m.group(1))


def _wait(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def test_serve_shows_new_steps_while_training_and_never_blocks_the_writer(tmp_path: Path) -> None:
    with training(tmp_path) as (run_dir, stop, proc):
        _wait(lambda: RunSteps(run_dir) >= 20)
        live = LiveReport([run_dir], interval_s=0.5, page_every_s=1.0)
        with LiveServer(live, port=0) as server:
            assert server.host == "127.0.0.1"
            # hammer the server while the run trains: every request opens the database read-only
            errors: list[str] = []
            done = threading.Event()

            def hammer() -> None:
                while not done.is_set():  # the live document: what a page polls (the full page is rarer)
                    status, body = _get(server, "/api/live")
                    if status != 200:
                        errors.append(f"{status} {body[:200]!r}")

            threads = [threading.Thread(target=hammer) for _ in range(2)]
            for t in threads:
                t.start()
            try:
                first = _live(server)
                status, page1 = _get(server, "/")
                assert status == 200
                html1 = page1.decode()
                steps1 = _page_steps(html1)
                assert first["runs"][0]["status"] == "running" and first["runs"][0]["steps"] >= 20
                # a refresh later: more steps, in the page and in the live document
                _wait(lambda: _live(server)["runs"][0]["steps"] > first["runs"][0]["steps"] + 30)
                _wait(lambda: _page_steps(_get(server, "/")[1].decode()) > steps1)
                later = _live(server)
                assert later["version"] != first["version"]
                loss = later["charts"][next(k for k in later["charts"] if k.endswith("-loss-steps"))]
                assert max(v for v in loss["series"][0]["x"] if v is not None) > max(
                    v
                    for v in first["charts"][next(k for k in first["charts"] if k.endswith("-loss-steps"))][
                        "series"
                    ][0]["x"]
                    if v is not None
                )
            finally:
                done.set()
                for t in threads:
                    t.join()
            assert errors == []
            # the live page: polling allowed to its own origin only; user strings escaped
            assert "connect-src 'self'" in html1 and 'id="tm-live"' in html1
            assert "live &lt;script&gt;window.__pwned=1&lt;/script&gt;" in html1
            # only this host may ask (no DNS rebinding), only two addresses exist
            assert _get(server, "/", host="evil.example:80")[0] == 403
            assert _get(server, "/run.sqlite")[0] == 404
            stop.touch()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
            result = json.loads(out.strip().splitlines()[-1])
            _wait(lambda: _live(server)["runs"][0]["status"] == "closed")
            assert _live(server)["runs"][0]["steps"] == result["steps"]
    # the writer never failed: every step's loss is stored, no internal error, closed cleanly
    with tm.open_run(run_dir) as r:
        assert r.meta["status"] == "closed"
        assert len(r.scalar("loss")) == result["steps"] == r.meta["steps"]
        assert r.events("internal_error") == []


def RunSteps(run_dir: Path) -> int:  # noqa: N802 -- reads like a quantity in the wait above
    try:
        with tm.open_run(run_dir) as r:
            return int(r.meta.get("steps") or 0)
    except Exception:  # not committed yet
        return 0


@pytest.mark.browser
def test_the_live_page_updates_itself_in_chromium(tmp_path: Path) -> None:
    from cdp import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("Chromium is not installed (run scripts/install_chromium.sh); browser check not run")
    with training(tmp_path) as (run_dir, stop, proc):
        _wait(lambda: RunSteps(run_dir) >= 20)
        with LiveServer(LiveReport([run_dir], interval_s=0.5), port=0) as server:
            b = Browser()
            try:
                b.navigate(server.url)
                status = "document.getElementById('tm-live-status').textContent"
                _wait(lambda: "step" in b.eval(status))
                m = re.search(r"step (\d+)", b.eval(status))
                assert m
                shown = int(m.group(1))
                # no reload: the page polls and redraws, the step count grows
                _wait(lambda: int(re.search(r"step (\d+)", b.eval(status)).group(1)) > shown + 20)
                cid = b.eval("Object.keys(window.trainmedic.charts).find(k => k.endsWith('-loss-steps'))")
                n_points = b.eval(f"window.trainmedic.charts[{json.dumps(cid)}].plot.data[0].length")
                assert n_points > 20
                # a zoom survives the live redraws (the chart is rebuilt with new data every update)
                scale = f"(c => [c.plot.scales.x.min, c.plot.scales.x.max])(window.trainmedic.charts[{json.dumps(cid)}])"
                box = b.eval(
                    f"(() => {{ const e = document.querySelector('figure[data-tm=\"{cid}\"] .u-over');"
                    " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                    " return {x: r.left, y: r.top, width: r.width}; })()"
                )
                b.drag(box["x"] + 5, box["y"] + 20, box["x"] + box["width"] * 0.3, box["y"] + 20)
                zoomed = b.eval(scale)
                version = b.eval("document.getElementById('tm-live-status').dataset.version")
                _wait(lambda: b.eval("document.getElementById('tm-live-status').dataset.version") != version)
                after = b.eval(scale)
                assert after == pytest.approx(zoomed, rel=1e-6), (zoomed, after)
                b.drain(0.5)
                assert b.console_problems() == []
                foreign = [u for u in b.requests() if not u.startswith((server.url, "data:"))]
                assert foreign == [], foreign
                assert b.eval("window.__pwned === undefined") is True
            finally:
                b.close()


def test_live_findings_appear_as_they_fire_and_the_writer_keeps_committing(tmp_path: Path) -> None:
    """A writer that stays open (as a training run does): each commit is seen, a live finding as it lands."""
    import numpy as np

    from trainmedic.findings import Finding, Severity
    from trainmedic.store import RunWriter

    w = RunWriter(tmp_path / "run", mode="overwrite")
    w.set_meta(name="open", status="running", steps=10)
    w.add_scalars("loss", np.arange(10), np.linspace(2, 1, 10))
    w.flush()
    live = LiveReport([tmp_path / "run"], interval_s=0.5)
    doc = json.loads(live.live())
    assert doc["runs"][0] == {"label": "open", "steps": 10, "status": "running"} and doc["findings"] == []
    assert json.loads(live.live())["version"] == doc["version"]  # nothing new: the cached document
    # the reader holds nothing between requests: the writer commits at once, many times
    t0 = time.perf_counter()
    for k in range(10, 60):
        w.add_scalar("loss", k, 1.0)
        w.set_meta(steps=k + 1)
        w.flush()
        if k % 10 == 0:
            live.live()
    assert time.perf_counter() - t0 < 30  # generous: no 10 s busy-timeout was ever hit
    f = Finding("nonfinite", Severity.ERROR, f"loss became NaN at step 55 {EVIL}", step=55, source="live")
    f.title = f"Non-finite loss {EVIL}"
    w.add_event("live_finding", f.message, step=55, code=f.code, severity="error", data=f.to_dict())
    w.flush()
    doc = json.loads(live.live())
    assert doc["runs"][0]["steps"] == 60
    assert doc["findings"] == [
        {
            "run": "open",
            "code": "nonfinite",
            "severity": "error",
            "title": f"Non-finite loss {EVIL}",
            "step": 55,
        }
    ]
    page = live.page().decode()
    assert "Non-finite loss &lt;script&gt;" in page and EVIL not in page.split('id="tm-data"')[0]
    w.close()
