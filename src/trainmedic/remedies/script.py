"""Autofix for training *scripts*: ``trainmedic fix -- python train.py --lr {lr=3.0} --epochs {epochs=5}``.

The command line is a template: each ``{name}`` (or ``{name=start}``) is a hyperparameter the script
accepts, and the names are the config keys autofix may change (``lr``, ``momentum``, ``epochs``,
``optimizer``, ``width``, ``activation``, ``weight_decay``, ``dropout`` … — the keys its remedies know; see
:data:`trainmedic.remedies.autofix.REMEDY_CHANGES`). Each trial renders the template with the trial's values
and runs it as a subprocess (no shell) with these environment variables:

``TRAINMEDIC_RUN_DIR``    the trial's run directory: the script records into it,
                          ``tm.watch(model, optimizer, run_dir=os.environ["TRAINMEDIC_RUN_DIR"])``, and
                          scores the held-out split each epoch (``run.evaluate("val", ...)``)
``TRAINMEDIC_MODEL_PATH`` where the script may save its trained model (any format, e.g.
                          ``torch.save(model.state_dict(), path)``); autofix copies the best trial's file to
                          ``best/model.pt``
``TRAINMEDIC_CONFIG``     the trial's hyperparameters as JSON (for scripts that prefer one argument)

So Lightning, Keras and Hugging Face scripts get the loop without being rewritten as ``train_fn``. What
the subprocess form cannot do that the function form does: end a trial early (at its first NaN, or when it
cannot be kept) — the script runs to its end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TrainmedicError

RUN_DIR_ENV = "TRAINMEDIC_RUN_DIR"
MODEL_PATH_ENV = "TRAINMEDIC_MODEL_PATH"
CONFIG_ENV = "TRAINMEDIC_CONFIG"
MODEL_FILE = "model.pt"  # the file name TRAINMEDIC_MODEL_PATH points at, inside the trial's run directory
STDERR_TAIL = 2000  # characters of a failed trial's stderr kept in the audit log

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:=([^{}]*))?\}")


def parse_value(text: str) -> Any:
    """``3.0`` → 3.0, ``10`` → 10, ``true`` → True, ``none`` → None, anything else → the string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_value(value: Any) -> str:
    """How a hyperparameter is written on the command line (``True`` → ``true``, floats in short form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e16 else f"{value:.1f}"
    return str(value)


def parse_template(argv: Sequence[str]) -> tuple[list[str], dict[str, Any], list[str]]:
    """The command's arguments, its placeholders' start values, and the names of all placeholders (in
    order; a placeholder without ``=start`` needs its value from the config)."""
    if not argv:
        raise TrainmedicError("the training command is empty; write it after `--`, e.g. `-- python train.py`")
    names: list[str] = []
    starts: dict[str, Any] = {}
    for arg in argv:
        for m in _PLACEHOLDER.finditer(arg):
            name, start = m.group(1), m.group(2)
            if name not in names:
                names.append(name)
            if start is not None:
                starts[name] = parse_value(start)
    if not names:
        raise TrainmedicError(
            "the training command names no hyperparameter; mark the ones autofix may change with "
            f"{{name}} or {{name=start}}, e.g. `-- python train.py --lr {{lr=0.1}}`; got {' '.join(argv)!r}"
        )
    return list(argv), starts, names


def render(argv: Sequence[str], config: Mapping[str, Any]) -> list[str]:
    """The command with each placeholder replaced by the config's value."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in config:
            raise TrainmedicError(
                f"hyperparameter {name!r} of the training command has no value; give one with "
                f"{{{name}=VALUE}} or in --config"
            )
        return format_value(config[name])

    return [_PLACEHOLDER.sub(sub, a) for a in argv]


@dataclass
class ScriptOutcome:
    returncode: int
    seconds: float
    stderr_tail: str
    model_path: Path | None  # the model file the script saved, if any


class ScriptTrainer:
    """A training command as autofix's trainer: ``trainer.run_trial(config, run_dir)`` renders the
    template, runs it with the run directory and model path in the environment and waits for it.

    ``records_own_run``: autofix does not open a run for the trial; the script does (``tm.watch``)."""

    records_own_run = True

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv, starts, self.names = parse_template(argv)
        # the keys autofix may change (autofix reads ``defaults``): every placeholder
        self.defaults: dict[str, Any] = {n: starts.get(n) for n in self.names}
        self.starts = starts
        self.cwd, self.timeout, self.env = cwd, timeout, dict(env or {})

    def __call__(self, config: Mapping[str, Any], run: Any) -> Any:  # pragma: no cover - not called so
        raise TrainmedicError("a ScriptTrainer runs as a subprocess; call run_trial(config, run_dir)")

    def run_trial(self, config: Mapping[str, Any], run_dir: Path) -> ScriptOutcome:
        import time

        argv = render(self.argv, {**self.starts, **config})
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the interpreter trainmedic runs in (its venv, its torch)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        model_path = run_dir / MODEL_FILE
        env = {
            **os.environ,
            **self.env,
            RUN_DIR_ENV: str(run_dir),
            MODEL_PATH_ENV: str(model_path),
            CONFIG_ENV: json.dumps(dict(config), default=str),
        }
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=self.timeout,
                check=False,
            )
            rc, err = proc.returncode, proc.stderr.decode("utf-8", "replace")
        except FileNotFoundError:
            raise TrainmedicError(f"the training command {argv[0]!r} was not found") from None
        except subprocess.TimeoutExpired as e:
            rc = -9
            err = (e.stderr or b"").decode("utf-8", "replace") + f"\ntimed out after {self.timeout:g}s"
        return ScriptOutcome(
            rc,
            time.perf_counter() - t0,
            err[-STDERR_TAIL:],
            model_path if model_path.is_file() else None,
        )


__all__ = [
    "CONFIG_ENV",
    "MODEL_PATH_ENV",
    "RUN_DIR_ENV",
    "ScriptOutcome",
    "ScriptTrainer",
    "format_value",
    "parse_template",
    "render",
]
