"""trainmedic.scenarios: small real training runs that provoke each problem (and healthy ones that must not).

Used by the tests, the benchmarks, the demo and the autofix engine: ``train_fn(config, run)`` trains any
config; ``SCENARIOS`` names the catalogue; ``run_scenario(name, run_dir)`` trains and diagnoses one.
"""

from __future__ import annotations

from .catalogue import NO_LEARNING, POOR_CLASSES, SCENARIOS, Scenario, run_scenario
from .datasets import Data
from .models import build_model
from .train import DEFAULTS, resolve_config, train_fn

__all__ = [
    "DEFAULTS",
    "NO_LEARNING",
    "POOR_CLASSES",
    "SCENARIOS",
    "Data",
    "Scenario",
    "build_model",
    "resolve_config",
    "run_scenario",
    "train_fn",
]
