"""The report in a real headless Chromium, driven over the DevTools protocol (``cdp.py``, standard library only).

What is checked, and how:
- loading: no console message, no exception, no CSP violation (all reach CDP as console/log events), and no
  request but the page itself and the ``data:`` images inside its SVGs (``Network.requestWillBeSent``);
- zoom: a mouse drag across the loss chart narrows its x range (the chart's ``data-zoom`` attribute, set from
  uPlot's scale) and changes its pixels;
- hover: moving the mouse over a chart fills the legend with the values under the cursor; over a finding's
  mark, a tooltip shows the finding's sentence; over a heatmap, the layer name and value;
- smoothing: moving the smoothing slider changes the drawn curve (the plotted values and the pixels);
- scripts off: the static SVG figures are shown, no interactive chart exists;
- escaping: a class and a run named with markup stay text and run nothing.
A control page that fetches a remote image and logs a console error proves both detectors fire.
Install Chromium with ``scripts/install_chromium.sh``; without it the tests are skipped, saying so.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cdp import Browser, chromium_path

from trainmedic.findings import Diagnosis, Finding, RemedySuggestion, Severity
from trainmedic.report import report

pytestmark = pytest.mark.browser

EVIL = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (run scripts/install_chromium.sh); browser checks not run")
    b = Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def page(imbalanced_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    diag = Diagnosis(
        "x",
        [
            Finding(
                "data_imbalance",
                Severity.ERROR,
                f"class {EVIL} is rare",
                {"class": EVIL},
                [RemedySuggestion.of("class_weights", "rare classes count more")],
                step=10,
                title=f"Class {EVIL} is rare",
            )
        ],
    )
    return report(imbalanced_run, tmp_path_factory.mktemp("page") / "report.html", diagnosis=diag)


def _foreign(urls: list[str], page_url: str) -> list[str]:
    return [u for u in urls if u != page_url and not u.startswith("data:")]


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def _box(b: Browser, selector: str) -> dict[str, float]:
    """The page coordinates of the first element matching ``selector``, scrolled into view."""
    return b.eval(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
        " const r = e.getBoundingClientRect(); return {x: r.left, y: r.top, width: r.width, height: r.height}; })()"
    )


def _chart(b: Browser, key: str) -> str:
    """The id of the chart whose id ends with ``key``."""
    ids = b.eval("Object.keys(window.trainmedic.charts)")
    found = [i for i in ids if i.endswith(key)]
    assert found, (key, ids)
    return found[0]


def test_interactive_report_loads_offline_without_console_errors(browser: Browser, page: Path) -> None:
    b = browser
    b.navigate(page.as_uri())
    b.drain(1.0)
    assert b.console_problems() == []
    assert _foreign(b.requests(), page.as_uri()) == []
    kinds = b.eval("[...document.querySelectorAll('.tm-ichart')].map(e => e.dataset.kind)")
    assert kinds.count("lines") >= 6 and "heatmap" in kinds and "quantiles" in kinds
    # with scripts on, the static twin of every interactive chart is hidden, the others stay
    hidden = b.eval(
        "[...document.querySelectorAll('figure.tm-has-i > svg')].filter(e => e.offsetHeight > 0).length"
    )
    assert hidden == 0
    # the hostile names are text: nothing ran, no element came from them
    assert b.eval("window.__pwned === undefined") is True
    assert b.eval("document.querySelectorAll('img[src=x]').length") == 0
    assert b.eval("document.querySelectorAll('script').length") == 2  # the data block and the one script
    assert EVIL in b.eval("document.body.innerText")


def test_zoom_hover_markers_and_smoothing_change_what_is_shown(browser: Browser, page: Path) -> None:
    b = browser
    b.navigate(page.as_uri())
    cid = _chart(b, "-loss-steps")
    sel = f'figure[data-tm="{cid}"] .u-over'
    box = _box(b, sel)
    clip = {"x": box["x"] - 70, "y": box["y"] - 10, "width": box["width"] + 80, "height": box["height"] + 40}

    def shot() -> np.ndarray:
        s = b.call("Page.getLayoutMetrics")["cssVisualViewport"]
        return _png(b.screenshot({**clip, "x": clip["x"] + s["pageX"], "y": clip["y"] + s["pageY"]}))

    before = shot()
    values_before = b.eval(
        f"[...document.querySelectorAll('figure[data-tm=\"{cid}\"] .u-legend .u-value')].map(e => e.textContent)"
    )
    # hover: the legend reads the values under the cursor
    b.mouse("mouseMoved", box["x"] + box["width"] * 0.4, box["y"] + box["height"] / 2)
    values_hover = b.eval(
        f"[...document.querySelectorAll('figure[data-tm=\"{cid}\"] .u-legend .u-value')].map(e => e.textContent)"
    )
    assert values_hover != values_before
    assert any(v.replace(".", "", 1).replace("e-", "", 1).isdigit() for v in values_hover[1:]), values_hover
    # the finding's mark: hovering it shows the finding's sentence, as text
    mx = b.eval(f"window.trainmedic.charts[{json.dumps(cid)}].plot.valToPos(10, 'x')")
    b.mouse("mouseMoved", box["x"] + mx, box["y"] + box["height"] / 2)
    tip = b.eval(f"document.querySelector('figure[data-tm=\"{cid}\"] .tm-tip').innerText")
    assert "data_imbalance" in tip and f"Class {EVIL} is rare" in tip
    b.mouse("mouseMoved", box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
    # zoom: a drag narrows the x range, and the pixels change
    scale0 = b.eval(
        f"(c => [c.plot.scales.x.min, c.plot.scales.x.max])(window.trainmedic.charts[{json.dumps(cid)}])"
    )
    b.drag(box["x"] + box["width"] * 0.1, box["y"] + 20, box["x"] + box["width"] * 0.4, box["y"] + 20)
    scale1 = b.eval(
        f"(c => [c.plot.scales.x.min, c.plot.scales.x.max])(window.trainmedic.charts[{json.dumps(cid)}])"
    )
    assert scale1[1] - scale1[0] < 0.5 * (scale0[1] - scale0[0]), (scale0, scale1)
    assert b.eval(f"document.querySelector('figure[data-tm=\"{cid}\"] .tm-ichart').dataset.zoom") is not None
    b.mouse("mouseMoved", 5, 5)
    zoomed = shot()
    assert np.abs(zoomed - before).sum(axis=2).astype(bool).mean() > 0.05
    # smoothing: the slider changes the plotted curve and its pixels
    raw = b.eval(f"window.trainmedic.charts[{json.dumps(cid)}].plot.data[1].filter(v => v !== null)")
    b.eval(
        f"(() => {{ const r = document.querySelector('figure[data-tm=\"{cid}\"] .tm-smooth'); r.value = '0.9';"
        " r.dispatchEvent(new Event('input')); })()"
    )
    smooth = b.eval(f"window.trainmedic.charts[{json.dumps(cid)}].plot.data[1].filter(v => v !== null)")
    assert len(raw) == len(smooth) and len(raw) >= 10
    # an EMA is smoother: the mean step-to-step change shrinks a lot
    assert np.abs(np.diff(smooth)).mean() < 0.5 * np.abs(np.diff(raw)).mean()
    smoothed = shot()
    assert np.abs(smoothed - before).sum(axis=2).astype(bool).mean() > 0.02
    b.drain(0.3)
    assert b.console_problems() == []


def test_heatmap_hover_names_the_layer_and_value(browser: Browser, page: Path) -> None:
    b = browser
    b.navigate(page.as_uri())
    cid = _chart(b, "-grad-heatmap")
    box = _box(b, f'figure[data-tm="{cid}"] canvas.tm-heat')
    readout = f"document.querySelector('figure[data-tm=\"{cid}\"] .tm-readout').textContent"
    assert b.eval(readout).startswith("hover")
    b.mouse("mouseMoved", box["x"] + box["width"] * 0.6, box["y"] + 10)
    text = b.eval(readout)
    layers = b.eval(f"window.trainmedic.charts[{json.dumps(cid)}].spec.layers")
    assert text.startswith(f"layer {layers[0]} · step ") and "gradient L2 norm" in text, text
    # the quantile bands: choosing another layer redraws them
    qid = _chart(b, "-weight-quantile-profile")
    first = b.eval(f"window.trainmedic.charts[{json.dumps(qid)}].plot.data[3].slice()")
    b.eval(
        f"(() => {{ const s = document.querySelector('figure[data-tm=\"{qid}\"] .tm-layer'); s.value = '0';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    second = b.eval(f"window.trainmedic.charts[{json.dumps(qid)}].plot.data[3].slice()")
    assert first != second and all(v is None or np.isfinite(v) for v in second)


def test_with_scripts_off_the_static_figures_remain(browser: Browser, page: Path) -> None:
    b = browser
    b.call("Emulation.setScriptExecutionDisabled", value=True)
    try:
        b.navigate(page.as_uri())
        assert b.eval("1 + 1") == 2  # CDP may still evaluate; the page's own script did not run
        assert b.eval("document.querySelectorAll('.tm-ichart').length") == 0
        assert b.eval("window.trainmedic === undefined") is True
        shown = b.eval(
            "[...document.querySelectorAll('figure.chart > svg')].filter(e => e.getBoundingClientRect().height > 50).length"
        )
        assert shown >= 10
        for title in ("Summary", "Loss and metrics", "Gradient flow", "Classes and predictions"):
            assert b.eval(
                f"[...document.querySelectorAll('h3')].some(h => h.textContent === {json.dumps(title)})"
            )
    finally:
        b.call("Emulation.setScriptExecutionDisabled", value=False)


def test_the_browser_checks_can_fail(browser: Browser, tmp_path: Path) -> None:
    """Control: a page that fetches a remote image and logs a console error trips both detectors."""
    page = tmp_path / "control.html"
    page.write_text(
        '<!DOCTYPE html><html><body><p>control</p><img src="http://127.0.0.1:9/x.png">'
        '<script>console.error("control error")</script></body></html>',
        encoding="utf-8",
    )
    browser.navigate(page.as_uri())
    browser.drain(0.5)
    assert "http://127.0.0.1:9/x.png" in _foreign(browser.requests(), page.as_uri())
    assert any("control error" in line for line in browser.console_problems())


def test_runs_side_by_side_overlay_with_a_legend_aligned_by_step_or_epoch(
    browser: Browser, healthy_run: Path, imbalanced_run: Path, tmp_path: Path
) -> None:
    page = report([healthy_run, imbalanced_run], tmp_path / "compare.html")
    b = browser
    b.navigate(page.as_uri())
    b.drain(0.5)
    assert b.console_problems() == [] and _foreign(b.requests(), page.as_uri()) == []
    cid = "compare-loss"
    legend = b.eval(
        f"[...document.querySelectorAll('figure[data-tm=\"{cid}\"] .u-legend .u-label')].map(e => e.textContent)"
    )
    assert legend[1:] == ["healthy", "imbalanced <script>alert(1)</script>"]  # one entry per run, as text
    assert b.eval("document.querySelectorAll('.u-legend script').length") == 0
    x_by_step = b.eval(
        f"(c => [c.plot.scales.x.min, c.plot.scales.x.max])(window.trainmedic.charts['{cid}'])"
    )
    b.eval(
        f"(() => {{ const s = document.querySelector('figure[data-tm=\"{cid}\"] .tm-align'); s.value = 'epoch';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    x_by_epoch = b.eval(
        f"(c => [c.plot.scales.x.min, c.plot.scales.x.max])(window.trainmedic.charts['{cid}'])"
    )
    # healthy: 6 epochs of 20 steps, imbalanced: 4 epochs of 2 steps; by epoch both end at their epoch count
    assert x_by_step[1] > 100 and 5.5 <= x_by_epoch[1] <= 6.6, (x_by_step, x_by_epoch)
    axis = b.eval(f"window.trainmedic.charts['{cid}'].plot.axes[0].label")
    assert axis.startswith("epoch")


def test_the_log_toggle_switches_the_axis(browser: Browser, page: Path) -> None:
    b = browser
    b.navigate(page.as_uri())
    cid = _chart(b, "-grad-norm")
    distr = f"window.trainmedic.charts[{json.dumps(cid)}].plot.scales.y.distr"
    assert b.eval(distr) == 3  # gradient norms start on a log axis
    b.eval(
        f"(() => {{ const c = document.querySelector('figure[data-tm=\"{cid}\"] .tm-log'); c.checked = false;"
        " c.dispatchEvent(new Event('change')); })()"
    )
    assert b.eval(distr) == 1
    label = b.eval(f"window.trainmedic.charts[{json.dumps(cid)}].plot.axes[1].label")
    assert "(log)" not in label


def test_hostile_layer_names_stay_text_in_every_interactive_part(browser: Browser, tmp_path: Path) -> None:
    """Layer names reach the heatmap read-out, the quantile layer menu and the ratio legend: all as text."""
    from trainmedic.probes.quantiles import QUANTILE_STATS
    from trainmedic.store import RunWriter

    layers = [EVIL, "fc2", "<b>fc3</b>"]
    w = RunWriter(tmp_path / "run", mode="overwrite")
    w.set_meta(name=f"layers {EVIL}", status="closed", steps=40, batch_size=8)
    steps = np.arange(40)
    w.add_scalars("loss", steps, 2.0 * np.exp(-steps / 10))
    for stat in ("grad_norm", "update_ratio", *QUANTILE_STATS):
        w.set_layer_set(stat, layers)
    for k in range(0, 40, 5):
        w.add_layer_values("grad_norm", k, np.array([0.1, 1.0, 2.0]) * (1 + k))
        w.add_layer_values("update_ratio", k, np.array([1e-3, 2e-3, 5e-4]))
        for i, q in enumerate(QUANTILE_STATS):
            w.add_layer_values(q, k, np.full(3, float(i % 5 - 2) * (1 + k / 40)))
        w.add_scalar("wall_time", k, 0.01 * k)
    w.close()
    page = report(tmp_path / "run", tmp_path / "r.html", diagnosis=Diagnosis("x"))
    b = browser
    b.navigate(page.as_uri())
    b.drain(0.5)
    assert b.console_problems() == [] and b.eval("window.__pwned === undefined") is True
    assert b.eval("document.querySelectorAll('img[src=x], b').length") == 0  # no element from a name
    options = b.eval("[...document.querySelectorAll('.tm-layer option')].map(o => o.textContent)")
    assert options == layers
    ratio = _chart(b, "-update-ratio-steps")
    legend = b.eval(
        f"[...document.querySelectorAll('figure[data-tm=\"{ratio}\"] .u-legend .u-label')].map(e => e.textContent)"
    )
    assert legend[1:] == layers
    heat = _chart(b, "-grad-heatmap")
    box = _box(b, f'figure[data-tm="{heat}"] canvas.tm-heat')
    b.mouse("mouseMoved", box["x"] + box["width"] * 0.6, box["y"] + 8)
    text = b.eval(f"document.querySelector('figure[data-tm=\"{heat}\"] .tm-readout').textContent")
    assert text.startswith(f"layer {EVIL} · step "), text


def test_the_csp_refuses_any_other_inline_script(browser: Browser, tmp_path: Path) -> None:
    """Were an escape ever missed, the injected script would not run: the policy allows only the report's own."""
    from trainmedic.report.html import page as build_page

    html = build_page(
        "t",
        "s",
        [],
        '<p>body</p><script>window.__pwned = 1</script><img src="http://127.0.0.1:9/x.png">',
        "f",
        data={"charts": {}},
        live={"url": "/api/live", "interval_ms": 60000},
    )
    path = tmp_path / "csp.html"
    path.write_text(html, encoding="utf-8")
    b = browser
    b.navigate(path.as_uri())
    b.drain(0.5)
    assert b.eval("window.__pwned === undefined") is True
    assert b.eval("typeof uPlot") == "function"  # the allowed script did run
    assert any("Content Security Policy" in line for line in b.console_problems()), b.console_problems()
    # img-src allows data: only: Chromium announces the image request and blocks it for the policy
    ids = [
        e["params"]["requestId"]
        for e in b.events
        if e["method"] == "Network.requestWillBeSent"
        and e["params"]["request"]["url"] == "http://127.0.0.1:9/x.png"
    ]
    blocked = {
        e["params"]["requestId"]
        for e in b.events
        if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason") == "csp"
    }
    assert ids and set(ids) <= blocked, (ids, blocked)


def test_hovering_one_step_chart_shows_the_step_on_the_others(browser: Browser, page: Path) -> None:
    b = browser
    b.navigate(page.as_uri())
    loss, grad = _chart(b, "-loss-steps"), _chart(b, "-grad-norm")
    box = _box(b, f'figure[data-tm="{loss}"] .u-over')
    b.mouse("mouseMoved", box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    idx = f"window.trainmedic.charts[{json.dumps(grad)}].plot.cursor.idx"
    assert b.eval(idx) is not None  # the gradient-norm chart's cursor followed
    value = b.eval(
        f"document.querySelectorAll('figure[data-tm=\"{grad}\"] .u-legend .u-value')[1].textContent"
    )
    assert value not in ("", "–", "--"), value
