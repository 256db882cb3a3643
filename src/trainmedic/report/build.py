"""``tm.report``: one self-contained, offline HTML file for one run or several runs side by side."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TrainmedicError
from ..findings import Diagnosis
from ..store.reader import RunReader
from . import plots
from .html import Raw, badge, esc, missing, page, table
from .plots import PALETTE, Line
from .sections import FigureSink, RunData, Section, _slug, guarded, load_live_findings, run_sections, verdict

DiagnosisLike = Diagnosis | Mapping[str, Any]


def _open(item: Any, read_only: bool = False) -> tuple[RunReader, bool]:
    """A reader for a run directory, a :class:`RunReader` or a live ``Run``; the flag says whether we own it."""
    if isinstance(item, RunReader):
        return item, False
    if hasattr(item, "run_dir") and hasattr(item, "flush"):  # trainmedic.watch.Run
        item.flush()
        return RunReader(item.run_dir, read_only=read_only), True
    if isinstance(item, (str, os.PathLike)):
        return RunReader(item, read_only=read_only), True
    raise TrainmedicError(
        f"`run_dirs_or_runs` must hold run directories, RunReaders or watched runs; got {type(item).__name__}"
    )


def _as_diagnosis(d: Any, what: str) -> Diagnosis:
    if isinstance(d, Diagnosis):
        return d
    if isinstance(d, Mapping):
        try:
            return Diagnosis.from_dict(dict(d))
        except (KeyError, TypeError, ValueError) as e:
            raise TrainmedicError(
                f"`{what}` must be a Diagnosis or its to_dict() form; could not read it ({e})"
            ) from None
    raise TrainmedicError(f"`{what}` must be a Diagnosis or its to_dict() form; got {type(d).__name__}")


def _diagnosis_per_run(diagnosis: Any, n: int) -> list[Diagnosis | None]:
    if diagnosis is None:
        return [None] * n
    if isinstance(diagnosis, (Diagnosis, Mapping)):
        if n != 1:
            raise TrainmedicError(
                f"`diagnosis` must be a list with one Diagnosis (or None) per run when reporting {n} runs; got one Diagnosis"
            )
        return [_as_diagnosis(diagnosis, "diagnosis")]
    if isinstance(diagnosis, Sequence) and not isinstance(diagnosis, (str, bytes)):
        if len(diagnosis) != n:
            raise TrainmedicError(f"`diagnosis` must hold one entry per run ({n}); got {len(diagnosis)}")
        return [None if d is None else _as_diagnosis(d, f"diagnosis[{i}]") for i, d in enumerate(diagnosis)]
    raise TrainmedicError(
        f"`diagnosis` must be a Diagnosis, a dict or a list of them; got {type(diagnosis).__name__}"
    )


def run_diagnosis(run_dir: Path) -> tuple[Diagnosis | None, str | None]:
    """``trainmedic.checks.diagnose(run_dir)``, or ``None`` and the reason it is unavailable."""
    try:
        from ..checks import diagnose  # type: ignore[attr-defined]
    except ImportError as e:
        return None, f"the checks are not available in this installation ({e})"
    except Exception as e:  # a broken checks package must not cost the report
        return None, f"the checks could not be imported ({type(e).__name__}: {e})"
    try:
        d = diagnose(run_dir)
    except Exception as e:  # the report still shows every signal
        return None, f"diagnose() failed: {type(e).__name__}: {e}"
    if isinstance(d, Mapping):
        d = Diagnosis.from_dict(dict(d))
    if not isinstance(d, Diagnosis):
        return None, f"diagnose() returned {type(d).__name__}, not a Diagnosis"
    return d, None


def _best(values: np.ndarray, lower: bool) -> float | None:
    v = values[np.isfinite(values)]
    if not len(v):
        return None
    return float(v.min() if lower else v.max())


def compare_section(runs: list[RunData], sink: FigureSink) -> str:
    """Several runs side by side: a verdict table, overlaid curves and the findings of each run."""
    rows = []
    for rd in runs:
        r = rd.reader
        cls, sentence = verdict(rd)
        val = "val" if "val" in r.splits else (r.splits[-1] if r.splits else None)
        acc = r.eval_series(val, "accuracy") if val else None
        vloss = r.eval_series(val, "loss") if val else None
        rows.append(
            [
                rd.label,
                Raw(badge(cls)),
                sentence,
                r.meta.get("steps"),
                r.meta.get("epochs"),
                float(acc.values[-1]) if acc is not None and len(acc) else None,
                _best(vloss.values, True) if vloss is not None and len(vloss) else None,
            ]
        )
    out = [
        table(["run", "verdict", "findings", "steps", "epochs", "final val accuracy", "best val loss"], rows)
    ]
    charts = []
    loss_lines, vloss_lines, acc_lines = [], [], []
    for i, rd in enumerate(runs):
        r, colour = rd.reader, PALETTE[i % len(PALETTE)]
        s = r.scalar("loss")
        if len(s):
            loss_lines.append(Line(rd.label, s.steps, s.values, colour=colour, width=1.0, alpha=0.85))
        val = "val" if "val" in r.splits else (r.splits[-1] if r.splits else None)
        if val:
            vl = r.eval_series(val, "loss")
            if len(vl):
                vloss_lines.append(
                    Line(f"{rd.label} ({val})", vl.steps, vl.values, colour=colour, marker="o")
                )
            tl = r.eval_series("train", "loss") if "train" in r.splits and val != "train" else None
            if tl is not None and len(tl):
                vloss_lines.append(
                    Line(f"{rd.label} (train)", tl.steps, tl.values, colour=colour, style="--", alpha=0.7)
                )
            for name in ("accuracy", "map_50"):
                a = r.eval_series(val, name)
                if len(a):
                    acc_lines.append(
                        Line(f"{rd.label} ({val} {name})", a.steps, a.values, colour=colour, marker="o")
                    )
                    break
    if loss_lines:
        finite = np.concatenate([ln.y[np.isfinite(ln.y)] for ln in loss_lines])
        logy = bool(len(finite) and finite.min() > 0 and finite.max() / finite.min() > 50)
        charts.append(
            plots.line_chart(
                "loss",
                loss_lines,
                title="Loss per step, runs overlaid",
                xlabel="step",
                ylabel="loss",
                logy=logy,
            )
        )
    if vloss_lines:
        charts.append(
            plots.line_chart(
                "epoch-loss",
                vloss_lines,
                title="Loss per epoch, runs overlaid",
                xlabel="epoch",
                ylabel="loss",
                caption="Solid: held-out split; dashed: training split.",
            )
        )
    if acc_lines:
        charts.append(
            plots.line_chart(
                "accuracy",
                acc_lines,
                title="Held-out accuracy per epoch, runs overlaid",
                xlabel="epoch",
                ylabel="score (0–1)",
            )
        )
    if charts:
        out.append('<div class="grid">' + "".join(sink.emit(c, "compare") for c in charts) + "</div>")
    else:
        out.append(missing("no run recorded a loss or an evaluation to overlay"))
    codes = list(dict.fromkeys(f.code for rd in runs for f in rd.problems))
    if codes:
        grid = []
        for code in codes:
            cells: list[Any] = [code]
            for rd in runs:
                sev = [f.severity for f in rd.problems if f.code == code]
                worst = max(sev, key=lambda s: s.rank).value if sev else None
                cells.append(Raw(badge(worst)) if worst else "—")
            grid.append(cells)
        out.append("<h3>Findings per run</h3>" + table(["problem", *[rd.label for rd in runs]], grid))
    return "".join(out)


def report(
    run_dirs_or_runs: Any,
    output: str | os.PathLike[str] = "report.html",
    png_dir: str | os.PathLike[str] | None = None,
    diagnosis: Any = None,
    *,
    title: str | None = None,
    interactive: bool = True,
) -> Path:
    """Write one offline HTML report for one run or several runs side by side; return its path.

    Args:
        run_dirs_or_runs: a run directory, a :class:`~trainmedic.store.RunReader`, a watched ``Run``, or a list
            of them (several runs are compared: overlaid curves and the findings of each).
        output: the HTML file to write (parent directories are created).
        png_dir: also write every figure as a PNG file into this directory.
        diagnosis: a :class:`~trainmedic.findings.Diagnosis` (or its dict form), or one per run; by default each
            run is judged by ``trainmedic.checks.diagnose``; when that is unavailable the summary says why.
        title: the page title (default: the run names).
        interactive: inline the interactive charts (uPlot and their data; allowed by a CSP hash). False writes
            a page without any script: the static figures only.
    """
    items = list(run_dirs_or_runs) if isinstance(run_dirs_or_runs, (list, tuple)) else [run_dirs_or_runs]
    if not items:
        raise TrainmedicError("`run_dirs_or_runs` must name at least one run directory; got an empty list")
    diagnoses = _diagnosis_per_run(diagnosis, len(items))
    out_path = Path(output)
    if out_path.exists() and out_path.is_dir():
        raise TrainmedicError(f"`output` must be a file path; {str(out_path)!r} is a directory")
    png_path = Path(png_dir) if png_dir is not None else None
    if png_path is not None:
        if png_path.exists() and not png_path.is_dir():
            raise TrainmedicError(f"`png_dir` must be a directory; {str(png_path)!r} is a file")
        png_path.mkdir(parents=True, exist_ok=True)
    opened: list[tuple[RunReader, bool]] = []
    try:
        for item in items:
            opened.append(_open(item))
        runs = run_data([r for r, _ in opened], diagnoses)
        html_text = render_page(runs, png_path, title, interactive=interactive)
    finally:
        for reader, owned in opened:
            if owned:
                reader.close()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(html_text, encoding="utf-8")
    os.replace(tmp, out_path)
    return out_path


def run_data(
    readers: list[RunReader], diagnoses: list[Diagnosis | None], diagnose: bool = True
) -> list[RunData]:
    """What the report shows of each run: unique labels, the diagnosis (given, or run here), live findings."""
    runs: list[RunData] = []
    seen: dict[str, int] = {}
    for i, (reader, diag) in enumerate(zip(readers, diagnoses)):
        label = reader.name
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        note = "diagnosis passed in by the caller" if diag is not None else None
        if diag is None and diagnose:
            diag, note = run_diagnosis(reader.run_dir)
        runs.append(
            RunData(reader, label, f"r{i + 1}-{_slug(label)}", diag, note, load_live_findings(reader))
        )
    return runs


def all_specs(runs: list[RunData]) -> dict[str, dict[str, Any]]:
    """The interactive charts of every run (and of the comparison); a failure costs only the interactivity."""
    from .interactive import compare_specs, run_specs

    specs: dict[str, dict[str, Any]] = {}
    for rd in runs:
        try:
            specs.update(run_specs(rd))
        except Exception:  # the static figure stays; the report must come out
            continue
    if len(runs) > 1:
        try:
            specs.update(compare_specs(runs))
        except Exception:  # the static comparison stays
            return specs
    return specs


def render_page(
    runs: list[RunData],
    png_path: Path | None,
    title: str | None,
    live: dict[str, Any] | None = None,
    interactive: bool = True,
) -> str:
    """The whole HTML document: static figures, their interactive data and script, and the live banner.

    The live view (``live``) leaves out the static twins of the interactive charts: they cost most of the
    page's time and the offline file (``trainmedic report``) has them.
    """
    specs = all_specs(runs) if interactive or live is not None else {}
    sink = FigureSink(png_path, specs, static_twins=live is None)
    return _render(runs, sink, title, live)


def _render(
    runs: list[RunData], sink: FigureSink, title: str | None, live: dict[str, Any] | None = None
) -> str:
    names = ", ".join(rd.label for rd in runs)
    page_title = title or (
        f"trainmedic report: {names}" if len(runs) == 1 else f"trainmedic comparison: {names}"
    )
    toc: list[tuple[str, str]] = []
    body: list[str] = []
    if len(runs) > 1:
        toc.append(("compare", "Comparison"))
        body.append(
            '<section id="compare"><h2>Runs side by side</h2>'
            + guarded(lambda: compare_section(runs, sink), "comparison")
            + "</section>"
        )
    for i, rd in enumerate(runs):
        sections: list[Section] = run_sections(rd, sink)
        inner = "".join(
            f'<section id="{esc(s.anchor)}"><h3>{esc(s.title)}</h3>{s.body}</section>' for s in sections
        )
        if len(runs) == 1:
            toc.extend((s.anchor, s.title) for s in sections)
            body.append(f'<section class="run" id="{esc(rd.slug)}">{inner}</section>')
        else:
            toc.append((rd.slug, rd.label))
            cls, _ = verdict(rd)
            body.append(
                f'<details class="run" id="{esc(rd.slug)}" open><summary>{badge(cls)} Run {i + 1}: {esc(rd.label)}'
                f"</summary>{inner}</details>"
            )
    subtitle = f"{len(runs)} run{'s' * (len(runs) != 1)} · {', '.join(str(rd.reader.run_dir) for rd in runs)}"
    how = (
        f"{len(sink.used)} interactive (drag to zoom, hover for values; the static figures show with scripts off)"
        if sink.used
        else "no scripts"
    )
    footer = f"Generated by trainmedic on {time.strftime('%Y-%m-%d %H:%M:%S')} · {sink.count} figures · offline · {how}"
    return page(page_title, subtitle, toc, "".join(body), footer, data={"charts": sink.used}, live=live)
