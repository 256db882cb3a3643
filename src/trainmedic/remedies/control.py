"""The control object: how remedies *request* changes that the training loop honours.

Why a separate object (HF's ``TrainerControl`` idea): a treatment must never reach into the optimizer behind
the loop's back at an arbitrary moment. It sets request flags here; the loop (a plain user loop, ``tm.fit``
or an integration callback) honours them at defined points — ``if run.control.should_stop: break`` — and
:meth:`Control.honour` applies the requests that are safe to apply between two optimizer steps (learning
rate, gradient clipping). Every request keeps its reason, so the audit trail says why training changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import TrainmedicError


@dataclass
class ControlRequest:
    """One request and what became of it."""

    kind: str  # "stop", "lr_scale", "clip", "restore_best"
    reason: str
    value: float | None = None
    step: int | None = None
    epoch: int | None = None
    applied: bool = False
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "value": self.value,
            "step": self.step,
            "epoch": self.epoch,
            "applied": self.applied,
        }


class Control:
    """Request flags set by treatments and remedies, honoured by the loop.

    ``should_stop`` / ``stop_reason``: the loop should break out of training (``tm.fit`` does; a plain loop
    checks ``run.control.should_stop``). ``lr_scale``: a pending factor for every learning rate.
    ``clip_norm``: a pending request to clip the global gradient norm at that value. ``restored_epoch``: the
    epoch whose weights were put back (when a treatment restored the best weights).
    """

    def __init__(self) -> None:
        self.should_stop = False
        self.stop_reason: str | None = None
        self.lr_scale: float | None = None
        self.clip_norm: float | None = None
        self.restored_epoch: int | None = None
        self.requests: list[ControlRequest] = []
        self._clippers: dict[int, Any] = {}

    # ---- requests --------------------------------------------------------------------------------
    def request_stop(self, reason: str, *, step: int | None = None, epoch: int | None = None) -> None:
        """Ask the loop to stop; the first reason is kept."""
        if not self.should_stop:
            self.should_stop = True
            self.stop_reason = reason
        self.requests.append(ControlRequest("stop", reason, step=step, epoch=epoch, applied=True))

    def request_lr_scale(
        self, factor: float, reason: str, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        """Ask for every learning rate to be multiplied by ``factor`` at the next safe point."""
        if not float(factor) > 0.0:
            raise TrainmedicError(f"`factor` must be > 0; got {factor!r}")
        self.lr_scale = float(factor) * (self.lr_scale or 1.0)
        self.requests.append(ControlRequest("lr_scale", reason, value=float(factor), step=step, epoch=epoch))

    def request_clipping(
        self, max_norm: float, reason: str, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        """Ask for the global gradient norm to be clipped at ``max_norm`` from the next step on."""
        if not float(max_norm) > 0.0:
            raise TrainmedicError(f"`max_norm` must be a positive number; got {max_norm!r}")
        self.clip_norm = float(max_norm) if self.clip_norm is None else min(self.clip_norm, float(max_norm))
        self.requests.append(ControlRequest("clip", reason, value=float(max_norm), step=step, epoch=epoch))

    def note_restore(self, epoch: int | None, reason: str, *, step: int | None = None) -> None:
        """Record that the best weights (of ``epoch``) were put back."""
        self.restored_epoch = epoch
        self.requests.append(
            ControlRequest("restore_best", reason, value=None, step=step, epoch=epoch, applied=True)
        )

    @property
    def pending(self) -> bool:
        return self.lr_scale is not None or self.clip_norm is not None

    # ---- honouring -------------------------------------------------------------------------------
    def honour(self, optimizers: dict[str, torch.optim.Optimizer] | list[torch.optim.Optimizer]) -> list[str]:
        """Apply pending learning-rate and clipping requests to ``optimizers``; return what was done.

        Call it between steps (after ``optimizer.step()``, before the next backward): both changes then take
        effect at the next step. Clipping is installed once per optimizer and tightened by later requests.
        """
        from .clipping import install_gradient_clipping
        from .optim import scale_learning_rate

        opts = list(optimizers.values()) if isinstance(optimizers, dict) else list(optimizers)
        done: list[str] = []
        if self.lr_scale is not None:
            factor, self.lr_scale = self.lr_scale, None
            for opt in opts:
                changes = scale_learning_rate(opt, factor)
                done.append(
                    "lr " + ", ".join(f"{c.old:.3g}->{c.new:.3g}" for c in changes) + f" (x{factor:g})"
                )
        if self.clip_norm is not None:
            max_norm, self.clip_norm = self.clip_norm, None
            for opt in opts:
                clipper = self._clippers.get(id(opt))
                if clipper is None:
                    self._clippers[id(opt)] = install_gradient_clipping(opt, max_norm)
                    done.append(f"gradient clipping at {max_norm:.3g}")
                elif max_norm < clipper.max_norm:
                    clipper.max_norm = max_norm
                    done.append(f"gradient clipping tightened to {max_norm:.3g}")
        if done:
            for r in self.requests:
                if r.kind in ("lr_scale", "clip"):
                    r.applied = True
        return done

    def clipping(self, optimizer: torch.optim.Optimizer) -> float | None:
        """The clip value installed on ``optimizer`` through this control (None when none)."""
        c = self._clippers.get(id(optimizer))
        return None if c is None else float(c.max_norm)

    def remove(self) -> None:
        """Uninstall the clippers this control installed (at the end of a run)."""
        for c in self._clippers.values():
            c.remove()
        self._clippers.clear()

    def to_dict(self) -> dict[str, Any]:
        return {
            "should_stop": self.should_stop,
            "stop_reason": self.stop_reason,
            "restored_epoch": self.restored_epoch,
            "requests": [r.to_dict() for r in self.requests],
        }

    def __repr__(self) -> str:
        return f"Control(should_stop={self.should_stop}, stop_reason={self.stop_reason!r}, requests={len(self.requests)})"
