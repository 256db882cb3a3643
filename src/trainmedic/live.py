"""Live detection while training runs: NaN/Inf and exploding gradients, flagged at the step they happen.

The recorder feeds this monitor the per-step loss and gradient norm as they reach the host (every step on
CPU, where reading a value costs nothing; at each flush on GPUs, so that no step waits for the device). It
uses the same thresholds (:class:`~trainmedic.settings.Thresholds`) as the post-hoc checks.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections import deque
from collections.abc import Callable

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
        self.window = window
        self._watched: dict[str, str] = {}  # signal name -> "loss"/"grad_norm"/"" (not watched), cached
        self._norm_state: dict[str, _NormHistory] = {}  # one history per gradient-norm signal (GAN: G and D)
        self.sustain = sustain

    def observe(self, name: str, step: int, value: float) -> None:
        base = self._watched.get(name)
        if base is None:
            last = name.rsplit("/", 1)[-1]
            base = self._watched[name] = (
                last if last in ("loss", "grad_norm") or name.startswith("loss") else ""
            )
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
            srt = state.sorted
            n = len(srt)
            med = srt[n // 2] if n % 2 else 0.5 * (srt[n // 2 - 1] + srt[n // 2])
            above = med > 0 and value > self.t.explode_ratio * med
            state.above.append(above)
            if above and state.first_above is None:
                state.first_above = step
            if not above and not any(state.above):
                state.first_above = None
            if sum(state.above) >= self.sustain and "exploding_gradient" not in self.fired:
                self.fired.add("exploding_gradient")
                first = state.first_above if state.first_above is not None else step
                self.emit(
                    Finding(
                        code="exploding_gradient",
                        severity=Severity.ERROR,
                        message=(
                            f"gradient norm {value:.3g} is {value / med:.0f}x its running median {med:.3g} "
                            f"(threshold {self.t.explode_ratio:g}x) for {sum(state.above)} of the last "
                            f"{len(state.above)} steps, since step {first}"
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
        if len(hist) == hist.maxlen:
            del state.sorted[bisect.bisect_left(state.sorted, hist[0])]
        hist.append(value)
        bisect.insort(state.sorted, value)


class _NormHistory:
    """Recent healthy gradient norms of one signal, kept sorted too: the running median costs O(log n)."""

    def __init__(self, window: int) -> None:
        self.norms: deque[float] = deque(maxlen=window)
        self.sorted: list[float] = []
        self.above: deque[bool] = deque(maxlen=5)
        self.first_above: int | None = None


def warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
