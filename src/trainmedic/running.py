"""Training metrics without an extra pass: ``run.log(loss=loss, outputs=logits, targets=y)``.

Each training batch is folded into a running confusion matrix that stays on the batch's device (a few small
kernels, no host sync: on accelerators out-of-range targets go to a spare cell instead of being checked). At
each epoch boundary — the first ``run.evaluate`` after batches were folded (any split), ``run.end_epoch()``,
or ``run.close()`` — the matrix is moved to the host once and stored as split ``"train_running"``
(``RUNNING_SPLIT``): the same metrics as ``run.evaluate`` (accuracy, precision/recall/F1, confusion matrix,
``loss`` = the sample-weighted mean of the logged batch losses), and a ``classification`` record with
``"running": true``, and ``output_scale`` (see :func:`output_scale`, from every ``SCALE_EVERY``-th batch). A
running average lags behind a model that is still learning (early batches of the epoch
were scored by an older model) and includes dropout/augmentation, so it is kept apart from a clean
``run.evaluate("train", ...)`` pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import TrainmedicError, describe_shape

RUNNING_SPLIT = "train_running"
SCALE_EVERY = 8  # the running output scale reads every 8th batch of an epoch (the first included)
SCALE_ROWS = 256  # output_scale of a larger output reads every (N // 256)-th row (256 to 511 rows)


def output_scale(o: np.ndarray) -> float | None:
    """The spread of a model's logits: the root mean square over samples of each sample's deviation from its
    mean logit (softmax-invariant; for one binary logit ``z``, ``|z| / 2``, as for the logits ``[0, z]``).
    ``o``: ``(N, C)`` logits or ``(N,)`` binary logits. None for probabilities (bounded in [0, 1]), which have
    no scale to compare. A held-out split whose inputs skipped the training split's scaling shows as a
    spread many times the training split's (the mismatch judged is 4x, so an estimate from 256 to 511 evenly
    spaced rows, ``SCALE_ROWS``, does: a fixed cost whatever the split's size)."""
    if o.size == 0 or o.ndim not in (1, 2):
        return None
    if len(o) > 2 * SCALE_ROWS:  # an RMS over evenly spaced rows: a few % off at most, and a fixed cost
        o = o[:: len(o) // SCALE_ROWS]
    if float(o.min()) >= 0.0 and float(o.max()) <= 1.0:
        return None  # probabilities
    # plain ufunc reductions, no BLAS: a BLAS dot of this size wakes its thread pool, whose spinning threads
    # would take CPU from the user's training on a small machine
    if o.ndim == 1 or o.shape[1] == 1:
        z = o.reshape(-1).astype(np.float64)
        return float(np.sqrt(np.square(z, out=z).sum() / z.size)) / 2.0
    n, k = o.shape
    s = o.sum(axis=1, dtype=np.float64)
    q = float(np.square(o.astype(np.float64)).sum())
    var = max(q - float(np.square(s, out=s).sum()) / k, 0.0) / (n * k)
    return float(np.sqrt(var))


@dataclass
class RunningEpoch:
    """What one epoch of folded batches adds up to (on the host)."""

    confusion_matrix: np.ndarray  # (k, k) int64, rows = true class
    loss: float | None  # sample-weighted mean of the logged losses; None when no loss was logged with them
    batches: int
    invalid_targets: int  # targets outside [0, k): not counted in the matrix
    output_scale: float | None = None  # mean over the sampled batches of output_scale's square, rooted


class RunningMetrics:
    """A running confusion matrix over the training batches of one epoch."""

    def __init__(self) -> None:
        self.k: int | None = None
        self._cm: torch.Tensor | None = None  # (k*k + 1,) int64; the last cell counts out-of-range targets
        self._probs: bool | None = None  # binary scores: probabilities (> 0.5) or logits (> 0), decided once
        self._loss: Any = 0.0  # sum of loss x batch size (a float on the CPU, a 0-d tensor elsewhere)
        self._loss_n = 0
        self.batches = 0
        self._scale: Any = (
            0.0  # sum over sampled batches of the mean per-sample logit variance (on the device)
        )
        self._scale_n = 0

    def fold(self, outputs: Any, targets: Any, loss: Any = None) -> None:
        """Add one batch. ``outputs``: ``(N, C)`` scores (C >= 2) or binary scores ``(N,)`` / ``(N, 1)``;
        ``targets``: class indices ``(N,)`` (whole-valued floats, as BCE targets are, are fine)."""
        if not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise TrainmedicError(
                "`outputs` and `targets` of log() must be tensors (the batch's scores and class indices); got "
                f"{type(outputs).__name__} and {type(targets).__name__}"
            )
        o, t = outputs.detach(), targets.detach()
        if o.ndim == 2 and o.shape[1] == 1:
            o = o[:, 0]
        if t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim != 1 or o.shape[0] != t.shape[0] or not o.is_floating_point() or o.ndim not in (1, 2):
            raise TrainmedicError(
                "log(outputs=..., targets=...) needs scores of shape (N, C) or binary scores (N,) and class "
                f"indices of shape (N,); got outputs {describe_shape(o)} ({o.dtype}) and targets {describe_shape(t)}"
            )
        if o.ndim == 2:
            k = int(o.shape[1])
            pred = o.argmax(dim=1)
        else:
            k = 2
            if self._probs is None:  # one look at the first batch: probabilities or logits
                self._probs = bool((o.min() >= 0) & (o.max() <= 1))
            pred = (o > (0.5 if self._probs else 0.0)).long()
        if self.k is None or self._cm is None or self._cm.device != o.device:
            self.k = k
            self._cm = torch.zeros(k * k + 1, dtype=torch.long, device=o.device)
        elif k != self.k:
            raise TrainmedicError(
                f"log(outputs=...) changed from {self.k} to {k} classes within an epoch; pass scores of one shape"
            )
        t = t.long() if t.device == o.device else t.to(o.device).long()
        idx = t * k + pred
        if o.device.type == "cpu":
            counts = torch.bincount(idx, minlength=k * k) if bool(t.min() >= 0) else None
            if counts is not None and counts.numel() == k * k:
                self._cm[: k * k] += counts
            else:
                self._add_checked(t, idx, k)
        else:
            self._add_checked(t, idx, k)
        if self.batches % SCALE_EVERY == 0 and not self._probs:
            self._fold_scale(o)
        self.batches += 1
        if loss is not None:
            n = int(t.shape[0])
            if isinstance(loss, torch.Tensor):
                lv = loss.detach().reshape(())
                self._loss = self._loss + (float(lv) if lv.device.type == "cpu" else lv.float()) * n
            else:
                self._loss = self._loss + float(loss) * n
            self._loss_n += n

    def _fold_scale(self, o: torch.Tensor) -> None:
        """One sampled batch's logit spread (see :func:`output_scale`), kept on the device."""
        of = o.float()
        if o.ndim == 1:
            v = of.square().mean() / 4.0
        else:
            if o.device.type == "cpu" and bool((o.min() >= 0) & (o.max() <= 1)):
                return  # probabilities (read for free on the CPU; on accelerators a check would sync, and a
                # spread of probabilities finds no held-out counterpart: run.evaluate records none for them)
            v = of.var(dim=1, unbiased=False).mean()
        self._scale = self._scale + (float(v) if o.device.type == "cpu" else v)
        self._scale_n += 1

    def _add_checked(self, t: torch.Tensor, idx: torch.Tensor, k: int) -> None:
        """Out-of-range targets go to the spare last cell: no host sync, no device-side assert."""
        assert self._cm is not None
        valid = (t >= 0) & (t < k)
        idx = torch.where(valid, idx, torch.full_like(idx, k * k))
        self._cm.index_add_(0, idx, torch.ones_like(idx))

    def take(self) -> RunningEpoch | None:
        """The epoch so far (one host copy), and a fresh start; None when no batch was folded."""
        if self.batches == 0 or self._cm is None or self.k is None:
            return None
        k = self.k
        flat = self._cm.cpu().numpy()
        loss = None
        if self._loss_n:
            total = self._loss
            loss = float(total.cpu()) if isinstance(total, torch.Tensor) else float(total)
            loss /= self._loss_n
        scale = None
        if self._scale_n:
            total = self._scale
            mean = (float(total.cpu()) if isinstance(total, torch.Tensor) else float(total)) / self._scale_n
            scale = float(np.sqrt(mean)) if np.isfinite(mean) and mean >= 0 else None
        out = RunningEpoch(flat[: k * k].reshape(k, k).copy(), loss, self.batches, int(flat[k * k]), scale)
        self._cm.zero_()
        self._loss, self._loss_n, self.batches = 0.0, 0, 0
        self._scale, self._scale_n = 0.0, 0
        return out
