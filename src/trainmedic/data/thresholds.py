"""Thresholds of the data audit.

``imbalance_ratio`` comes from :class:`trainmedic.settings.Thresholds`; the audit's own thresholds live here
until they join that class. Both load the same way: defaults ← ``[tool.trainmedic]`` in ``pyproject.toml``
← ``TRAINMEDIC_<NAME>`` environment variables ← the ``thresholds=`` argument.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import TrainmedicError
from ..settings import Thresholds, _pyproject_settings, load_thresholds


@dataclass(frozen=True)
class AuditThresholds:
    imbalance_ratio: float = 3.0  # data_imbalance (warning) when largest/smallest class count >= this
    severe_imbalance_ratio: float = 20.0  # ... and error when >= this
    min_class_samples: int = (
        10  # insufficient_data (warning) when the smallest training class has fewer samples
    )
    max_params_per_sample: float = 100.0  # insufficient_data when model parameters / training samples > this
    learning_curve_gain: float = (
        0.02  # insufficient_data when the score still rises this much from 50% to 100%
    )
    shift_alpha: float = 0.01  # false-discovery rate (Benjamini-Hochberg) of the two-sample tests
    shift_ks_effect: float = (
        0.1  # ... and a KS statistic at least this large, so large n cannot flag tiny shifts
    )
    label_shift_tv: float = (
        0.1  # label distributions differ when total-variation distance >= this (and significant)
    )
    label_noise_rate: float = 0.03  # label_noise (warning) when a split's share of suspected labels >= this
    label_noise_error_rate: float = (
        0.15  # ... and error when >= this (suspects are the confident ones: a lower bound)
    )
    label_check_min_kappa: float = (
        0.5  # labels are judged only when the checking model beats chance by this kappa
    )
    label_suspect_max_probability: float = (
        0.1  # a suspect's given label has at most this out-of-sample probability (overlap sits above it)
    )
    near_duplicate_chance: float = 0.001  # the near-duplicate radius shrinks in few dimensions so random neighbours fall inside by this share
    label_check_max_samples: int = (
        10_000  # label_check="auto" fits the cross-validated model on at most this many
    )
    leakage_error_fraction: float = 0.05  # data_leakage is an error when this share of a held-out split leaks
    duplicate_fraction: float = (
        0.05  # duplicates inside one split: warning when this share of it is duplicated
    )
    near_duplicate_radius: float = 0.2  # near-duplicate: distance <= this * median nearest-neighbour distance
    constant_feature_fraction: float = (
        0.25  # low_data_quality (warning) when this share of features is constant
    )
    unnormalized_scale_ratio: float = 1e6  # warning when feature std spread (max/min) >= this (info from 100)
    min_label_signal: float = 0.2  # warning when the kNN label agreement above chance (kappa) is below this

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_audit_thresholds(
    overrides: dict[str, Any] | Thresholds | AuditThresholds | None = None,
) -> AuditThresholds:
    """Merge defaults, pyproject, environment and ``overrides`` (a dict, Thresholds or AuditThresholds)."""
    if isinstance(overrides, AuditThresholds):
        return overrides
    base = AuditThresholds()
    own = {f.name for f in fields(base)}
    shared = load_thresholds(
        overrides
        if isinstance(overrides, Thresholds)
        else {k: v for k, v in (overrides or {}).items() if k not in own or k == "imbalance_ratio"}
    )
    merged: dict[str, Any] = {"imbalance_ratio": shared.imbalance_ratio}
    for k, v in _pyproject_settings().items():
        if k in own and k != "imbalance_ratio":
            merged[k] = v
    for k in own - {"imbalance_ratio"}:
        env = os.environ.get(f"TRAINMEDIC_{k.upper()}")
        if env is not None:
            merged[k] = env
    if isinstance(overrides, dict):
        merged.update({k: v for k, v in overrides.items() if k in own})
    out: dict[str, Any] = {}
    for k, v in merged.items():
        like = getattr(base, k)
        try:
            out[k] = type(like)(float(v)) if isinstance(like, int) else float(v)
        except (TypeError, ValueError):
            raise TrainmedicError(f"threshold `{k}` must be a number like {like!r}; got {v!r}") from None
    return replace(base, **out)
