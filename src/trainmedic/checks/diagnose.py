"""``diagnose(run)``: run every registered check over a stored run and collect one :class:`Diagnosis`.

Besides the checks' own verdicts the diagnosis carries what was decided elsewhere: findings the live
monitor recorded during training (merged with the post-hoc verdict of the same code, never duplicated),
``internal_error`` events (some signals may be missing), and data-audit records stored with the run.
A check that crashes becomes an ``internal_error`` finding; the other checks still run.
"""

from __future__ import annotations

import os
import re
import traceback
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import TrainmedicError
from ..findings import Diagnosis, Finding, Severity, SkippedCheck
from ..settings import Thresholds, load_thresholds
from ..store.reader import RunReader
from .context import Context
from .registry import Check, all_checks
from .verdict import apply_symptoms_and_causes

# What each probe of the recorder writes: a failing probe means these signals may be incomplete.
PROBE_SIGNALS: dict[str, str] = {
    "gradients": "grad_norm, per-layer grad_norm, hyperparameters (lr, momentum, …)",
    "weights": "per-layer weight_norm, update_norm, update_ratio",
    "activations": "act_mean, act_std, act_dead, act_zero, act_saturated",
    "log": "the logged per-step scalars (loss, …)",
    "evaluate": "per-epoch metrics and confusion matrices",
    "flush": "signals buffered since the previous flush",
    "writer": "signals buffered since the previous flush",
    "input": "input shape and batch size",
    "treatment": "nothing recorded; a live remedy failed",
}


def _reader(run: Any) -> tuple[RunReader, bool]:
    if isinstance(run, RunReader):
        return run, False
    if hasattr(run, "run_dir") and hasattr(run, "flush"):  # a live Run
        run.flush()
        return RunReader(run.run_dir), True
    if isinstance(run, (str, os.PathLike)):
        return RunReader(Path(run)), True
    raise TrainmedicError(
        f"`run` must be a run directory path, a Run (tm.watch) or a RunReader (tm.open_run); got {type(run).__name__}"
    )


def _thresholds(reader: RunReader, thresholds: Thresholds | Mapping[str, Any] | None) -> Thresholds:
    """The run's recorded thresholds (what tm.watch used) under the caller's overrides."""
    if isinstance(thresholds, Thresholds):
        return thresholds
    known = set(Thresholds().to_dict())
    recorded = reader.meta.get("thresholds")
    base = {k: v for k, v in recorded.items() if k in known} if isinstance(recorded, dict) else {}
    return load_thresholds({**base, **dict(thresholds or {})})


def run_check(ctx: Context, chk: Check) -> tuple[list[Finding], SkippedCheck | None]:
    """Run one check: skipped with a reason when signals are missing; a crash becomes a finding."""
    reasons = [m for m in (ctx.missing(r) for r in chk.requires) if m]
    if chk.requires_any and all(ctx.missing(r) for r in chk.requires_any):
        reasons.append(
            "missing all of: "
            + "; ".join(str(ctx.missing(r)).removeprefix("missing ") for r in chk.requires_any)
        )
    if reasons:
        return [], SkippedCheck(chk.code, "; ".join(reasons))
    ctx.current = chk
    try:
        out = chk.fn(ctx)
    except Exception as e:
        tb = traceback.format_exc(limit=4)
        return [
            Finding(
                code="internal_error",
                severity=Severity.WARNING,
                message=f"check {chk.name} ({chk.code}) crashed: {type(e).__name__}: {e}; its verdict is missing, the other checks ran",
                evidence={"check": chk.name, "code": chk.code, "traceback": tb},
                confidence=1.0,
                source="diagnosis",
            )
        ], SkippedCheck(chk.code, f"the check crashed ({type(e).__name__}: {e})")
    finally:
        ctx.current = None
    if out is None:
        return [], None
    return ([out] if isinstance(out, Finding) else list(out)), None


def _internal_error_findings(reader: RunReader) -> list[Finding]:
    events = reader.events("internal_error")
    if not events:
        return []
    by_probe: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        probe = str((e.get("data") or {}).get("probe") or e["message"].split(":", 1)[0])
        by_probe[probe].append(e)
    out = []
    for probe, evs in by_probe.items():
        first = evs[0]
        count = max(int((e.get("data") or {}).get("count", 1)) for e in evs)
        missing = PROBE_SIGNALS.get(probe, "signals of this probe")
        out.append(
            Finding(
                code="internal_error",
                severity=Severity.WARNING,
                message=(
                    f"trainmedic's {probe!r} probe failed {count} time(s), first at step {first['step']} "
                    f"({first['message']}); these signals may be missing or incomplete: {missing}"
                ),
                evidence={
                    "probe": probe,
                    "failures": count,
                    "first_step": first["step"],
                    "error": first["message"],
                    "signals_maybe_missing": missing,
                    "traceback": (first.get("data") or {}).get("traceback"),
                },
                step=first["step"],
                confidence=1.0,
                source="training",
            )
        )
    return out


def _training_failed_findings(reader: RunReader) -> list[Finding]:
    """A run closed as ``failed`` (an exception ended training: ``with tm.watch``, a framework callback) is
    an error of its own: the other findings judge only the steps before it."""
    if reader.meta.get("status") != "failed":
        return []
    events = reader.events("training_exception")
    first = events[0] if events else None
    error = str(first["message"]) if first else "an exception (no training_exception event recorded)"
    step = first["step"] if first else reader.meta.get("steps")
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()]
    short = lines[0] if lines else error
    if short.endswith(":"):  # a wrapper's headline (TensorFlow's "Graph execution error:"): add the cause
        cause = [ln for ln in lines[1:] if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln)]
        if cause:
            short = f"{short} {cause[-1]}"
    short = short[:300]
    return [
        Finding(
            code="training_failed",
            severity=Severity.ERROR,
            message=f"training failed at step {step}: {short}; the other findings judge only the steps before it",
            evidence={"status": "failed", "error": error[:2000], "step": step},
            step=step if isinstance(step, int) else None,
            confidence=1.0,
            source="training",
        )
    ]


def _merge_live(findings: list[Finding], reader: RunReader, ran: set[str]) -> list[Finding]:
    """Live findings: attach to the post-hoc finding of the same code, or keep them when there is none."""
    out = list(findings)
    by_code: dict[str, Finding] = {}  # per code, the most severe live finding (the earliest of those)
    for e in reader.events("live_finding"):
        data = e.get("data")
        if not isinstance(data, dict) or "code" not in data:
            continue
        live = Finding.from_dict(data)
        live.source = "live"
        kept = by_code.get(live.code)
        if kept is None or live.severity.rank > kept.severity.rank:
            by_code[live.code] = live
    for live in by_code.values():
        match = next((f for f in out if f.code == live.code and f.source != "audit"), None)
        if match is not None:
            match.evidence["live"] = {
                "step": live.step,
                "message": live.message,
                "severity": live.severity.value,
            }
            if match.step is None or (live.step is not None and live.step < match.step):
                match.step = live.step
            if live.is_problem:
                match.confidence = min(1.0, match.confidence + 0.1)  # seen live and confirmed after the run
                match.source = "training+live"
            continue
        if live.code in ran and live.is_problem:
            # one verdict per code: the post-hoc check over the whole run decides; an alarm it does not
            # confirm stays visible as a note of what was seen live
            live.evidence["post_hoc"] = "not confirmed by the post-hoc check over the whole run"
            live.evidence["live_severity"] = live.severity.value
            live.confidence *= 0.5
            live.severity = Severity.INFO
            live.message = (
                f"live alarm not confirmed: {live.message}; over the whole run the post-hoc check found no "
                "lasting harm (e.g. a transient burst while the loss kept falling)"
            )
        out.append(live)
    return out


# outcomes a live treatment can shape: a lower learning rate slows learning, skipped updates and an early stop
# end training sooner
_TREATABLE_OUTCOMES = frozenset(
    {"inefficient_learning", "underfitting", "low_accuracy", "low_recall", "low_precision", "overfitting"}
)


def _name_treatment(findings: list[Finding], reader: RunReader) -> None:
    """A live treatment (``treat="safe"``) that acted is named in the outcome findings it may have shaped, so
    a user reads "the lr was lowered 10x at step 300 by the treatment" next to "learning slowed"."""
    acts: list[str] = []
    records: list[dict[str, Any]] = []
    for e in reader.events("treatment"):
        raw = e.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        action = str(data.get("action") or "")
        step = e.get("step")
        if action == "lower_lr":
            what = f"lowered the learning rate x{data.get('factor', '?')} at step {step} ({data.get('cause', 'plateau')})"
        elif action == "skip_update":
            what = f"skipped the update of step {step}"
        elif action == "stop_restore_best":
            what = (
                f"stopped training at step {step} and restored the weights of epoch {data.get('best_epoch')}"
            )
        else:
            continue
        records.append({"action": action, "step": step})
        if what not in acts:
            acts.append(what)
    if not acts:
        return
    shown = "; ".join(acts[:3]) + (f"; and {len(acts) - 3} more" if len(acts) > 3 else "")
    for f in findings:
        if f.code in _TREATABLE_OUTCOMES and f.is_problem and "treatment" not in f.evidence:
            f.evidence["treatment"] = records
            f.message += f" (the live treatment acted during this run: it {shown})"


def _audit_findings(reader: RunReader) -> list[Finding]:
    out: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for rec in reversed(reader.records("audit")):
        data = rec.get("data")
        if not isinstance(data, dict):
            continue
        for fd in data.get("findings", []):
            try:
                f = Finding.from_dict(fd)
            except (KeyError, ValueError, TypeError):
                continue
            key = (f.code, f.message)
            if key in seen:
                continue
            seen.add(key)
            f.source = "audit"
            out.append(f)
    return out


ROOT_CAUSE_FIRST = ("nonfinite", "exploding_gradient")


def _break_step(findings: list[Finding]) -> int | None:
    """The first step of a non-finite value or of a damaging (error) explosion, if any."""
    steps = [
        f.step
        for f in findings
        if f.step is not None
        and (f.code == "nonfinite" or (f.code == "exploding_gradient" and f.severity is Severity.ERROR))
    ]
    return min(steps) if steps else None


def diagnose(
    run: str | os.PathLike[str] | Any,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    checks: Iterable[str] | None = None,
) -> Diagnosis:
    """Judge a stored run: every check, live findings, internal errors and data-audit records.

    ``run``: a run directory, a :class:`~trainmedic.watch.Run` or a :class:`~trainmedic.store.RunReader`.
    ``thresholds``: overrides (a dict or a :class:`Thresholds`) of the thresholds recorded with the run.
    ``checks``: only these problem codes (default: all).
    """
    reader, owned = _reader(run)
    try:
        t = _thresholds(reader, thresholds)
        registry = all_checks()
        wanted = list(registry) if checks is None else list(checks)
        unknown = [c for c in wanted if c not in registry]
        if unknown:
            raise TrainmedicError(
                f"`checks` must be codes of registered checks ({', '.join(registry)}); got {unknown}"
            )
        ctx = Context(reader, t)
        findings: list[Finding] = []
        skipped: list[SkippedCheck] = []
        ran: set[str] = set()
        # root cause first: the checks of a broken run judge first, and later checks read only the
        # statistics recorded before the break (what follows is evidence of the root cause)
        first = [c for c in ROOT_CAUSE_FIRST if c in wanted]
        for code in first + [c for c in wanted if c not in first]:
            if code not in first:
                ctx.set_break(_break_step(findings))
            got, skip = run_check(ctx, registry[code])
            findings.extend(got)
            if skip is not None:
                skipped.append(skip)
            else:
                ran.add(code)
        findings = _merge_live(findings, reader, ran)
        # the data audit's causes are judged by this run's outcome too, when a held-out split shows it
        findings.extend(_audit_findings(reader))
        findings = apply_symptoms_and_causes(findings, outcomes_judged=ctx.heldout_split is not None)
        findings.extend(_training_failed_findings(reader))
        findings.extend(_internal_error_findings(reader))
        _name_treatment(findings, reader)
        diag = Diagnosis(run=reader.name, findings=findings, skipped=skipped, signals=_signals(ctx))
        diag.no_data = not ran or not reader.has_evidence()  # no evidence is never "healthy"
        diag.sort()
        return diag
    finally:
        if owned:
            reader.close()


def _signals(ctx: Context) -> dict[str, Any]:
    r = ctx.r
    loss = ctx.loss
    return {
        "run_dir": str(r.run_dir),
        "status": r.meta.get("status"),
        "steps": int(loss.steps[-1]) + 1
        if loss is not None and len(loss)
        else int(r.meta.get("steps", 0) or 0),
        "epochs": int(r.meta.get("epochs", 0) or 0),
        "scalars": r.scalar_names,
        "layer_stats": sorted(r.layer_stats),
        "splits": ctx.splits,
        "judged_split": ctx.judged_split,
        "thresholds": ctx.t.to_dict(),
    }


__all__ = ["diagnose", "run_check"]
