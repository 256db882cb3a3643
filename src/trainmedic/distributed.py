"""Training across processes (``torch.distributed``: DDP, FSDP2 ``fully_shard``): trainmedic's own collectives.

Why a module of its own: in gloo (and NCCL) every rank must issue the same collectives in the same order, and
a collective that only rank 0 issues aborts the job ("Received data size doesn't match expected size").
Under FSDP2 the parameters and gradients are ``DTensor`` shards: reading a DTensor norm as a number is such a
collective. So here:

* **No collective on the hot path.** Every rank runs the same hooks on its *local* shards (``_local_tensor``):
  per-parameter norms of its gradient, weight and update shards. Nothing is reduced per step.
* **One sync at fixed steps** (every ``SYNC_EVERY`` steps of the first optimizer, counted from ``tm.watch``,
  and at ``close``), on every rank alike: a small ``all_gather`` of each rank's summary (loss mean and noise,
  non-finite losses, training samples, a parameter fingerprint), then, under FSDP, one ``all_reduce`` of the
  buffered squared shard norms. ``sqrt(sum over ranks of the squared shard norms)`` is what
  ``clip_grad_norm_`` computes; per-layer norms combine the same partial sums.
* **Its own gloo group with a timeout**, apart from the user's: a timed-out or failed sync is recorded, and
  that rank stops syncing (it records on, locally); the user's collectives are never touched. ``close()`` of
  a run that failed does not sync at all, so a dead rank leaves the others' runs closed and readable.

Rank 0 writes the run (``all_ranks=True``: every rank writes its own ``rank<N>/``); the other ranks record
into a :class:`NullWriter`. Each sync stores a ``rank_sync`` record (per-rank numbers) that the cross-rank
checks (``checks/ranks.py``) judge.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import torch

from .store.writer import RunWriter

SYNC_EVERY = 50  # steps of the first optimizer between syncs
DEFAULT_TIMEOUT = 120.0  # seconds a sync waits for the other ranks
HANDSHAKE_SECS = 10.0  # at most this long tm.watch waits for the other ranks' tm.watch (or dist_timeout)
MAX_DIMS = 8  # dimensions of a tensor gather_tensor takes
_WIRE_DTYPES = (torch.float32, torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
SUMMARY_FIELDS = (
    "steps",  # optimizer steps of the first optimizer so far
    "loss_n",  # finite losses logged since the last sync
    "loss_sum",
    "loss_sumsq",
    "loss_nonfinite",  # non-finite losses since the last sync
    "first_nonfinite_step",  # -1: none
    "samples",  # training samples (first forward input, training mode) since the last sync
    "samples_total",
    "batch_max",  # the largest training batch so far
    "params",  # parameter tensors of the first optimizer (the fingerprint's length)
    "payload",  # values of the sharded all_reduce (FSDP)
)


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside an initialised process group."""
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    return 0, 1


def _dtensor_type() -> type | None:
    """``DTensor``, or None while nothing imported it (then no tensor can be one: no import cost here)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None)


def is_sharded(t: Any) -> bool:
    """True for a ``DTensor`` (FSDP2 parameters and gradients) or an FSDP1 ``FlatParameter`` (each rank holds
    a disjoint chunk of the flattened parameters)."""
    if getattr(t, "_is_flat_param", False):
        return True
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (no collective, no autograd node); any other tensor itself."""
    inner = getattr(t, "_local_tensor", None)
    return inner if isinstance(inner, torch.Tensor) and is_sharded(t) else t


def replication(t: Any, world: int) -> float:
    """How many ranks hold a copy of each element of ``t``'s local shard: the sum over ranks of squared shard
    norms divided by it is the squared norm of the whole tensor. Plain tensors are replicated on every rank."""
    if getattr(t, "_is_flat_param", False):  # FSDP1: disjoint chunks, zero padding
        return 1.0
    if not is_sharded(t):
        return float(world)
    shards = 1
    mesh = t.device_mesh
    for i, placement in enumerate(t.placements):
        if placement.is_shard():
            shards *= mesh.size(i)
    return max(1.0, world / shards)


class NullWriter(RunWriter):
    """The writer of a rank that does not write (rank > 0): the same buffers, emptied at each flush."""

    def __init__(self, run_dir: Any) -> None:  # no call to RunWriter.__init__: no file is touched
        from collections import defaultdict
        from pathlib import Path

        self.run_dir = Path(run_dir)
        self.resumed = False
        self._scalars = defaultdict(lambda: ([], []))
        self._layers = defaultdict(lambda: ([], []))
        self._rows_evals = []
        self._rows_cls = []
        self._rows_records = []
        self._rows_events = []
        self._meta = {}
        self._split_counts = {}
        self._known_layer_sets = {}
        self._pending_layer_sets = {}
        self.max_buffered = 0
        self.dropped = 0
        self.closed = False

    def flush(self) -> None:
        self._scalars.clear()
        self._layers.clear()
        self._rows_evals.clear()
        self._rows_cls.clear()
        self._rows_records.clear()
        self._rows_events.clear()
        self._meta.clear()
        self._pending_layer_sets.clear()

    def close(self, status: str = "closed") -> None:
        self.flush()
        self.closed = True


class RankSync:
    """trainmedic's collectives of one run: a gloo group with a timeout, used at the same steps on every rank."""

    def __init__(self, rank: int, world: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.rank, self.world = rank, world
        self.timeout = float(timeout)
        self.group: Any = None
        self.failed: str | None = None  # why this rank stopped syncing
        self.sharded = False  # any watched parameter is a DTensor (FSDP2)
        self.syncs = 0
        self.steps_at_watch = 0
        # sharded runs: (probe index, signal, step, local per-parameter gradient norms (P,)) and (probe index,
        # step, (3, P) local [grad, weight, update] norms), reduced at the next sync
        self.norms: list[tuple[int, str, int, torch.Tensor]] = []
        self.rows: list[tuple[int, int, torch.Tensor]] = []
        self.inv_rep: dict[int, torch.Tensor] = {}  # probe index -> 1/replication per parameter (float64)
        self.probe_sizes: dict[int, int] = {}
        self.loss_name = "loss"
        self._loss_off = 0  # position in the writer's loss buffer already absorbed
        self._loss = [0, 0.0, 0.0, 0, -1]  # n, sum, sumsq, nonfinite, first non-finite step
        self.samples = 0
        self.samples_total = 0
        self.batch_max = 0
        self._input_handle: Any = None
        self.reported = False  # the failure was warned about and recorded
        self.failed_at: float | None = None

    # ---- set-up ------------------------------------------------------------------------------------
    _watches = 0  # tm.watch calls of this process under torch.distributed: the handshake's key

    def open(self) -> bool:
        """Create trainmedic's group, after a handshake that every rank called ``tm.watch``: a run watched on
        rank 0 alone (``if rank == 0: tm.watch(...)``) must not wait in a collective the others never join,
        nor issue one on the user's group. False (and ``failed`` says why) when the group is not there."""
        n = RankSync._watches
        RankSync._watches += 1
        wait = min(self.timeout, HANDSHAKE_SECS)
        store = _default_store()
        if store is not None:
            key = f"trainmedic/watch/{n}"
            try:
                store.add(key, 1)
                if self.rank == 0:
                    deadline = time.monotonic() + wait
                    while store.add(key, 0) < self.world and time.monotonic() < deadline:
                        time.sleep(0.005)
                    ok = store.add(key, 0) >= self.world
                    store.set(f"{key}/ok", "1" if ok else "0")
                else:
                    store.wait([f"{key}/ok"], timedelta(seconds=wait + 5))
                    ok = store.get(f"{key}/ok") == b"1"
            except Exception as e:  # no answer from rank 0 within the wait: it does not watch this run
                self.failed = f"rank {self.rank}: no handshake with rank 0 ({type(e).__name__}: {e})"
                return False
            if not ok:
                self.failed = (
                    f"tm.watch was not called on all {self.world} ranks within {wait:g} s: rank {self.rank} records "
                    "alone (no cross-rank checks; under FSDP no gradient norms). Call tm.watch on every rank"
                )
                return False
        try:
            self.group = torch.distributed.new_group(backend="gloo", timeout=timedelta(seconds=self.timeout))
        except Exception as e:
            self.failed = f"could not create trainmedic's process group ({type(e).__name__}: {e})"
            return False
        return True

    def agree_step(self, step: int) -> int:
        """Every rank takes rank 0's step count (a resumed run: only rank 0 reads it from the run dir)."""
        out = self._gather(np.array([float(step)]))
        return int(out[0, 0]) if out is not None else step

    def attach_input_counter(self, module: torch.nn.Module, fence: Callable[..., Any]) -> None:
        """Count the training samples of this rank (the first tensor argument of training-mode forwards)."""

        def hook(mod: torch.nn.Module, args: Any) -> None:
            if not mod.training or not torch.is_grad_enabled():
                return
            for a in args:
                if isinstance(a, torch.Tensor):
                    if a.dim() >= 1:
                        n = int(a.shape[0])
                        self.samples += n
                        self.samples_total += n
                        if n > self.batch_max:
                            self.batch_max = n
                    return

        self._input_handle = module.register_forward_pre_hook(fence(hook))

    def remove(self) -> None:
        if self._input_handle is not None:
            self._input_handle.remove()
            self._input_handle = None

    # ---- between syncs -----------------------------------------------------------------------------
    def due(self, steps_done: int) -> bool:
        """A sync after this many completed steps (a pure function of the steps since ``tm.watch``)."""
        k = steps_done - self.steps_at_watch
        return self.failed is None and k > 0 and k % SYNC_EVERY == 0

    def next_due(self, steps_done: int) -> int:
        """The next completed-step count at which a sync is due."""
        k = steps_done - self.steps_at_watch
        return self.steps_at_watch + (k // SYNC_EVERY + 1) * SYNC_EVERY

    def absorb(self, writer: RunWriter) -> None:
        """Fold the losses buffered in ``writer`` since the last look into this interval's loss summary
        (called before each writer flush and at each sync: no per-step cost)."""
        buf = writer._scalars.get(self.loss_name)
        if buf is None:
            self._loss_off = 0
            return
        steps, vals = buf
        off = min(self._loss_off, len(vals))
        if off < len(vals):
            acc = self._loss
            for s, v in zip(steps[off:], vals[off:]):
                if math.isfinite(v):
                    acc[0] += 1
                    acc[1] += v
                    acc[2] += v * v
                else:
                    acc[3] += 1
                    if acc[4] < 0:
                        acc[4] = s
        self._loss_off = len(vals)

    def flushed(self) -> None:
        """The writer emptied its buffers."""
        self._loss_off = 0

    # ---- a sync ----------------------------------------------------------------------------------
    def summary(self, steps: int, params: int) -> np.ndarray:
        n, s, ss, nf, first = self._loss
        payload = sum(int(v.numel()) for *_, v in self.norms) + sum(int(r.numel()) for _, _, r in self.rows)
        return np.array(
            [steps, n, s, ss, nf, first, self.samples, self.samples_total, self.batch_max, params, payload],
            dtype=np.float64,
        )

    def sync(
        self, steps: int, weights: list[torch.Tensor], fingerprint: bool
    ) -> tuple[np.ndarray | None, np.ndarray | None, list[Any], list[Any]]:
        """One sync on every rank: ``(summaries (world, fields), fingerprints (world, 2, P) or None, reduced
        norms, reduced rows)``. On a failure the summaries are None and this rank stops syncing."""
        summary = self.summary(steps, len(weights))
        self._loss = [0, 0.0, 0.0, 0, -1]
        self.samples = 0
        norms, self.norms = self.norms, []
        rows, self.rows = self.rows, []
        table = self._gather(summary)
        if table is None:
            return None, None, [], []
        self.syncs += 1
        fp = None
        same_params = bool(np.all(table[:, 9] == table[0, 9]))
        if fingerprint and same_params and weights:
            fp = self._gather(_fingerprint(weights))
            fp = fp.reshape(self.world, 2, -1) if fp is not None else None
        if norms or rows or table[:, 10].any():
            if not bool(np.all(table[:, 10] == table[0, 10])):
                raise RuntimeError(
                    "the ranks buffered different numbers of shard norms "
                    f"({table[:, 10].astype(int).tolist()}): gradient norms of this interval are dropped"
                )
            norms, rows = self._reduce(norms, rows)
        return table, fp, norms, rows

    def add_norms(
        self, pi: int, signal: str, step: int, res: tuple[list[int] | None, list[torch.Tensor]]
    ) -> None:
        """Buffer one gradient-norm step's local per-parameter norms, padded to every parameter of the probe (so
        every rank buffers the same number of values)."""
        if self.failed is not None:
            return
        idx, ns = res
        vec = torch.stack([n.reshape(()).float() for n in ns])
        if idx is not None:
            full = torch.zeros(self.probe_sizes[pi], dtype=vec.dtype, device=vec.device)
            full[torch.tensor(idx, device=vec.device)] = vec
            vec = full
        self.norms.append((pi, signal, step, vec))

    def add_row(self, pi: int, step: int, row: torch.Tensor) -> None:
        """Buffer one capture step's local ``(3, P)`` [grad, weight, update] shard norms."""
        if self.failed is None:
            self.rows.append((pi, step, row))

    def _reduce(self, norms: list[Any], rows: list[Any]) -> tuple[list[Any], list[Any]]:
        """``sqrt(sum over ranks of squared local norms / replication)`` of every buffered value, in one
        ``all_reduce``."""
        # on the host (trainmedic's group is gloo): one device->host copy per buffered step, at a sync only
        parts = [(v.detach().cpu().double() ** 2 * self.inv_rep[pi]).reshape(-1) for pi, _, _, v in norms]
        parts += [(r.detach().cpu().double() ** 2 * self.inv_rep[pi]).reshape(-1) for pi, _, r in rows]
        flat = torch.cat(parts).contiguous()
        self._all_reduce(flat)
        flat = flat.sqrt_().float()
        out_norms, out_rows, pos = [], [], 0
        for _, sig, step, v in norms:
            n = int(v.numel())
            out_norms.append((sig, step, list(flat[pos : pos + n].unbind())))
            pos += n
        for pi, step, r in rows:
            n = int(r.numel())
            out_rows.append((pi, step, flat[pos : pos + n].view(r.shape)))
            pos += n
        return out_norms, out_rows

    # ---- collectives with a timeout ----------------------------------------------------------------
    def _gather(self, vec: np.ndarray) -> np.ndarray | None:
        if self.group is None or self.failed is not None:  # never the user's group
            return None
        t = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float64))
        out = [torch.empty_like(t) for _ in range(self.world)]
        try:
            self._wait(torch.distributed.all_gather(out, t, group=self.group, async_op=True))
        except Exception as e:
            self._fail("all_gather", e)
            return None
        return torch.stack(out).numpy()

    def _all_reduce(self, t: torch.Tensor) -> None:
        if self.group is None or self.failed is not None:
            raise RuntimeError(self.failed or "no trainmedic process group")
        try:
            self._wait(torch.distributed.all_reduce(t, group=self.group, async_op=True))
        except Exception as e:
            self._fail("all_reduce", e)
            raise RuntimeError(self.failed) from None

    def gather_tensor(self, t: torch.Tensor) -> torch.Tensor | None:
        """Every rank's ``t`` concatenated along dim 0 (their lengths may differ) with two tensor collectives,
        no pickling; None after a failure. Ranks whose tensors differ in dtype or trailing shape raise
        ``ValueError`` on every rank alike (the caller scores its own shard then)."""
        x = t.detach().cpu()
        if x.dim() == 0:
            x = x.reshape(1)
        dtype = x.dtype
        if dtype == torch.bool:
            x = x.to(torch.uint8)
        elif dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.contiguous()
        head = np.zeros(2 + MAX_DIMS)  # dtype code (-1: not sent as a tensor), dims, shape
        fits = x.dim() <= MAX_DIMS and x.dtype in _WIRE_DTYPES
        head[0] = _WIRE_DTYPES.index(x.dtype) if fits else -1
        head[1] = x.dim()
        if fits:
            head[2 : 2 + x.dim()] = x.shape
        table = self._gather(head)
        if table is None:
            return None
        if (table[:, 0] < 0).any() or not (
            table[:, [0, 1, *range(3, 2 + MAX_DIMS)]] == table[0, [0, 1, *range(3, 2 + MAX_DIMS)]]
        ).all():
            raise ValueError("the ranks' tensors differ in dtype or trailing shape")
        lengths = table[:, 2].astype(int)
        rows = int(lengths.max())
        padded = torch.zeros((rows, *x.shape[1:]), dtype=x.dtype)
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        try:
            self._wait(torch.distributed.all_gather(parts, padded, group=self.group, async_op=True))
        except Exception as e:
            self._fail("all_gather", e)
            return None
        out = torch.cat([p[:n] for p, n in zip(parts, lengths)])
        return out.to(dtype) if dtype in (torch.bool, torch.float16, torch.bfloat16) else out

    def gather_object(self, obj: Any) -> list[Any] | None:
        """``all_gather_object`` on trainmedic's group (``run.evaluate``'s shards); None after a failure."""
        if self.failed is not None or self.group is None:
            return None
        parts: list[Any] = [None] * self.world
        try:
            torch.distributed.all_gather_object(parts, obj, group=self.group)
        except Exception as e:
            self._fail("all_gather_object", e)
            return None
        return parts

    def _wait(self, work: Any) -> None:
        if work is None:
            return
        if not work.wait(timeout=timedelta(seconds=self.timeout)):
            raise TimeoutError(f"no answer within {self.timeout:g} s")

    def _fail(self, op: str, e: BaseException) -> None:
        if self.failed is None:
            self.failed = (
                f"rank {self.rank}: trainmedic's {op} across {self.world} ranks failed after "
                f"{self.syncs} syncs ({type(e).__name__}: {e}); this rank records on without syncing "
                "(a rank died, hung, or did not call tm.watch / close)"
            )
        self.failed_at = time.time()


def _default_store() -> Any:
    """The default process group's key-value store (no collective), or None where torch hides it."""
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:
        return None


def _fingerprint(weights: list[torch.Tensor]) -> np.ndarray:
    """Per-parameter L2 norm and sum (float64): replicas in sync (DDP) have identical fingerprints."""
    with torch.no_grad():
        norms = torch.stack([n.double() for n in torch._foreach_norm(weights)])
        sums = torch.stack([w.double().sum() for w in weights])
    return torch.cat([norms, sums]).cpu().numpy()
