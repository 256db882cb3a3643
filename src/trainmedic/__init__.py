"""trainmedic: watch a deep-learning training run, diagnose what goes wrong, and fix it.

    import trainmedic as tm
    run = tm.watch(model, optimizer, run_dir="runs/exp1")
    ...  run.log(loss=loss); run.evaluate("val", targets=y, outputs=logits)
    run.close()
    print(tm.diagnose("runs/exp1"))

Heavy parts (torch, the checks, the report) are imported on first use so ``import trainmedic`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .codes import PROBLEMS, REMEDIES
from .errors import RunDirError, TrainmedicError
from .findings import Diagnosis, Finding, RemedySuggestion, Severity
from .settings import Thresholds, load_thresholds

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "watch": (".watch", "watch"),
    "Run": (".watch", "Run"),
    "TrainingProblemError": (".live", "TrainingProblemError"),
    "open_run": (".store", "open_run"),
    "RunReader": (".store", "RunReader"),
    "diagnose": (".checks", "diagnose"),
    "audit": (".data", "audit"),
    "split": (".data", "split"),
    "Splits": (".data", "Splits"),
    "learning_curve": (".data", "learning_curve"),
    "Control": (".remedies.control", "Control"),
    "AutofixResult": (".remedies.autofix", "AutofixResult"),
    "report": (".report", "report"),
    "fit": (".remedies.fit", "fit"),
    "autofix": (".remedies.autofix", "autofix"),
    "metrics": (".metrics", None),
    "remedies": (".remedies", None),
    "checks": (".checks", None),
    "data": (".data", None),
}

if TYPE_CHECKING:  # pragma: no cover
    from .watch import Run, watch  # noqa: F401


def __getattr__(name: str) -> Any:
    try:
        mod_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'trainmedic' has no attribute {name!r}") from None
    mod = importlib.import_module(mod_name, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``tm.watch`` and ``tm.report`` the functions they are documented to be.

    Importing a submodule binds it as an attribute of its package, so the first ``import trainmedic.watch``
    (or ``trainmedic.report``) would replace the public function of the same name with the module.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


_SHADOWED = {"watch", "report"}
sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "PROBLEMS",
    "REMEDIES",
    "Diagnosis",
    "Finding",
    "RemedySuggestion",
    "RunDirError",
    "Severity",
    "Thresholds",
    "TrainmedicError",
    "__version__",
    "load_thresholds",
    *_LAZY,
]
