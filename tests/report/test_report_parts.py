"""The report's parts: downsampling, the live console, the CLI, and leaving the user's matplotlib alone."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from report_runs import write_tiny_run
from rich.console import Console
from typer.testing import CliRunner

from trainmedic.cli import app
from trainmedic.errors import TrainmedicError
from trainmedic.findings import Finding, Severity
from trainmedic.report.console import LiveConsole
from trainmedic.report.downsample import bucket_columns, minmax_downsample


# ---- downsampling -------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=5000),
    st.integers(min_value=4, max_value=300),
)
def test_minmax_downsampling_keeps_extremes_in_order(values: list[float], max_points: int) -> None:
    v = np.asarray(values, dtype=np.float64)
    steps = np.arange(len(v)) * 3
    xs, ys = minmax_downsample(steps, v, max_points)
    assert len(xs) <= max(max_points, 2) and len(xs) == len(ys)
    assert np.all(np.diff(xs) > 0)  # still a line in step order
    assert ys.max() == v.max() and ys.min() == v.min()  # the spike and the dip survive
    idx = xs // 3
    np.testing.assert_array_equal(v[idx], ys)  # points are real samples, not averages


def test_minmax_downsampling_of_a_100k_series_keeps_one_step_spike_and_nan_gap() -> None:
    v = np.ones(100_000)
    v[77_777] = 1e6
    v[50_000:50_100] = np.nan
    xs, ys = minmax_downsample(np.arange(100_000), v)
    assert len(xs) <= 2000
    assert 77_777 in xs and np.nanmax(ys) == 1e6
    assert np.isnan(ys[(xs >= 50_000) & (xs < 50_100)]).any()  # the gap stays a gap


def test_bucket_columns_bounds_width_and_keeps_each_layers_peak() -> None:
    rng = np.random.default_rng(0)
    vals = rng.random((10_000, 7))
    vals[4321, 5] = 50.0
    vals[:, 6] = np.nan
    steps, table = bucket_columns(np.arange(0, 100_000, 10), vals)
    assert table.shape == (len(steps), 7) and len(steps) <= 400
    assert np.nanmax(table[:, 5]) == 50.0
    np.testing.assert_allclose(np.nanmax(table[:, :5], axis=0), vals[:, :5].max(axis=0))
    assert np.isnan(table[:, 6]).all()
    assert steps[0] == 0 and np.all(np.diff(steps) > 0)


# ---- live console -------------------------------------------------------------------------------------------
def _finding() -> Finding:
    return Finding(
        "exploding_gradient",
        Severity.ERROR,
        "gradient norm 812 is 95x its running median [bold]x[/bold]",
        step=41,
    )


def test_live_console_on_a_terminal_draws_bar_metrics_and_alert() -> None:
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=120, color_system=None)
    lc = LiveConsole(total_steps=100, console=con)
    for step in range(60):
        lc.on_log(step, {"loss": 2.0 / (step + 1)})
    lc.on_evaluate("val", 0, {"accuracy": 0.875, "f1_macro": 0.81, "loss": 0.4})
    lc.on_finding(_finding())
    lc.close()
    lc.close()  # idempotent
    out = buf.getvalue()
    assert "step      60/100" in out
    assert "loss 0.03333" in out and "val accuracy 0.875 f1_macro 0.81" in out
    assert "error: exploding_gradient at step 41: gradient norm 812" in out
    assert "[bold]x[/bold]" in out  # user text is not rich markup
    assert "alerts 1" in out


def test_live_console_redraws_at_most_ten_times_a_second_and_costs_microseconds() -> None:
    con = Console(file=io.StringIO(), force_terminal=True, width=100)
    lc = LiveConsole(total_steps=None, console=con, refresh_per_second=10)
    n = 50_000
    t0 = time.perf_counter()
    for step in range(n):
        lc.on_log(step, {"loss": 1.0})
    elapsed = time.perf_counter() - t0
    lc.close()
    assert lc.refreshes <= elapsed * 10 + 3
    assert elapsed / n < 20e-6, f"{elapsed / n * 1e6:.1f} µs per on_log"


def test_live_console_off_a_terminal_prints_plain_lines_only() -> None:
    buf = io.StringIO()
    lc = LiveConsole(total_steps=10, console=Console(file=buf, force_terminal=False, width=80))
    assert not lc.interactive
    for step in range(10):
        lc.on_log(step, {"loss": 0.5})
    lc.on_evaluate("val", 2, {"accuracy": 0.5})
    lc.on_finding(_finding())
    lc.close()
    out = buf.getvalue()
    assert "\x1b" not in out  # no cursor or colour codes in a log file
    assert out.splitlines() == [
        "epoch 2 val: accuracy 0.5",
        "! error: exploding_gradient at step 41: gradient norm 812 is 95x its running median [bold]x[/bold]",
        "done: 9 steps, loss 0.5, 1 alert(s)",
    ]


# ---- CLI ----------------------------------------------------------------------------------------------------
def test_cli_writes_report_and_pngs(tmp_path: Path) -> None:
    a, b = write_tiny_run(tmp_path / "a", "before"), write_tiny_run(tmp_path / "b", "after", slope=3.0)
    out, png = tmp_path / "sub" / "cmp.html", tmp_path / "png"
    res = CliRunner().invoke(app, ["report", str(a), str(b), "-o", str(out), "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    html = out.read_text(encoding="utf-8")
    assert "Runs side by side" in html and "Run 1: before" in html and "Run 2: after" in html
    pngs = sorted(png.glob("*.png"))
    assert len(list(png.glob("compare-*.png"))) == 3
    assert html.count("<svg") == len(pngs) >= 9
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in pngs)


def test_cli_bad_run_dir_is_a_trainmedic_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")])
    assert res.exit_code != 0
    assert isinstance(res.exception, TrainmedicError) and "does not exist" in str(res.exception)
    assert not (tmp_path / "r.html").exists()


# ---- matplotlib backend ---------------------------------------------------------------------------------------
def test_report_leaves_the_users_backend_and_pyplot_alone(tmp_path: Path) -> None:
    """In a fresh interpreter: a user who chose a backend keeps it, and pyplot is never imported by us."""
    code = f"""
import sys, matplotlib
matplotlib.use("pdf")
import numpy as np
from trainmedic.store import RunWriter
from trainmedic.findings import Diagnosis
from trainmedic.report import report
w = RunWriter({str(tmp_path / "run")!r})
w.add_scalars("loss", np.arange(50), np.linspace(2, 1, 50))
w.close()
p = report({str(tmp_path / "run")!r}, {str(tmp_path / "r.html")!r}, diagnosis=Diagnosis("x"))
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
assert "torch" not in sys.modules
print("ok", p.stat().st_size)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("ok")
