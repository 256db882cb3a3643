"""trainmedic: watch a deep-learning training run, diagnose what goes wrong, and fix it."""

from __future__ import annotations

from .codes import PROBLEMS, REMEDIES
from .errors import RunDirError, TrainmedicError
from .findings import Diagnosis, Finding, RemedySuggestion, Severity
from .settings import Thresholds, load_thresholds

__version__ = "0.1.0"

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
]
