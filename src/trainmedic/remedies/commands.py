"""CLI commands of the remedies package: ``trainmedic fix module:train_fn --config config.json`` and
``trainmedic fix [OPTIONS] -- python train.py --lr {lr=3.0} --epochs {epochs=5}`` (a training script run as a
subprocess per trial; see :mod:`trainmedic.remedies.script`)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import typer

from ..errors import TrainmedicError


def load_train_fn(spec: str) -> Any:
    """``package.module:function`` or ``path/to/file.py:function`` → the function."""
    if ":" not in spec:
        raise TrainmedicError(f"`TRAIN_FN` must be 'module:function' or 'file.py:function'; got {spec!r}")
    target, attr = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise TrainmedicError(f"`TRAIN_FN` names a file that does not exist; got {target!r}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            if mod_spec is None or mod_spec.loader is None:
                raise TrainmedicError(f"`TRAIN_FN` names a file Python cannot import; got {target!r}")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[path.stem] = module
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # modules of the current directory, like `python -m`
            module = importlib.import_module(target)
    except ImportError as e:
        raise TrainmedicError(f"`TRAIN_FN` module {target!r} cannot be imported ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TrainmedicError(
            f"`TRAIN_FN` must name a function train_fn(config, run); {target!r} has no callable {attr!r}"
        )
    return fn


def _load_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainmedicError(
            f"`--config` must be an existing JSON file; got {str(path)!r} (not found)"
        ) from None
    except json.JSONDecodeError as e:
        raise TrainmedicError(f"`--config` must hold JSON; got {str(path)!r} ({e})") from None
    if not isinstance(data, dict):
        raise TrainmedicError(
            f"`--config` must hold a JSON object of hyperparameters; got {type(data).__name__}"
        )
    return data


def register(app: typer.Typer) -> None:
    """Add ``fix`` to the ``trainmedic`` app."""

    @app.command("fix")
    def fix(
        target: list[str] = typer.Argument(
            ...,
            help="module:function or file.py:function (train_fn(config, run)), or after `--` a training "
            "command whose {name} / {name=start} placeholders are the hyperparameters autofix may change; "
            "the script records with tm.watch(run_dir=os.environ['TRAINMEDIC_RUN_DIR']) and may save its "
            "model to os.environ['TRAINMEDIC_MODEL_PATH']",
        ),
        config: Path | None = typer.Option(
            None, "--config", "-c", help="JSON file with the starting hyperparameters"
        ),
        budget: int = typer.Option(6, "--budget", "-b", help="training runs at most, the baseline included"),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="directory for the trial runs, best model and audit log"
        ),
        metric: str = typer.Option(
            "val_accuracy", "--metric", help="val_accuracy (higher is better) or val_loss"
        ),
        seconds: float | None = typer.Option(
            None, "--seconds", help="stop starting trials after this wall time"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the audit log as JSON"),
        trial_timeout: float | None = typer.Option(
            None, "--trial-timeout", help="a training command running longer than this is stopped (seconds)"
        ),
    ) -> None:
        """Repair a training configuration: train, diagnose, apply a remedy, retrain, keep or roll back.

        A training script: `trainmedic fix -- python train.py --lr {lr=3.0} --epochs {epochs=5}`."""
        from .autofix import autofix

        cfg = _load_config(config)
        fn: Any
        if len(target) == 1 and "{" not in target[0]:  # module:function (its own error when it is not)
            fn = load_train_fn(target[0])
        else:
            from .script import ScriptTrainer

            fn = ScriptTrainer(target, timeout=trial_timeout)
            missing = sorted(k for k in fn.names if k not in fn.starts and k not in cfg)
            cfg = {**fn.starts, **cfg}
            if missing:
                raise TrainmedicError(
                    f"the training command's hyperparameter(s) {missing} have no start value; write "
                    f"{{{missing[0]}=VALUE}} in the command or give them in --config"
                )
        result = autofix(fn, cfg, budget=budget, metric=metric, run_root=out, seconds=seconds)
        if as_json:
            typer.echo(result.to_json())
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = Console()
        table = Table(title=f"autofix — {escape(metric)}", show_lines=False)
        for col in ("#", "remedy", "change", metric, "kept", "problems after"):
            table.add_column(col)
        for t in result.trials:
            change = ", ".join(f"{k}: {v[0]} → {v[1]}" for k, v in t.config_change.items()) or "baseline"
            value = "—" if t.metric_after is None else f"{t.metric_after:.4f}"
            kept = "yes" if t.kept else ("error" if t.error else "rolled back")
            table.add_row(  # config values and paths are user text: escaped, never markup
                str(t.index),
                escape(t.remedy or "—"),
                escape(change),
                value,
                kept,
                escape(", ".join(t.codes_after) or "none"),
            )
        console.print(table)
        gain = "n/a" if result.gain is None else f"{result.gain:+.4f}"
        console.print(
            escape(
                f"best: trial {result.best_trial}, {metric} {result.best_metric} (gain {gain}); "
                f"{'healthy' if result.healthy else 'still: ' + ', '.join(result.codes)}; stopped: {result.stop_reason}"
            ),
            highlight=False,
        )
        model_note = (
            str(result.best_model_path)
            if result.best_model_path.is_file()
            else "none saved (a script saves it to $TRAINMEDIC_MODEL_PATH)"
        )
        console.print(
            escape(f"best model: {model_note}  audit: {result.run_root / 'autofix.json'}"),
            highlight=False,
        )
