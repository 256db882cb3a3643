"""Watching a training run: ``run = tm.watch(model, optimizer)``, ``run.log(loss=...)``, ``run.evaluate(...)``.

The :class:`Run` attaches optimizer step hooks (gradients, weights, updates, hyperparameters) and forward
hooks on activation modules, keeps every statistic on the device, and moves them to the host in one batch per
flush, where the store writes them. Anything that goes wrong inside trainmedic is caught, recorded with its
traceback and warned about once: the user's training never stops because of us and computes exactly what it
would compute unwatched.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import statistics
import sys
import time
import traceback
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import nn

from .cadence import QUANTILE_GAP, Cadence, FixedCadence, LogCadence
from .distributed import DEFAULT_TIMEOUT as DIST_TIMEOUT
from .distributed import SUMMARY_FIELDS, SYNC_EVERY, NullWriter, RankSync, replication
from .errors import TrainmedicError, describe_shape
from .findings import Finding, Severity
from .live import LiveMonitor, TrainingProblemError
from .probes.activations import ACT_STATS, ActivationProbe
from .probes.layers import LayerIndex, is_compiled, unwrap
from .probes.optimizer import QUANTILE_STATS, OptimizerProbe
from .probes.summary import model_summary
from .running import RUNNING_SPLIT, RunningMetrics
from .settings import Thresholds, load_thresholds
from .store.reader import RunReader
from .store.writer import RunWriter

LAYER_NORM_STATS = ("grad_norm", "weight_norm", "update_norm")
MAX_PROBE_FAILURES = 20


_F = TypeVar("_F", bound=Callable[..., Any])


def _boundary(probe: str, default: Callable[[Any], Any] = lambda run: None) -> Callable[[_F], _F]:
    """The fail-open boundary of a public ``Run`` method (see ``Run._fence``): the user's own mistakes
    (``TrainmedicError``) and requested stops (``TrainingProblemError``) pass; any other failure is recorded,
    warned about once, and the call returns ``default(run)``."""

    def deco(fn: _F) -> _F:
        @functools.wraps(fn)
        def method(self: Run, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except (TrainingProblemError, TrainmedicError):
                raise
            except Exception as e:  # never break the user's training
                self._internal_error(probe, e)
                return default(self)

        return cast(_F, method)

    return deco


CLOCK_SECS = 0.02  # the flush clock is read at least this often (quiet steps skip it)
HP_REFRESH = 100  # steps between hyperparameter records when nothing changed (changes are written at once)


def _name_all(objs: Any, kind: str) -> dict[str, Any]:
    if objs is None:
        return {}
    if isinstance(objs, Mapping):
        return {str(k): v for k, v in objs.items()}
    if isinstance(objs, (list, tuple)):
        out: dict[str, Any] = {}
        for o in objs:
            base = type(unwrap(o) if isinstance(o, nn.Module) else o).__name__.lower()
            name, n = base, 1
            while name in out:
                n += 1
                name = f"{base}{n}"
            out[name] = o
        return out
    return {kind: objs}


def default_run_dir(name: str | None = None) -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` under the current directory (``TRAINMEDIC_RUNS`` overrides ``runs``)."""
    root = Path(os.environ.get("TRAINMEDIC_RUNS", "runs"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{name or 'run'}-{stamp}"
    p, n = base, 1
    while p.exists():
        n += 1
        p = Path(f"{base}-{n}")
    return p


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


STALL = 8  # a step interval this many times a quiet step's is a stall, not a step


def _without_stalls(items: list[Any], key: Callable[[Any], float]) -> list[Any]:
    """Drop step intervals over 4x the median: a stall (data loading, another job, the user's own work
    between steps) is no step."""
    if not items:
        return items
    cut = 4 * statistics.median(key(x) for x in items)
    return [x for x in items if key(x) <= cut]


def _dist_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Run:
    """One watched training run. Create it with :func:`trainmedic.watch`."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        every: int | None = None,
        overhead_budget: float | None = None,
        activations: bool = True,
        activation_rows: int = 64,
        activation_elements: int = 16384,
        overwrite: bool = False,
        resume: bool = False,
        flush_secs: float = 2.0,
        flush_steps: int = 5000,
        live: bool = True,
        on_problem: Callable[[Finding], Any] | None = None,
        raise_on: str | None = None,
        thresholds: Thresholds | Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        all_ranks: bool = False,
        quiet: bool = False,
        treat: Any = None,
        progress: bool = False,
        total_steps: int | None = None,
        dist_timeout: float = DIST_TIMEOUT,
    ) -> None:
        every_given = every is not None
        if every is None:
            every = 10
        if not isinstance(every, int) or every < 1:
            raise TrainmedicError(
                f"`every` must be a positive integer (record per-layer statistics every N steps); got {every!r}"
            )
        if overhead_budget is not None and (
            not isinstance(overhead_budget, (int, float)) or not 0 < overhead_budget < 1
        ):
            raise TrainmedicError(
                "`overhead_budget` must be a share of the step time between 0 and 1 (e.g. 0.03) or None; "
                f"got {overhead_budget!r}"
            )
        if overwrite and resume:
            raise TrainmedicError("`overwrite` and `resume` exclude each other; pass one of them")
        self.rank, self.world_size = _dist_rank()
        self.enabled = all_ranks or self.rank == 0
        # torch.distributed: every rank runs the same hooks on its own shards and joins trainmedic's syncs
        # (trainmedic/distributed.py); a rank that does not write records into a NullWriter
        self._dist: RankSync | None = None
        self._shadow = self.world_size > 1 and not self.enabled
        if self.world_size > 1:
            self._dist = RankSync(self.rank, self.world_size, dist_timeout)
            self.enabled = True
        if run_dir is None:
            run_dir = default_run_dir(name)
        if all_ranks and self.world_size > 1:
            run_dir = Path(run_dir) / f"rank{self.rank}"
        self.run_dir = Path(run_dir)
        self.name = name or self.run_dir.name
        self.every = every
        # which steps record what (trainmedic/cadence.py): a pure function of the step number by default, so the
        # same seeded run records the same steps on any machine; fixed with an explicit `every` or `treat`
        last = total_steps - 1 if isinstance(total_steps, int) and total_steps > 0 else None
        self._cadence: Cadence = (
            FixedCadence(1, every, last)
            if every_given or treat is not None or overhead_budget is not None
            else LogCadence(every, last)
        )
        self._meter: _OverheadMeter | None = None
        if overhead_budget is not None and treat is None:
            # opted in: the wall-time meter thins the fixed cadences on fast models (not reproducible)
            self._meter = _OverheadMeter(float(overhead_budget), every)
        self.activations_enabled = activations
        self.activation_rows = activation_rows
        self.activation_elements = activation_elements
        self.flush_secs = flush_secs
        self.flush_steps = flush_steps
        self.thresholds = load_thresholds(dict(thresholds) if isinstance(thresholds, Mapping) else thresholds)
        self.on_problem = on_problem
        if raise_on is not None and str(getattr(raise_on, "value", raise_on)) not in (
            "info",
            "warning",
            "error",
        ):
            raise TrainmedicError(
                f"`raise_on` must be 'warning' or 'error' (or None: never raise); got {raise_on!r}"
            )
        self.raise_on = Severity.parse(raise_on) if raise_on else None
        self.quiet = quiet
        self.findings: list[Finding] = []  # live findings
        self.closed = False
        self.models: dict[str, nn.Module] = {}
        self._mode_sensitive: list[tuple[str, nn.Module]] | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._probes: list[OptimizerProbe] = []
        self._act_probe: ActivationProbe | None = None
        self._index: LayerIndex | None = None
        self._handles: list[Any] = []
        self._step = 0  # completed steps of the primary optimizer
        self._log_count = 0
        self._log_after_step: bool | None = None
        self._logs_at_first_step: int | None = None  # log() calls before the first optimizer step
        self._skips_at_first_step = 0  # steps a GradScaler skipped (inf/NaN gradients) before the first one
        self._stepped_since_log = False
        self._epoch_counter: dict[str, int] = defaultdict(int)
        self.epoch: int | None = None
        self._pending_scalars: list[tuple[str, int, torch.Tensor]] = []
        # accelerators: (signal, step, per-parameter gradient norms) -> the global norm at the flush, so that a
        # gradient-norm step launches one kernel (the fused per-parameter norm) and no reduction of its own
        self._pending_norms: list[tuple[str, int, list[torch.Tensor]]] = []
        # (probe index, step, (3, params) [grad, weight, update] norms): combined into layers at flush
        self._pending_rows: list[tuple[int, int, torch.Tensor]] = []
        self._pending_quantiles: list[tuple[int, torch.Tensor]] = []  # (step, (2, Q, layers)) per capture
        self._wall0 = time.perf_counter()  # `wall_time`: seconds since watch, at each capture step
        self._last_flush_time = time.monotonic()
        self._last_flush_step = 0
        self._flushes = 0  # a step interval with a flush is not a training step's time (overhead meter)
        self._failures: dict[str, int] = defaultdict(int)
        self._disabled: set[str] = set()
        self._pending_problem: TrainingProblemError | None = None
        self._host_check = True  # read values on the host every step (CPU); set False for accelerators
        self._batch_size = batch_size
        self._input_handles: dict[str, Any] = {}
        self._amp: dict[str, Any] = {}  # autocast dtype / GradScaler seen (meta "amp")
        self._amp_checked = False
        self._quiet = False  # quiet steps take the hooks' short path (see _update_quiet)
        self._ticking = False  # a wall-mode measuring window is open: quiet steps read the clock too
        self._clock_every = 1  # quiet steps between looks at the flush clock (adapts to the step time)
        self._clock_last = (time.monotonic(), 0)
        # scalar name -> the writer's (steps, values) buffers: log()'s short path; emptied at each flush
        self._log_sinks: dict[str, tuple[list[int], list[float]]] = {}
        self._running: RunningMetrics | None = None  # log(outputs=, targets=): the epoch's running metrics
        from .remedies.control import Control
        from .remedies.treatment import make_treatment

        self.control = Control()  # requests (stop, lr, clipping) that the training loop honours
        self.treatment: Any = make_treatment(
            treat
        )  # live treatment (treat="safe"), see remedies/treatment.py
        self._writer: RunWriter | None = None
        self._monitor = LiveMonitor(self.thresholds, self._emit) if live and not self._shadow else None
        self._console: Any = None  # LiveConsole when progress=True (rank 0 only)
        if progress and self.enabled and not self._shadow:
            from .report.console import LiveConsole

            self._console = LiveConsole(total_steps)
        if self._dist is not None:
            self._dist.open()  # False: this rank records without syncing (said once below, and recorded)
        if self.enabled:
            try:
                self._open_writer(overwrite, resume, every, config)
            except TrainmedicError:
                raise
            except Exception as e:  # e.g. a full disk: training goes on, unrecorded, and says so
                self._writer, self.enabled = None, False
                if self._dist is not None:  # still joins the other ranks' syncs, recording nothing
                    self._writer, self.enabled = NullWriter(self.run_dir), True
                warnings.warn(
                    f"trainmedic: cannot record into {self.run_dir} ({type(e).__name__}: {e}); training "
                    "continues unrecorded",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if self._dist is not None:  # a resumed run: every rank counts from rank 0's stored step
            self._step = self._dist.agree_step(self._step)
            self._dist.steps_at_watch = self._step
            self._sync_failed()
        self._finalizer = weakref.finalize(self, Run._atexit_close, weakref.ref(self))
        atexit.register(self._finalizer)

    def _open_writer(
        self, overwrite: bool, resume: bool, every: int, config: Mapping[str, Any] | None
    ) -> None:
        mode = "overwrite" if overwrite else "resume" if resume else "new"
        self._writer = NullWriter(self.run_dir) if self._shadow else RunWriter(self.run_dir, mode=mode)
        if resume and self._writer.resumed:
            with RunReader(self.run_dir) as r:
                self._step = int(r.meta.get("steps", 0) or 0)
                self._epoch_counter.update({sp: len(r.epochs(sp)) for sp in r.splits})
        self._writer.set_meta(
            name=self.name,
            status="running",
            created=time.time(),
            trainmedic_version=self._guard("meta", _version),
            torch_version=torch.__version__,
            every=every,
            cadence=self._guard("meta", self._cadence_meta),
            thresholds=self.thresholds.to_dict(),
            config=dict(config or {}),
            world_size=self.world_size,
            rank=self.rank,
        )
        self._writer.flush()

    # ---- attaching -----------------------------------------------------------------------------
    @_boundary("watch", default=lambda run: run)
    def watch(
        self,
        model: nn.Module | Mapping[str, nn.Module] | Iterable[nn.Module],
        optimizer: torch.optim.Optimizer
        | Mapping[str, torch.optim.Optimizer]
        | Iterable[torch.optim.Optimizer]
        | None = None,
    ) -> Run:
        """Attach model(s) and optimizer(s). Call once per run (before training)."""
        if self.models:
            raise TrainmedicError(
                "this run already watches a model; start a new run (tm.watch) for another model"
            )
        models = _name_all(model, "model")
        if not models:
            raise TrainmedicError("`model` must be a torch.nn.Module (or a dict/list of them); got None")
        for n, m in models.items():
            if not isinstance(m, nn.Module):
                raise TrainmedicError(f"`model` must be a torch.nn.Module; got {type(m).__name__} for {n!r}")
        optimizers = _name_all(optimizer, "optimizer")
        for n, o in optimizers.items():
            if not isinstance(o, torch.optim.Optimizer):
                raise TrainmedicError(
                    f"`optimizer` must be a torch.optim.Optimizer; got {type(o).__name__} for {n!r}"
                )
        self.models, self.optimizers = models, optimizers
        self._mode_sensitive = None
        index = LayerIndex.build(models)
        self._index = index
        for oname, opt in optimizers.items():
            params = [p for g in opt.param_groups for p in g["params"]]
            foreign = [p for p in params if id(p) not in index.param_layer]
            if foreign:
                raise TrainmedicError(
                    f"`optimizer` {oname!r} updates {len(foreign)} parameter tensor(s) that are not in the watched "
                    f"model(s) {sorted(models)}; pass every model it trains (e.g. tm.watch({{'G': g, 'D': d}}, ...))"
                )
        if not self.enabled:
            return self
        compiled = [n for n, m in models.items() if is_compiled(m)]
        for n, m in models.items():
            if not any(True for _ in m.parameters()):
                raise TrainmedicError(f"`model` {n!r} has no parameters; nothing to watch")
        assert self._writer is not None
        w = self._writer
        prefix = len(models) > 1
        summaries = (
            self._guard("summary", lambda: [model_summary(n, m, prefix) for n, m in models.items()]) or []
        )
        w.set_meta(models=summaries, layers=index.layers, activations=index.activations, compiled=compiled)
        w.add_record("model_summary", summaries)
        for stat in LAYER_NORM_STATS:
            w.set_layer_set(stat, index.layers)
        for oname, opt in optimizers.items():
            probe = OptimizerProbe(oname, opt, index)
            probe.steps = self._step  # resumed runs continue their step count
            self._probes.append(probe)
            primary = len(self._probes) == 1
            self._handles.append(
                opt.register_step_pre_hook(self._fence("optimizer hook", self._make_pre_hook(probe, primary)))
            )
            self._handles.append(
                opt.register_step_post_hook(
                    self._fence("optimizer hook", self._make_post_hook(probe, primary))
                )
            )
        if self._dist is not None:
            self._guard("distributed", self._setup_sync)
        if self._meter is not None:
            self._meter.next_check = self._step + self._meter.WARMUP
        if len(self._probes) > 1:
            for probe in self._probes:
                probe.prefix = f"{probe.name}/"
                probe.grad_signal = f"{probe.prefix}grad_norm"
        w.set_meta(optimizers=[p.describe() for p in self._probes])
        if self.activations_enabled and index.activations:
            for stat in ACT_STATS:
                w.set_layer_set(stat, index.activations)
            self._act_probe = ActivationProbe(
                index.activation_modules,
                index.activation_kinds,
                index.activation_unit_dim,
                guard=self._guard,
                rows=self.activation_rows,
                max_elements=self.activation_elements,
                fence=lambda hook: self._fence("activations", hook),
            )
            if self._cadence.capture(self._step):
                self._guard("activations", lambda: self._act_probe.start_capture(self._step))  # type: ignore[union-attr]
        notes = []
        if compiled:
            notes.append(
                "model(s) "
                + ", ".join(compiled)
                + " were compiled before watch: hooks added after torch.compile never fire, so activation "
                "statistics come only from eager forwards; gradient, weight and hyperparameter signals are complete"
            )
        if not index.activations:
            notes.append(
                "no activation modules found (functional activations?): dead/saturated units are not measured"
            )
        w.set_meta(notes=notes)
        for n, m in models.items():
            handle = unwrap(m).register_forward_pre_hook(self._fence("input", self._make_input_hook(n)))
            self._input_handles[n] = handle
            self._handles.append(handle)
        first_device = next(iter(models.values())).parameters().__next__().device
        self._host_check = first_device.type == "cpu"
        w.set_meta(device=str(first_device))
        w.flush()
        return self

    def _make_input_hook(self, model_name: str) -> Callable[..., None]:
        """A forward pre-hook that records the input shape, batch size and autocast once, then removes itself.

        Removing it keeps later forward passes on PyTorch's hook-free fast path.
        """

        def hook(module: nn.Module, args: Any) -> None:
            handle = self._input_handles.pop(model_name, None)
            if handle is None:
                return
            handle.remove()

            def record() -> None:
                t = next((a for a in args if isinstance(a, torch.Tensor)), None)
                if t is None or self._writer is None:
                    return
                autocast = _autocast_dtype(t.device.type)
                if autocast is not None:
                    self._amp["autocast"] = autocast
                    self._writer.set_meta(amp=dict(self._amp))
                self._writer.set_meta(
                    **{f"input_shape/{model_name}": list(t.shape), f"input_dtype/{model_name}": str(t.dtype)}
                )
                if self._batch_size is None and t.dim() >= 1 and model_name == next(iter(self.models)):
                    self._batch_size = int(t.shape[0])
                    self._writer.set_meta(
                        batch_size=self._batch_size, batch_size_source="first forward input"
                    )

            self._guard("input", record)

        return hook

    # ---- the fail-open boundary ----------------------------------------------------------------
    def _fence(self, probe: str, hook: Callable[..., Any]) -> Callable[..., Any]:
        """A hook behind the fail-open boundary. Every call from the user's code into trainmedic passes through
        one: the hooks (optimizer pre/post step, forward pre-hooks, activation hooks) through this, the public
        methods (``watch``, ``log``, ``evaluate``, ``end_epoch``, ``record``, ``event``, ``flush``, ``close``)
        through :func:`_boundary`. A failure inside is recorded as an ``internal_error`` event, warned about
        once, and the hook returns None (the optimizer or module then does exactly what it does unwatched);
        only a requested stop (``TrainingProblemError``: ``raise_on``, ``abort``) passes."""

        @functools.wraps(hook)
        def fenced(*args: Any, **kwargs: Any) -> Any:
            try:
                return hook(*args, **kwargs)
            except TrainingProblemError:
                raise
            except Exception as e:  # never break the user's training
                self._internal_error(probe, e)
                return None

        return fenced

    def _guard(self, probe: str, fn: Callable[[], Any]) -> Any:
        if probe in self._disabled:
            return None
        try:
            return fn()
        except TrainingProblemError:
            raise
        except Exception as e:  # never break the user's training
            self._internal_error(probe, e)
            return None

    def _internal_error(self, probe: str, e: BaseException) -> None:
        try:
            self._failures[probe] += 1
            n = self._failures[probe]
            if n == 1:
                warnings.warn(
                    f"trainmedic: the {probe!r} probe failed ({type(e).__name__}: {e}); training continues, "
                    f"the error is recorded in {self.run_dir}",
                    RuntimeWarning,
                    stacklevel=4,
                )
            if n <= 3 and self._writer is not None:
                self._writer.add_event(
                    "internal_error",
                    f"{probe}: {type(e).__name__}: {e}",
                    step=self._step,
                    code="internal_error",
                    severity="warning",
                    data={"probe": probe, "traceback": traceback.format_exc(), "count": n},
                )
            if n >= MAX_PROBE_FAILURES:
                self._disabled.add(probe)
        except Exception:
            pass

    def _update_quiet(self) -> None:
        """Whether quiet steps may take the hooks' short path: not while measuring, treating or closed.

        Called whenever one of those changes; also makes every probe re-derive its next step with work.
        """
        m = self._meter
        self._ticking = m is not None and m.active and m.mode == "wall"
        self._quiet = (
            not self.closed
            and self._pending_problem is None
            and self.treatment is None
            and self._amp_checked
            and not (m is not None and m.timing)
        )
        for probe in self._probes:
            probe.quiet_pre = probe.quiet_post = 0
        self._log_sinks.clear()

    def _tick(self, step: int) -> None:
        """Wall-mode window, on a step with work: add this step's tick, sort the ticks so far into intervals
        by kind, and choose cadences when the window has enough."""
        m = self._meter
        assert m is not None
        m.ticks.append((step, time.perf_counter(), self._flushes))
        if m.ingest(self._step_kind, self._cadence.gn_every, self._cadence.cap_every):
            self._guard("overhead budget", self._rethin)

    def _step_kind(self, step: int) -> str:
        """The work of ``step`` for the overhead meter: capture, capture start, gradient norm or quiet."""
        cad = self._cadence
        if cad.capture(step):
            return "c"
        if cad.capture(step + 1):
            return "s"
        return "g" if cad.grad(step) and not self._skips_grad(step) else "q"

    def _skips_grad(self, step: int) -> bool:
        """True on the few steps where a wall window leaves out a per-step gradient norm (see the meter)."""
        m = self._meter
        return (
            m is not None
            and self._cadence.gn_every == 1
            and m.active
            and m.mode == "wall"
            and step % m.SKIP_EVERY == m.SKIP_EVERY // 2
        )

    # ---- overhead budget -----------------------------------------------------------------------
    def _cadence_meta(self) -> dict[str, Any]:
        m = self._meter
        return {
            **self._cadence.meta(),
            "budget": m.budget if m is not None else None,
            "measured_overhead": None if m is None or m.share is None else round(m.share, 5),
            "predicted_overhead": None if m is None or m.predicted is None else round(m.predicted, 5),
            "bare_step_ms": None if m is None or m.bare is None else round(m.bare * 1000, 4),
            "checks": m.checks if m is not None else 0,
        }

    def _rethin(self) -> None:
        """End of a measuring window: apply the cadences that fit the budget, record them (meta + event)."""
        m = self._meter
        assert m is not None
        # the next window opens RECHECK steps on, or 4 window lengths (measuring costs a little too); the first
        # wall-mode window soon after the own-time one, which cannot see cold caches
        m.next_check = self._step + (m.WARMUP if m.checks == 0 else max(m.RECHECK, 4 * m.window_steps))
        cad = self._cadence
        old = (cad.gn_every, cad.cap_every)
        new = m.choose(*old)
        self._update_quiet()
        if new is None or m.share is None or m.bare is None or m.predicted is None:
            return
        cad.gn_every, cad.cap_every = new
        if self._act_probe is not None and not cad.capture(self._step) and self._act_probe.capture:
            self._act_probe.stop_capture()
        if self._writer is None:
            return
        meta = self._cadence_meta()
        self._writer.set_meta(cadence=meta)
        if new != old:
            self._writer.add_event(
                "cadence",
                f"recording overhead {m.share:.1%} of a {m.bare * 1000:.2f} ms step at gradient norm every "
                f"{old[0]} / capture every {old[1]} steps vs a budget of {m.budget:.1%}: now gradient norm every "
                f"{new[0]} and capture every {new[1]} steps (predicted {m.predicted:.1%})",
                step=self._step,
                data=meta,
            )

    # ---- optimizer hooks -----------------------------------------------------------------------
    def _make_pre_hook(self, probe: OptimizerProbe, primary: bool) -> Callable[..., Any]:
        # The per-step path creates no closures and catches exceptions inline: same fail-open semantics as
        # _guard (record, warn once, disable after MAX_PROBE_FAILURES), a few µs less per step.
        disabled = self._disabled
        cadence = self._cadence
        pi = len(self._probes) - 1
        dsync = self._dist if probe.sharded else None  # FSDP2: local shard norms, reduced at the next sync

        def before_update(step: int) -> None:
            meter = self._meter
            t0 = time.perf_counter() if meter is not None and meter.timing else 0.0
            if "gradients" not in disabled:
                try:
                    capture = cadence.capture(step)
                    if capture or (cadence.grad(step) and not self._skips_grad(step)):
                        res = probe.grad_param_norms()
                        if res is not None:
                            if dsync is not None:
                                dsync.add_norms(pi, probe.grad_signal, step, res)
                            elif self._host_check:
                                gn = probe.global_norm_host_cached()
                                if gn is not None:
                                    self._add_host_scalar(probe.grad_signal, step, gn)
                            else:  # the per-parameter norms stay on the device; combined at the flush
                                self._pending_norms.append((probe.grad_signal, step, res[1]))
                        if t0:
                            assert meter is not None
                            meter.grad += time.perf_counter() - t0
                            meter.grad_done = True
                    else:
                        probe._grad_cache = None
                    # hyperparameters: written when they change, and refreshed every HP_REFRESH steps
                    changed = probe.changed_hyperparameters(force=step % HP_REFRESH == 0)
                    if changed and self._writer is not None:
                        for key, v in changed:
                            self._writer.add_scalar(key, step, v)
                    if capture:
                        probe.snapshot_weights(self._host_check)
                except TrainingProblemError:
                    raise
                except Exception as e:  # never break the user's training
                    self._internal_error("gradients", e)
            probe.quiet_pre = cadence.next_work(step)  # the next step with work
            if self.treatment is not None and "treatment" not in disabled:
                try:
                    self.treatment.before_step(self, probe, step)
                except TrainingProblemError:
                    raise
                except Exception as e:
                    self._internal_error("treatment", e)
            if t0:
                assert meter is not None
                meter.own += time.perf_counter() - t0

        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> Any:
            step = probe.steps
            if step < probe.quiet_pre and self._quiet and not kwargs and len(args) < 2:
                # a quiet step (no gradient norm, no capture): only hyperparameter changes are looked for. A
                # scheduler sets a new lr object; other changes are caught at the next step with work
                # (at most gradient-norm cadence steps later) or the HP_REFRESH record.
                for g, lr in zip(opt.param_groups, probe.lr_objects):
                    if g["lr"] is not lr:
                        break
                else:
                    return None
                if "gradients" not in disabled:
                    try:
                        changed = probe.changed_hyperparameters(False)
                        if changed and self._writer is not None:
                            for key, v in changed:
                                self._writer.add_scalar(key, step, v)
                    except Exception as e:  # never break the user's training
                        self._internal_error("gradients", e)
                return None
            if self.closed:
                return None
            if not self._amp_checked:
                self._guard("amp", self._detect_grad_scaler)
            # step(closure) (Lightning, LBFGS) computes the gradients inside step(), after this hook: measure
            # when the closure first returns, so a step's gradients are its own, not the previous step's.
            # args[0] is the optimizer itself, args[1] a positional closure
            if not kwargs and len(args) < 2:  # the common case: opt.step()
                before_update(step)
                return None
            closure = kwargs.get("closure") if kwargs else None
            in_args = closure is None and len(args) > 1 and callable(args[1])
            closure = args[1] if in_args else closure
            if not callable(closure):
                before_update(step)
                return None
            done = False

            def measured_closure() -> Any:
                nonlocal done
                result = closure()
                if not done:
                    done = True
                    before_update(step)
                return result

            if in_args:
                return (args[0], measured_closure, *args[2:]), kwargs
            return args, {**kwargs, "closure": measured_closure}

        return hook

    def _make_post_hook(self, probe: OptimizerProbe, primary: bool) -> Callable[..., None]:
        pi = len(self._probes) - 1
        disabled = self._disabled
        cadence = self._cadence
        dsync = self._dist if probe.sharded else None

        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            step = probe.steps
            if step < probe.quiet_post and self._quiet:
                # a quiet step: only counted. The flush clock, the overhead meter and pending problems are
                # looked at on the steps with work, and at least every ``_clock_every`` steps (~20 ms of steps).
                probe.steps = step + 1
                if primary:
                    self._step = step + 1
                    self._stepped_since_log = True
                    if self._ticking:  # a wall-mode measuring window: one clock read per step
                        self._meter.ticks.append((step, time.perf_counter(), self._flushes))  # type: ignore[union-attr]
                return
            if self.closed:
                return
            meter = self._meter
            t0 = time.perf_counter() if meter is not None and meter.timing else 0.0
            # the next capture step: its post hook and the one before have work
            nxt = cadence.next_capture(step)
            nxt = nxt - 1 if nxt - 1 > step else nxt
            if primary:  # ... and the next look at the clock, the flush and the meter
                nxt = min(nxt, step + self._clock_every, self._last_flush_step + self.flush_steps - 1)
                if self._dist is not None:  # the step that completes the next sync's step count
                    nxt = min(nxt, self._dist.next_due(step + 1) - 1)
                if meter is not None:
                    if meter.timing:  # own mode: every step on this path
                        nxt = step + 1
                    elif not meter.active:  # the step that opens the next window
                        nxt = min(nxt, max(step + 1, meter.next_check - 1))
            probe.quiet_post = nxt
            capture = cadence.capture(step)
            if capture and "weights" not in disabled:
                try:
                    row = probe.param_stats(self._host_check)
                    if row is not None:
                        if dsync is not None:
                            dsync.add_row(pi, step, row)
                        else:
                            self._pending_rows.append((pi, step, row))
                        if (
                            step >= probe.next_quantile
                        ):  # quantiles: the first capture, then >= QUANTILE_GAP apart
                            probe.next_quantile = step + QUANTILE_GAP
                            quant = probe.param_quantiles(self._host_check)
                            if quant is not None:
                                self._pending_quantiles.append((step, quant))
                    if primary and self._writer is not None:  # wall time per step and throughput
                        self._writer.add_scalar("wall_time", step, time.perf_counter() - self._wall0)
                except TrainingProblemError:
                    raise
                except Exception as e:  # never break the user's training
                    self._internal_error("weights", e)
            if self.treatment is not None:
                self._guard("treatment", lambda: self.treatment.after_step(self, probe, step))
            probe.steps = step + 1
            if primary:
                self._step = step + 1
                self._stepped_since_log = True
                if self._dist is not None and self._dist.due(self._step):
                    self._guard("distributed", self._sync)
                act = self._act_probe
                if act is not None:
                    if cadence.capture(self._step):
                        act.start_capture(self._step)
                    elif act.capture:
                        act.stop_capture()
                self._maybe_flush()
                if meter is not None:
                    if t0:
                        meter.own += time.perf_counter() - t0
                        if meter.end_step(step, self._flushes, capture):
                            self._guard("overhead budget", self._rethin)
                    elif meter.active:
                        self._tick(step)
                    elif self._step >= meter.next_check:
                        meter.start()
                        self._update_quiet()
            elif t0:
                assert meter is not None
                meter.own += time.perf_counter() - t0
            if self._pending_problem is not None:
                self._raise_pending()

        return hook

    def _detect_grad_scaler(self) -> None:
        """Note whether ``optimizer.step`` was called by a ``GradScaler`` (its gradients are unscaled then).

        Looked up once, in the first step's pre-hook, from the calling frames: no cost afterwards.
        """
        self._amp_checked = True
        self._update_quiet()
        self._logs_at_first_step = self._log_count
        scaler = None
        f: Any = sys._getframe(1)
        for _ in range(12):
            if f is None:
                break
            owner = f.f_locals.get("self")
            if isinstance(owner, torch.amp.GradScaler):
                scaler = owner
                break
            f = f.f_back
        self._amp["grad_scaler"] = scaler is not None
        if scaler is not None:
            with contextlib.suppress(Exception):  # how many steps it skipped before this one (one read, once)
                scale, init, back = float(scaler.get_scale()), scaler._init_scale, scaler._backoff_factor
                if 0 < scale < init and 0 < back < 1:
                    self._skips_at_first_step = round(math.log(init / scale) / math.log(1 / back))
            self._amp["note"] = (
                "gradients are read in the optimizer step pre-hook, which GradScaler.step calls after "
                "unscale_: recorded gradient norms are unscaled; steps the scaler skips (inf/NaN) are not recorded"
            )
        if self._writer is not None and (scaler is not None or "autocast" in self._amp):
            self._writer.set_meta(amp=dict(self._amp))

    def _push_scalar(self, name: str, step: int, value: torch.Tensor) -> None:
        """A per-step 0-d tensor: read now on the CPU (no cost), kept on the device until a flush otherwise."""
        if self._host_check:
            self._add_host_scalar(name, step, float(value))
        else:
            self._pending_scalars.append((name, step, value.detach()))

    def _add_host_scalar(self, name: str, step: int, v: float) -> None:
        if self._writer is not None:
            self._writer.add_scalar(name, step, v)
        if self._monitor is not None:
            self._observe(name, step, v)

    def _observe(self, name: str, step: int, v: float) -> None:
        """The live monitor sees a value. Its failures switch off the monitor, never the recording."""
        monitor = self._monitor
        if monitor is None:
            return
        try:
            monitor.observe(name, step, v)
        except TrainingProblemError:
            raise
        except Exception as e:  # never break the user's training, nor the recording of its loss
            self._internal_error("live monitor", e)
            if "live monitor" in self._disabled:
                self._monitor = None

    # ---- user calls ----------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Optimizer steps completed so far (or ``log`` calls when no optimizer is watched)."""
        return self._step if self._probes else self._log_count

    @_boundary("log")
    def log(self, step: int | None = None, **scalars: Any) -> None:
        """Record per-step scalars: ``run.log(loss=loss, acc=acc)``. Tensors stay on the device until a flush."""
        # the per-step path: every line here runs once per training step with cold caches, so it is kept short
        sinks = self._log_sinks
        if sinks and step is None and len(scalars) == 1:
            # the common call, run.log(loss=loss) on the CPU between quiet steps: append to the writer's buffer
            for k, v in scalars.items():
                sink = sinks.get(k)
                if sink is not None and isinstance(v, torch.Tensor) and v.numel() == 1:
                    x = float(v.item())
                    # finite values only: NaN and Inf take the full path, where the live check sees them
                    if x - x == 0.0:
                        s = self._step
                        sink[0].append(s - 1 if (self._log_after_step and s > 0) else s)
                        sink[1].append(x)
                        self._log_count += 1
                        self._stepped_since_log = False
                        return
        if "outputs" in scalars or "targets" in scalars:
            rest = dict(scalars)
            self._fold_batch(rest.pop("outputs", None), rest.pop("targets", None), rest.get("loss"))
            if rest:
                self.log(step, **rest)
            return
        if self.closed:
            raise TrainmedicError("`log()` was called after `close()`; start a new run with tm.watch(...)")
        if not scalars:
            raise TrainmedicError("`log()` needs at least one scalar, e.g. run.log(loss=loss)")
        meter = self._meter
        t0 = time.perf_counter() if meter is not None and meter.timing else 0.0
        host = self._host_check
        values: dict[str, Any] = {}
        for k, v in scalars.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise TrainmedicError(
                        f"`{k}` must be a scalar (a 0-d tensor or a number); got a tensor of shape "
                        f"{describe_shape(v)}; reduce it first, e.g. {k}={k}.mean()"
                    )
                # CPU: read now (no cost, and the live checks see it at once); accelerators: keep it on the device
                values[k] = float(v.item()) if host else v.detach()
            elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                values[k] = float(v)
            else:
                raise TrainmedicError(
                    f"`{k}` must be a number or a one-element tensor; got {type(v).__name__}"
                )
        if not self.enabled:
            return
        if step is None:
            if self._probes:
                after = self._log_after_step
                if after is None and self._logs_at_first_step is not None:
                    # does the loop log after opt.step() (its loss belongs to the step just taken) or before?
                    # Decided at the first real step: logging after, every log so far followed a step that the
                    # GradScaler skipped (no hooks ran); logging before, one more log came first.
                    after = self._log_after_step = self._logs_at_first_step <= self._skips_at_first_step
                step = self._step - 1 if (after and self._step > 0) else self._step
            else:
                step = self._log_count
        else:
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < 2**62:
                raise TrainmedicError(
                    f"`step` must be a non-negative integer (the step the values belong to) or None; got {step!r}"
                )
            step = int(step)
        self._log_count += 1
        self._stepped_since_log = False
        if "log" not in self._disabled:
            try:
                writer, monitor = self._writer, self._monitor
                assert writer is not None
                for k, v in values.items():
                    if isinstance(v, float):
                        writer.add_scalar(k, step, v)
                        if monitor is not None:
                            self._observe(k, step, v)
                        if (
                            self._quiet
                            and self._log_after_step is not None
                            and self._console is None
                            and (monitor is None or not monitor.needs_every_value(k))
                        ):  # later calls may take the short path above, until the next flush
                            self._log_sinks[k] = writer._scalars[k]
                    else:
                        self._push_scalar(k, step, v)
                if not self._probes:
                    self._maybe_flush()
                if self._console is not None:
                    self._console.on_log(step, {k: v for k, v in values.items() if isinstance(v, float)})
            except TrainingProblemError:
                raise
            except Exception as e:  # never break the user's training
                self._internal_error("log", e)
        if t0:
            assert meter is not None
            meter.own += time.perf_counter() - t0
        if self._pending_problem is not None:
            self._raise_pending()

    @_boundary("evaluate", default=lambda run: {"task": None, "scalars": {}, "failed": True})
    def evaluate(
        self,
        split: str,
        targets: Any,
        outputs: Any,
        loss: Any = None,
        *,
        epoch: int | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        threshold: float = 0.5,
        **scalars: Any,
    ) -> dict[str, Any]:
        """Score one split at the end of an epoch and store the metrics and the confusion matrix.

        ``outputs`` may be logits, probabilities or class indices; ``targets`` class indices. For object
        detection pass lists of dicts (``{"boxes", "labels"}`` and ``{"boxes", "scores", "labels"}``).
        Under ``torch.distributed`` call it on every rank: the shards are gathered before scoring.
        Returns the metrics (``result["scalars"]["accuracy"]`` …).
        """
        if self.closed:
            raise TrainmedicError(
                "`evaluate()` was called after `close()`; start a new run with tm.watch(...)"
            )
        if not isinstance(split, str) or not split:
            raise TrainmedicError(
                f"`split` must be a non-empty string such as 'train' or 'val'; got {split!r}"
            )
        targets, outputs = _to_host(targets, "targets"), _to_host(outputs, "outputs")
        if self.world_size > 1:
            targets, outputs = self._gather(targets), self._gather(outputs)
        from .metrics import evaluate_classification, evaluate_detection
        from .metrics.classification import fast_confusion_matrix, metrics_dict

        detection = isinstance(outputs, list) and (not outputs or isinstance(outputs[0], Mapping))
        for arg, value in (("targets", targets), ("outputs", outputs)):
            if not detection and not isinstance(value, torch.Tensor):
                raise TrainmedicError(
                    f"`{arg}` must be a tensor, array or list of numbers (class indices, scores or logits); got "
                    f"{type(value).__name__}"
                    + (f" of {type(value[0]).__name__}" if isinstance(value, list) and value else "")
                )
        if (
            not detection
            and isinstance(outputs, torch.Tensor)
            and outputs.is_floating_point()
            # one reduction: a finite sum means finite values (an overflowing sum takes the full look)
            and not math.isfinite(float(outputs.sum()))
            and not bool(torch.isfinite(outputs).all())
        ):
            return self._evaluate_nonfinite(split, outputs, epoch)
        cm = None if detection else fast_confusion_matrix(targets, outputs, num_classes)
        if detection:
            result = evaluate_detection(targets, outputs, iou_threshold=self.thresholds.iou_match)
        elif cm is not None:  # the common case: one bincount, the rest vectorised NumPy (~0.05 ms)
            result = metrics_dict(cm)
        else:
            result = evaluate_classification(targets, outputs, num_classes=num_classes, threshold=threshold)
        loss_value = _scalar_value("loss", loss) if loss is not None else None
        extra = {k: _scalar_value(k, v) for k, v in scalars.items()}
        if not self.enabled:
            return result
        epoch = self._claim_epoch(split, epoch)
        step = self.step
        self._guard("running metrics", lambda: self._store_running(epoch))
        train_mode = self._guard("evaluate", self._train_mode_modules) or []

        def record() -> None:
            w = self._writer
            assert w is not None
            _record_eval_mode(w, split, epoch, step, train_mode)
            for k, v in result["scalars"].items():
                w.add_eval(split, epoch, step, k, v)
            if loss_value is not None:
                w.add_eval(split, epoch, step, "loss", loss_value)
            for k, v in extra.items():
                w.add_eval(split, epoch, step, k, v)
            data = dict(result)
            if class_names is not None:
                data["class_names"] = [str(c) for c in class_names]
            w.add_record(
                "detection" if detection else "classification", data, epoch=epoch, step=step, split=split
            )
            if not detection:
                counts = result["per_class"]["support"]
                w.set_meta(**{f"split/{split}": {"samples": int(sum(counts)), "class_counts": list(counts)}})
            w.set_meta(steps=self.step, epochs=self.epoch + 1 if self.epoch is not None else 0)
            # no commit here: the rows go with the next flush (flush_secs / flush_steps, or close), so an
            # evaluation costs no SQLite transaction; a kill -9 loses at most one flush interval, as for steps
            if self._console is not None:
                shown = dict(result["scalars"])
                if loss_value is not None:
                    shown["loss"] = loss_value
                self._console.on_evaluate(split, epoch, shown)

        self._guard("evaluate", record)
        if self.treatment is not None:
            self._guard(
                "treatment", lambda: self.treatment.after_evaluate(self, split, epoch, result, loss_value)
            )
        self._raise_pending()
        return result

    def _train_mode_modules(self) -> list[str]:
        """Names of the watched models' dropout and batch-norm modules that are in training mode now."""
        mods = self._mode_sensitive
        if mods is None:
            kinds = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
            mods = self._mode_sensitive = [
                (f"{mname}/{n}" if len(self.models) > 1 else n, m)
                for mname, model in self.models.items()
                for n, m in model.named_modules()
                if isinstance(m, kinds)
            ]
        return [n for n, m in mods if m.training]

    def _claim_epoch(self, split: str, epoch: int | None) -> int:
        """The epoch of this evaluation of ``split``: the one given, else one past the last."""
        if epoch is None:
            epoch = self._epoch_counter[split]
        self._epoch_counter[split] = max(self._epoch_counter[split], epoch + 1)
        self.epoch = epoch if self.epoch is None else max(self.epoch, epoch)
        return epoch

    def _evaluate_nonfinite(self, split: str, outputs: torch.Tensor, epoch: int | None) -> dict[str, Any]:
        """A diverged model's outputs hold NaN/Inf: nothing can be scored, so record that instead of raising."""
        share = float((~torch.isfinite(outputs)).float().mean())
        result: dict[str, Any] = {
            "task": "classification",
            "nonfinite": True,
            "nonfinite_share": share,
            "scalars": {},
        }
        if not self.enabled:
            return result
        epoch = self._claim_epoch(split, epoch)
        step = self.step
        self._guard("running metrics", lambda: self._store_running(epoch))
        train_mode = self._guard("evaluate", self._train_mode_modules) or []

        def record() -> None:
            w = self._writer
            assert w is not None
            _record_eval_mode(w, split, epoch, step, train_mode)
            w.add_eval(split, epoch, step, "nonfinite_outputs", share)
            w.add_event(
                "nonfinite_outputs",
                f"{share:.2%} of the {split} output values are NaN/Inf at epoch {epoch}; metrics not computed",
                step=step,
                epoch=epoch,
                code="nonfinite",
                severity="error",
                data={"split": split, "share": share},
            )
            if self._monitor is not None and "nonfinite" not in self._monitor.fired:
                self._monitor.fired.add("nonfinite")
                self._emit(
                    Finding(
                        code="nonfinite",
                        severity=Severity.ERROR,
                        message=f"the model's {split} outputs are NaN/Inf ({share:.2%} of the values) at epoch {epoch}",
                        evidence={"signal": f"{split} outputs", "share": share, "first_step": step},
                        step=step,
                        epoch=epoch,
                        split=split,
                        source="live",
                    )
                )
            self.flush()

        self._guard("evaluate", record)
        self._raise_pending()
        return result

    def _fold_batch(self, outputs: Any, targets: Any, loss: Any) -> None:
        """``log(outputs=, targets=)``: fold the batch into the epoch's running confusion matrix (no host sync)."""
        if self.closed:
            raise TrainmedicError("`log()` was called after `close()`; start a new run with tm.watch(...)")
        if outputs is None or targets is None:
            raise TrainmedicError(
                "`log(outputs=..., targets=...)` needs both: the batch's scores and its class indices"
            )
        if not self.enabled or "running metrics" in self._disabled:
            return
        if self._running is None:
            self._running = RunningMetrics()
        try:
            self._running.fold(outputs, targets, loss)
        except TrainmedicError:
            raise
        except Exception as e:  # never break the user's training
            self._internal_error("running metrics", e)

    def _store_running(self, epoch: int | None = None) -> None:
        """Epoch boundary: store the running metrics folded since the last one as split ``train_running``."""
        running = self._running
        w = self._writer
        if running is None or w is None:
            return
        ep = running.take()
        if ep is None:
            return
        from .metrics.classification import metrics_dict

        epoch = self._claim_epoch(RUNNING_SPLIT, epoch)
        step = self.step
        data = metrics_dict(ep.confusion_matrix) if ep.confusion_matrix.sum() > 0 else {"scalars": {}}
        for k, v in data["scalars"].items():
            w.add_eval(RUNNING_SPLIT, epoch, step, k, v)
        if ep.loss is not None:
            w.add_eval(RUNNING_SPLIT, epoch, step, "loss", ep.loss)
        data.update(running=True, batches=ep.batches, invalid_targets=ep.invalid_targets)
        w.add_record("classification", data, epoch=epoch, step=step, split=RUNNING_SPLIT)

    @_boundary("running metrics")
    def end_epoch(self, epoch: int | None = None) -> None:
        """Mark an epoch boundary for ``log(outputs=, targets=)``: store the running training metrics now.

        Only needed when the loop calls no ``run.evaluate`` at the end of its epochs (the first evaluation
        after folded batches is a boundary too, and so is ``close``).
        """
        if self.closed:
            raise TrainmedicError(
                "`end_epoch()` was called after `close()`; start a new run with tm.watch(...)"
            )
        self._guard("running metrics", lambda: self._store_running(epoch))

    @_boundary("record")
    def record(self, kind: str, data: Any, *, epoch: int | None = None, split: str | None = None) -> None:
        """Store a JSON record (e.g. a data audit, an autofix trial) with this run."""
        if self._writer is not None and not self.closed:
            self._writer.add_record(kind, data, epoch=epoch, step=self.step, split=split)
            self._writer.flush()

    @_boundary("event")
    def event(self, kind: str, message: str, **data: Any) -> None:
        """Record an event (a treatment action, a note) at the current step."""
        if self._writer is not None and not self.closed:
            self._writer.add_event(kind, message, step=self.step, epoch=self.epoch, data=data or None)

    # ---- live findings -------------------------------------------------------------------------
    def _emit(self, finding: Finding) -> None:
        self.findings.append(finding)
        if self._console is not None:
            with contextlib.suppress(Exception):
                self._console.on_finding(finding)
        if self._writer is not None:
            self._writer.add_event(
                "live_finding",
                finding.message,
                step=finding.step,
                epoch=self.epoch,
                code=finding.code,
                severity=finding.severity.value,
                data=finding.to_dict(),
            )
        if not self.quiet:
            warnings.warn(f"trainmedic: {finding}", RuntimeWarning, stacklevel=5)
        if self.on_problem is not None:
            try:
                self.on_problem(finding)
            except Exception as e:
                self._internal_error("on_problem callback", e)
        if self.raise_on is not None and finding.severity.rank >= self.raise_on.rank:
            self._pending_problem = TrainingProblemError(finding)
            self._quiet = False  # the next hook raises it
            self._log_sinks.clear()

    def abort(self, finding: Finding) -> None:
        """Stop the training loop at the next watched call: it raises :class:`TrainingProblemError`.

        For callers that supervise a run (``tm.autofix`` cutting a hopeless trial, an ``on_problem`` callback
        that gives up on NaN). The run stays open; close it (``with`` does) to record the stop.
        """
        self._pending_problem = TrainingProblemError(finding)
        self._quiet = False  # the next hook raises it
        self._log_sinks.clear()

    def _raise_pending(self) -> None:
        if self._pending_problem is not None:
            e, self._pending_problem = self._pending_problem, None
            self._update_quiet()
            self.flush()
            raise e

    # ---- flushing ------------------------------------------------------------------------------
    def _maybe_flush(self) -> None:
        now = time.monotonic()
        # how many quiet steps may pass between looks at the clock: about CLOCK_SECS of training
        last_now, last_step = self._clock_last
        if self.step > last_step and now > last_now:
            per_step = (now - last_now) / (self.step - last_step)
            self._clock_every = max(1, min(64, int(CLOCK_SECS / per_step)))
        self._clock_last = (now, self.step)
        if (
            now - self._last_flush_time >= self.flush_secs
            or self.step - self._last_flush_step >= self.flush_steps
        ):
            self.flush()

    @_boundary("flush")
    def flush(self) -> None:
        """Move pending device statistics to the host in one batch and commit them to the run directory."""
        if self._writer is None or self._writer.closed:
            return
        self._last_flush_time = time.monotonic()
        self._last_flush_step = self.step
        self._flushes += 1
        self._log_sinks.clear()  # the writer starts new buffers
        self._guard("flush", self._flush_pending)
        try:
            self._writer.set_meta(steps=self.step)
            if self._dist is not None:  # the per-rank loss summary reads the buffer before it empties
                self._dist.absorb(self._writer)
            self._writer.flush()
            if self._dist is not None:
                self._dist.flushed()
        except Exception as e:
            self._internal_error("writer", e)

    def _flush_pending(self) -> None:
        w = self._writer
        assert w is not None
        scalars, self._pending_scalars = self._pending_scalars, []
        rows, self._pending_rows = self._pending_rows, []
        norms, self._pending_norms = self._pending_norms, []
        if norms:
            scalars = scalars + _global_norms(norms)
        if scalars:
            vals = _batch_to_host([t.reshape(()) for _, _, t in scalars])
            for (name, step, _), v in zip(scalars, vals):
                w.add_scalar(name, step, float(v))
                if self._monitor is not None:
                    self._observe(name, step, float(v))
        if rows:
            self._flush_layer_rows(rows)
        if self._act_probe is not None and self._index is not None:
            acts = self._guard("activations", self._act_probe.drain)
            if acts:
                self._flush_activations(acts)

    def _flush_layer_rows(self, rows: list[tuple[int, int, torch.Tensor]]) -> None:
        """Per-parameter norm rows of all captured steps → per-layer statistics, one host copy per optimizer."""
        w = self._writer
        assert w is not None
        by_probe: dict[int, list[tuple[int, torch.Tensor]]] = defaultdict(list)
        for pi, step, row in rows:
            by_probe[pi].append((step, row))
        merged: dict[int, np.ndarray] = {}  # step -> (3, layers) squared norms, summed over optimizers
        for pi, items in by_probe.items():
            layer_vals = self._probes[pi].layer_rows(torch.stack([r for _, r in items])).cpu().numpy()
            for (step, _), v in zip(items, layer_vals):
                sq = v.astype(np.float64) ** 2
                merged[step] = merged[step] + sq if step in merged else sq
        steps = sorted(merged)
        arr = np.sqrt(np.stack([merged[s] for s in steps]))  # (T, 3, layers)
        grad, weight, update = arr[:, 0], arr[:, 1], arr[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(weight > 0, update / weight, np.nan)
        if "update_ratio" not in w._known_layer_sets:
            w.set_layer_set("update_ratio", self._index.layers if self._index else [])
        for stat, values in (
            ("grad_norm", grad),
            ("weight_norm", weight),
            ("update_norm", update),
            ("update_ratio", ratio),
        ):
            w.add_layer_rows(stat, steps, values)
        quants, self._pending_quantiles = self._pending_quantiles, []
        if quants:
            self._flush_quantiles(quants)

    def _flush_quantiles(self, quants: list[tuple[int, torch.Tensor]]) -> None:
        """Weight and gradient quantiles per layer (``weight_q01`` … ``grad_q99``), one host copy."""
        w = self._writer
        assert w is not None
        host = torch.stack([q for _, q in quants]).cpu().numpy()  # (rows, 2, Q, layers)
        by_step: dict[int, np.ndarray] = {}
        for (step, _), v in zip(quants, host):  # several optimizers: each fills its own layers
            prev = by_step.get(step)
            by_step[step] = v if prev is None else np.where(np.isnan(prev), v, prev)
        steps = sorted(by_step)
        table = np.stack([by_step[s] for s in steps]).reshape(len(steps), -1, host.shape[-1])
        for si, stat in enumerate(QUANTILE_STATS):
            if stat not in w._known_layer_sets:
                w.set_layer_set(stat, self._index.layers if self._index else [])
            w.add_layer_rows(stat, steps, table[:, si])

    def _flush_activations(self, acts: list[tuple[int, list[int], torch.Tensor]]) -> None:
        w = self._writer
        assert w is not None and self._index is not None
        n_act = len(self._index.activations)
        host = _batch_to_host([torch.cat([t for _, _, t in acts])]) if acts else []
        stats = host[0] if host else np.zeros((0, len(ACT_STATS)), dtype=np.float32)
        by_step: dict[int, np.ndarray] = {}
        k = 0
        for i, steps, _ in acts:
            for step in steps:
                arr = by_step.get(step)
                if arr is None:
                    arr = by_step[step] = np.full((len(ACT_STATS), n_act), np.nan, dtype=np.float32)
                arr[:, i] = stats[k]
                k += 1
        order = sorted(by_step)
        table = np.stack([by_step[s] for s in order])  # (T, stats, activations)
        for si, stat in enumerate(ACT_STATS):
            w.add_layer_rows(stat, order, table[:, si])

    # ---- closing -------------------------------------------------------------------------------
    @_boundary("close")
    def close(self, status: str = "closed") -> None:
        """Remove every hook and write what is pending. Safe to call twice."""
        if self.closed:
            return
        if self._dist is not None:
            if status == "closed":  # a failed or unclosed run does not wait for ranks that may be gone
                self._guard("distributed", lambda: self._sync(final=True))
            self._guard("distributed", self._dist.remove)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._act_probe is not None:
            self._guard("activations", self._act_probe.remove)
        if self._console is not None:
            with contextlib.suppress(Exception):
                self._console.close()
        if self._writer is not None and not self._writer.closed:
            self._guard("running metrics", self._store_running)
            self.flush()
            try:
                self._writer.set_meta(
                    steps=self.step, epochs=(self.epoch + 1) if self.epoch is not None else 0
                )
                self._writer.close(status=status)
            except Exception as e:
                self._internal_error("writer", e)
        self.closed = True
        self._quiet = False
        self._log_sinks.clear()
        self._finalizer.detach()

    @staticmethod
    def _atexit_close(ref: weakref.ReferenceType[Run]) -> None:
        run = ref()
        if run is not None and not run.closed:
            with contextlib.suppress(Exception):
                run.close(status="unclosed")

    @_boundary("with", default=lambda run: run)
    def __enter__(self) -> Run:
        return self

    @_boundary("with", default=lambda run: run.close())  # a failure here still closes (flushes) the run
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None and self._writer is not None and not self._writer.closed:
            self._writer.add_event(
                "training_exception",
                f"{exc_type.__name__}: {exc}",
                step=self.step,
                data={"traceback": "".join(traceback.format_exception(exc_type, exc, tb))},
            )
        self.close(status="failed" if exc is not None else "closed")

    # ---- across ranks (trainmedic/distributed.py) ----------------------------------------------
    def _setup_sync(self) -> None:
        """Which probes are sharded (FSDP2), each parameter's replication, the per-rank sample counter."""
        d = self._dist
        assert d is not None
        for i, probe in enumerate(self._probes):
            d.probe_sizes[i] = len(probe.params)
            d.inv_rep[i] = torch.tensor(
                [1.0 / replication(p, self.world_size) for p in probe.params], dtype=torch.float64
            )
        d.sharded = any(p.sharded for p in self._probes)
        first = next(iter(self.models.values()))
        d.attach_input_counter(unwrap(first), lambda hook: self._fence("distributed", hook))
        if self._writer is not None:
            self._writer.set_meta(
                distributed={
                    "world_size": self.world_size,
                    "backend": str(torch.distributed.get_backend()),
                    "sharded": d.sharded,
                    "sync_every": SYNC_EVERY,
                    "timeout_s": d.timeout,
                    "syncing": d.failed is None,
                }
            )

    def _gather(self, x: Any) -> Any:
        """Every rank's shard of an evaluation, on trainmedic's group (timeouts); this rank's alone after a
        failed sync."""
        d = self._dist
        if d is None:
            return _gather(x)
        if isinstance(x, torch.Tensor):  # the common case: tensor collectives, nothing pickled
            try:
                t = d.gather_tensor(x)
            except ValueError:  # the ranks disagree on dtype/shape: every rank scores its own shard
                return x
            if t is None:
                self._sync_failed()
                return x
            return t
        parts = d.gather_object(x)  # detection's lists of dicts
        if parts is None:
            self._sync_failed()
            return x
        return _join(parts, x)

    def _sync(self, final: bool = False) -> None:
        """A sync of every rank (at fixed step counts and at close): the ranks' summaries, the DDP parameter
        fingerprints, the FSDP2 shard norms reduced into global ones (then flushed like any other)."""
        d = self._dist
        w = self._writer
        if d is None or w is None or d.failed is not None:
            return
        self._guard("flush", self._flush_pending)  # device values (losses) into the writer's buffers
        d.absorb(w)
        primary = self._probes[0] if self._probes else None
        weights = [] if primary is None or d.sharded else [p.detach() for p in primary.params]
        try:
            table, fp, norms, rows = d.sync(self.step, weights, fingerprint=not d.sharded)
        except Exception as e:  # the ranks buffered different payloads: this interval's norms are dropped
            self._internal_error("distributed", e)
            return
        if table is None:
            self._sync_failed()
            return
        self._pending_norms.extend(norms)
        self._pending_rows.extend(rows)
        self._guard("distributed", lambda: self._record_sync(table, fp, weights, final))

    def _record_sync(
        self, table: np.ndarray, fp: np.ndarray | None, weights: list[torch.Tensor], final: bool
    ) -> None:
        """The ``rank_sync`` record of one sync: what the cross-rank checks judge."""
        w = self._writer
        assert w is not None
        col = {name: table[:, i] for i, name in enumerate(SUMMARY_FIELDS)}
        n = col["loss_n"]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(n > 0, col["loss_sum"] / n, np.nan)
            var = np.where(n > 1, (col["loss_sumsq"] - n * mean**2) / (n - 1), np.nan)
        data: dict[str, Any] = {
            "world_size": self.world_size,
            "final": final,
            "sharded": bool(self._dist is not None and self._dist.sharded),
            **{
                k: [int(v) for v in col[k]]
                for k in ("steps", "loss_n", "loss_nonfinite", "first_nonfinite_step")
            },
            **{k: [int(v) for v in col[k]] for k in ("samples", "samples_total", "batch_max")},
            "loss_mean": _finite_or_none(mean),
            "loss_std": _finite_or_none(np.sqrt(np.maximum(var, 0.0))),
        }
        if fp is not None and fp.shape[-1] == len(weights) and self._index is not None:
            ref = fp[0]
            scale = np.maximum(ref[0], 1e-12)
            diff = np.maximum(np.abs(fp[:, 0] - ref[0]), np.abs(fp[:, 1] - ref[1])) / scale  # (world, P)
            worst = diff.argmax(axis=1)
            primary = self._probes[0]
            names = [self._index.layers[self._index.param_layer[id(p)]] for p in primary.params]
            data["param_diff"] = _finite_or_none(diff.max(axis=1))  # None: non-finite weights
            data["param_diff_layer"] = [names[int(i)] for i in worst]
        w.add_record("rank_sync", data, step=self.step)

    def _sync_failed(self) -> None:
        """Say once that this rank stopped syncing, and put it on disk at once (the job may be dying)."""
        d = self._dist
        if d is None or getattr(d, "reported", False) or d.failed is None:
            return
        d.reported = True
        warnings.warn(f"trainmedic: {d.failed}", RuntimeWarning, stacklevel=4)
        if self._writer is not None:
            self._writer.add_event(
                "rank_sync_failed",
                d.failed,
                step=self.step,
                code=None,
                severity="warning",
                data={"rank": self.rank, "world_size": self.world_size, "syncs": d.syncs},
            )
            self._writer.set_meta(distributed_failed=d.failed)
            self._guard("writer", self._writer.flush)

    # ---- reading back --------------------------------------------------------------------------
    def reader(self) -> RunReader:
        """A reader over what has been flushed so far."""
        self.flush()
        return RunReader(self.run_dir)

    def diagnose(self, **kwargs: Any) -> Any:
        """Diagnose this run (flushes first); see :func:`trainmedic.diagnose`."""
        from . import checks

        self.flush()
        return checks.diagnose(self.run_dir, **kwargs)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r}, step={self.step}, models={list(self.models)})"


class UnrecordedRun:
    """What :func:`watch` returns when trainmedic itself failed to start: the same calls, all no-ops."""

    def __init__(self, run_dir: Any, error: BaseException) -> None:
        from .remedies.control import Control

        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.error = error
        self.enabled = False
        self.closed = False
        self.step = 0
        self.findings: list[Finding] = []
        self.control = Control()

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"task": None, "scalars": {}, "failed": True}

    def __getattr__(self, name: str) -> Callable[..., None]:  # log, watch, flush, close, record, event …
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None

    def __enter__(self) -> UnrecordedRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closed = True


def _record_eval_mode(w: Any, split: str, epoch: int, step: int, train_mode: list[str]) -> None:
    """Which dropout / batch-norm modules were still in training mode while ``split`` was scored (a
    forgotten ``model.eval()``): the diagnosis judges held-out metrics measured that way."""
    w.add_record(
        "eval_mode",
        {"train_mode_modules": len(train_mode), "names": train_mode[:8]},
        epoch=epoch,
        step=step,
        split=split,
    )


def _autocast_dtype(device_type: str) -> str | None:
    """The autocast dtype active for ``device_type`` (``"torch.bfloat16"``), or None."""
    try:
        if torch.is_autocast_enabled(device_type):
            return str(torch.get_autocast_dtype(device_type))
    except (TypeError, RuntimeError):
        return None
    return None


def _version() -> str:
    from . import __version__

    return __version__


def _global_norms(items: list[tuple[str, int, list[torch.Tensor]]]) -> list[tuple[str, int, torch.Tensor]]:
    """``(signal, step, per-parameter norms)`` of many steps → ``(signal, step, global norm)``, in a few
    kernels per group of same-sized steps (one stack, one reduction), still on the device."""
    groups: dict[tuple[torch.device, int], list[int]] = defaultdict(list)
    for i, (_, _, ns) in enumerate(items):
        groups[(ns[0].device, len(ns))].append(i)
    out: list[tuple[str, int, torch.Tensor] | None] = [None] * len(items)
    for (_, n), idx in groups.items():
        flat = [t if t.dtype == torch.float32 else t.float() for i in idx for t in items[i][2]]
        g = torch.linalg.vector_norm(torch.stack(flat).view(len(idx), n), dim=1)
        for j, i in enumerate(idx):
            out[i] = (items[i][0], items[i][1], g[j])
    return [o for o in out if o is not None]


def _batch_to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """One device→host copy per device for a list of same-shaped-or-not tensors."""
    out: list[np.ndarray | None] = [None] * len(tensors)
    groups: dict[tuple[torch.device, tuple[int, ...]], list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        groups[(t.device, tuple(t.shape))].append(i)
    for (_, _), idx in groups.items():
        stacked = torch.stack([tensors[i].float() for i in idx]).cpu().numpy()
        for j, i in enumerate(idx):
            out[i] = stacked[j]
    return [o for o in out if o is not None] if all(o is not None for o in out) else []


def _to_host(x: Any, arg: str = "value") -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        try:
            return torch.from_numpy(np.ascontiguousarray(x))
        except TypeError:
            raise TrainmedicError(
                f"`{arg}` must be an array of numbers (class indices, scores or logits); got dtype {x.dtype}"
            ) from None
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], Mapping):
        return [{k: _to_host(v) for k, v in d.items()} for d in x]
    if isinstance(x, (list, tuple)):
        try:
            return torch.as_tensor(x)
        except (TypeError, ValueError):
            return x
    return x


def _finite_or_none(values: Any) -> list[float | None]:
    """JSON-friendly floats: None for NaN/Inf (a diverged rank)."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def _gather(x: Any) -> Any:
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, x)
    return _join(parts, x)


def _join(parts: list[Any], x: Any) -> Any:
    """Every rank's ``x`` (gathered in rank order) as one tensor or list."""
    if isinstance(x, torch.Tensor):
        return torch.cat(parts)
    if isinstance(x, list):
        return [item for p in parts for item in p]
    return x


def _scalar_value(name: str, v: Any) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise TrainmedicError(f"`{name}` must be a scalar; got a tensor of shape {describe_shape(v)}")
        return float(v.detach().cpu())
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TrainmedicError(
            f"`{name}` must be a number or a one-element tensor; got {type(v).__name__}"
        ) from None
    return f if math.isfinite(f) else f


def watch(
    model: Any = None,
    optimizer: Any = None,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    every: int | None = None,
    total_steps: int | None = None,
    overhead_budget: float | None = None,
    activations: bool = True,
    activation_rows: int = 64,
    activation_elements: int = 16384,
    overwrite: bool = False,
    resume: bool = False,
    flush_secs: float = 2.0,
    flush_steps: int = 5000,
    live: bool = True,
    on_problem: Callable[[Finding], Any] | None = None,
    raise_on: str | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    all_ranks: bool = False,
    quiet: bool = False,
    treat: Any = None,
    progress: bool = False,
    dist_timeout: float = DIST_TIMEOUT,
) -> Run:
    """Start watching a training run. Three lines in a plain PyTorch loop::

        run = tm.watch(model, optimizer, run_dir="runs/exp1")
        ...  run.log(loss=loss, outputs=logits, targets=y)  # every step (outputs/targets optional)
        run.close()              # or use ``with tm.watch(...) as run:``

    ``model`` / ``optimizer`` may be dicts or lists (GANs: ``{"G": g, "D": d}``); both may be omitted and given
    later with ``run.watch(model, optimizer)``. ``run_dir`` defaults to ``runs/<name or timestamp>``.

    Options (all keyword-only; one place documents them):

    * ``name``: the run's name in reports (default: the directory name).
    * ``every``: default None, a schedule of the step number alone, dense early and spreading later — captures
      every 10 steps for the first 20, then every 20, 40, …; the gradient norm every step for 100 steps, then
      every 2, 4, 8, 16 — the same steps on any machine (``trainmedic/cadence.py``). An explicit ``every=N``: a
      capture every N steps and the gradient norm every step.
    * ``total_steps``: when known, the last step is captured too (``close`` captures the last one anyway).
    * ``overhead_budget``: opt-in, e.g. 0.02: the recorder measures its share of a step in wall time and thins
      the cadences to fit, recorded in ``meta["cadence"]`` (not reproducible on a loaded machine).
    * ``activations``, ``activation_rows``, ``activation_elements``: sampled activation statistics at captures
      (on by default; at most ``activation_rows`` rows and ``activation_elements`` values per module).
    * ``overwrite`` / ``resume``: replace or continue a run already in ``run_dir`` (else it is an error).
    * ``flush_secs``, ``flush_steps``: the buffer is committed to SQLite at least this often; a ``kill -9``
      loses at most one interval.
    * ``live``: the live monitor (non-finite values, exploding gradients, stalls) while training runs.
    * ``on_problem``: called with each live finding; ``raise_on`` ("warning"/"error"): raise
      :class:`~trainmedic.errors.TrainingProblemError` from the training loop at that severity.
    * ``thresholds``: overrides of the checks' thresholds (a mapping or :class:`~trainmedic.settings.Thresholds`).
    * ``config``: the run's hyperparameters, stored for the report and autofix.
    * ``batch_size``: recorded when it cannot be read from the batches.
    * ``all_ranks``: under ``torch.distributed``, every rank writes its own run (default: rank 0 alone).
    * ``quiet``: no console output; ``progress``: a progress line per epoch.
    * ``treat``: ``"safe"`` (skip bad updates, stop on overfitting, lower the lr on plateaus; check
      ``run.control.should_stop`` in the loop) or a treatment object.
    * ``dist_timeout``: seconds any collective trainmedic adds may wait before it gives up.

    An unknown option is a ``TypeError`` at the call (a typo never silently records nothing).
    """
    options: dict[str, Any] = dict(
        name=name,
        every=every,
        total_steps=total_steps,
        overhead_budget=overhead_budget,
        activations=activations,
        activation_rows=activation_rows,
        activation_elements=activation_elements,
        overwrite=overwrite,
        resume=resume,
        flush_secs=flush_secs,
        flush_steps=flush_steps,
        live=live,
        on_problem=on_problem,
        raise_on=raise_on,
        thresholds=thresholds,
        config=config,
        batch_size=batch_size,
        all_ranks=all_ranks,
        quiet=quiet,
        treat=treat,
        progress=progress,
        dist_timeout=dist_timeout,
    )
    if model is not None and not isinstance(model, (nn.Module, Mapping, list, tuple)):
        raise TrainmedicError(
            f"`model` must be a torch.nn.Module (or a dict/list of them); got {type(model).__name__}"
        )
    try:
        run = Run(run_dir, **options)
    except TrainmedicError:
        raise
    except Exception as e:  # trainmedic itself failed to start: training goes on, unrecorded, and says so
        warnings.warn(
            f"trainmedic: could not start watching ({type(e).__name__}: {e}); training continues unrecorded",
            RuntimeWarning,
            stacklevel=2,
        )
        return UnrecordedRun(run_dir, e)  # type: ignore[return-value]
    if model is not None:
        try:
            run.watch(model, optimizer)
        except BaseException:
            run.close(status="failed")
            raise
    return run
