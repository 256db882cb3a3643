"""trainmedic.scenarios: small real training runs that provoke each problem (and healthy ones that must not).

Used by the tests, the benchmarks, the demo and the autofix engine: ``train_fn(config, run)`` trains any
config; ``SCENARIOS`` names the catalogue; ``run_scenario(name, run_dir)`` trains and diagnoses one.
GANs: ``train_gan(config, run)``, ``GAN_SCENARIOS``, ``run_gan(name, run_dir)``.
"""

from __future__ import annotations

from .catalogue import NO_LEARNING, POOR_CLASSES, SCENARIOS, Scenario, run_scenario
from .datasets import Data
from .gan import GAN_SCENARIOS, run_gan, train_gan
from .models import build_model
from .train import DEFAULTS, resolve_config, train_fn

__all__ = [
    "DEFAULTS",
    "GAN_SCENARIOS",
    "NO_LEARNING",
    "POOR_CLASSES",
    "SCENARIOS",
    "Data",
    "Scenario",
    "build_model",
    "resolve_config",
    "run_gan",
    "run_scenario",
    "train_fn",
    "train_gan",
]
