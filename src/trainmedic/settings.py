"""Named, documented thresholds and where they come from.

Every threshold has a default (the values in ``docs/thresholds.md``), and can be overridden, from lowest to
highest priority, by ``[tool.trainmedic]`` in the nearest ``pyproject.toml``, by an environment variable
``TRAINMEDIC_<NAME>`` (upper case), and by a keyword argument (``tm.diagnose(run, thresholds={...})``).
Each finding reports the threshold values it used in its evidence.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import TrainmedicError


@dataclass(frozen=True)
class Thresholds:
    min_accuracy: float = 0.60  # low_accuracy when accuracy < this
    max_low_precision: float = 0.50  # low_precision when precision <= this
    min_recall: float = 0.50  # low_recall when recall < this
    iou_match: float = 0.50  # detection: IoU >= this is a true positive
    imbalance_ratio: float = 3.0  # data_imbalance when largest/smallest class count >= this
    overfit_gap: float = 0.10  # train accuracy minus val accuracy that counts as a gap
    overfit_val_loss_rise: float = 0.10  # relative rise of val loss above its best
    underfit_train_accuracy: float = 0.70  # underfitting when final train accuracy < this
    mismatch_gap: float = 0.10  # val/test accuracy above train accuracy by this much
    explode_ratio: float = 20.0  # grad norm this many times its running median
    vanishing_ratio: float = 1e-3  # first/last layer grad norm ratio below this
    dead_fraction: float = 0.50  # share of dead ReLU units in a layer
    saturated_fraction: float = 0.50  # share of saturated sigmoid/tanh units
    plateau_rel_improvement: float = 0.01  # loss must improve by this fraction to count as progress
    oscillation_ratio: float = 0.60  # share of sign changes in smoothed loss differences
    split_ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    # checks (trainmedic.checks); each finding reports the values it used
    init_scale_low: float = 0.1  # bad_initialization when initial weight std < this x He/Xavier std
    init_scale_high: float = 4.0  # bad_initialization when initial weight std > this x He/Xavier std
    vanishing_abs: float = 1e-7  # vanishing_gradient when the first layer's median grad norm is below this
    min_samples_per_class: float = 20.0  # insufficient_data when the median class has fewer training samples
    max_params_per_sample: float = 100.0  # insufficient_data when parameters per training sample exceed this
    stall_loss_fraction: float = 0.5  # inefficient_learning when the loss ends above this share of its start
    slow_update_ratio: float = 1e-4  # inefficient_learning: median update/weight ratio below this is too slow
    oscillation_efficiency: float = 0.5  # oscillating when net loss change / total variation is below this
    oscillation_amplitude: float = 0.2  # oscillating needs windowed per-step loss std/mean >= this
    gan_d_loss_fraction: float = 0.1  # discriminator_overpowering: D loss below this share of its start
    mode_collapse_drop: float = 0.8  # mode_collapse when generator-output diversity falls by this share
    rank_loss_ratio: float = 1.5  # rank_divergence: a rank's mean loss at least this many times the others'
    rank_param_tolerance: float = 1e-5  # rank_desync: replicas' parameters differ more than this (relative)
    rank_uneven_batches: float = 1.0  # uneven_rank_data: ranks' samples more than this many batches apart

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# the last pyproject.toml parsed: (its text, its [tool.trainmedic] settings). The file is read on every call and
# parsed again only when its text changed: parsing a project's pyproject.toml is most of what `tm.watch` costs
# before the run directory exists (~1 ms), and a process often starts many runs (autofix, sweeps, tests)
_parsed: tuple[str, dict[str, Any]] | None = None


def _pyproject_settings(start: Path | None = None) -> dict[str, Any]:
    global _parsed
    here = (start or Path.cwd()).resolve()
    for d in [here, *here.parents]:
        p = d / "pyproject.toml"
        if p.is_file():
            try:
                text = p.read_text()
            except Exception:
                return {}
            cached = _parsed
            if cached is not None and cached[0] == text:
                return dict(cached[1])
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - exercised on 3.10 only
                import tomli as tomllib  # type: ignore[no-redef]
            try:
                data = tomllib.loads(text)
            except Exception:
                return {}
            section = data.get("tool", {}).get("trainmedic", {})
            settings = dict(section.get("thresholds", section))
            _parsed = (text, settings)
            return dict(settings)
    return {}


def _coerce(name: str, value: Any, like: Any) -> Any:
    try:
        if isinstance(like, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            return tuple(float(v) for v in value)
        return type(like)(value)
    except (TypeError, ValueError):
        raise TrainmedicError(f"threshold `{name}` must be like {like!r}; got {value!r}") from None


def load_thresholds(
    overrides: dict[str, Any] | Thresholds | None = None, start: Path | None = None
) -> Thresholds:
    """Defaults ← pyproject ``[tool.trainmedic]`` ← ``TRAINMEDIC_*`` environment ← ``overrides``."""
    if isinstance(overrides, Thresholds):
        return overrides
    base = Thresholds()
    known = {f.name for f in fields(base)}
    merged: dict[str, Any] = {}
    for k, v in _pyproject_settings(start).items():
        if k in known:
            merged[k] = v
    for k in known:
        env = os.environ.get(f"TRAINMEDIC_{k.upper()}")
        if env is not None:
            merged[k] = env
    for k, v in (overrides or {}).items():
        if k not in known:
            raise TrainmedicError(f"unknown threshold {k!r}; known: {', '.join(sorted(known))}")
        merged[k] = v
    return replace(base, **{k: _coerce(k, v, getattr(base, k)) for k, v in merged.items()})
