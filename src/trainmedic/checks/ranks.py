"""Cross-rank checks of a ``torch.distributed`` run (DDP, FSDP2): judged on the ``rank_sync`` records that
every sync of the ranks stores (per-rank loss mean and noise, non-finite losses, training samples, DDP
parameter fingerprints; see ``trainmedic/distributed.py``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..findings import Finding, Severity
from ._stats import fmt
from .context import Context, confidence
from .registry import check

MIN_LOSSES = 10  # losses per rank the divergence check wants (the last syncs are merged until each has them)
Z_DIVERGENCE = 3.0  # standard errors between a rank's mean loss and the others'
MIN_UNEVEN_SHARE = 0.05  # uneven_rank_data: sample counts also at least this share of the largest apart


def _arr(values: list[Any]) -> np.ndarray:
    """A record's per-rank list as floats (None, written for NaN/Inf, becomes NaN)."""
    return np.array([np.nan if v is None else float(v) for v in values])


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)


@check(
    "rank_nonfinite",
    requires=("rank_sync",),
    remedies=("fix_rank_data", "normalize_inputs", "gradient_clipping"),
    what="The first non-finite (NaN/Inf) logged loss of some ranks comes at an earlier step than that of the "
    "others (or the others never have one): per-rank counts and first steps of non-finite losses, gathered at "
    "every sync of the ranks. When every rank breaks at the same step this check is silent (`nonfinite` "
    "judges it).",
    why="Under DDP one rank's NaN gradient is averaged into every rank's: all replicas break one step later "
    "and rank 0's record alone points at the wrong place. The rank that broke first holds the bad batch.",
    evidence="per rank: first non-finite step, non-finite count, the sync that saw it",
)
def check_rank_nonfinite(ctx: Context) -> Finding | None:
    syncs = ctx.rank_syncs
    world = int(syncs[0]["world_size"])
    first = [-1] * world
    count = [0] * world
    for s in syncs:
        for r in range(world):
            count[r] += int(s["loss_nonfinite"][r])
            if first[r] < 0 and s["first_nonfinite_step"][r] >= 0:
                first[r] = int(s["first_nonfinite_step"][r])
    seen = [f for f in first if f >= 0]
    if not seen:
        return None
    earliest = min(seen)
    culprits = [r for r in range(world) if first[r] == earliest]
    if len(culprits) == world:
        return None
    others = ", ".join(
        f"rank {r}: {'from step ' + str(first[r]) if first[r] >= 0 else 'never'}"
        for r in range(world)
        if r not in culprits
    )
    return ctx.finding(
        Severity.ERROR,
        f"the loss of {_ranks(culprits)} became NaN/Inf first, at step {earliest} ({others}): look at the "
        f"batch {_ranks(culprits)} loaded at that step",
        {"first_nonfinite_step": first, "nonfinite_losses": count, "ranks": culprits, "world_size": world},
        [
            ("fix_rank_data", f"inspect the samples {_ranks(culprits)} loaded at step {earliest}"),
            ("normalize_inputs", "NaN/Inf or huge values in a shard's inputs break its loss first"),
            ("gradient_clipping", "clipping keeps one bad batch from wrecking every replica"),
        ],
        1.0,
        step=earliest,
    )


def _tail_stats(syncs: list[dict[str, Any]], world: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per rank ``(n, mean, std)`` of the losses of the last syncs, merged from the end until every rank has
    ``MIN_LOSSES`` finite ones; and the step the window starts after."""
    n = np.zeros(world)
    s1 = np.zeros(world)
    s2 = np.zeros(world)
    since = 0
    for i in range(len(syncs) - 1, -1, -1):
        rec = syncs[i]
        ln = np.asarray(rec["loss_n"], dtype=float)
        mean = np.nan_to_num(_arr(rec["loss_mean"]))
        std = np.nan_to_num(_arr(rec["loss_std"]))
        n += ln
        s1 += ln * mean
        s2 += np.where(ln > 1, (ln - 1) * std**2, 0.0) + ln * mean**2
        since = int(syncs[i - 1]["step"]) if i > 0 else 0
        if n.min() >= MIN_LOSSES:
            break
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n
        var = np.where(n > 1, (s2 - n * mean**2) / (n - 1), np.nan)
    return n, mean, np.sqrt(np.maximum(var, 0.0)), since


@check(
    "rank_divergence",
    requires=("rank_sync",),
    thresholds=("rank_loss_ratio",),
    remedies=("fix_rank_data",),
    what="At the end of the run (the last syncs, merged until every rank has 10 finite losses), a rank's "
    "mean training loss is at least `rank_loss_ratio` times the median of the other ranks' means and at "
    "least 3 standard errors above it (each rank's standard error from the spread of its own batch "
    "losses).",
    why="Replicas share their weights, so their losses differ only by batch noise; a rank whose loss stays "
    "far above the others trains on different data (a corrupted or mislabeled shard, other preprocessing), "
    "and its gradients pull every replica the wrong way.",
    evidence="per rank: mean loss, its standard error and count over the window; ratio and z to the others",
)
def check_rank_divergence(ctx: Context) -> Finding | None:
    syncs = ctx.rank_syncs
    world = int(syncs[0]["world_size"])
    n, mean, std, since = _tail_stats(syncs, world)
    if world < 2 or n.min() < 2 or not np.isfinite(mean).all():
        return None
    se = np.where(n > 1, std / np.sqrt(n), np.inf)
    thr = ctx.t.rank_loss_ratio
    worst: tuple[float, int, float, float] | None = None
    for r in range(world):
        others = [o for o in range(world) if o != r]
        ref = float(np.median(mean[others]))
        ref_se = float(np.sqrt(np.mean(se[others] ** 2) / len(others)))
        ratio = float(mean[r] / ref) if ref > 0 else math.inf
        z = float((mean[r] - ref) / math.sqrt(se[r] ** 2 + ref_se**2)) if se[r] + ref_se > 0 else math.inf
        if ratio >= thr and z >= Z_DIVERGENCE and (worst is None or z > worst[0]):
            worst = (z, r, ratio, ref)
    if worst is None:
        return None
    z, r, ratio, ref = worst
    return ctx.finding(
        Severity.WARNING,
        f"the training loss of rank {r} ends {fmt(ratio)}x the other ranks' ({fmt(float(mean[r]))} vs "
        f"{fmt(ref)}, {z:.1f} standard errors apart over steps {since}-{syncs[-1]['step']}; threshold "
        f"{fmt(thr)}x): its data shard differs from theirs",
        {
            "rank": r,
            "loss_mean": [float(v) for v in mean],
            "loss_se": [float(v) for v in se],
            "losses": [int(v) for v in n],
            "ratio": ratio,
            "z": z,
            "window_after_step": since,
        },
        [("fix_rank_data", f"compare the samples and labels rank {r} loads with the other ranks'")],
        confidence((ratio - thr) / thr + (z - Z_DIVERGENCE) / Z_DIVERGENCE),
        step=int(syncs[-1]["step"]),
    )


@check(
    "rank_desync",
    requires=("rank_sync",),
    thresholds=("rank_param_tolerance",),
    remedies=("sync_replicas",),
    what="Under DDP (replicated parameters), a rank's parameter fingerprint (each parameter tensor's L2 norm "
    "and sum, compared at every sync with rank 0's, relative to the tensor's norm) differs by more than "
    "`rank_param_tolerance`. Sharded (FSDP) runs have no replicas to compare.",
    why="DDP keeps replicas identical only if every rank applies the same update: a rank with another learning "
    "rate, a parameter changed outside the wrapper, or a missed broadcast trains a different model, and "
    "rank 0's checkpoint is not what the others computed.",
    evidence="per rank: largest relative parameter difference and its layer, the first sync that saw it",
)
def check_rank_desync(ctx: Context) -> Finding | None:
    syncs = [s for s in ctx.rank_syncs if "param_diff" in s]
    if not syncs:
        return None
    tol = ctx.t.rank_param_tolerance
    # a non-finite fingerprint (None) is a broken run, judged by nonfinite / rank_nonfinite
    drift = [s for s in syncs if np.nanmax(np.append(_arr(s["param_diff"]), 0.0)) > tol]
    if not drift:
        return None
    first, last = drift[0], drift[-1]
    diffs = np.nan_to_num(_arr(last["param_diff"]))
    r = int(np.argmax(diffs))
    diff = float(diffs[r])
    layer = last["param_diff_layer"][r]
    return ctx.finding(
        Severity.ERROR,
        f"the replicas' parameters drifted apart: rank {r} differs from rank 0 by {diff:.3g} (relative, "
        f"largest in layer {layer!r}; tolerance {tol:g}) at step {last['step']}, first seen at the sync of step "
        f"{first['step']}",
        {
            "rank": r,
            "param_diff": [float(v) for v in diffs],
            "layer": layer,
            "first_step": int(first["step"]),
            "step": int(last["step"]),
            "diff_by_sync": [float(np.nanmax(np.append(_arr(s["param_diff"]), 0.0))) for s in syncs],
        },
        [
            (
                "sync_replicas",
                "give every rank the same optimizer settings and change parameters only through the DDP model",
            )
        ],
        confidence(math.log10(max(diff, tol) / tol)),
        step=int(first["step"]),
        layer=str(layer),
    )


@check(
    "uneven_rank_data",
    requires=("rank_sync",),
    thresholds=("rank_uneven_batches",),
    remedies=("balance_shards",),
    what="At the last sync, the ranks completed different numbers of optimizer steps, or their training "
    "samples (the first dimension of the first input of the model's training-mode forward passes) are more "
    "than `rank_uneven_batches` of the largest batch and at least 5% of the largest count apart.",
    why="DDP and FSDP average the ranks' gradients with equal weight: a rank with fewer samples per step "
    "weighs each of them more, and a rank that runs out of batches first leaves the others waiting in a "
    "collective (a hang) unless DDP's Join is used.",
    evidence="per rank: steps, training samples, largest batch",
)
def check_uneven_rank_data(ctx: Context) -> Finding | None:
    last = ctx.rank_syncs[-1]
    steps = [int(v) for v in last["steps"]]
    samples = [int(v) for v in last["samples_total"]]
    batch = max(int(v) for v in last["batch_max"])
    gap = max(samples) - min(samples)
    thr = ctx.t.rank_uneven_batches
    uneven_steps = len(set(steps)) > 1
    # and 5% of the largest count: a per-forward count that varies by itself (a sequence-first input's
    # length) wanders apart slowly, never by a share
    if not uneven_steps and (gap <= thr * batch or gap < MIN_UNEVEN_SHARE * max(samples)):
        return None
    few = [r for r, s in enumerate(samples) if s == min(samples)]
    what = (
        f"the ranks completed different numbers of steps ({steps})"
        if uneven_steps
        else f"the ranks trained on {samples} samples ({gap} apart, {gap / max(batch, 1):.1f} batches of "
        f"{batch}; threshold {fmt(thr)} batch)"
    )
    return ctx.finding(
        Severity.WARNING,
        f"uneven data per rank: {what}; {_ranks(few)} had the fewest, so each of its samples weighs more in "
        "the averaged gradient",
        {"steps": steps, "samples": samples, "batch_max": batch, "gap": gap, "step": int(last["step"])},
        [("balance_shards", "a DistributedSampler (drop_last) or equal per-rank batch sizes")],
        confidence(gap / max(batch, 1) / max(thr, 1e-9) - 1 if not uneven_steps else 1.0),
        step=int(last["step"]),
    )
