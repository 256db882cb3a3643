"""Buffering and flushing: what the hooks buffer on the device moves to the host in one batch per flush and
the writer commits it in one transaction (``flush_secs`` / ``flush_steps``; a ``kill -9`` loses at most one
interval).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..probes.activations import ACT_STATS
from ..probes.optimizer import QUANTILE_STATS
from .common import CLOCK_SECS, _batch_to_host, _global_norms

if TYPE_CHECKING:
    from ..watch import Run


def maybe_flush(run: Run) -> None:
    now = time.monotonic()
    # how many quiet steps may pass between looks at the clock: about CLOCK_SECS of training
    last_now, last_step = run._clock_last
    if run.step > last_step and now > last_now:
        per_step = (now - last_now) / (run.step - last_step)
        run._clock_every = max(1, min(64, int(CLOCK_SECS / per_step)))
    run._clock_last = (now, run.step)
    if now - run._last_flush_time >= run.flush_secs or run.step - run._last_flush_step >= run.flush_steps:
        run.flush()


def flush(run: Run, commit: bool = True) -> None:
    """Move pending device statistics to the host in one batch and commit them to the run directory.

    ``commit=False`` (``close``): leave the rows buffered for the writer's closing commit (one transaction)."""
    if run._writer is None or run._writer.closed:
        return
    run._last_flush_time = time.monotonic()
    run._last_flush_step = run.step
    run._flushes += 1
    run._log_sinks.clear()  # the writer starts new buffers
    run._guard("flush", run._flush_pending)
    try:
        run._writer.set_meta(steps=run.step)
        if run._dist is not None:  # the per-rank loss summary reads the buffer before it empties
            run._dist.absorb(run._writer)
        if commit:
            run._writer.flush()
        if run._dist is not None:
            run._dist.flushed()
    except Exception as e:
        run._internal_error("writer", e)


def flush_pending(run: Run) -> None:
    w = run._writer
    assert w is not None
    scalars, run._pending_scalars = run._pending_scalars, []
    rows, run._pending_rows = run._pending_rows, []
    norms, run._pending_norms = run._pending_norms, []
    if norms:
        scalars = scalars + _global_norms(norms)
    if scalars:
        vals = _batch_to_host([t.reshape(()) for _, _, t in scalars])
        for (name, step, _), v in zip(scalars, vals):
            w.add_scalar(name, step, float(v))
            if run._monitor is not None:
                run._observe(name, step, float(v))
    if rows:
        run._flush_layer_rows(rows)
    if run._act_probe is not None and run._index is not None:
        acts = run._guard("activations", run._act_probe.drain)
        if acts:
            run._flush_activations(acts)


def flush_layer_rows(run: Run, rows: list[tuple[int, int, torch.Tensor]]) -> None:
    """Per-parameter norm rows of all captured steps → per-layer statistics, one host copy per optimizer."""
    w = run._writer
    assert w is not None
    by_probe: dict[int, list[tuple[int, torch.Tensor]]] = defaultdict(list)
    for pi, step, row in rows:
        by_probe[pi].append((step, row))
    merged: dict[int, np.ndarray] = {}  # step -> (3, layers) squared norms, summed over optimizers
    for pi, items in by_probe.items():
        layer_vals = run._probes[pi].layer_rows(torch.stack([r for _, r in items])).cpu().numpy()
        for (step, _), v in zip(items, layer_vals):
            sq = v.astype(np.float64) ** 2
            merged[step] = merged[step] + sq if step in merged else sq
    steps = sorted(merged)
    arr = np.sqrt(np.stack([merged[s] for s in steps]))  # (T, 3, layers)
    grad, weight, update = arr[:, 0], arr[:, 1], arr[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(weight > 0, update / weight, np.nan)
    if "update_ratio" not in w._known_layer_sets:
        w.set_layer_set("update_ratio", run._index.layers if run._index else [])
    for stat, values in (
        ("grad_norm", grad),
        ("weight_norm", weight),
        ("update_norm", update),
        ("update_ratio", ratio),
    ):
        w.add_layer_rows(stat, steps, values)
    quants, run._pending_quantiles = run._pending_quantiles, []
    if quants:
        run._flush_quantiles(quants)


def flush_quantiles(run: Run, quants: list[tuple[int, torch.Tensor]]) -> None:
    """Weight and gradient quantiles per layer (``weight_q01`` … ``grad_q99``), one host copy."""
    w = run._writer
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
            w.set_layer_set(stat, run._index.layers if run._index else [])
        w.add_layer_rows(stat, steps, table[:, si])


def flush_activations(run: Run, acts: list[tuple[int, list[int], torch.Tensor]]) -> None:
    w = run._writer
    assert w is not None and run._index is not None
    n_act = len(run._index.activations)
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
    act = run._act_probe
    if act is not None and act.widths_new:
        act.widths_new = False
        names = run._index.activations
        w.set_meta(activation_widths={names[i]: n for i, n in sorted(act.widths.items())})


# ---- closing -------------------------------------------------------------------------------
