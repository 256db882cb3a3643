"""``trainmedic demo``: the main job on bundled data, start to finish.

1. Split scikit-learn's digits 60/20/20 (stratified) and audit the data.
2. Train a deliberately faulty model (a deep sigmoid MLP with plain SGD: gradients vanish, it underfits),
   recorded with ``tm.watch``.
3. Diagnose it: findings with evidence and ranked remedies.
4. Autofix: apply the best-ranked remedy, retrain, verify on validation data, keep or roll back, repeat.
5. Write one offline HTML report with the run before and after the fix side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

FAULTY_CONFIG: dict[str, Any] = {
    "dataset": "digits",
    "arch": "mlp",
    "activation": "sigmoid",
    "depth": 6,
    "width": 64,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.0,
    "epochs": 8,
    "batch_size": 64,
    "seed": 0,
}


@dataclass
class DemoResult:
    out_dir: Path
    audit: Any
    before: Any  # Diagnosis of the faulty run
    after: Any  # Diagnosis of the repaired run
    autofix: Any  # AutofixResult
    report: Path
    seconds: float


def _digits_splits(seed: int = 0) -> Any:
    import numpy as np
    from sklearn.datasets import load_digits

    from .data import split

    x, y = load_digits(return_X_y=True)
    return split((x.astype(np.float32) / 16.0, y), ratios=(0.6, 0.2, 0.2), stratify=True, seed=seed)


def run_demo(
    out_dir: str | Path = "trainmedic-demo", budget: int = 5, console: Console | None = None
) -> DemoResult:
    """Run the whole demo into ``out_dir`` and return what it found and fixed."""
    from .checks import diagnose
    from .checks.render import render_diagnosis
    from .data import audit
    from .remedies.autofix import autofix
    from .report import report
    from .scenarios.train import train_fn

    con = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    con.rule("[bold]1. The data: scikit-learn digits, split 60/20/20 and audited")
    splits = _digits_splits()
    data_diag = audit(train=splits.train, val=splits.val, test=splits.test)
    con.print(
        f"train {len(splits.train[1])}, val {len(splits.val[1])}, test {len(splits.test[1])} samples; "
        f"audit: {'no data problems' if data_diag.healthy else ', '.join(sorted(data_diag.codes))}"
    )

    con.rule("[bold]2-4. A faulty run (deep sigmoid MLP, plain SGD), diagnosed and fixed")
    con.print("config: " + ", ".join(f"{k}={v}" for k, v in FAULTY_CONFIG.items()))
    result = autofix(train_fn, FAULTY_CONFIG, budget=budget, run_root=out / "autofix", verbose=False)
    first_run = Path(result.trials[0].run_dir)
    final_run = Path(result.final_run_dir)
    # The audit of the data joins the diagnosis of both runs.
    for rd in {first_run, final_run}:
        _attach_audit(rd, data_diag)
    before = diagnose(first_run)
    after = diagnose(final_run)

    con.rule("[bold]Diagnosis of the faulty run")
    render_diagnosis(_training_view(before), con, show_skipped=False, compact_info=True)
    con.rule("[bold]What autofix tried")
    table = Table(show_lines=False)
    table.add_column("trial", no_wrap=True)
    table.add_column("remedy", overflow="fold")
    table.add_column("change", overflow="fold")
    table.add_column("val acc", no_wrap=True)
    table.add_column("kept", no_wrap=True)
    table.add_column("problems", no_wrap=True)
    for t in result.trials:
        d = t.to_dict()
        codes = d.get("codes_after") or []
        table.add_row(
            str(d.get("index")),
            str(d.get("remedy") or "baseline").replace("+", " + "),
            escape(_change(d.get("config_change"))),
            _fmt(d.get("metric_after")),
            "yes" if d.get("kept") else "rolled back",
            str(len(codes)) if codes else "none",
        )
    con.print(table)
    con.rule("[bold]Diagnosis after the fix")
    render_diagnosis(_training_view(after), con, show_skipped=False, compact_info=True)

    con.rule("[bold]5. Report")
    report_path = report([first_run, final_run], output=out / "report.html")
    seconds = time.perf_counter() - t0
    b, a = result.trials[0].to_dict().get("metric_after"), _best_metric(result)
    con.print(
        f"validation accuracy {_fmt(b)} → {_fmt(a)}; problems {len(before.problems)} → {len(after.problems)}; "
        f"{len(result.trials)} training runs in {seconds:.0f} s"
    )
    # paths hold user text (`--out`): escaped, never read as markup
    con.print(escape(f"runs:   {out / 'autofix'}  (faulty: {first_run.name}, fixed: {final_run.name})"))
    con.print(escape(f"model:  {result.best_model_path}"))
    con.print(escape(f"report: {report_path}"))
    return DemoResult(out, data_diag, before, after, result, Path(report_path), seconds)


def _training_view(d: Any) -> Any:
    """The diagnosis without the audit's healthy observations (step 1 already summarized the data)."""
    from .findings import Diagnosis

    keep = [f for f in d.findings if f.is_problem or f.source != "audit"]
    return Diagnosis(run=d.run, findings=keep, signals=d.signals, skipped=d.skipped)


def _change(change: Any) -> str:
    """``{"lr": [0.05, 0.003]}`` → ``lr 0.05→0.003``."""
    if not change:
        return "-"
    parts = []
    for k, v in dict(change).items():
        if isinstance(v, (list, tuple)) and len(v) == 2:
            parts.append(f"{k} {v[0]}→{v[1]}")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def _attach_audit(run_dir: Path, diagnosis: Any) -> None:
    from .store.writer import RunWriter

    w = RunWriter(run_dir, mode="resume")
    try:
        w.add_record("audit", diagnosis.to_dict())
    finally:
        w.close(status="closed")


def _best_metric(result: Any) -> Any:
    d = result.to_dict()
    return d.get("best_metric", d.get("final_metric"))


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"
