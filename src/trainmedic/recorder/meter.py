"""The opt-in overhead meter (``overhead_budget=``): it measures the recorder's share of a step in wall time and
thins the cadences to fit. Off by default, so the default cadence is a function of the step alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

STALL = 8  # a step interval this many times a quiet step's is a stall, not a step


class _OverheadMeter:
    """Measures the recorder's share of a training step and picks the cheapest cadences that fit the budget.

    Why: on a tiny model (0.5 ms steps) the per-step global gradient norm alone costs ~5% and a capture step
    ~50-80%, while on a normal model (>= 3 ms steps) they are within a few percent. Measuring windows open
    ``WARMUP`` steps in and then every ``RECHECK`` steps.

    * The first window (``own`` mode, ``WINDOW`` steps, the hooks' short path off) times trainmedic's own work
      with ``perf_counter`` around the hooks and ``run.log``: the per-step rest (an over-estimate of a quiet
      step, which takes a shorter path) and the gradient norm; a capture's cost is its steps' wall time over a
      plain step's.
    * Later windows (``wall`` mode) leave the recorder as it runs and time whole step intervals by kind:
      quiet, gradient norm, capture start (the step before a capture, whose hooks arm the activation probe)
      and capture. A rare piece of work runs with cold caches and costs up to 2x what it costs every step;
      differences of wall medians include that, and the training step's own slow-down, which the hooks'
      own clock cannot see.

    From these it predicts the share for a gradient-norm cadence ``k`` and a capture cadence ``every x m``
    and keeps the smallest ``k`` (then ``m``) that fits.
    """

    WARMUP = 5
    WINDOW = 50
    RECHECK = 500
    MAX_K = 50
    MAX_M = 50
    MIN_QUIET, MIN_GRAD, MIN_CAPTURE = 30, 4, 3
    # with the gradient norm on every step, a wall window skips it on every SKIP_EVERY-th step (never a
    # capture step) to see what a step without it costs: MIN_QUIET_K1 such steps per window
    SKIP_EVERY, MIN_QUIET_K1 = 8, 5

    def __init__(self, budget: float, every: int) -> None:
        self.budget = budget
        self.every = every
        self.active = False
        self.mode = "own"  # the first window; "wall" afterwards
        self.next_check = self.WARMUP
        self.own = 0.0  # seconds in our hooks during the current interval (own mode)
        self.grad = 0.0  # of which computing the gradient norm
        self.grad_done = False
        self._last: float | None = None
        self._flushes = -1
        # own mode: (wall, own, grad, grad_done, capture) per measured step interval
        self.samples: list[tuple[float, float, float, bool, bool]] = []
        # wall mode: step interval wall times by kind: quiet, grad norm, capture start, capture
        self.walls: dict[str, list[float]] = {"q": [], "g": [], "s": [], "c": []}
        self.ticks: list[tuple[int, float, int]] = []  # (step, perf_counter at its post-step hook, flushes)
        self._prev_tick: tuple[int, float, int] | None = None
        self.window_steps = 0
        self.rest = 0.0  # our own seconds per step without the gradient norm (own mode)
        self.est_grad: float | None = None  # seconds per gradient norm
        self.est_capture = 0.0  # extra seconds per capture (its two hooked steps)
        self.share: float | None = None  # measured share at the cadences in force during the window
        self.predicted: float | None = None  # predicted share at the chosen cadences
        self.bare: float | None = None  # seconds per bare training step
        self.checks = 0

    @property
    def timing(self) -> bool:
        """True while the hooks and ``run.log`` must time themselves (own mode)."""
        return self.active and self.mode == "own"

    def start(self) -> None:
        self.active = True
        self.samples = []
        self.walls = {"q": [], "g": [], "s": [], "c": []}
        self.ticks = []
        self._prev_tick = None
        self.window_steps = 0
        self._last = None
        self.own = self.grad = 0.0
        self.grad_done = False

    def end_step(self, step: int, flushes: int, capture: bool) -> bool:
        """Own mode: close one step interval (end of a primary post-step hook); True when the window is full."""
        now = time.perf_counter()
        if self._last is not None and flushes == self._flushes:
            self.samples.append((now - self._last, self.own, self.grad, self.grad_done, capture))
        self._last, self._flushes = now, flushes
        self.own = self.grad = 0.0
        self.grad_done = False
        return len(self.samples) >= self.WINDOW

    def ingest(self, kind_of: Callable[[int], str], k: int, cap_every: int) -> bool:
        """Wall mode: turn the ``(step, time, flushes)`` ticks so far into step intervals by kind (consecutive
        steps without a flush between them); True when the window has enough of each kind."""
        ticks, self.ticks = self.ticks, []
        prev = self._prev_tick
        for t in ticks:
            if prev is not None and t[0] == prev[0] + 1 and t[2] == prev[2]:
                self.walls[kind_of(t[0])].append(t[1] - prev[1])
            prev = t
        self._prev_tick = prev
        self.window_steps += len(ticks)
        w = self.walls
        enough = (
            len(w["q"]) >= (self.MIN_QUIET if k > 1 else self.MIN_QUIET_K1)
            and (len(w["g"]) >= self.MIN_GRAD or k > self.MAX_K)
            and len(w["c"]) >= self.MIN_CAPTURE
        )
        return enough or self.window_steps >= max(4 * self.WINDOW, (self.MIN_CAPTURE + 1) * cap_every + 10)

    def choose(self, k_now: int, cap_now: int) -> tuple[int, int] | None:
        """New ``(grad_norm_every, capture_every)`` from the window, or None when it says too little."""
        self.active = False
        self.checks += 1
        if self.mode == "own":
            bare = self._estimate_own()
            self.mode = "wall"
        else:
            bare = self._estimate_wall()
        if bare is None:
            return None
        grad = self.est_grad or 0.0
        self.bare = bare = max(bare, 1e-9)
        rest = self.rest

        def share(k: int, cap_every: int) -> float:
            return (rest + grad / k + self.est_capture / cap_every) / bare

        self.share = share(k_now, cap_now)
        chosen = (self.MAX_K, self.every * self.MAX_M)
        for k in range(1, self.MAX_K + 1):
            m = next((m for m in range(1, self.MAX_M + 1) if share(k, self.every * m) <= self.budget), None)
            if m is not None:
                chosen = (k, self.every * m)
                break
        self.predicted = share(*chosen)
        return chosen

    def _estimate_own(self) -> float | None:
        samples, self.samples = self.samples, []
        plain = _without_stalls([s for s in samples if not s[4]], key=lambda s: s[0])
        if len(plain) < 10:
            return None
        med = statistics.median
        self.rest = med(o - g for _, o, g, *_ in plain)
        with_grad = [s for s in plain if s[3]]
        if with_grad:
            self.est_grad = med(g for _, _, g, *_ in with_grad)
            typical = med(s[0] for s in plain)
            caps = [s[0] for s in samples if s[4] and s[0] <= STALL * typical]
            if len(caps) >= 3:  # else keep the previous estimate: one capture step is too noisy
                self.est_capture = max(0.0, med(caps) - med(s[0] for s in with_grad))
        return med(w - o for w, o, *_ in plain)

    def _estimate_wall(self) -> float | None:
        med = statistics.median
        q = _without_stalls(self.walls["q"], key=float)
        g = _without_stalls(self.walls["g"], key=float)
        if len(q) < self.MIN_QUIET_K1 or len(q) + len(g) < 10:
            return None
        quiet = med(q)
        # a stall (data loading, evaluation, other work between steps) is no step: judged against a quiet step,
        # since the few capture samples cannot judge themselves
        w = {kind: [x for x in v if x <= STALL * quiet] for kind, v in self.walls.items()}
        grad_step = med(w["g"]) if len(w["g"]) >= 3 else None
        if grad_step is not None:
            self.est_grad = max(0.0, grad_step - quiet)
        if len(w["c"]) >= self.MIN_CAPTURE:
            # a capture step computes the gradient norm anyway; the step before it does when k == 1
            k1 = len(q) < len(w["g"]) and grad_step is not None
            ref = grad_step if grad_step is not None else quiet + (self.est_grad or 0.0)
            start = max(0.0, med(w["s"]) - (ref if k1 else quiet)) if w["s"] else 0.0
            self.est_capture = max(0.0, med(w["c"]) - ref) + start
        return quiet - self.rest


def _without_stalls(items: list[Any], key: Callable[[Any], float]) -> list[Any]:
    """Drop step intervals over 4x the median: a stall (data loading, another job, the user's own work
    between steps) is no step."""
    if not items:
        return items
    cut = 4 * statistics.median(key(x) for x in items)
    return [x for x in items if key(x) <= cut]
