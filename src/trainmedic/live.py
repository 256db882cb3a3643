"""Live detection while training runs: NaN/Inf and exploding gradients, flagged at the step they happen.

The recorder feeds this monitor the per-step loss and gradient norm as they reach the host (every step on
CPU, where reading a value costs nothing; at each flush on GPUs, so that no step waits for the device). It
uses the same thresholds (:class:`~trainmedic.settings.Thresholds`) as the post-hoc checks.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable

import numpy as np

from .errors import TrainmedicError
from .findings import Finding, RemedySuggestion, Severity
from .settings import Thresholds


class TrainingProblemError(TrainmedicError, RuntimeError):
    """Raised from the training loop when the user asked for ``raise_on=...`` and a live check fired."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"trainmedic stopped training: {finding}")
        self.finding = finding


class LiveMonitor:
    """Watches per-step loss and gradient norm; each problem code fires once per run."""

    def __init__(
        self,
        thresholds: Thresholds,
        emit: Callable[[Finding], None],
        window: int = 200,
        sustain: int = 3,
    ) -> None:
        self.t = thresholds
        self.emit = emit
        self.fired: set[str] = set()
        self.norms: deque[float] = deque(maxlen=window)
        self.sustain = sustain
        self._above: deque[bool] = deque(maxlen=5)
        self._first_above: int | None = None

    def observe(self, name: str, step: int, value: float, signal_prefix: str = "") -> None:
        base = name.rsplit("/", 1)[-1]
        if base not in ("loss", "grad_norm") and not name.startswith("loss"):
            return
        if not math.isfinite(value):
            if "nonfinite" not in self.fired:
                self.fired.add("nonfinite")
                where = "gradients" if base == "grad_norm" else "loss"
                self.emit(
                    Finding(
                        code="nonfinite",
                        severity=Severity.ERROR,
                        message=f"{'NaN' if math.isnan(value) else 'Inf'} in the {where} ({name}) at step {step}",
                        evidence={"signal": name, "value": value, "first_step": step},
                        remedies=[
                            RemedySuggestion.of("lower_learning_rate", "a smaller step keeps weights finite"),
                            RemedySuggestion.of("gradient_clipping", "bounds each update"),
                            RemedySuggestion.of("normalize_inputs", "large inputs overflow activations"),
                        ],
                        step=step,
                        source="live",
                    )
                )
            return
        if base != "grad_norm":
            return
        hist = self.norms
        if len(hist) >= 20:
            med = float(np.median(hist))
            above = med > 0 and value > self.t.explode_ratio * med
            self._above.append(above)
            if above and self._first_above is None:
                self._first_above = step
            if not above and not any(self._above):
                self._first_above = None
            if sum(self._above) >= self.sustain and "exploding_gradient" not in self.fired:
                self.fired.add("exploding_gradient")
                first = self._first_above if self._first_above is not None else step
                self.emit(
                    Finding(
                        code="exploding_gradient",
                        severity=Severity.ERROR,
                        message=(
                            f"gradient norm {value:.3g} is {value / med:.0f}x its running median {med:.3g} "
                            f"(threshold {self.t.explode_ratio:g}x) for {sum(self._above)} of the last "
                            f"{len(self._above)} steps, since step {first}"
                        ),
                        evidence={
                            "grad_norm": value,
                            "running_median": med,
                            "ratio": value / med,
                            "threshold_ratio": self.t.explode_ratio,
                            "first_step": first,
                            "signal": name,
                        },
                        remedies=[
                            RemedySuggestion.of("gradient_clipping", "caps the update size"),
                            RemedySuggestion.of("lower_learning_rate", "the step size drives the growth"),
                            RemedySuggestion.of("batch_norm", "keeps activations in range"),
                        ],
                        step=first,
                        source="live",
                    )
                )
            if above:
                return  # keep spikes out of the baseline
        hist.append(value)


def warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
