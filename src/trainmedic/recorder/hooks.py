"""The step hooks' hot path: the optimizer pre-/post-step hooks (gradient norms, weight snapshots, per-layer
statistics at captures, hyperparameters, the flush clock, the meter) and the forward-input hook (batch
size, autocast). One closure per optimizer, made when ``Run.watch`` attaches; quiet steps return at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..cadence import next_quantile
from ..live import TrainingProblemError
from ..probes.optimizer import OptimizerProbe
from .common import HP_REFRESH, _autocast_dtype

if TYPE_CHECKING:
    from ..watch import Run


def make_input_hook(run: Run, model_name: str) -> Callable[..., None]:
    """A forward pre-hook that records the input shape, batch size and autocast once, then removes itself.

    Removing it keeps later forward passes on PyTorch's hook-free fast path.
    """

    def hook(module: nn.Module, args: Any) -> None:
        handle = run._input_handles.pop(model_name, None)
        if handle is None:
            return
        handle.remove()

        def record() -> None:
            t = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if t is None or run._writer is None:
                return
            autocast = _autocast_dtype(t.device.type)
            if autocast is not None:
                run._amp["autocast"] = autocast
                run._writer.set_meta(amp=dict(run._amp))
            run._writer.set_meta(
                **{f"input_shape/{model_name}": list(t.shape), f"input_dtype/{model_name}": str(t.dtype)}
            )
            if run._batch_size is None and t.dim() >= 1 and model_name == next(iter(run.models)):
                run._batch_size = int(t.shape[0])
                run._writer.set_meta(batch_size=run._batch_size, batch_size_source="first forward input")

        run._guard("input", record)

    return hook


# ---- the fail-open boundary ----------------------------------------------------------------


def make_pre_hook(run: Run, probe: OptimizerProbe, primary: bool) -> Callable[..., Any]:
    # The per-step path creates no closures and catches exceptions inline: same fail-open semantics as
    # _guard (record, warn once, disable after MAX_PROBE_FAILURES), a few µs less per step.
    disabled = run._disabled
    cadence = run._cadence
    pi = len(run._probes) - 1
    dsync = run._dist if probe.sharded else None  # FSDP2: local shard norms, reduced at the next sync

    def before_update(step: int) -> None:
        meter = run._meter
        t0 = time.perf_counter() if meter is not None and meter.timing else 0.0
        if "gradients" not in disabled:
            try:
                capture = cadence.capture(step)
                if capture or (cadence.grad(step) and not run._skips_grad(step)):
                    res = probe.grad_param_norms()
                    if res is not None:
                        if dsync is not None:
                            dsync.add_norms(pi, probe.grad_signal, step, res)
                        elif run._host_check:
                            gn = probe.global_norm_host_cached()
                            if gn is not None:
                                run._add_host_scalar(probe.grad_signal, step, gn)
                        else:  # the per-parameter norms stay on the device; combined at the flush
                            run._pending_norms.append((probe.grad_signal, step, res[1]))
                    if t0:
                        assert meter is not None
                        meter.grad += time.perf_counter() - t0
                        meter.grad_done = True
                else:
                    probe._grad_cache = None
                # hyperparameters: written when they change, and refreshed every HP_REFRESH steps
                changed = probe.changed_hyperparameters(force=step % HP_REFRESH == 0)
                if changed and run._writer is not None:
                    for key, v in changed:
                        run._writer.add_scalar(key, step, v)
                if capture:
                    probe.snapshot_weights(run._host_check)
            except TrainingProblemError:
                raise
            except Exception as e:  # never break the user's training
                run._internal_error("gradients", e)
        probe.quiet_pre = cadence.next_work(step)  # the next step with work
        if run.treatment is not None and "treatment" not in disabled:
            try:
                run.treatment.before_step(run, probe, step)
            except TrainingProblemError:
                raise
            except Exception as e:
                run._internal_error("treatment", e)
        if t0:
            assert meter is not None
            meter.own += time.perf_counter() - t0

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> Any:
        try:
            step = probe.steps
            if step < probe.quiet_pre and run._quiet and not kwargs and len(args) < 2:
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
                        if changed and run._writer is not None:
                            for key, v in changed:
                                run._writer.add_scalar(key, step, v)
                    except Exception as e:  # never break the user's training
                        run._internal_error("gradients", e)
                return None
            if run.closed:
                return None
            if not run._amp_checked:
                run._guard("amp", run._detect_grad_scaler)
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
        except TrainingProblemError:
            raise
        except Exception as e:  # never break the user's training (the hook's own fail-open boundary)
            run._internal_error("optimizer hook", e)
            return None

    return hook


def make_post_hook(run: Run, probe: OptimizerProbe, primary: bool) -> Callable[..., None]:
    pi = len(run._probes) - 1
    disabled = run._disabled
    cadence = run._cadence
    dsync = run._dist if probe.sharded else None

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        try:
            step = probe.steps
            if step < probe.quiet_post and run._quiet:
                # a quiet step: only counted. The flush clock, the overhead meter and pending problems are
                # looked at on the steps with work, and at least every ``_clock_every`` steps (~20 ms of steps).
                probe.steps = step + 1
                if primary:
                    run._step = step + 1
                    run._stepped_since_log = True
                    if run._ticking:  # a wall-mode measuring window: one clock read per step
                        run._meter.ticks.append((step, time.perf_counter(), run._flushes))  # type: ignore[union-attr]
                return
            if run.closed:
                return
            meter = run._meter
            t0 = time.perf_counter() if meter is not None and meter.timing else 0.0
            # the next capture step: its post hook and the one before have work
            nxt = cadence.next_capture(step)
            nxt = nxt - 1 if nxt - 1 > step else nxt
            if primary:  # ... and the next look at the clock, the flush and the meter
                nxt = min(nxt, step + run._clock_every, run._last_flush_step + run.flush_steps - 1)
                if run._dist is not None:  # the step that completes the next sync's step count
                    nxt = min(nxt, run._dist.next_due(step + 1) - 1)
                if meter is not None:
                    if meter.timing:  # own mode: every step on this path
                        nxt = step + 1
                    elif not meter.active:  # the step that opens the next window
                        nxt = min(nxt, max(step + 1, meter.next_check - 1))
            probe.quiet_post = nxt
            capture = cadence.capture(step)
            if capture and "weights" not in disabled:
                try:
                    row = probe.param_stats(run._host_check)
                    if row is not None:
                        if dsync is not None:
                            dsync.add_row(pi, step, row)
                        else:
                            run._pending_rows.append((pi, step, row))
                        if (
                            step >= probe.next_quantile
                        ):  # quantiles: the first capture, then spreading (cadence.next_quantile)
                            probe.next_quantile = next_quantile(step)
                            quant = probe.param_quantiles(run._host_check)
                            if quant is not None:
                                run._pending_quantiles.append((step, quant))
                    if primary and run._writer is not None:  # wall time per step and throughput
                        run._writer.add_scalar("wall_time", step, time.perf_counter() - run._wall0)
                except TrainingProblemError:
                    raise
                except Exception as e:  # never break the user's training
                    run._internal_error("weights", e)
            if run.treatment is not None:
                run._guard("treatment", lambda: run.treatment.after_step(run, probe, step))
            probe.steps = step + 1
            if primary:
                run._step = step + 1
                run._stepped_since_log = True
                if run._dist is not None and run._dist.due(run._step):
                    run._guard("distributed", run._sync)
                act = run._act_probe
                if act is not None:
                    if cadence.capture(run._step):
                        act.start_capture(run._step)
                    elif act.capture:
                        act.stop_capture()
                run._maybe_flush()
                if meter is not None:
                    if t0:
                        meter.own += time.perf_counter() - t0
                        if meter.end_step(step, run._flushes, capture):
                            run._guard("overhead budget", run._rethin)
                    elif meter.active:
                        run._tick(step)
                    elif run._step >= meter.next_check:
                        meter.start()
                        run._update_quiet()
            elif t0:
                assert meter is not None
                meter.own += time.perf_counter() - t0
            if run._pending_problem is not None:
                run._raise_pending()
        except TrainingProblemError:
            raise
        except Exception as e:  # never break the user's training (the hook's own fail-open boundary)
            run._internal_error("optimizer hook", e)
            return None

    return hook
