"""Figures for the report: matplotlib ``Figure`` objects drawn without pyplot, saved as SVG text or PNG.

Why no pyplot: pyplot owns a global backend and a global list of open figures. Building
:class:`matplotlib.figure.Figure` directly and saving it through an explicit Agg/SVG canvas leaves the
user's backend choice (and their open figures) untouched and frees every figure when it goes out of scope.

Readability rules kept here, once: every axis has a label (with units), every chart a title; lines use the
Okabe-Ito colour-blind-safe palette; heatmaps use viridis, confusion matrices cividis; user strings reach matplotlib only as plain
text (mathtext off, so a ``$`` in a class name is not parsed), and the SVG backend XML-escapes them.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .downsample import bucket_columns, minmax_downsample

# Okabe & Ito (2008), reordered so that the first colours have the most contrast on white.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
SEVERITY_COLOURS = {"error": "#D55E00", "warning": "#E69F00", "info": "#009E73"}
MAX_LABEL = 40

RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: small files, selectable, escaped by the SVG writer
    "svg.hashsalt": None,
    "font.size": 9.0,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "figure.dpi": 100.0,
    "savefig.bbox": "tight",
    "path.simplify": True,
}


def _style() -> AbstractContextManager[Any]:
    """The report's matplotlib settings, applied only while a figure is built or saved."""
    return matplotlib.rc_context(RC)  # type: ignore[arg-type]  # RC is a plain dict of known keys


def plain(text: object) -> str:
    """Text that matplotlib draws as typed: a ``$`` in a user's name must not start TeX math."""
    return str(text).replace("$", r"\$")


def short(label: object, limit: int = MAX_LABEL) -> str:
    """A plain label short enough for a tick; matplotlib hides legend labels that start with ``_``."""
    s = str(label)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return plain(" " + s if s.startswith("_") else s)


@dataclass
class Line:
    """One line of a chart."""

    label: str
    x: np.ndarray
    y: np.ndarray
    colour: str = PALETTE[0]
    style: str = "-"
    marker: str | None = None
    alpha: float = 1.0
    width: float = 1.4


@dataclass
class Marker:
    """A vertical mark where a finding began."""

    x: float
    label: str
    severity: str = "warning"


@dataclass
class Chart:
    """A finished figure with the name used for its PNG file and a caption that says how to read it."""

    key: str
    fig: Figure
    caption: str = ""
    alt: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def new_figure(width: float, height: float) -> Figure:
    with _style():
        fig = Figure(figsize=(width, height))
    return fig


def to_svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element (XML prologue, DOCTYPE and metadata removed)."""
    buf = io.StringIO()
    with _style():
        FigureCanvasSVG(fig).print_figure(
            buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
        )
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    return text


def to_png(fig: Figure, path: Path, dpi: int = 110) -> Path:
    with _style():
        FigureCanvasAgg(fig).print_figure(str(path), format="png", dpi=dpi)
    return path


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[np.isfinite(a)]


def _wants_log(arrays: Sequence[np.ndarray], min_ratio: float = 10.0) -> bool:
    """A log axis only pays when the positive values span at least a decade; below that it hides detail."""
    pos = [v[v > 0] for v in (_finite(a) for a in arrays)]
    pos = [v for v in pos if len(v)]
    if not pos:
        return False
    lo, hi = min(float(v.min()) for v in pos), max(float(v.max()) for v in pos)
    return hi / lo >= min_ratio


def _integer_epochs(ax: Any, xlabel: str) -> None:
    if xlabel.startswith("epoch"):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _threshold_line(ax: Any, hline: tuple[float, str]) -> None:
    """A dotted horizontal line at a threshold, labelled at the left edge."""
    ax.axhline(hline[0], color="#555555", linestyle=":", linewidth=1.0)
    ax.annotate(
        plain(hline[1]),
        xy=(0.0, hline[0]),
        xycoords=("axes fraction", "data"),
        xytext=(2, 2),
        textcoords="offset points",
        fontsize=7.5,
        color="#555555",
    )


def _draw_markers(ax: Any, markers: Sequence[Marker]) -> None:
    """Dashed verticals labelled with the finding code; labels at one x are stacked, not overprinted."""
    seen: dict[float, int] = {}
    for m in markers:
        if m.x is None or not math.isfinite(float(m.x)):
            continue
        colour = SEVERITY_COLOURS.get(m.severity, "#555555")
        ax.axvline(m.x, color=colour, linestyle="--", linewidth=1.2, alpha=0.9)
        k = seen.get(float(m.x), 0)
        seen[float(m.x)] = k + 1
        ax.annotate(
            short(m.label, 28),
            xy=(m.x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -4 - 11 * k),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=7.5,
            color=colour,
            fontweight="bold",
        )


def line_chart(
    key: str,
    lines: Sequence[Line],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    markers: Sequence[Marker] = (),
    caption: str = "",
    size: tuple[float, float] = (6.4, 3.4),
    hline: tuple[float, str] | None = None,
) -> Chart:
    """Lines over steps or epochs, each downsampled (min/max buckets), with finding markers."""
    fig = new_figure(*size)
    with _style():
        ax = fig.add_subplot()
        use_log = logy and _wants_log([np.asarray(ln.y, dtype=np.float64) for ln in lines])
        for ln in lines:
            x, y = minmax_downsample(np.asarray(ln.x), np.asarray(ln.y, dtype=np.float64))
            if use_log:
                y = np.where(y > 0, y, np.nan)
            ax.plot(
                x,
                y,
                ln.style,
                color=ln.colour,
                label=short(ln.label),
                marker=ln.marker,
                markersize=3.5,
                alpha=ln.alpha,
                linewidth=ln.width,
            )
        if use_log:
            ax.set_yscale("log")
        if hline is not None:
            _threshold_line(ax, hline)
        _draw_markers(ax, markers)
        _integer_epochs(ax, xlabel)
        ax.set_title(plain(title))
        ax.set_xlabel(plain(xlabel))
        ax.set_ylabel(plain(ylabel + (" (log scale)" if use_log else "")))
        if any(not ln.label.startswith("_") for ln in lines) and len(lines) > 1:
            ax.legend(loc="best")
    return Chart(key, fig, caption, alt=title)


def heatmap(
    key: str,
    steps: np.ndarray,
    values: np.ndarray,
    layers: Sequence[str],
    *,
    title: str,
    colorbar: str,
    log: bool = True,
    caption: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Chart:
    """A (steps × layers) statistic as an image: layers on the y axis (first layer on top), time on x."""
    bsteps, table = bucket_columns(steps, values)
    data = table.T  # (L, T)
    n_layers = len(layers)
    fig = new_figure(7.0, max(2.4, 0.17 * n_layers + 1.6))
    with _style():
        ax = fig.add_subplot()
        ok = np.isfinite(data) & ((data > 0) if log else True)
        masked = np.ma.masked_where(~ok, data)
        norm: Normalize
        good = data[ok]
        lo = vmin if vmin is not None else (float(good.min()) if good.size else 1e-12)
        hi = vmax if vmax is not None else (float(good.max()) if good.size else 1.0)
        if hi <= lo:
            hi = lo * 10 if log else lo + 1
        norm = LogNorm(vmin=lo, vmax=hi) if log else Normalize(vmin=lo, vmax=hi)
        colours = matplotlib.colormaps[cmap].with_extremes(bad="#ffffff")
        x0 = float(bsteps[0]) if len(bsteps) else 0.0
        x1 = float(steps[-1]) if len(steps) else 1.0
        im = ax.imshow(
            masked,
            aspect="auto",
            interpolation="nearest",
            cmap=colours,
            norm=norm,
            extent=(x0, max(x1, x0 + 1), n_layers - 0.5, -0.5),
        )
        ax.set_yticks(range(n_layers), [short(s) for s in layers], fontsize=7 if n_layers > 20 else 8)
        ax.grid(False)
        ax.set_title(plain(title))
        ax.set_xlabel("step")
        ax.set_ylabel("layer (input → output)")
        cb = fig.colorbar(im, ax=ax, pad=0.01)
        cb.set_label(plain(colorbar))
    return Chart(key, fig, caption, alt=title)


def layer_profile(
    key: str,
    layers: Sequence[str],
    series: Sequence[tuple[str, np.ndarray]],
    *,
    title: str,
    ylabel: str,
    logy: bool = True,
    caption: str = "",
    hline: tuple[float, str] | None = None,
) -> Chart:
    """One value per layer (x = layer order), one line per chosen step: the shape of gradient flow."""
    n = len(layers)
    fig = new_figure(max(6.4, min(12.0, 0.22 * n + 3)), 3.6)
    with _style():
        ax = fig.add_subplot()
        x = np.arange(n)
        use_log = logy and _wants_log([np.asarray(v, dtype=np.float64) for _, v in series])
        for i, (label, vals) in enumerate(series):
            v = np.asarray(vals, dtype=np.float64)
            v = np.where(np.isfinite(v), v, np.nan)
            if use_log:
                v = np.where(v > 0, v, np.nan)
            ax.plot(
                x, v, "-o", color=PALETTE[i % len(PALETTE)], label=short(label), markersize=3.5, linewidth=1.3
            )
        if use_log:
            ax.set_yscale("log")
        if hline is not None:
            _threshold_line(ax, hline)
        ax.set_xticks(
            x,
            [short(s, 28) for s in layers],
            rotation=60 if n > 4 else 0,
            ha="right" if n > 4 else "center",
            fontsize=7 if n > 20 else 8,
        )
        ax.set_title(plain(title))
        ax.set_xlabel("layer (input → output)")
        ax.set_ylabel(plain(ylabel + (" (log scale)" if use_log else "")))
        if len(series) > 1:
            ax.legend(loc="best")
    return Chart(key, fig, caption, alt=title)


def grouped_bars(
    key: str,
    categories: Sequence[str],
    groups: Sequence[tuple[str, np.ndarray]],
    *,
    title: str,
    ylabel: str,
    xlabel: str,
    ylim: tuple[float, float] | None = None,
    caption: str = "",
    hline: tuple[float, str] | None = None,
) -> Chart:
    """Bars per category, one colour per group (e.g. precision/recall/F1 per class)."""
    n = len(categories)
    k = max(1, len(groups))
    fig = new_figure(max(6.4, min(13.0, 0.16 * n * k + 3)), 3.4)
    with _style():
        ax = fig.add_subplot()
        x = np.arange(n)
        width = 0.8 / k
        for i, (label, vals) in enumerate(groups):
            v = np.asarray(vals, dtype=np.float64)
            v = np.where(np.isfinite(v), v, 0.0)
            ax.bar(
                x + (i - (k - 1) / 2) * width, v, width, label=short(label), color=PALETTE[i % len(PALETTE)]
            )
        if hline is not None:
            ax.axhline(hline[0], color="#555555", linestyle=":", linewidth=1.0)
            ax.annotate(
                plain(hline[1]),
                xy=(1.0, hline[0]),
                xycoords=("axes fraction", "data"),
                xytext=(-2, 2),
                textcoords="offset points",
                fontsize=7.5,
                color="#555555",
                ha="right",
            )
        rot = 45 if n > 8 or max((len(str(c)) for c in categories), default=0) > 6 else 0
        ax.set_xticks(
            x,
            [short(c, 24) for c in categories],
            rotation=rot,
            ha="right" if rot else "center",
            fontsize=7 if n > 25 else 8,
        )
        ax.grid(axis="x", visible=False)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(plain(title))
        ax.set_xlabel(plain(xlabel))
        ax.set_ylabel(plain(ylabel))
        if len(groups) > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return Chart(key, fig, caption, alt=title)


def confusion_chart(
    key: str,
    cm: np.ndarray,
    classes: Sequence[str],
    *,
    normalize: bool,
    title: str,
    caption: str = "",
) -> Chart:
    """Counts (or row-normalized shares) with true classes on rows; cells annotated up to 20 classes."""
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.shape[0]
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            data = np.where(rows > 0, cm / rows, 0.0)
    else:
        data = cm
    side = max(3.4, min(9.0, 0.42 * n + 2.2))
    fig = new_figure(side + 0.9, side)
    with _style():
        ax = fig.add_subplot()
        im = ax.imshow(data, cmap="cividis", vmin=0.0, vmax=1.0 if normalize else max(1.0, float(data.max())))
        labels = [short(c, 20) for c in classes]
        fs = 7 if n > 12 else 8
        ax.set_xticks(
            range(n),
            labels,
            rotation=45 if n > 6 or max(len(s) for s in labels) > 4 else 0,
            ha="right",
            fontsize=fs,
        )
        ax.set_yticks(range(n), labels, fontsize=fs)
        ax.grid(False)
        if n <= 20:
            top = float(data.max()) if data.size else 1.0
            for i in range(n):
                for j in range(n):
                    v = data[i, j]
                    txt = f"{v:.2f}" if normalize else f"{int(v)}"
                    light = v < (0.6 if normalize else 0.6 * top)
                    ax.text(
                        j,
                        i,
                        txt,
                        ha="center",
                        va="center",
                        fontsize=6.5 if n > 12 else 7.5,
                        color="white" if light else "black",
                    )
        ax.set_title(plain(title))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        cb = fig.colorbar(im, ax=ax, pad=0.02, fraction=0.046)
        cb.set_label("share of the true class" if normalize else "samples")
    return Chart(key, fig, caption, alt=title)
