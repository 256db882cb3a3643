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

from .errors import TrainmedicError
from .findings import Finding, RemedySuggestion, Severity
from .settings import Thresholds

MEDIAN_REFRESH = 8
LAST_FIVE = 0b11111


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
        self.window = window
        self._watched: dict[str, str] = {}  # signal name -> "loss"/"grad_norm"/"" (not watched), cached
        self._norm_state: dict[str, _NormHistory] = {}  # one history per gradient-norm signal (GAN: G and D)
        self.sustain = sustain

    def needs_every_value(self, name: str) -> bool:
        """True for gradient-norm signals (the spike check needs each value); loss-like signals need only the
        non-finite ones, and other signals none."""
        return self._kind(name) == "grad_norm"

    def _kind(self, name: str) -> str:
        """``"loss"``, ``"grad_norm"`` or ``""`` (not watched), cached per signal name."""
        base = self._watched.get(name)
        if base is None:
            last = name.rsplit("/", 1)[-1]
            base = self._watched[name] = (
                last if last in ("loss", "grad_norm") or name.startswith("loss") else ""
            )
        return base

    def observe(self, name: str, step: int, value: float) -> None:
        base = self._watched.get(name)
        if base is None:
            base = self._kind(name)
        if not base:
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
        state = self._norm_state.get(name)
        if state is None:
            state = self._norm_state[name] = _NormHistory(self.window)
        hist = state.norms
        if len(hist) >= 20:
            # the running median is refreshed every MEDIAN_REFRESH healthy values: a spike is 10x it, so a
            # median a few steps old judges the same, and the per-step cost stays one comparison
            if state.stale >= MEDIAN_REFRESH or state.median is None:
                srt = sorted(hist)
                n = len(srt)
                state.median = srt[n // 2] if n % 2 else 0.5 * (srt[n // 2 - 1] + srt[n // 2])
                state.stale = 0
            med = state.median
            above = med > 0 and value > self.t.explode_ratio * med
            mask = state.above = ((state.above << 1) | above) & LAST_FIVE
            if above:
                if state.first_above is None:
                    state.first_above = step
                n_above = bin(mask).count("1")
                if n_above >= self.sustain and "exploding_gradient" not in self.fired:
                    self.fired.add("exploding_gradient")
                    first = state.first_above
                    self.emit(
                        Finding(
                            code="exploding_gradient",
                            severity=Severity.ERROR,
                            message=(
                                f"gradient norm {value:.3g} is {value / med:.0f}x its running median {med:.3g} "
                                f"(threshold {self.t.explode_ratio:g}x) for {n_above} of the last 5 steps, "
                                f"since step {first}"
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
                return  # keep spikes out of the baseline
            if not mask:
                state.first_above = None
        hist.append(value)
        state.stale += 1


class _NormHistory:
    """Recent healthy gradient norms of one signal, their (periodically refreshed) median, recent spikes."""

    def __init__(self, window: int) -> None:
        self.norms: deque[float] = deque(maxlen=window)
        self.median: float | None = None
        self.stale = 0  # healthy values appended since the median was computed
        self.above = 0  # bit i: the value i observations ago was a spike (last five)
        self.first_above: int | None = None


def warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
