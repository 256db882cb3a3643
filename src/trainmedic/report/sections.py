"""The report's sections: each reads what one run recorded and returns HTML, or says why it is left out.

A section states the signals it needs and leaves itself out with a one-line reason when they are missing
(the Cockpit idea: plots are joined to probes only by signal names). A section that crashes on odd data is
replaced by its error message, so one bad record never costs the whole report.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..findings import Diagnosis, Finding, Severity
from ..store.reader import RunReader
from . import plots
from .html import Raw, badge, esc, figure, fmt, kv_table, missing, table
from .plots import PALETTE, Chart, Line, Marker

HYPERPARAMETER_SIGNALS = ("lr", "momentum", "beta1", "beta2", "weight_decay")
UPDATE_RATIO_GUIDE = 1e-3  # a common rule of thumb for a healthy update-to-weight ratio


@dataclass
class RunData:
    """One run as the report sees it: its reader, display name and what was judged about it."""

    reader: RunReader
    label: str
    slug: str
    diagnosis: Diagnosis | None
    diagnosis_note: str | None  # why there is no diagnosis (or where it came from)
    live: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        """Warnings and errors: the diagnosis' when there is one, else the live alerts."""
        if self.diagnosis is not None:
            found = list(self.diagnosis.problems)
            codes = {f.code for f in found}
            return found + [f for f in self.live if f.is_problem and f.code not in codes]
        return [f for f in self.live if f.is_problem]


@dataclass
class Section:
    anchor: str
    title: str
    body: str


class FigureSink:
    """Turns charts into inline SVG and, when asked, PNG files; remembers every PNG written."""

    def __init__(
        self,
        png_dir: Path | None,
        specs: dict[str, dict[str, Any]] | None = None,
        static_twins: bool = True,
    ) -> None:
        self.png_dir = png_dir
        # False (the live view): a figure with an interactive twin is not drawn by matplotlib at all
        # (≈0.3-0.7 s each on a busy 2-core machine); the page says where the static file comes from
        self.static_twins = static_twins
        self.pngs: list[Path] = []
        self.count = 0
        self.specs: dict[str, dict[str, Any]] = dict(specs or {})  # interactive data by figure id
        self.used: dict[str, dict[str, Any]] = {}  # the specs of the figures emitted

    def emit(self, chart: Chart, prefix: str) -> str:
        """The static figure (inline SVG, the no-script fallback), tagged with its interactive twin if any."""
        self.count += 1
        fid = f"{prefix}-{chart.key}"
        spec = self.specs.get(fid)
        if spec is not None and not self.static_twins and self.png_dir is None:
            chart.fig.clear()
            self.used[fid] = spec
            note = missing(
                "with scripts off the live view has no figures: `trainmedic report RUN_DIR` writes them"
            )
            return figure(f"<noscript>{note}</noscript>", chart.caption, fid)
        svg = plots.to_svg(chart.fig)
        if self.png_dir is not None:
            name = _slug(f"{prefix}-{chart.key}") + ".png"
            self.pngs.append(plots.to_png(chart.fig, self.png_dir / name))
        chart.fig.clear()
        if spec is None:
            return figure(svg, chart.caption)
        self.used[fid] = spec
        return figure(svg, chart.caption, fid)


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return s[:80] or "run"


def load_live_findings(reader: RunReader) -> list[Finding]:
    """Findings raised while training (``live_finding`` events); unreadable ones are skipped."""
    out = []
    for ev in reader.events("live_finding"):
        data = ev.get("data")
        try:
            if isinstance(data, dict) and "code" in data:
                out.append(Finding.from_dict(data))
            elif ev.get("code"):
                out.append(
                    Finding(
                        ev["code"],
                        Severity.parse(ev.get("severity") or "warning"),
                        ev.get("message") or "",
                        step=ev.get("step"),
                        epoch=ev.get("epoch"),
                        source="live",
                    )
                )
        except (KeyError, ValueError, TypeError):
            continue
    return out


# ---- where findings began --------------------------------------------------------------------------------
def _all_eval_steps(reader: RunReader, split: str | None) -> dict[int, int]:
    if split and split in reader.splits:
        return reader.eval_steps(split)
    for sp in ["val", "train"] + reader.splits:
        if sp in reader.splits:
            steps = reader.eval_steps(sp)
            if steps:
                return steps
    return {}


def finding_step(f: Finding, reader: RunReader) -> int | None:
    if f.step is not None:
        return int(f.step)
    first = f.evidence.get("first_step") if isinstance(f.evidence, dict) else None
    if isinstance(first, (int, float)) and math.isfinite(float(first)):
        return int(first)
    if f.epoch is not None:
        return _all_eval_steps(reader, f.split).get(int(f.epoch))
    return None


def finding_epoch(f: Finding, reader: RunReader) -> int | None:
    if f.epoch is not None:
        return int(f.epoch)
    step = finding_step(f, reader)
    if step is None:
        return None
    for epoch, s in sorted(_all_eval_steps(reader, f.split).items()):
        if s >= step:
            return epoch
    return None


def step_markers(rd: RunData) -> list[Marker]:
    out = []
    for f in rd.problems:
        s = finding_step(f, rd.reader)
        if s is not None:
            out.append(Marker(float(s), f.code, f.severity.value))
    return out


def epoch_markers(rd: RunData) -> list[Marker]:
    out = []
    for f in rd.problems:
        e = finding_epoch(f, rd.reader)
        if e is not None:
            out.append(Marker(float(e), f.code, f.severity.value))
    return out


# ---- summary ---------------------------------------------------------------------------------------------
def verdict(rd: RunData) -> tuple[str, str]:
    """(css class, sentence) for the headline."""
    problems = rd.problems
    if rd.diagnosis is None and not problems:
        return "unknown", "Not diagnosed"
    if not problems and rd.diagnosis is not None and rd.diagnosis.no_data:
        n = len(rd.diagnosis.skipped)
        return "nodata", f"No data: {n} checks skipped; the run stored nothing to judge (not healthy)"
    if not problems:
        return "healthy", "Healthy: no problems found"
    worst = max(problems, key=lambda f: f.severity.rank).severity.value
    n_err = sum(f.severity is Severity.ERROR for f in problems)
    n_warn = sum(f.severity is Severity.WARNING for f in problems)
    parts = []
    if n_err:
        parts.append(f"{n_err} error{'s' * (n_err != 1)}")
    if n_warn:
        parts.append(f"{n_warn} warning{'s' * (n_warn != 1)}")
    codes = ", ".join(dict.fromkeys(f.code for f in sorted(problems, key=lambda f: -f.severity.rank)))
    return worst, f"{' and '.join(parts)}: {codes}"


def finding_card(f: Finding, reader: RunReader | None = None) -> str:
    where = []
    if f.split:
        where.append(f"split {f.split}")
    epoch = f.epoch
    step = f.step
    if reader is not None:
        epoch = finding_epoch(f, reader) if epoch is None else epoch
        step = finding_step(f, reader) if step is None else step
    if epoch is not None:
        where.append(f"epoch {epoch}")
    if step is not None:
        where.append(f"step {step}")
    if f.layer:
        where.append(f"layer {f.layer}")
    if f.source and f.source != "training":
        where.append(f"source {f.source}")
    where.append(f"confidence {f.confidence:.2f}")
    remedies = ""
    if f.remedies:
        items = []
        for r in f.remedies:
            auto = ' <span class="auto">auto-applicable</span>' if r.auto else ""
            why = f" — {esc(r.why)}" if r.why else ""
            items.append(f"<li><strong>{esc(r.title)}</strong> <code>{esc(r.code)}</code>{auto}{why}</li>")
        remedies = f'<h4>Remedies, most promising first</h4><ol class="remedies">{"".join(items)}</ol>'
    evidence = ""
    if f.evidence:
        evidence = (
            f'<details class="evidence" open><summary>evidence</summary>{kv_table(f.evidence)}</details>'
        )
    sev = f.severity.value
    return (
        f'<div class="finding {esc(sev)}"><div class="head">{badge(sev)}<strong>{esc(f.title)}</strong>'
        f'<span class="code">{esc(f.code)}</span><span class="where">{esc(" · ".join(where))}</span></div>'
        f'<p class="msg">{esc(f.message)}</p>{remedies}{evidence}</div>'
    )


def findings_by_severity(findings: Sequence[Finding], reader: RunReader | None) -> str:
    out = []
    for sev, heading in (
        (Severity.ERROR, "Errors"),
        (Severity.WARNING, "Warnings"),
        (Severity.INFO, "Healthy observations"),
    ):
        group = [f for f in findings if f.severity is sev]
        if group:
            out.append(f"<h3>{heading} ({len(group)})</h3>" + "".join(finding_card(f, reader) for f in group))
    return "".join(out)


def summary_section(rd: RunData) -> str:
    r = rd.reader
    cls, sentence = verdict(rd)
    head = f'<div class="verdict {esc(cls)}">{badge(cls)}<strong>{esc(sentence)}</strong></div>'
    meta = r.meta
    facts: dict[str, Any] = {
        "run directory": str(r.run_dir),
        "status": meta.get("status"),
        "steps": meta.get("steps"),
        "epochs": meta.get("epochs"),
        "device": meta.get("device"),
        "batch size": meta.get("batch_size"),
        "splits evaluated": ", ".join(r.splits) or "none",
    }
    created, closed = meta.get("created"), meta.get("closed_at")
    if isinstance(created, (int, float)) and isinstance(closed, (int, float)):
        facts["duration (s)"] = round(float(closed) - float(created), 1)
    n_internal = len(r.events("internal_error"))
    if n_internal:
        facts["trainmedic internal errors"] = f"{n_internal} (see Events; some signals may be missing)"
    facts = {k: v for k, v in facts.items() if v is not None}
    body = [head, kv_table(facts)]
    for note in meta.get("notes") or []:
        body.append(f'<p class="note">Note: {esc(note)}</p>')
    if rd.diagnosis is None:
        body.append(missing(f"no diagnosis: {rd.diagnosis_note or 'unknown reason'}"))
        if rd.live:
            body.append('<p class="note">Shown instead: the alerts raised live while training.</p>')
            body.append(findings_by_severity(rd.live, r))
        return "".join(body)
    if rd.diagnosis_note:
        body.append(f'<p class="note">{esc(rd.diagnosis_note)}</p>')
    d = rd.diagnosis
    findings = list(d.findings)
    codes = {f.code for f in findings}
    extra_live = [f for f in rd.live if f.code not in codes]
    if not findings:
        body.append("<p>The checks found nothing to report.</p>")
    body.append(findings_by_severity(findings, r))
    if extra_live:
        body.append(
            "<h3>Live alerts raised while training</h3>" + "".join(finding_card(f, r) for f in extra_live)
        )
    if d.skipped:
        body.append(
            "<h3>Checks skipped</h3>" + table(["check", "reason"], [(s.code, s.reason) for s in d.skipped])
        )
    return "".join(body)


# ---- training curves -------------------------------------------------------------------------------------
def split_name(split: str) -> str:
    """How a split is named on a chart: the running training metrics are the training split, as it trained."""
    return "train (running)" if split == "train_running" else split


def _split_colour(split: str, order: list[str]) -> str:
    fixed = {"train": PALETTE[0], "val": PALETTE[1], "test": PALETTE[2], "train_running": PALETTE[5]}
    if split in fixed:
        return fixed[split]
    return PALETTE[(3 + order.index(split)) % len(PALETTE)] if split in order else PALETTE[6]


def curves_section(rd: RunData, sink: FigureSink) -> str:
    r = rd.reader
    out: list[str] = []
    smarks, emarks = step_markers(rd), epoch_markers(rd)
    loss = r.scalar("loss")
    splits = r.splits
    if len(loss):
        lines = [Line("loss per step", loss.steps, loss.values, colour="#7f7f7f", alpha=0.8, width=1.0)]
        for sp in splits:
            ev = r.eval_series(sp, "loss")
            steps_of = r.eval_steps(sp)
            if len(ev) and steps_of:
                xs = np.array([steps_of.get(int(e), np.nan) for e in ev.steps], dtype=np.float64)
                lines.append(
                    Line(
                        f"{split_name(sp)} loss (epoch end)",
                        xs,
                        ev.values,
                        colour=_split_colour(sp, splits),
                        marker="o",
                    )
                )
        finite = loss.values[np.isfinite(loss.values)]
        logy = bool(len(finite) and finite.min() > 0 and finite.max() / max(finite.min(), 1e-300) > 50)
        chart = plots.line_chart(
            "loss-steps",
            lines,
            title="Loss over training steps",
            xlabel="step (optimizer updates)",
            ylabel="loss",
            logy=logy,
            markers=smarks,
            caption="Grey: the loss logged at every step (min/max-preserving downsampling to ≤2,000 points); "
            "dots: each split's loss at the end of an epoch. Dashed lines: where a finding began.",
        )
        out.append(sink.emit(chart, rd.slug))
    epoch_loss = [(sp, r.eval_series(sp, "loss")) for sp in splits]
    epoch_loss = [(sp, s) for sp, s in epoch_loss if len(s)]
    if epoch_loss:
        chart = plots.line_chart(
            "loss-epochs",
            [
                Line(
                    f"{split_name(sp)} loss", s.steps, s.values, colour=_split_colour(sp, splits), marker="o"
                )
                for sp, s in epoch_loss
            ],
            title="Loss per epoch by split",
            xlabel="epoch",
            ylabel="loss",
            markers=emarks,
            caption="A validation loss that rises while the training loss falls is the signature of overfitting.",
        )
        out.append(sink.emit(chart, rd.slug))
    metric_lines = []
    metric_names = [
        ("accuracy", "accuracy", "-"),
        ("f1_macro", "macro F1", "--"),
        ("map_50", "mAP@0.5", "-"),
        ("recall", "recall", ":"),
    ]
    for sp in splits:
        names = set(r.eval_names(sp))
        for name, label, style in metric_names:
            if name in names:
                s = r.eval_series(sp, name)
                if len(s):
                    metric_lines.append(
                        Line(
                            f"{split_name(sp)} {label}",
                            s.steps,
                            s.values,
                            colour=_split_colour(sp, splits),
                            style=style,
                            marker="o",
                        )
                    )
    if metric_lines:
        th = (r.meta.get("thresholds") or {}).get("min_accuracy")
        hline = (float(th), f"accuracy threshold {float(th):g}") if isinstance(th, (int, float)) else None
        chart = plots.line_chart(
            "metrics-epochs",
            metric_lines,
            title="Metrics per epoch by split",
            xlabel="epoch",
            ylabel="score (0–1)",
            markers=emarks,
            hline=hline,
            caption="Solid: accuracy (or mAP@0.5); dashed: macro-averaged F1, which weighs every class equally.",
        )
        out.append(sink.emit(chart, rd.slug))
    lr_names = [n for n in r.scalar_names if n == "lr" or n.startswith("lr/") or n.endswith("/lr")]
    if lr_names:
        lines = []
        for i, n in enumerate(lr_names):
            s = r.scalar(n)
            lines.append(Line(n, s.steps, s.values, colour=PALETTE[i % len(PALETTE)]))
        flat = all(np.nanmax(ln.y) == np.nanmin(ln.y) for ln in lines if len(ln.y))
        chart = plots.line_chart(
            "lr",
            lines,
            title="Learning rate schedule",
            xlabel="step",
            ylabel="learning rate",
            logy=True,
            markers=smarks,
            caption="Constant over the run."
            if flat
            else "As the optimizer used it, one line per param group.",
        )
        out.append(sink.emit(chart, rd.slug))
    mom = [n for n in r.scalar_names if n.rsplit("/", 1)[-1] in ("momentum", "beta1", "beta2")]
    if mom:
        lines = []
        for i, n in enumerate(mom):
            s = r.scalar(n)
            lines.append(Line(n, s.steps, s.values, colour=PALETTE[(i + 1) % len(PALETTE)]))
        chart = plots.line_chart(
            "momentum",
            lines,
            title="Momentum and Adam betas",
            xlabel="step",
            ylabel="value",
            markers=smarks,
            caption="SGD momentum, or Adam's beta1/beta2, as the optimizer used them.",
        )
        out.append(sink.emit(chart, rd.slug))
    from .interactive import step_times

    st = step_times(rd)
    if st is not None:
        steps, per, thr = st
        chart = plots.line_chart(
            "step-time",
            [Line("ms per step", steps, per * 1000.0, colour=PALETTE[4])],
            title="Wall time per step",
            xlabel="step",
            ylabel="milliseconds per step",
            markers=smarks,
            caption="Mean wall time of the steps between two captures (the recorder's own time included); "
            "a rise: a data-loading stall, a slower phase, or a busy machine.",
        )
        out.append(sink.emit(chart, rd.slug))
        if thr is not None:
            chart = plots.line_chart(
                "throughput",
                [Line("samples/s", steps, thr, colour=PALETTE[2])],
                title="Throughput",
                xlabel="step",
                ylabel="samples per second",
                caption=f"Batch size {r.meta.get('batch_size')} over the wall time per step.",
            )
            out.append(sink.emit(chart, rd.slug))
    skip = {"loss", "grad_norm", "wall_time", *HYPERPARAMETER_SIGNALS}
    others = [
        n
        for n in r.scalar_names
        if n.rsplit("/", 1)[-1] not in skip and not re.match(r"^(lr|momentum|weight_decay)/\d+$", n)
    ]
    for i, name in enumerate(others[:6]):
        s = r.scalar(name)
        chart = plots.line_chart(
            f"scalar-{name}",
            [Line(name, s.steps, s.values, colour=PALETTE[(i + 2) % len(PALETTE)])],
            title=f"Logged scalar: {name}",
            xlabel="step",
            ylabel=name,
            markers=smarks,
            size=(6.4, 2.8),
        )
        out.append(sink.emit(chart, rd.slug))
    if len(others) > 6:
        out.append(
            f'<p class="note">{len(others) - 6} more logged scalars not drawn: {esc(", ".join(others[6:]))}</p>'
        )
    if not out:
        return missing(
            "no per-step loss and no evaluations were recorded (call run.log(loss=...) and run.evaluate(...))"
        )
    return f'<div class="grid">{"".join(out)}</div>'


# ---- gradients -------------------------------------------------------------------------------------------
def _chosen_rows(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1}) if n else []


def gradients_section(rd: RunData, sink: FigureSink) -> str:
    r = rd.reader
    out: list[str] = []
    notes: list[str] = []
    gnames = [n for n in r.scalar_names if n.rsplit("/", 1)[-1] == "grad_norm"]
    if gnames:
        lines = []
        for i, n in enumerate(gnames):
            s = r.scalar(n)
            lines.append(Line(n, s.steps, s.values, colour=PALETTE[i % len(PALETTE)], width=1.0))
        th = (r.meta.get("thresholds") or {}).get("explode_ratio")
        cap = "Global L2 norm of all gradients at each optimizer step (min/max downsampled)."
        if isinstance(th, (int, float)):
            cap += f" The live check flags norms above {float(th):g}× the running median."
        chart = plots.line_chart(
            "grad-norm",
            lines,
            title="Global gradient norm per step",
            xlabel="step",
            ylabel="gradient L2 norm",
            logy=True,
            markers=step_markers(rd),
            caption=cap,
        )
        out.append(sink.emit(chart, rd.slug))
    else:
        notes.append("no global gradient norm was recorded (grad_norm)")
    g = r.layer_stat("grad_norm")
    if len(g.steps) and g.layers:
        chart = plots.heatmap(
            "grad-heatmap",
            g.steps,
            g.values,
            g.layers,
            title="Gradient flow: per-layer gradient norm over time",
            colorbar="gradient L2 norm (log scale)",
            caption=f"Each row a layer (input at the top), each column a time bucket (maximum of the bucket; "
            f"{len(g.steps)} records every {r.meta.get('every', '?')} steps). Dark rows at the top: vanishing "
            "gradients; a bright vertical band: an explosion. White: zero or no finite value.",
        )
        out.append(sink.emit(chart, rd.slug))
        rows = _chosen_rows(len(g.steps))
        labels = ["first", "middle", "last"] if len(rows) == 3 else ["first", "last"][: len(rows)]
        chart = plots.layer_profile(
            "grad-profile",
            g.layers,
            [(f"step {int(g.steps[i])} ({lab})", g.values[i]) for i, lab in zip(rows, labels)],
            title="Gradient norm per layer at chosen steps",
            ylabel="gradient L2 norm",
            caption="Flat lines: gradients reach every layer. Lines falling toward the first layers: vanishing.",
        )
        out.append(sink.emit(chart, rd.slug))
    else:
        notes.append("no per-layer gradient norms were recorded (layer statistic grad_norm)")
    body = f'<div class="grid">{"".join(out)}</div>' if out else ""
    return body + "".join(missing(n) for n in notes)


def updates_section(rd: RunData, sink: FigureSink) -> str:
    r = rd.reader
    u = r.layer_stat("update_ratio")
    out: list[str] = []
    if not (len(u.steps) and u.layers):
        return missing("no update-to-weight ratios were recorded (layer statistic update_ratio)")
    chart = plots.heatmap(
        "update-heatmap",
        u.steps,
        u.values,
        u.layers,
        title="Update-to-weight ratio per layer over time",
        colorbar="‖update‖ / ‖weight‖ (log scale)",
        caption="How much each optimizer step changes a layer relative to its size (bucket maximum).",
    )
    out.append(sink.emit(chart, rd.slug))
    vals = np.where(np.isfinite(u.values), u.values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer with no finite ratio has no median
        med = np.nanmedian(vals, axis=0)
    last = vals[-1]
    chart = plots.layer_profile(
        "update-profile",
        u.layers,
        [("median over the run", med), (f"step {int(u.steps[-1])} (last)", last)],
        title="Update-to-weight ratio per layer",
        ylabel="‖update‖ / ‖weight‖",
        hline=(UPDATE_RATIO_GUIDE, "≈1e-3 rule of thumb"),
        caption="Far below 1e-3: the layer barely learns (learning rate too low or masked gradients); "
        "far above: updates are large enough to be unstable.",
    )
    out.append(sink.emit(chart, rd.slug))
    from .interactive import UPDATE_RATIO_BAND, ratio_layers

    chosen = ratio_layers(len(u.layers))
    chart = plots.line_chart(
        "update-ratio-steps",
        [
            Line(u.layers[j], u.steps, vals[:, j], colour=PALETTE[k % len(PALETTE)], width=1.1)
            for k, j in enumerate(chosen)
        ],
        title="Update-to-weight ratio per layer over steps",
        xlabel="step",
        ylabel="‖update‖ / ‖weight‖",
        logy=True,
        markers=step_markers(rd),
        hline=(UPDATE_RATIO_GUIDE, "≈1e-3 rule of thumb"),
        caption=f"Healthy band (shaded in the interactive view): {UPDATE_RATIO_BAND[0]:g} to "
        f"{UPDATE_RATIO_BAND[1]:g}. "
        + (
            ""
            if len(chosen) == len(u.layers)
            else f"{len(chosen)} of {len(u.layers)} layers, spread over the depth."
        ),
    )
    out.append(sink.emit(chart, rd.slug))
    w = r.layer_stat("weight_norm")
    if len(w.steps) >= 2 and w.layers:
        chart = plots.layer_profile(
            "weight-profile",
            w.layers,
            [
                (f"step {int(w.steps[0])} (first)", w.values[0]),
                (f"step {int(w.steps[-1])} (last)", w.values[-1]),
            ],
            title="Weight norm per layer, first vs last record",
            ylabel="weight L2 norm",
        )
        out.append(sink.emit(chart, rd.slug))
    return f'<div class="grid">{"".join(out)}</div>'


def distributions_section(rd: RunData, sink: FigureSink) -> str:
    """Quantiles of each layer's weights and gradients: the static view at the last capture, bands over time."""
    from ..probes.quantiles import QUANTILES, quantile_names

    r = rd.reader
    out = []
    for kind, label in (("weight", "weights"), ("grad", "gradients")):
        stats = [r.layer_stat(n) for n in quantile_names(kind)]
        if not all(len(s.steps) and s.layers for s in stats):
            continue
        chart = plots.layer_profile(
            f"{kind}-quantile-profile",
            stats[0].layers,
            [(f"{q * 100:g}%", s.values[-1]) for q, s in zip(QUANTILES, stats)],
            title=f"Quantiles of the {label} per layer, step {int(stats[0].steps[-1])} (last capture)",
            ylabel=f"{label[:-1]} value",
            logy=False,
            caption="1%, 25%, 50%, 75% and 99% of a fixed sample of 512 elements per layer. "
            "The interactive view shows them over every capture, layer by layer.",
        )
        bands = sink.specs.get(f"{rd.slug}-quantiles")
        if kind == "weight" and bands is not None:  # the interactive bands (weights and gradients) ride on it
            sink.specs[f"{rd.slug}-{chart.key}"] = bands
        html = sink.emit(chart, rd.slug)
        out.append(html)
    if not out:
        return missing(
            "no weight or gradient quantiles were recorded (layer statistics weight_q01 … grad_q99)"
        )
    return f'<div class="grid">{"".join(out)}</div>'


def activations_section(rd: RunData, sink: FigureSink) -> str:
    r = rd.reader
    dead, sat = r.layer_stat("act_dead"), r.layer_stat("act_saturated")
    layers = dead.layers or sat.layers
    if not layers or not (len(dead.steps) or len(sat.steps)):
        note = "; ".join(str(n) for n in (r.meta.get("notes") or []) if "activation" in str(n))
        return missing("no activation statistics were recorded" + (f" ({note})" if note else ""))
    out: list[str] = []
    groups = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for stat, label in ((dead, "dead (last record)"), (sat, "saturated (last record)")):
            if len(stat.steps) and np.isfinite(stat.values).any():
                groups.append((label, stat.values[-1]))
                groups.append((label.replace("last record", "worst record"), np.nanmax(stat.values, axis=0)))
    if groups:
        chart = plots.grouped_bars(
            "act-dead-saturated",
            layers,
            groups,
            title="Dead and saturated units per activation layer",
            ylabel="share of units (0–1)",
            xlabel="activation layer (input → output)",
            ylim=(0.0, 1.0),
            caption="Dead: ReLU units that were ≤ 0 on every sampled row; saturated: sigmoid/tanh outputs in their "
            "flat tails. Missing bars: the statistic does not apply to that activation.",
        )
        out.append(sink.emit(chart, rd.slug))
    if len(dead.steps) and np.isfinite(dead.values).any():
        chart = plots.heatmap(
            "act-dead-heatmap",
            dead.steps,
            dead.values,
            dead.layers,
            title="Dead-unit share over time",
            colorbar="share of dead units",
            log=False,
            vmin=0.0,
            vmax=1.0,
        )
        out.append(sink.emit(chart, rd.slug))
    mean, std = r.layer_stat("act_mean"), r.layer_stat("act_std")
    if len(mean.steps) and len(std.steps):
        chart = plots.layer_profile(
            "act-mean-std",
            mean.layers,
            [("mean (last record)", mean.values[-1]), ("std (last record)", std.values[-1])],
            title="Activation mean and spread per layer",
            ylabel="activation value",
            logy=False,
            caption="A spread that shrinks or grows layer after layer hints at poor initialization or missing normalization.",
        )
        out.append(sink.emit(chart, rd.slug))
    return f'<div class="grid">{"".join(out)}</div>'


# ---- classification / detection ----------------------------------------------------------------------------
def _class_names(data: dict[str, Any], n: int) -> list[str]:
    names = data.get("class_names")
    if isinstance(names, list) and len(names) == n:
        return [str(c) for c in names]
    return [str(i) for i in range(n)]


def _primary_split(splits: list[str]) -> str:
    for sp in ("val", "valid", "validation", "test"):
        if sp in splits:
            return sp
    return splits[-1]


def classification_section(rd: RunData, sink: FigureSink) -> str:
    r = rd.reader
    recs = [
        x
        for x in r.records("classification")
        if isinstance(x.get("data"), dict) and x["data"].get("confusion_matrix")
    ]
    det = [x for x in r.records("detection") if isinstance(x.get("data"), dict)]
    if not recs and not det:
        return missing("no classification or detection evaluations were recorded (run.evaluate)")
    out: list[str] = []
    tables: list[str] = []
    th = r.meta.get("thresholds") or {}
    if recs:
        splits = list(dict.fromkeys(x["split"] for x in recs if x.get("split")))
        sp = _primary_split(splits) if splits else None
        rec = [x for x in recs if x.get("split") == sp][-1] if sp else recs[-1]
        data = rec["data"]
        cm = np.asarray(data["confusion_matrix"], dtype=np.int64)
        names = _class_names(data, cm.shape[0])
        where = f"split {sp}, epoch {rec.get('epoch')}"
        for normalize in (False, True):
            chart = plots.confusion_chart(
                "confusion-normalized" if normalize else "confusion-counts",
                cm,
                names,
                normalize=normalize,
                title=f"Confusion matrix ({'row-normalized' if normalize else 'counts'}), {where}",
                caption="Rows: true class; columns: predicted class. "
                + (
                    "Each row sums to 1: the diagonal is the recall of each class."
                    if normalize
                    else "A bright column: predictions piled into one class."
                ),
            )
            out.append(sink.emit(chart, rd.slug))
        per = data.get("per_class") or {}
        groups = [
            (k.upper() if k == "f1" else k, np.asarray(per[k], dtype=np.float64))
            for k in ("precision", "recall", "f1")
            if isinstance(per.get(k), list) and len(per[k]) == len(names)
        ]
        if groups:
            rec_th = th.get("min_recall")
            chart = plots.grouped_bars(
                "per-class",
                names,
                groups,
                title=f"Precision, recall and F1 per class, {where}",
                ylabel="score (0–1)",
                xlabel="class",
                ylim=(0.0, 1.05),
                hline=(float(rec_th), f"recall threshold {float(rec_th):g}")
                if isinstance(rec_th, (int, float))
                else None,
            )
            out.append(sink.emit(chart, rd.slug))
            cols = ["support", "predicted", "precision", "recall", "f1"]
            rows = []
            for i, name in enumerate(names):
                rows.append(
                    [name]
                    + [
                        (per.get(c) or [None] * len(names))[i]
                        if len(per.get(c) or []) == len(names)
                        else None
                        for c in cols
                    ]
                )
            tables.append(f"<h4>Per-class figures, {esc(where)}</h4>" + table(["class", *cols], rows))
        for key, label in (
            ("classes_without_samples", "classes without samples"),
            ("classes_without_predictions", "classes never predicted"),
        ):
            vals = data.get(key)
            if vals:
                tables.append(
                    f'<p class="note">{esc(label)}: {esc(", ".join(names[int(i)] if 0 <= int(i) < len(names) else str(i) for i in vals))}</p>'
                )
    if det:
        rec = det[-1]
        data = rec["data"]
        where = f"split {rec.get('split')}, epoch {rec.get('epoch')}"
        scal = data.get("scalars") or {}
        tables.append(f"<h4>Detection, {esc(where)}</h4>" + kv_table({k: scal[k] for k in scal}))
        per = data.get("per_class") or {}
        n = len(per.get("ap_50") or per.get("ap") or [])
        names = _class_names(data, n)
        groups = [
            (lab, np.asarray(per[k], dtype=np.float64))
            for k, lab in (("ap_50", "AP@0.5"), ("precision", "precision"), ("recall", "recall"))
            if isinstance(per.get(k), list) and len(per[k]) == n
        ]
        if n and groups:
            chart = plots.grouped_bars(
                "detection-per-class",
                names,
                groups,
                title=f"Detection per class, {where}",
                ylabel="score (0–1)",
                xlabel="class",
                ylim=(0.0, 1.05),
            )
            out.append(sink.emit(chart, rd.slug))
    grid = f'<div class="grid">{"".join(out)}</div>' if out else ""
    return grid + "".join(tables)


# ---- configuration, model, audit, autofix, events ----------------------------------------------------------
def config_section(rd: RunData) -> str:
    meta = rd.reader.meta
    out = []
    opts = meta.get("optimizers")
    if isinstance(opts, list) and opts:
        for o in opts:
            if not isinstance(o, dict):
                continue
            groups = [g for g in o.get("param_groups") or [] if isinstance(g, dict)]
            keys = list(dict.fromkeys(k for g in groups for k in g))
            out.append(f"<h4>Optimizer {esc(o.get('name', ''))}: {esc(o.get('type', '?'))}</h4>")
            out.append(
                table(["param group", *keys], [[i, *[g.get(k) for k in keys]] for i, g in enumerate(groups)])
            )
    else:
        out.append(missing("no optimizer was recorded"))
    cfg = meta.get("config")
    if isinstance(cfg, dict) and cfg:
        out.append("<h4>Configuration</h4>" + kv_table(cfg))
    th = meta.get("thresholds")
    if isinstance(th, dict) and th:
        out.append(f"<details><summary>Thresholds used ({len(th)})</summary>{kv_table(th)}</details>")
    return "".join(out)


def model_section(rd: RunData) -> str:
    models = rd.reader.meta.get("models")
    if not isinstance(models, list) or not models:
        return missing("no model summary was recorded")
    out = []
    for m in models:
        if not isinstance(m, dict):
            continue
        facts = {
            k: m.get(k)
            for k in ("type", "total_params", "trainable_params", "device", "dtype")
            if m.get(k) is not None
        }
        if m.get("activations"):
            facts["activations"] = m["activations"]
        if m.get("dropout"):
            facts["dropout"] = ", ".join(
                f"{d.get('layer')} p={d.get('p')}" for d in m["dropout"] if isinstance(d, dict)
            )
        if m.get("normalization"):
            facts["normalization layers"] = m["normalization"]
        out.append(f"<h4>Model {esc(m.get('name', ''))}</h4>" + kv_table(facts))
        rows = []
        for lay in m.get("layers") or []:
            if not isinstance(lay, dict):
                continue
            init = lay.get("init") or {}
            rows.append(
                [
                    lay.get("name"),
                    lay.get("type"),
                    lay.get("params"),
                    lay.get("activation") or "",
                    init.get("shape", ""),
                    init.get("std", ""),
                    init.get("he_std", ""),
                    init.get("xavier_std", ""),
                ]
            )
        if rows:
            out.append(
                table(
                    [
                        "layer",
                        "type",
                        "parameters",
                        "followed by",
                        "weight shape",
                        "initial std",
                        "He std",
                        "Xavier std",
                    ],
                    rows,
                )
            )
    return "".join(out)


def audit_section(rd: RunData) -> str:
    data = rd.reader.record("audit")
    if data is None:
        return missing(
            "no data audit was stored with this run (run.record('audit', tm.audit(...).to_dict()))"
        )
    if not isinstance(data, dict):
        return missing(f"the stored audit is not a Diagnosis dict (got {type(data).__name__})")
    try:
        d = Diagnosis.from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        return missing(f"the stored audit could not be read ({type(e).__name__}: {e})")
    out = []
    problems = d.problems
    cls = "healthy" if not problems else max(problems, key=lambda f: f.severity.rank).severity.value
    out.append(
        f'<div class="verdict {esc(cls)}">{badge(cls)}<strong>'
        f"{esc('Data audit: no problems found' if not problems else f'Data audit: {len(problems)} problem(s)')}"
        "</strong></div>"
    )
    splits = (d.signals or {}).get("splits")
    if isinstance(splits, dict) and splits:
        keys = list(dict.fromkeys(k for v in splits.values() if isinstance(v, dict) for k in v))[:8]
        out.append(
            table(
                ["split", *keys],
                [
                    [sp, *[(v.get(k) if isinstance(v, dict) else None) for k in keys]]
                    for sp, v in splits.items()
                ],
            )
        )
    out.append(findings_by_severity(d.findings, None))
    if d.skipped:
        out.append(table(["check", "reason"], [(s.code, s.reason) for s in d.skipped]))
    return "".join(out)


def _config_change(change: Any) -> str:
    """``{"lr": [0.1, 0.03]}`` as ``lr 0.1 → 0.03``; anything else as it comes."""
    if change is None:
        return ""
    if isinstance(change, dict):
        parts = []
        for k, v in change.items():
            if isinstance(v, (list, tuple)) and len(v) == 2:
                parts.append(f"{k} {fmt(v[0])} → {fmt(v[1])}")
            else:
                parts.append(f"{k} → {fmt(v)}")
        return ", ".join(parts)
    return fmt(change)


def autofix_section(rd: RunData) -> str:
    data = rd.reader.record("autofix")
    if data is None:
        return missing("no autofix audit log was stored with this run")
    trials = data.get("trials") if isinstance(data, dict) else data if isinstance(data, list) else None
    if not isinstance(trials, list):
        return missing("the autofix record has no list of trials")
    out = []
    if isinstance(data, dict):
        top = {k: v for k, v in data.items() if k != "trials" and not isinstance(v, (list, dict))}
        if top:
            out.append(kv_table(top))
    rows = []
    for i, t in enumerate(trials):
        if not isinstance(t, dict):
            continue
        before, after = t.get("metric_before"), t.get("metric_after")
        delta: Any = None
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            delta = float(after) - float(before)
        kept, error = t.get("kept"), t.get("error")
        if kept is True:
            kept_cell = Raw(badge("healthy", "kept"))
        elif error:
            kept_cell = Raw(badge("error", "failed") + " " + esc(fmt(error)))
        elif kept is False:
            kept_cell = Raw(badge("error", "rolled back"))
        else:
            kept_cell = Raw(badge("unknown", "?"))
        before_codes = t.get("codes_before")
        after_codes = t.get("codes_after", t.get("diagnosis_codes", t.get("codes", t.get("diagnosis"))))
        remedy = t.get("remedy") or ("baseline" if t.get("index", i) == 0 else "?")
        if t.get("finding"):
            remedy = f"{remedy} (for {t['finding']})"
        rows.append(
            (
                kept,
                [
                    t.get("index", i),
                    remedy,
                    _config_change(t.get("config_change")),
                    before,
                    after,
                    delta,
                    kept_cell,
                    before_codes if before_codes is not None else "",
                    after_codes if after_codes is not None else "",
                ],
            )
        )
    if not rows:
        return "".join(out) + missing("the autofix log holds no trials")
    header = [
        "#",
        "remedy",
        "config change",
        "metric before",
        "metric after",
        "after − before",
        "kept",
        "problems before",
        "problems after",
    ]
    body = []
    for kept, row in rows:
        cls = "kept" if kept is True else "rejected" if kept is False else ""
        cells = "".join(f"<td>{c.html if isinstance(c, Raw) else esc(fmt(c))}</td>" for c in row)
        body.append(f'<tr class="{cls}">{cells}</tr>')
    out.append(
        "<table><thead><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )
    return "".join(out)


def events_section(rd: RunData) -> str:
    evs = [e for e in rd.reader.events() if e.get("kind") != "live_finding"]
    if not evs:
        return ""
    rows = [
        [e.get("step"), e.get("epoch"), e.get("kind"), e.get("severity") or "", e.get("message")]
        for e in evs[:200]
    ]
    more = f'<p class="note">{len(evs) - 200} more events not shown.</p>' if len(evs) > 200 else ""
    return table(["step", "epoch", "kind", "severity", "message"], rows) + more


# ---- one run, all sections --------------------------------------------------------------------------------
def guarded(fn: Callable[[], str], what: str) -> str:
    """Run a section builder; a crash becomes a one-line note instead of a lost report."""
    try:
        return fn()
    except Exception as e:  # a report must always come out
        return missing(f"the {what} section could not be drawn ({type(e).__name__}: {e})")


def run_sections(rd: RunData, sink: FigureSink) -> list[Section]:
    s = rd.slug
    parts: list[tuple[str, str, Callable[[], str]]] = [
        ("summary", "Summary", lambda: summary_section(rd)),
        ("curves", "Loss and metrics", lambda: curves_section(rd, sink)),
        ("gradients", "Gradient flow", lambda: gradients_section(rd, sink)),
        ("updates", "Updates and weights", lambda: updates_section(rd, sink)),
        ("distributions", "Weight and gradient distributions", lambda: distributions_section(rd, sink)),
        ("activations", "Activations", lambda: activations_section(rd, sink)),
        ("classes", "Classes and predictions", lambda: classification_section(rd, sink)),
        ("config", "Hyperparameters and configuration", lambda: config_section(rd)),
        ("model", "Model", lambda: model_section(rd)),
        ("audit", "Data audit", lambda: audit_section(rd)),
        ("autofix", "Autofix log", lambda: autofix_section(rd)),
        ("events", "Events", lambda: events_section(rd)),
    ]
    out = []
    for key, title, fn in parts:
        body = guarded(fn, title.lower())
        if body:
            out.append(Section(f"{s}-{key}", title, body))
    return out
