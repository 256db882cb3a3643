"""The interactive layer of the report: figure data as JSON, drawn in the browser by uPlot (MIT, vendored).

Each static figure of the report (a matplotlib SVG, the no-script fallback) can have a *spec* here with the
same key: plain numbers and strings that ``assets/interactive.js`` turns into a chart with zoom, hover
read-outs, a smoothing control, a log/linear toggle and the findings marked on it. Specs hold data, never
markup: the script writes every string with ``textContent`` or on a canvas, and the JSON is embedded with
``<``, ``>`` and ``&`` escaped, so a class named ``<script>`` stays text. Long series are downsampled the
same way as the static figures (min/max buckets for lines, bucket maxima for heatmaps), which keeps a
100k-step, 50-layer run to a few MB.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import warnings
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from ..probes.quantiles import QUANTILES, quantile_names
from .downsample import bucket_columns, minmax_downsample
from .plots import PALETTE

if TYPE_CHECKING:  # pragma: no cover
    from .sections import RunData

GREY = "#7f7f7f"
UPDATE_RATIO_BAND = (1e-4, 1e-2)  # a decade either side of the 1e-3 rule of thumb
MAX_RATIO_LAYERS = 10
MAX_QUANTILE_STEPS = 200
NOT_OTHER_SCALARS = {"loss", "grad_norm", "wall_time", "lr", "momentum", "beta1", "beta2", "weight_decay"}


# ---- assets --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def assets() -> tuple[str, str]:
    """(script, stylesheet): uPlot and trainmedic's interactive code, to be inlined."""
    base = resources.files("trainmedic.report") / "assets"
    js = (
        (base / "uplot.iife.min.js").read_text(encoding="utf-8")
        + "\n"
        + (base / "interactive.js").read_text(encoding="utf-8")
    )
    css = (
        (base / "uplot.min.css").read_text(encoding="utf-8")
        + "\n"
        + (base / "interactive.css").read_text(encoding="utf-8")
    )
    return js, css


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def encode(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` or line separators."""
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except ValueError:  # a NaN/Inf that slipped past nums() (a threshold, a band): a gap, not a broken page
        text = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _finite(data: Any) -> Any:
    """``data`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


# ---- numbers -------------------------------------------------------------------------------------------------
def nums(values: Any, digits: int = 5) -> list[float | None]:
    """Floats with ``digits`` significant digits (short JSON); NaN/Inf become null (a gap)."""
    out: list[float | None] = []
    for v in np.asarray(values, dtype=np.float64).ravel().tolist():
        if not math.isfinite(v):
            out.append(None)
        elif v.is_integer() and abs(v) < 1e15:
            out.append(int(v))  # steps and counts: "120", not "120.0"
        else:
            out.append(float(f"{v:.{digits}g}"))
    return out


def ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).ravel().tolist()]


def _positive(*arrays: Any) -> bool:
    vals = [np.asarray(a, dtype=np.float64) for a in arrays]
    vals = [v[np.isfinite(v)] for v in vals]
    vals = [v for v in vals if len(v)]
    return bool(vals) and all(float(v.min()) > 0 for v in vals)


def _spans(ratio: float, *arrays: Any) -> bool:
    vals = [np.asarray(a, dtype=np.float64) for a in arrays]
    vals = [v[np.isfinite(v) & (v > 0)] for v in vals]
    vals = [v for v in vals if len(v)]
    if not vals:
        return False
    return max(float(v.max()) for v in vals) / min(float(v.min()) for v in vals) >= ratio


def series(
    label: str,
    x: Any,
    y: Any,
    *,
    colour: str = PALETTE[0],
    smooth: bool = False,
    points: bool = False,
    dash: list[int] | None = None,
    width: float = 1.4,
    xe: Any = None,
    downsample: bool = True,
) -> dict[str, Any]:
    """One line: x and y (min/max downsampled to ≤2,000 points), optional epoch-aligned x."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs)
    xs, ys = xs[keep], ys[keep]
    xe_arr = None if xe is None else np.asarray(xe, dtype=np.float64)[keep]
    if downsample and len(xs) > 2000:
        idx = np.arange(len(xs))
        sel, _ = minmax_downsample(idx, ys)
        xs, ys = xs[sel], ys[sel]
        xe_arr = None if xe_arr is None else xe_arr[sel]
    out: dict[str, Any] = {
        "label": str(label),
        "color": colour,
        "x": nums(xs, 9),
        "y": nums(ys),
        "smooth": smooth,
        "points": points,
        "width": width,
    }
    if dash:
        out["dash"] = dash
    if xe_arr is not None:
        out["xe"] = nums(xe_arr, 6)
    return out


def lines_spec(
    title: str,
    xlabel: str,
    ylabel: str,
    lines: list[dict[str, Any]],
    *,
    markers: list[dict[str, Any]] | None = None,
    log: bool = False,
    band: tuple[float, float] | None = None,
    hline: tuple[float, str] | None = None,
    height: int = 270,
) -> dict[str, Any]:
    ys = [np.asarray([v for v in ln["y"] if v is not None], dtype=np.float64) for ln in lines]
    logok = _positive(*ys)
    return {
        "kind": "lines",
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "series": lines,
        "markers": markers or [],
        "logok": logok,
        "log": bool(log and logok),
        "band": list(band) if band else None,
        "hline": [hline[0], hline[1]] if hline else None,
        "height": height,
    }


def heatmap_spec(
    title: str,
    steps: Any,
    values: Any,
    layers: list[str],
    *,
    colorbar: str,
    log: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
) -> dict[str, Any]:
    bsteps, table = bucket_columns(np.asarray(steps), np.asarray(values, dtype=np.float64))
    return {
        "kind": "heatmap",
        "title": title,
        "layers": [str(s) for s in layers],
        "steps": ints(bsteps),
        "values": nums(table.T, 4),  # row-major: layer by layer
        "log": log,
        "vmin": vmin,
        "vmax": vmax,
        "colorbar": colorbar,
    }


# ---- where findings began ------------------------------------------------------------------------------------
def markers(rd: RunData, by: str) -> list[dict[str, Any]]:
    """The problems of a run as chart marks: x (step or epoch), code, severity and the finding's sentence."""
    from .sections import finding_epoch, finding_step

    out = []
    for f in rd.problems:
        x = finding_step(f, rd.reader) if by == "step" else finding_epoch(f, rd.reader)
        if x is None:
            continue
        text = f.title + (f" — {f.message}" if f.message else "")
        out.append({"x": float(x), "label": f.code, "severity": f.severity.value, "text": text[:600]})
    return out


def _epoch_of_steps(rd: RunData) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, epochs completed) at each epoch end, to place any step on an epoch axis."""
    r = rd.reader
    for sp in ["val", "train", "train_running", *r.splits]:
        if sp in r.splits:
            ends = r.eval_steps(sp)
            if ends:
                es = sorted(ends)
                xs = np.array([0.0] + [float(ends[e]) + 1 for e in es])
                ys = np.array([0.0] + [float(e) + 1 for e in es])
                order = np.argsort(xs, kind="stable")
                return xs[order], ys[order]
    return None


def to_epochs(rd: RunData, steps: Any) -> np.ndarray | None:
    m = _epoch_of_steps(rd)
    if m is None or len(m[0]) < 2:
        return None
    s = np.asarray(steps, dtype=np.float64)
    # beyond the last epoch end: extrapolate at the last epoch's pace
    xs, ys = m
    pace = (ys[-1] - ys[-2]) / max(1.0, xs[-1] - xs[-2])
    out = np.interp(s, xs, ys)
    late = s > xs[-1]
    out[late] = ys[-1] + (s[late] - xs[-1]) * pace
    return out


def _split_colour(split: str, order: list[str]) -> str:
    from .sections import _split_colour as colour

    return colour(split, order)


def split_name(split: str) -> str:
    from .sections import split_name as name

    return name(split)


# ---- one run -------------------------------------------------------------------------------------------------
def step_times(rd: RunData) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(steps, seconds per step, samples per second or None) from the recorded ``wall_time``."""
    w = rd.reader.scalar("wall_time")
    if len(w) < 2:
        return None
    ds = np.diff(w.steps.astype(np.float64))
    dt = np.diff(w.values)
    ok = (ds > 0) & np.isfinite(dt) & (dt > 0)
    if not ok.any():
        return None
    steps = w.steps[1:][ok]
    per = dt[ok] / ds[ok]
    bs = rd.reader.meta.get("batch_size")
    thr = float(bs) / per if isinstance(bs, (int, float)) and not isinstance(bs, bool) and bs > 0 else None
    return steps, per, thr


def run_specs(rd: RunData) -> dict[str, dict[str, Any]]:
    """Every interactive chart of one run, keyed ``{slug}-{chart key}`` like the static figures."""
    r = rd.reader
    out: dict[str, dict[str, Any]] = {}
    key = rd.slug + "-"
    smarks, emarks = markers(rd, "step"), markers(rd, "epoch")
    splits = r.splits
    loss = r.scalar("loss")
    if len(loss):
        lines = [series("loss per step", loss.steps, loss.values, colour=GREY, smooth=True, width=1.0)]
        for sp in splits:
            ev = r.eval_series(sp, "loss")
            steps_of = r.eval_steps(sp)
            if len(ev) and steps_of:
                xs = [steps_of.get(int(e), np.nan) for e in ev.steps]
                label = f"{split_name(sp)} loss (epoch end)"
                lines.append(
                    series(label, xs, ev.values, colour=_split_colour(sp, splits), points=True, width=1.6)
                )
        out[key + "loss-steps"] = lines_spec(
            "Loss over training steps",
            "step",
            "loss",
            lines,
            markers=smarks,
            log=_spans(50, loss.values),
        )
    epoch_loss = [(sp, r.eval_series(sp, "loss")) for sp in splits]
    epoch_loss = [(sp, s) for sp, s in epoch_loss if len(s)]
    if epoch_loss:
        out[key + "loss-epochs"] = lines_spec(
            "Loss per epoch by split",
            "epoch",
            "loss",
            [
                series(
                    f"{split_name(sp)} loss", s.steps, s.values, colour=_split_colour(sp, splits), points=True
                )
                for sp, s in epoch_loss
            ],
            markers=emarks,
        )
    metric_lines = []
    for sp in splits:
        names = set(r.eval_names(sp))
        for name, label, dash in (
            ("accuracy", "accuracy", None),
            ("f1_macro", "macro F1", [6, 4]),
            ("map_50", "mAP@0.5", None),
            ("recall", "recall", [2, 3]),
        ):
            if name in names:
                s = r.eval_series(sp, name)
                if len(s):
                    metric_lines.append(
                        series(
                            f"{split_name(sp)} {label}",
                            s.steps,
                            s.values,
                            colour=_split_colour(sp, splits),
                            points=True,
                            dash=dash,
                        )
                    )
    if metric_lines:
        th = (r.meta.get("thresholds") or {}).get("min_accuracy")
        out[key + "metrics-epochs"] = lines_spec(
            "Metrics per epoch by split",
            "epoch",
            "score (0–1)",
            metric_lines,
            markers=emarks,
            hline=(float(th), "accuracy threshold") if isinstance(th, (int, float)) else None,
        )
    lr_names = [n for n in r.scalar_names if n == "lr" or n.startswith("lr/") or n.endswith("/lr")]
    if lr_names:
        lines = [
            series(n, r.scalar(n).steps, r.scalar(n).values, colour=PALETTE[i % len(PALETTE)])
            for i, n in enumerate(lr_names)
        ]
        out[key + "lr"] = lines_spec(
            "Learning rate schedule", "step", "learning rate", lines, markers=smarks, log=True
        )
    mom = [n for n in r.scalar_names if n.rsplit("/", 1)[-1] in ("momentum", "beta1", "beta2")]
    if mom:
        lines = [
            series(n, r.scalar(n).steps, r.scalar(n).values, colour=PALETTE[(i + 1) % len(PALETTE)])
            for i, n in enumerate(mom)
        ]
        out[key + "momentum"] = lines_spec("Momentum and Adam betas", "step", "value", lines, markers=smarks)
    st = step_times(rd)
    if st is not None:
        steps, per, thr = st
        out[key + "step-time"] = lines_spec(
            "Wall time per step",
            "step",
            "milliseconds per step",
            [series("ms per step", steps, per * 1000.0, colour=PALETTE[4], smooth=True)],
            markers=smarks,
        )
        if thr is not None:
            out[key + "throughput"] = lines_spec(
                "Throughput",
                "step",
                "samples per second",
                [series("samples/s", steps, thr, colour=PALETTE[2], smooth=True)],
            )
    others = [
        n
        for n in r.scalar_names
        if n.rsplit("/", 1)[-1] not in NOT_OTHER_SCALARS and not n.startswith(("lr/", "momentum/"))
    ]
    for i, name in enumerate(others[:6]):
        s = r.scalar(name)
        out[key + f"scalar-{name}"] = lines_spec(
            f"Logged scalar: {name}",
            "step",
            name,
            [series(name, s.steps, s.values, colour=PALETTE[(i + 2) % len(PALETTE)], smooth=True)],
            markers=smarks,
        )
    gnames = [n for n in r.scalar_names if n.rsplit("/", 1)[-1] == "grad_norm"]
    if gnames:
        lines = [
            series(n, r.scalar(n).steps, r.scalar(n).values, colour=PALETTE[i % len(PALETTE)], smooth=True)
            for i, n in enumerate(gnames)
        ]
        out[key + "grad-norm"] = lines_spec(
            "Global gradient norm per step", "step", "gradient L2 norm", lines, markers=smarks, log=True
        )
    g = r.layer_stat("grad_norm")
    if len(g.steps) and g.layers:
        out[key + "grad-heatmap"] = heatmap_spec(
            "Gradient flow: per-layer gradient norm over time",
            g.steps,
            g.values,
            g.layers,
            colorbar="gradient L2 norm",
        )
    u = r.layer_stat("update_ratio")
    if len(u.steps) and u.layers:
        out[key + "update-heatmap"] = heatmap_spec(
            "Update-to-weight ratio per layer over time",
            u.steps,
            u.values,
            u.layers,
            colorbar="‖update‖ / ‖weight‖",
        )
        out[key + "update-ratio-steps"] = ratio_spec(u.steps, u.values, u.layers, smarks)
    q = quantile_spec(rd)
    if q is not None:
        out[key + "quantiles"] = q
    for spec in out.values():  # hovering one step chart shows the same step on the others (W&B-style)
        if spec["kind"] == "lines" and spec["xlabel"] == "step":
            spec["sync"] = rd.slug + "-steps"
    dead = r.layer_stat("act_dead")
    if len(dead.steps) and np.isfinite(dead.values).any():
        out[key + "act-dead-heatmap"] = heatmap_spec(
            "Dead-unit share over time",
            dead.steps,
            dead.values,
            dead.layers,
            colorbar="share of dead units",
            log=False,
            vmin=0.0,
            vmax=1.0,
        )
    return out


def ratio_layers(n: int) -> list[int]:
    """At most MAX_RATIO_LAYERS layers spread over the depth (first and last always)."""
    if n <= MAX_RATIO_LAYERS:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, MAX_RATIO_LAYERS)})


def ratio_spec(steps: Any, values: Any, layers: list[str], smarks: list[dict[str, Any]]) -> dict[str, Any]:
    vals = np.asarray(values, dtype=np.float64)
    chosen = ratio_layers(len(layers))
    lines = [
        series(layers[j], steps, vals[:, j], colour=PALETTE[k % len(PALETTE)], width=1.2)
        for k, j in enumerate(chosen)
    ]
    shown = "" if len(chosen) == len(layers) else f" ({len(chosen)} of {len(layers)} layers)"
    return lines_spec(
        "Update-to-weight ratio per layer over steps" + shown,
        "step",
        "‖update‖ / ‖weight‖",
        lines,
        markers=smarks,
        log=True,
        band=UPDATE_RATIO_BAND,
    )


def quantile_spec(rd: RunData) -> dict[str, Any] | None:
    """Per-layer quantiles of weights and gradients at each capture: bands the browser shows layer by layer."""
    r = rd.reader
    kinds: dict[str, list[list[float | None]]] = {}
    layers: list[str] = []
    steps: np.ndarray | None = None
    for kind in ("weight", "grad"):
        stats = [r.layer_stat(n) for n in quantile_names(kind)]
        if not all(len(s.steps) and s.layers for s in stats):
            continue
        layers = stats[0].layers
        st = stats[0].steps
        idx = np.unique(np.linspace(0, len(st) - 1, min(len(st), MAX_QUANTILE_STEPS)).round().astype(int))
        steps = st[idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kinds["weights" if kind == "weight" else "gradients"] = [nums(s.values[idx].T, 4) for s in stats]
    if not kinds or steps is None:
        return None
    return {
        "kind": "quantiles",
        "title": "Distribution of weights and gradients per layer over steps",
        "layers": layers,
        "steps": ints(steps),
        "kinds": kinds,
        "labels": [f"{q * 100:g}%" for q in QUANTILES],
    }


# ---- several runs ------------------------------------------------------------------------------------------
def compare_specs(runs: list[RunData]) -> dict[str, dict[str, Any]]:
    """Runs overlaid: per-step loss (by step or by epoch), per-epoch loss and held-out accuracy."""
    out: dict[str, dict[str, Any]] = {}
    loss_lines, epoch_lines, acc_lines = [], [], []
    for i, rd in enumerate(runs):
        r, colour = rd.reader, PALETTE[i % len(PALETTE)]
        s = r.scalar("loss")
        if len(s):
            loss_lines.append(
                series(
                    rd.label,
                    s.steps,
                    s.values,
                    colour=colour,
                    smooth=True,
                    width=1.1,
                    xe=to_epochs(rd, s.steps),
                )
            )
        val = "val" if "val" in r.splits else (r.splits[-1] if r.splits else None)
        if val:
            vl = r.eval_series(val, "loss")
            if len(vl):
                epoch_lines.append(
                    series(f"{rd.label} ({val})", vl.steps, vl.values, colour=colour, points=True)
                )
            tl = r.eval_series("train", "loss") if "train" in r.splits and val != "train" else None
            if tl is not None and len(tl):
                epoch_lines.append(
                    series(
                        f"{rd.label} (train)", tl.steps, tl.values, colour=colour, dash=[6, 4], points=True
                    )
                )
            for name in ("accuracy", "map_50"):
                a = r.eval_series(val, name)
                if len(a):
                    acc_lines.append(
                        series(f"{rd.label} ({val} {name})", a.steps, a.values, colour=colour, points=True)
                    )
                    break
    if loss_lines:
        ys = [np.asarray([v for v in ln["y"] if v is not None]) for ln in loss_lines]
        spec = lines_spec("Loss per step, runs overlaid", "step", "loss", loss_lines, log=_spans(50, *ys))
        spec["xlabel_epoch"] = "epoch (fraction of the epochs completed)"
        out["compare-loss"] = spec
    if epoch_lines:
        out["compare-epoch-loss"] = lines_spec("Loss per epoch, runs overlaid", "epoch", "loss", epoch_lines)
    if acc_lines:
        out["compare-accuracy"] = lines_spec(
            "Held-out accuracy per epoch, runs overlaid", "epoch", "score (0–1)", acc_lines
        )
    return out
