"""The plateau rule, written once: when does a monitored value count as an improvement?

Used by :class:`~trainmedic.remedies.checkpoint.EarlyStopping` and
:class:`~trainmedic.remedies.optim.WarmupThenPlateau`, so both agree on what "stopped improving" means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import TrainmedicError


def improved(current: float, best: float | None, mode: str = "min", min_delta: float = 0.0) -> bool:
    """True when ``current`` beats ``best`` by more than ``min_delta`` (absolute) in direction ``mode``.

    A non-finite ``current`` never improves; anything finite improves on ``best=None``.
    """
    if mode not in ("min", "max"):
        raise TrainmedicError(f"`mode` must be 'min' or 'max'; got {mode!r}")
    if not math.isfinite(current):
        return False
    if best is None or not math.isfinite(best):
        return True
    if mode == "min":
        return current < best - abs(min_delta)
    return current > best + abs(min_delta)


@dataclass
class Plateau:
    """Tracks the best value and how many updates have passed without improving on it.

    ``update`` returns True when ``patience`` updates in a row did not improve (Keras' rule: the wait counter
    reaches ``patience``). After a plateau is reported, ``cooldown`` updates pass before counting again.
    """

    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0
    cooldown: int = 0
    best: float | None = None
    best_index: int | None = None
    wait: int = 0
    count: int = 0
    _cooldown_left: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise TrainmedicError(f"`mode` must be 'min' or 'max'; got {self.mode!r}")
        if self.patience < 0:
            raise TrainmedicError(f"`patience` must be >= 0; got {self.patience}")

    def update(self, value: float) -> bool:
        """Feed one value; True when it completes a plateau."""
        index = self.count
        self.count += 1
        value = float(value)
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_index, self.wait = value, index, 0
            return False
        if self._cooldown_left > 0:
            self._cooldown_left -= 1
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.wait = 0
            self._cooldown_left = self.cooldown
            return True
        return False

    @property
    def last_improved(self) -> bool:
        return self.best_index is not None and self.best_index == self.count - 1

    def state_dict(self) -> dict[str, float | int | str | None]:
        return {
            "best": self.best,
            "best_index": self.best_index,
            "wait": self.wait,
            "count": self.count,
            "cooldown_left": self._cooldown_left,
        }

    def load_state_dict(self, state: dict[str, float | int | str | None]) -> None:
        best = state.get("best")
        self.best = None if best is None else float(best)
        bi = state.get("best_index")
        self.best_index = None if bi is None else int(bi)
        self.wait = int(state.get("wait") or 0)
        self.count = int(state.get("count") or 0)
        self._cooldown_left = int(state.get("cooldown_left") or 0)
