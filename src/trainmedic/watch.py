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
import sys
import time
import traceback
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cadence import Cadence, FixedCadence, LogCadence
from .distributed import DEFAULT_TIMEOUT as DIST_TIMEOUT
from .distributed import NullWriter, RankSync
from .errors import TrainmedicError, describe_shape
from .findings import Finding, Severity
from .live import LiveMonitor, TrainingProblemError
from .probes.activations import ACT_STATS, ActivationProbe
from .probes.layers import LayerIndex, is_compiled, unwrap
from .probes.optimizer import OptimizerProbe
from .probes.summary import model_summary
from .recorder import evaluation, flushing, hooks, sync
from .recorder.common import (
    LAYER_NORM_STATS,
    MAX_PROBE_FAILURES,
    _boundary,
    _dist_rank,
    _inline_boundary,
    _name_all,
    _version,
)
from .recorder.meter import _OverheadMeter
from .running import RunningMetrics
from .settings import Thresholds, load_thresholds
from .store.reader import RunReader
from .store.writer import RunWriter


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


def _failed_evaluation() -> dict[str, Any]:
    """What ``Run.evaluate`` returns when trainmedic failed inside it (the failure is recorded, warned once)."""
    return {"task": None, "scalars": {}, "failed": True}


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
        self._eval_modes: dict[
            str, list[str]
        ] = {}  # the modules in training mode at each split's last evaluation
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
            # (the two step hooks hold their own fail-open boundary, as _fence does: one Python call less
            # per hook and step)
            self._handles.append(opt.register_step_pre_hook(self._make_pre_hook(probe, primary)))
            self._handles.append(opt.register_step_post_hook(self._make_post_hook(probe, primary)))
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
        return hooks.make_input_hook(self, model_name)

    def _fence(self, probe: str, hook: Callable[..., Any]) -> Callable[..., Any]:
        """A hook behind the fail-open boundary. Every call from the user's code into trainmedic passes through
        one: the forward pre-hooks and activation hooks through this, the optimizer step hooks through the same
        ``try`` written inline (``recorder/hooks.py``: one Python call less per step), the public methods
        (``watch``, ``log``, ``evaluate``, ``end_epoch``, ``record``, ``event``, ``flush``, ``close``) through
        :func:`_boundary` or inline in their fast paths. A failure inside is recorded as an ``internal_error``
        event, warned about once, and the hook returns None (the optimizer or module then does exactly what it
        does unwatched); only a requested stop (``TrainingProblemError``: ``raise_on``, ``abort``) passes."""

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
        return hooks.make_pre_hook(self, probe, primary)

    def _make_post_hook(self, probe: OptimizerProbe, primary: bool) -> Callable[..., None]:
        return hooks.make_post_hook(self, probe, primary)

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

    @_inline_boundary
    def log(self, step: int | None = None, **scalars: Any) -> None:
        """Record per-step scalars: ``run.log(loss=loss, acc=acc)``. Tensors stay on the device until a flush."""
        # the per-step path: every line here runs once per training step with cold caches, so it is kept short
        # (its fail-open boundary is inline: one Python call less than _boundary's wrapper)
        try:
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
            self._log(step, **scalars)
        except (TrainingProblemError, TrainmedicError):
            raise
        except Exception as e:  # never break the user's training
            self._internal_error("log", e)

    @_boundary("log")
    def _log(self, step: int | None = None, **scalars: Any) -> None:
        """:meth:`log` beyond its short path."""
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
        if "loss" in values and hasattr(self.treatment, "observe_loss"):  # treat="safe": plateau vs learning
            self._guard("treatment", lambda: self.treatment.observe_loss(values["loss"]))
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

    @_inline_boundary
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
        try:
            if not scalars and epoch is None and num_classes is None and class_names is None:
                # the common call: one function (evaluation.evaluate_fast); both paths' boundary is this try
                result = evaluation.evaluate_fast(self, split, targets, outputs, loss)
                if result is not None:
                    return result
            return evaluation.evaluate(
                self,
                split,
                targets,
                outputs,
                loss,
                epoch=epoch,
                num_classes=num_classes,
                class_names=class_names,
                threshold=threshold,
                **scalars,
            )
        except (TrainingProblemError, TrainmedicError):
            raise
        except Exception as e:  # never break the user's training
            self._internal_error("evaluate", e)
            return _failed_evaluation()

    def _train_mode_modules(self) -> list[str]:
        """Names of the watched models' dropout and batch-norm modules that are in training mode now."""
        return evaluation.train_mode_modules(self)

    def _claim_epoch(self, split: str, epoch: int | None) -> int:
        """The epoch of this evaluation of ``split``: the one given, else one past the last."""
        return evaluation.claim_epoch(self, split, epoch)

    def _evaluate_nonfinite(self, split: str, outputs: torch.Tensor, epoch: int | None) -> dict[str, Any]:
        """A diverged model's outputs hold NaN/Inf: nothing can be scored, so record that instead of raising."""
        return evaluation.evaluate_nonfinite(self, split, outputs, epoch)

    def _fold_batch(self, outputs: Any, targets: Any, loss: Any) -> None:
        """``log(outputs=, targets=)``: fold the batch into the epoch's running confusion matrix (no host sync)."""
        evaluation.fold_batch(self, outputs, targets, loss)

    def _store_running(self, epoch: int | None = None) -> None:
        """Epoch boundary: store the running metrics folded since the last one as split ``train_running``."""
        evaluation.store_running(self, epoch)

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
        if not finding.is_problem:
            return  # a note (a transient burst): recorded and shown, no warning, callback or stop
        if not self.quiet:
            warnings.warn(f"trainmedic: {finding}", RuntimeWarning, stacklevel=5)
        if self.on_problem is not None:
            try:
                self.on_problem(finding)
            except Exception as e:
                self._internal_error("on_problem callback", e)
        if (
            self.raise_on is not None
            and finding.severity.rank >= self.raise_on.rank
            and self._pending_problem is None  # the first problem (the root cause) is the one raised
        ):
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
        flushing.maybe_flush(self)

    @_boundary("flush")
    def flush(self) -> None:
        """Move pending device statistics to the host in one batch and commit them to the run directory."""
        flushing.flush(self)

    def _flush_pending(self) -> None:
        flushing.flush_pending(self)

    def _flush_layer_rows(self, rows: list[tuple[int, int, torch.Tensor]]) -> None:
        """Per-parameter norm rows of all captured steps → per-layer statistics, one host copy per optimizer."""
        flushing.flush_layer_rows(self, rows)

    def _flush_quantiles(self, quants: list[tuple[int, torch.Tensor]]) -> None:
        """Weight and gradient quantiles per layer (``weight_q01`` … ``grad_q99``), one host copy."""
        flushing.flush_quantiles(self, quants)

    def _flush_activations(self, acts: list[tuple[int, list[int], torch.Tensor]]) -> None:
        flushing.flush_activations(self, acts)

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
            self._console = None
        if self._writer is not None and not self._writer.closed:
            self._guard("running metrics", self._store_running)
            if self._dist is None:  # what is pending goes with the closing meta: one transaction
                self._guard("flush", lambda: flushing.flush(self, commit=False))
            else:
                self.flush()
            monitor = self._monitor
            if monitor is not None:  # a burst still waiting for confirmation is noted as such
                self._guard("live monitor", lambda: monitor.finish(self.step))
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
        sync.setup_sync(self)

    def _gather(self, x: Any) -> Any:
        """Every rank's shard of an evaluation, on trainmedic's group (timeouts); this rank's alone after a
        failed sync."""
        return sync.gather(self, x)

    def _sync(self, final: bool = False) -> None:
        """A sync of every rank (at fixed step counts and at close): the ranks' summaries, the DDP parameter
        fingerprints, the FSDP2 shard norms reduced into global ones (then flushed like any other)."""
        sync.sync(self, final)

    def _record_sync(
        self, table: np.ndarray, fp: np.ndarray | None, weights: list[torch.Tensor], final: bool
    ) -> None:
        """The ``rank_sync`` record of one sync: what the cross-rank checks judge."""
        sync.record_sync(self, table, fp, weights, final)

    def _sync_failed(self) -> None:
        """Say once that this rank stopped syncing, and put it on disk at once (the job may be dying)."""
        sync.sync_failed(self)

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
      every 10 steps for the first 20, then every 20, 40, …; the gradient norm every step for 32 steps, then
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
    # every keyword above is a Run option (the signature is the one documented place; Run.__init__ takes the same)
    options: dict[str, Any] = {
        k: v for k, v in locals().items() if k not in ("model", "optimizer", "run_dir")
    }
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
