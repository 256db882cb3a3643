"""CLI commands of the run store: ``trainmedic inspect RUN_DIR`` and ``trainmedic import FILE RUN_DIR``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer

from .reader import RunReader


def inspect_run(run_dir: str | Path) -> dict[str, Any]:
    """What a run directory holds: signals, layers, steps, epochs, hyperparameters, model, splits, events."""
    with RunReader(run_dir) as r:
        meta = r.meta
        signals: dict[str, dict[str, Any]] = {}
        for name in r.scalar_names:
            s = r.scalar(name)
            finite = s.values[np.isfinite(s.values)]
            signals[name] = {
                "points": len(s),
                "first_step": int(s.steps[0]) if len(s) else None,
                "last_step": int(s.steps[-1]) if len(s) else None,
                "last": float(s.values[-1]) if len(s) else None,
                "min": float(finite.min()) if finite.size else None,
                "max": float(finite.max()) if finite.size else None,
                "nonfinite": int(len(s) - finite.size),
            }
        layer_stats: dict[str, dict[str, int]] = {}
        for stat, names in r.layer_stats.items():
            ls = r.layer_stat(stat)
            layer_stats[stat] = {"layers": len(names), "captures": len(ls.steps)}
        splits: dict[str, dict[str, Any]] = {}
        for sp in r.splits:
            facts = meta.get(f"split/{sp}") or {}
            splits[sp] = {"epochs": r.epochs(sp), "metrics": r.eval_names(sp), **facts}
        models = meta.get("models") or []
        layers = [
            {
                "name": lay["name"],
                "type": lay["type"],
                "params": lay["params"],
                "activation": lay.get("activation"),
            }
            for m in models
            for lay in m.get("layers", [])
        ]
        events: dict[str, int] = {}
        for e in r.events():
            events[e["kind"]] = events.get(e["kind"], 0) + 1
        return {
            "run": r.name,
            "run_dir": str(r.run_dir),
            "schema_version": int(meta.get("schema_version", 0) or 0),
            "status": meta.get("status"),
            "steps": int(meta.get("steps", 0) or 0),
            "epochs": int(meta.get("epochs", 0) or 0),
            "every": meta.get("every"),
            "device": meta.get("device"),
            "batch_size": meta.get("batch_size"),
            "amp": meta.get("amp"),
            "compiled": meta.get("compiled") or [],
            "signals": signals,
            "layer_stats": layer_stats,
            "layers": layers,
            "activations": meta.get("activations") or [],
            "models": [
                {
                    k: m.get(k)
                    for k in (
                        "name",
                        "type",
                        "total_params",
                        "trainable_params",
                        "activations",
                        "dropout",
                        "normalization",
                    )
                }
                for m in models
            ],
            "optimizers": meta.get("optimizers") or [],
            "splits": splits,
            "events": events,
            "notes": meta.get("notes") or [],
            "imported_from": meta.get("imported_from"),
        }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_inspection(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    def e(v: Any) -> str:  # every stored string is user text: escaped, never read as markup
        return escape(str(v))

    con = Console()
    head = (
        f"[bold]{e(info['run'])}[/]  {e(info['run_dir'])}\n"
        f"status {e(info['status'])} · schema v{info['schema_version']} · {info['steps']} steps · {info['epochs']} epochs"
        f" · per-layer every {e(_fmt(info['every']))} steps · device {e(_fmt(info['device']))} · batch size {e(_fmt(info['batch_size']))}"
    )
    if info["amp"]:
        head += f"\namp: {e(info['amp'])}"
    if info["imported_from"]:
        head += f"\nimported from {e(info['imported_from'])}"
    con.print(head, highlight=False)
    t = Table(title="per-step signals", title_justify="left")
    for c in ("signal", "points", "steps", "last", "min", "max", "non-finite"):
        t.add_column(c, justify="left" if c == "signal" else "right")
    for name, s in info["signals"].items():
        t.add_row(
            e(name),
            str(s["points"]),
            f"{_fmt(s['first_step'])}–{_fmt(s['last_step'])}",
            _fmt(s["last"]),
            _fmt(s["min"]),
            _fmt(s["max"]),
            str(s["nonfinite"]),
        )
    con.print(t)
    if info["layer_stats"]:
        t = Table(title="per-layer statistics", title_justify="left")
        t.add_column("statistic")
        t.add_column("layers", justify="right")
        t.add_column("captures", justify="right")
        for stat, v in info["layer_stats"].items():
            t.add_row(e(stat), str(v["layers"]), str(v["captures"]))
        con.print(t)
    if info["layers"]:
        t = Table(title="layers", title_justify="left")
        for c in ("layer", "type", "params", "activation"):
            t.add_column(c, justify="right" if c == "params" else "left")
        for lay in info["layers"]:
            t.add_row(e(lay["name"]), e(lay["type"]), e(lay["params"]), e(_fmt(lay["activation"])))
        con.print(t)
    for o in info["optimizers"]:
        groups = "; ".join(
            ", ".join(
                f"{k}={_fmt(v)}"
                for k, v in g.items()
                if k in ("lr", "momentum", "betas", "weight_decay", "num_params")
            )
            for g in o.get("param_groups", [])
        )
        con.print(f"optimizer [bold]{e(o.get('name'))}[/] {e(o.get('type'))}: {e(groups)}", highlight=False)
    for sp, v in info["splits"].items():
        extra = f", {v['samples']} samples, class counts {v['class_counts']}" if "samples" in v else ""
        con.print(
            f"split [bold]{e(sp)}[/]: epochs {e(v['epochs'])}{e(extra)}; metrics {e(', '.join(v['metrics']))}",
            highlight=False,
        )
    if info["events"]:
        con.print("events: " + e(", ".join(f"{k} {n}" for k, n in info["events"].items())), highlight=False)
    for n in info["notes"]:
        con.print(f"[dim]note: {e(n)}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""

    @app.command("inspect")
    def inspect_cmd(
        run_dir: Path = typer.Argument(..., help="A run directory written by tm.watch or trainmedic import."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """Show what a run recorded: signals, layers, steps, epochs, hyperparameters, splits, events."""
        info = inspect_run(run_dir)
        if as_json:
            typer.echo(json.dumps(info, indent=2, default=str))
        else:
            print_inspection(info)

    @app.command("import")
    def import_cmd(
        file: Path = typer.Argument(
            ...,
            help="A CSV of scalars, a TensorBoard event file/directory, or an HF trainer_state.json (or its directory).",
        ),
        run_dir: Path = typer.Argument(..., help="The run directory to create."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run already in RUN_DIR."),
    ) -> None:
        """Import logged scalars into a run directory, so `trainmedic diagnose` can check them."""
        from .importers import import_file

        res = import_file(file, run_dir, overwrite=overwrite)
        typer.echo(
            f"imported {len(res['signals'])} per-step signal(s) over {res['steps']} steps and "
            f"{len(res['evals'])} evaluation series over {res['epochs']} epochs into {run_dir}"
        )
