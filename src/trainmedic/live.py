"""Live detection while training runs: NaN/Inf and exploding gradients.

The recorder feeds this monitor the per-step loss and gradient norm as they reach the host (every step on
CPU, where reading a value costs nothing; at each flush on GPUs, so that no step waits for the device). It
uses the same thresholds (:class:`~trainmedic.settings.Thresholds`) as the post-hoc checks.

A non-finite value is an error at the step it happens. A gradient-norm burst (``explode_ratio`` times the
running median for ``sustain`` of five steps) is only a candidate: healthy runs have them (a net leaving a
plateau, an LSTM on an odd batch). It becomes an ``exploding_gradient`` error when the norm stays above the
threshold for ``CONFIRM_ABOVE`` of the next ``CONFIRM_WINDOW`` observed steps or a value turns non-finite, and an
``info`` note when the norm comes back under the threshold (a transient burst), so a healthy loop run with
``raise_on="error"`` is never stopped by one.
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
# a burst of spikes is confirmed as an explosion when the gradient norm stays above the threshold for
# CONFIRM_ABOVE of the next CONFIRM_WINDOW observed steps, or when a value turns non-finite; else a transient
CONFIRM_WINDOW = 20
CONFIRM_ABOVE = 10


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
            for sig, st in self._norm_state.items():
                if st.burst is not None:
                    b, st.burst = st.burst, None
                    self._emit_exploding(
                        sig, b, step, f"until a non-finite {base.replace('_', ' ')} at step {step}"
                    )
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
            if state.burst is not None:
                self._follow_burst(name, state, step, value, above)
            if above:
                if state.first_above is None:
                    state.first_above = step
                n_above = bin(mask).count("1")
                if n_above >= self.sustain and state.burst is None and "exploding_gradient" not in self.fired:
                    # a burst: an early warning to confirm, not yet a verdict (the gradient of a healthy run
                    # grows for a few steps as it leaves a plateau, an LSTM spikes on an odd batch)
                    state.burst = _Burst(state.first_above, step, value, med, n_above)
                return  # keep spikes out of the baseline
            if not mask:
                state.first_above = None
        hist.append(value)
        state.stale += 1

    def finish(self, step: int) -> None:
        """At close: a burst still waiting for confirmation is noted, unconfirmed."""
        for name, state in self._norm_state.items():
            b, state.burst = state.burst, None
            if b is not None:
                self._note_transient(
                    name, b, f"the run ended {b.seen} observed steps later, {b.above} of them above it"
                )

    def _follow_burst(self, name: str, state: _NormHistory, step: int, value: float, above: bool) -> None:
        """After a burst: confirmed when the gradient stays above the threshold for ``CONFIRM_ABOVE`` of the
        next ``CONFIRM_WINDOW`` observations (an error); a note when it comes back under it (transient)."""
        b = state.burst
        assert b is not None
        if step <= b.step:
            return
        b.seen += 1
        b.above += above
        b.peak = max(b.peak, value)
        if b.above >= CONFIRM_ABOVE:
            state.burst = None
            self._emit_exploding(
                name, b, step, f"and stayed above it for {b.above} of the next {b.seen} steps"
            )
        elif b.seen >= CONFIRM_WINDOW:
            state.burst = None
            self._note_transient(name, b, f"back under it for {b.seen - b.above} of the next {b.seen} steps")

    def _note_transient(self, name: str, b: _Burst, how: str) -> None:
        if "exploding_gradient" in self.fired or "transient_burst" in self.fired:
            return
        self.fired.add("transient_burst")
        self.emit(
            Finding(
                code="exploding_gradient",
                severity=Severity.INFO,
                message=(
                    f"gradient-norm burst at step {b.first}: {b.ratio:.0f}x the running median {b.median:.3g} "
                    f"(threshold {self.t.explode_ratio:g}x) for {b.n_above} of 5 steps; {how} "
                    "(not confirmed as an explosion)"
                ),
                evidence={
                    **self._burst_evidence(name, b, b.value),
                    "transient": True,
                    "followed_steps": b.seen,
                    "above_after": b.above,
                },
                step=b.first,
                confidence=0.3,
                source="live",
            )
        )

    def _burst_evidence(self, name: str, b: _Burst, value: float) -> dict[str, object]:
        return {
            "grad_norm": value,
            "running_median": b.median,
            "ratio": value / b.median,
            "threshold_ratio": self.t.explode_ratio,
            "first_step": b.first,
            "signal": name,
        }

    def _emit_exploding(self, name: str, b: _Burst, step: int, how: str) -> None:
        if "exploding_gradient" in self.fired:
            return
        self.fired.add("exploding_gradient")
        self.emit(
            Finding(
                code="exploding_gradient",
                severity=Severity.ERROR,
                message=(
                    f"gradient norm rose to {b.peak:.3g}, {b.peak / b.median:.3g}x its running median "
                    f"{b.median:.3g} (threshold {self.t.explode_ratio:g}x), from step {b.first}, {how}"
                ),
                evidence={**self._burst_evidence(name, b, b.peak), "confirmed_at": step},
                remedies=[
                    RemedySuggestion.of("gradient_clipping", "caps the update size"),
                    RemedySuggestion.of("lower_learning_rate", "the step size drives the growth"),
                    RemedySuggestion.of("batch_norm", "keeps activations in range"),
                ],
                step=b.first,
                source="live",
            )
        )


class _Burst:
    """A gradient-norm burst waiting for confirmation."""

    __slots__ = ("above", "first", "median", "n_above", "peak", "ratio", "seen", "step", "value")

    def __init__(self, first: int, step: int, value: float, median: float, n_above: int) -> None:
        self.first, self.step, self.value, self.median, self.n_above = first, step, value, median, n_above
        self.ratio = value / median
        self.peak = value
        self.seen = 0  # observations after the burst
        self.above = 0  # of them above the threshold


class _NormHistory:
    """Recent healthy gradient norms of one signal, their (periodically refreshed) median, recent spikes."""

    def __init__(self, window: int) -> None:
        self.norms: deque[float] = deque(maxlen=window)
        self.median: float | None = None
        self.stale = 0  # healthy values appended since the median was computed
        self.above = 0  # bit i: the value i observations ago was a spike (last five)
        self.first_above: int | None = None
        self.burst: _Burst | None = None  # a burst waiting for confirmation


def warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
