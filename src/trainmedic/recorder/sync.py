"""``torch.distributed``: the fixed-step syncs on trainmedic's own group (per-rank summaries, shard norms),
the gathering of evaluation shards, and what a failed sync leaves behind.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..distributed import SUMMARY_FIELDS, SYNC_EVERY, replication
from ..probes.layers import unwrap
from .common import _finite_or_none, _gather, _join

if TYPE_CHECKING:
    from ..watch import Run


def setup_sync(run: Run) -> None:
    """Which probes are sharded (FSDP2), each parameter's replication, the per-rank sample counter."""
    d = run._dist
    assert d is not None
    for i, probe in enumerate(run._probes):
        d.probe_sizes[i] = len(probe.params)
        d.inv_rep[i] = torch.tensor(
            [1.0 / replication(p, run.world_size) for p in probe.params], dtype=torch.float64
        )
    d.sharded = any(p.sharded for p in run._probes)
    first = next(iter(run.models.values()))
    d.attach_input_counter(unwrap(first), lambda hook: run._fence("distributed", hook))
    if run._writer is not None:
        run._writer.set_meta(
            distributed={
                "world_size": run.world_size,
                "backend": str(torch.distributed.get_backend()),
                "sharded": d.sharded,
                "sync_every": SYNC_EVERY,
                "timeout_s": d.timeout,
                "syncing": d.failed is None,
            }
        )


def gather(run: Run, x: Any) -> Any:
    """Every rank's shard of an evaluation, on trainmedic's group (timeouts); this rank's alone after a
    failed sync."""
    d = run._dist
    if d is None:
        return _gather(x)
    if isinstance(x, torch.Tensor):  # the common case: tensor collectives, nothing pickled
        try:
            t = d.gather_tensor(x)
        except ValueError:  # the ranks disagree on dtype/shape: every rank scores its own shard
            return x
        if t is None:
            run._sync_failed()
            return x
        return t
    parts = d.gather_object(x)  # detection's lists of dicts
    if parts is None:
        run._sync_failed()
        return x
    return _join(parts, x)


def sync(run: Run, final: bool = False) -> None:
    """A sync of every rank (at fixed step counts and at close): the ranks' summaries, the DDP parameter
    fingerprints, the FSDP2 shard norms reduced into global ones (then flushed like any other)."""
    d = run._dist
    w = run._writer
    if d is None or w is None or d.failed is not None:
        return
    run._guard("flush", run._flush_pending)  # device values (losses) into the writer's buffers
    d.absorb(w)
    primary = run._probes[0] if run._probes else None
    weights = [] if primary is None or d.sharded else [p.detach() for p in primary.params]
    try:
        table, fp, norms, rows = d.sync(run.step, weights, fingerprint=not d.sharded)
    except Exception as e:  # the ranks buffered different payloads: this interval's norms are dropped
        run._internal_error("distributed", e)
        return
    if table is None:
        run._sync_failed()
        return
    run._pending_norms.extend(norms)
    run._pending_rows.extend(rows)
    run._guard("distributed", lambda: run._record_sync(table, fp, weights, final))


def record_sync(
    run: Run, table: np.ndarray, fp: np.ndarray | None, weights: list[torch.Tensor], final: bool
) -> None:
    """The ``rank_sync`` record of one sync: what the cross-rank checks judge."""
    w = run._writer
    assert w is not None
    col = {name: table[:, i] for i, name in enumerate(SUMMARY_FIELDS)}
    n = col["loss_n"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, col["loss_sum"] / n, np.nan)
        var = np.where(n > 1, (col["loss_sumsq"] - n * mean**2) / (n - 1), np.nan)
    data: dict[str, Any] = {
        "world_size": run.world_size,
        "final": final,
        "sharded": bool(run._dist is not None and run._dist.sharded),
        **{
            k: [int(v) for v in col[k]] for k in ("steps", "loss_n", "loss_nonfinite", "first_nonfinite_step")
        },
        **{k: [int(v) for v in col[k]] for k in ("samples", "samples_total", "batch_max")},
        "loss_mean": _finite_or_none(mean),
        "loss_std": _finite_or_none(np.sqrt(np.maximum(var, 0.0))),
    }
    if fp is not None and fp.shape[-1] == len(weights) and run._index is not None:
        ref = fp[0]
        scale = np.maximum(ref[0], 1e-12)
        diff = np.maximum(np.abs(fp[:, 0] - ref[0]), np.abs(fp[:, 1] - ref[1])) / scale  # (world, P)
        worst = diff.argmax(axis=1)
        primary = run._probes[0]
        names = [run._index.layers[run._index.param_layer[id(p)]] for p in primary.params]
        data["param_diff"] = _finite_or_none(diff.max(axis=1))  # None: non-finite weights
        data["param_diff_layer"] = [names[int(i)] for i in worst]
    w.add_record("rank_sync", data, step=run.step)


def sync_failed(run: Run) -> None:
    """Say once that this rank stopped syncing, and put it on disk at once (the job may be dying)."""
    d = run._dist
    if d is None or getattr(d, "reported", False) or d.failed is None:
        return
    d.reported = True
    warnings.warn(f"trainmedic: {d.failed}", RuntimeWarning, stacklevel=4)
    if run._writer is not None:
        run._writer.add_event(
            "rank_sync_failed",
            d.failed,
            step=run.step,
            code=None,
            severity="warning",
            data={"rank": run.rank, "world_size": run.world_size, "syncs": d.syncs},
        )
        run._writer.set_meta(distributed_failed=d.failed)
        run._guard("writer", run._writer.flush)


# ---- reading back --------------------------------------------------------------------------
