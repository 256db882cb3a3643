"""Which training steps record what: the gradient norm and the per-layer / activation captures.

A cadence is a pure function of the step number (and of settings fixed at ``tm.watch``), never of measured
time, so the same seeded run records the same steps on an idle and on a loaded machine, and the diagnosis,
which reads those steps, comes out the same (``tests/recorder/test_recorder_cadence.py``).

* :class:`LogCadence` (the default): dense early, spreading geometrically afterwards. Captures every
  ``every`` steps for the first ``per_octave`` captures, then every ``2 x every`` for the next ``per_octave``,
  then ``4 x every`` …, up to ``every x 1024``. The gradient norm every step for the first 32 steps, then every
  2, 4, 8 and from step 480 on every 16 steps. Capture steps always have a gradient norm. Each octave holds
  the same number of captures, so a run of any length has captures spread from its first step to its end: the
  gap between the last capture and the end is at most ~10% of the run (the interval is ~1/20 of the step
  number), and the recorder's share shrinks as the run grows (a capture costs 0.1–0.3 ms on a small CPU model).
* :class:`FixedCadence`: the gradient norm every ``grad_norm_every`` steps and a capture every ``capture_every``
  steps (``tm.watch(every=N)``, ``treat=``; ``overhead_budget=`` lets the wall-time meter change these two
  numbers while training: opted in, not reproducible).

Both take ``last``: a known last step (``tm.watch(total_steps=N)`` → step ``N - 1``) is a capture step too.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

# steps between two captures that also take the weight and gradient quantiles (a partial sort per layer, the
# costliest capture statistic): the first capture takes them, then the first capture at least this many steps
# later, or half the step number when that is more (``next_quantile``: 8 over a 2,000-step run, spread like
# the captures). A function of the step sequence alone, so the same seeded run records the same quantile steps.
QUANTILE_GAP = 100


def next_quantile(step: int) -> int:
    """The first step at or after which a capture takes the quantiles again, after it took them at ``step``."""
    return step + max(QUANTILE_GAP, step // 2)


class _Geometric:
    """Steps ``start_j + m * base * 2**j`` (m < per_octave) for octaves j = 0, 1, …; intervals capped at ``cap``.

    Octave j starts at ``per_octave * base * (2**j - 1)`` and holds ``per_octave`` steps, so its last interval
    lands exactly on the next octave's start: the union is one increasing sequence with no special cases.
    """

    def __init__(self, base: int, per_octave: int, cap: int) -> None:
        self.base = base
        self.n = per_octave
        self.unit = per_octave * base
        self.top = max(0, (max(cap, base) // base).bit_length() - 1)  # last octave: interval base * 2**top

    def _octave(self, step: int) -> tuple[int, int]:
        """(start, interval) of the octave that holds ``step``."""
        j = min((step // self.unit + 1).bit_length() - 1, self.top)
        return self.unit * ((1 << j) - 1), self.base << j

    def contains(self, step: int) -> bool:
        start, interval = self._octave(step)
        return (step - start) % interval == 0

    def next_after(self, step: int) -> int:
        """The smallest member greater than ``step``."""
        start, interval = self._octave(step)
        return start + ((step - start) // interval + 1) * interval

    def members(self, stop: int) -> list[int]:
        """Every member below ``stop``, in order: one ``range`` per octave."""
        out: list[int] = []
        j = 0
        while True:
            start, interval = self.unit * ((1 << j) - 1), self.base << j
            if start >= stop:
                return out
            if j >= self.top:  # the last octave runs on
                out.extend(range(start, stop, interval))
                return out
            out.extend(range(start, min(start + self.n * interval, stop), interval))
            j += 1


class Cadence:
    """Interface: ``grad(step)``, ``capture(step)``, ``next_work(step)``, ``next_capture(step)``, ``meta()``."""

    kind = ""
    gn_every = 1  # FixedCadence: the gradient-norm cadence (the overhead meter changes it)
    cap_every = 10  # FixedCadence: the capture cadence

    def __init__(self, last: int | None = None) -> None:
        self.last = last  # a known last step: a capture step too

    def grad(self, step: int) -> bool:  # pragma: no cover - interface
        """Whether the global gradient norm of ``step`` is recorded (capture steps: always)."""
        raise NotImplementedError

    def capture(self, step: int) -> bool:  # pragma: no cover - interface
        """Whether ``step`` captures per-layer statistics (and the activations of the following forward)."""
        raise NotImplementedError

    def next_work(self, step: int) -> int:  # pragma: no cover - interface
        """The first step after ``step`` that records a gradient norm or captures."""
        raise NotImplementedError

    def next_capture(self, step: int) -> int:  # pragma: no cover - interface
        """The first capture step after ``step``."""
        raise NotImplementedError

    def _with_last(self, step: int, nxt: int) -> int:
        last = self.last
        return last if last is not None and step < last < nxt else nxt

    def meta(self) -> dict[str, Any]:
        return {"schedule": self.kind, "last_step": self.last}

    def steps(self, stop: int) -> tuple[list[int], list[int]]:
        """(gradient-norm steps, capture steps) below ``stop``: what a run of ``stop`` steps records."""
        caps = [s for s in range(stop) if self.capture(s)]
        return [s for s in range(stop) if self.grad(s) or self.capture(s)], caps


class LogCadence(Cadence):
    """The default: dense early, geometrically spreading later (see the module docstring)."""

    kind = "log"
    CAPTURES_PER_OCTAVE = 20
    MAX_CAPTURE_FACTOR = 1024  # capture interval at most every x this
    GRAD_DENSE = 32  # gradient norms per octave: every step for the first 32 steps, then every 2, 4, …
    GRAD_MAX_EVERY = 16
    TABLE_STEPS = 1 << 16

    def __init__(self, every: int = 10, last: int | None = None) -> None:
        super().__init__(last)
        self.cap_every = every
        self._caps = _Geometric(every, self.CAPTURES_PER_OCTAVE, every * self.MAX_CAPTURE_FACTOR)
        self._grads = _Geometric(1, self.GRAD_DENSE, self.GRAD_MAX_EVERY)

        # the schedule's first TABLE_STEPS steps as tables, built as the run reaches them (1,024 steps first,
        # doubling): the hooks ask on every step with work, and a set lookup or a bisect costs less than the
        # octave arithmetic (same answers); later steps, where work is sparse, take the arithmetic.
        self._horizon = 0
        self._cap_list: list[int] = []
        self._cap_set: set[int] = set()
        self._work_list: list[int] = []
        self._work_set: set[int] = set()
        self._extend(0)

    def _extend(self, step: int) -> None:
        h = max(self._horizon, 512)
        while h <= step:
            h *= 2
        h = min(h, self.TABLE_STEPS)
        if h <= self._horizon:  # the tables are complete; steps past them take the arithmetic
            return
        # (built up to h even when ``step`` is past the tables: the steps below h are answered from them)
        caps = self._caps.members(h + self.cap_every * self.MAX_CAPTURE_FACTOR + 1)  # a next capture for each
        work = sorted(set(caps).union(self._grads.members(h + self.GRAD_MAX_EVERY + 1)))
        self._cap_list, self._cap_set = caps, set(caps)
        self._work_list, self._work_set = work, set(work)
        self._horizon = h

    def _tabled(self, step: int) -> bool:
        if step < self._horizon:
            return True
        if self._horizon < self.TABLE_STEPS:
            self._extend(step)
            return step < self._horizon
        return False

    def grad(self, step: int) -> bool:
        if self._tabled(step):
            return step in self._work_set or step == self.last
        return self._grads.contains(step) or self.capture(step)

    def capture(self, step: int) -> bool:
        if self._tabled(step):
            return step in self._cap_set or step == self.last
        return step == self.last or self._caps.contains(step)

    def next_work(self, step: int) -> int:
        if self._tabled(step):
            w = self._work_list
            return self._with_last(step, w[bisect_right(w, step)])
        return min(self._grads.next_after(step), self.next_capture(step))

    def next_capture(self, step: int) -> int:
        if self._tabled(step):
            c = self._cap_list
            return self._with_last(step, c[bisect_right(c, step)])
        return self._with_last(step, self._caps.next_after(step))

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "capture_every": self.cap_every,
            "captures_per_octave": self.CAPTURES_PER_OCTAVE,
            "max_capture_every": self.cap_every * self.MAX_CAPTURE_FACTOR,
            "grad_norm_every": 1,
            "grad_norm_dense_steps": self.GRAD_DENSE,
            "max_grad_norm_every": self.GRAD_MAX_EVERY,
        }


class FixedCadence(Cadence):
    """The gradient norm every ``gn_every`` steps, a capture every ``cap_every`` steps."""

    kind = "fixed"

    def __init__(self, gn_every: int = 1, cap_every: int = 10, last: int | None = None) -> None:
        super().__init__(last)
        self.gn_every = gn_every
        self.cap_every = cap_every

    def grad(self, step: int) -> bool:
        return step % self.gn_every == 0 or self.capture(step)

    def capture(self, step: int) -> bool:
        return step % self.cap_every == 0 or step == self.last

    def next_work(self, step: int) -> int:
        gn = self.gn_every
        return min(step - step % gn + gn, self.next_capture(step))

    def next_capture(self, step: int) -> int:
        cap = self.cap_every
        return self._with_last(step, step - step % cap + cap)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "grad_norm_every": self.gn_every, "capture_every": self.cap_every}
