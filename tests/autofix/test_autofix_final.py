"""The model autofix returns, and the order of its polishing moves when the diagnosis is silent.

The noise rule decides which trial the search builds on (a polishing move is kept only when it beats one
standard error of the judged split); the final model is picked among all finished trials without an
error-level problem (``_final_pick``), so a move that ended higher within the noise is not thrown away.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainmedic.findings import Diagnosis, Finding, Severity
from trainmedic.remedies.autofix import (
    _Best,
    _fallback,
    _final_pick,
    _front_add,
    _near_pair,
    _View,
    autofix,
)
from trainmedic.remedies.checkpoint import load_checkpoint
from trainmedic.scenarios.train import DEFAULTS, train_fn

N = 450  # digits' validation split


def cand(trial: int, value: float, codes: tuple[str, ...] = (), acc: list[float] | None = None) -> _Best:
    d = Diagnosis("x")
    d.extend([Finding(c, Severity.WARNING, c) for c in codes])
    curve = acc if acc is not None else [value]
    view = _View(value, dict(enumerate(curve)), np.asarray(curve), N, 1.0)
    return _Best({"lr": 1e-3}, object(), value, d, Path("x"), trial, view)  # type: ignore[arg-type]


def test_the_final_model_is_the_top_trial_within_the_noise_with_fewest_problems() -> None:
    kept = cand(1, 0.970)
    higher = cand(3, 0.975)  # above the kept, within the noise (one SE ≈ 0.008): still the better model
    front: list[_Best] = []
    for c in (cand(0, 0.2, ("underfitting",)), kept, cand(2, 0.960), higher):
        front = _front_add(front, c, "max")
    assert [c.trial for c in front] == [3]  # the others are outranked on value and problems: not held
    assert _final_pick(front, kept, "max", True) is higher
    # as high within the noise and healthier beats the top value with a problem
    sick_top = cand(4, 0.978, ("overfitting",))
    front = _front_add(front, sick_top, "max")
    assert _final_pick(front, kept, "max", True) is higher
    # autofix's tolerance widens the window: a healthy trial that close beats a sicker top value
    healthy_lower = cand(6, 0.960)
    assert _final_pick([healthy_lower, sick_top], kept, "max", True, tolerance=0.02) is kept
    assert (
        _final_pick(
            [healthy_lower, cand(7, 0.985, ("underfitting",))], cand(1, 0.9, ("x",)), "max", True, 0.03
        )
        is healthy_lower
    )
    # nothing better: the kept one
    assert _final_pick([cand(5, 0.95)], kept, "max", True) is kept
    # losses: lower is better, no noise margin
    lk, lo = cand(1, 0.30), cand(2, 0.25)
    assert _final_pick(_front_add([lk], lo, "min"), lk, "min", False) is lo


def test_combine_pairs_the_two_best_moves_that_change_different_keys() -> None:
    near = [(0.975, 3, {"width": 128}), (0.978, 4, {"epochs": 20}), (0.979, 5, {"width": 256})]
    assert _near_pair(near) == (4, {"epochs": 20}, 5, {"width": 256})
    assert _near_pair([(0.975, 3, {"width": 128}), (0.976, 4, {"width": 256})]) is None


def test_the_fallback_order_follows_the_evidence() -> None:
    cfg: dict[str, Any] = {**DEFAULTS}
    converged = cand(1, 0.97, acc=[0.9, 0.95, 0.97, 0.975, 0.97, 0.97])
    noise = converged.view.noise()
    moves = [m for _, m in _fallback(converged, cfg, noise)]
    assert moves[0] == "larger_model" and moves[-1] == "lower_learning_rate"
    rising = cand(1, 0.97, acc=[0.9, 0.93, 0.95, 0.96, 0.965, 0.97])
    assert [m for _, m in _fallback(rising, cfg, noise)][0] == "train_longer"
    shaky = cand(1, 0.95, acc=[0.9, 0.96, 0.97, 0.93, 0.97, 0.95])
    assert [m for _, m in _fallback(shaky, cfg, noise)][0] == "lower_learning_rate"
    raw = {**cfg, "normalize_inputs": False, "optimizer": "sgd", "lr": 0.05}
    assert [m for _, m in _fallback(converged, raw, noise)][:2] == ["batch_norm", "switch_optimizer"]


def test_a_real_run_returns_the_best_finished_trial(tmp_path: Path) -> None:
    """Adam at 3e-3 on digits: healthy from the start; the polishing trials all finish, and the returned
    model is the one the rule picks among them, on disk and in memory."""
    import torch

    res = autofix(train_fn, {"optimizer": "adam", "lr": 3e-3, "seed": 1}, budget=5, run_root=tmp_path)
    done = [t for t in res.trials if t.error is None and t.metric_after is not None]
    top = max(t.metric_after for t in done if t.metric_after is not None)
    assert res.best_metric is not None
    noise = math.sqrt(top * (1 - top) / N)
    assert res.best_metric >= top - noise - 1e-9, res.summary()
    last_kept = max(t.index for t in res.trials if t.kept)
    kept_value = res.trials[last_kept].metric_after
    assert kept_value is not None and res.best_metric >= kept_value - noise - 1e-9
    assert (res.best_trial != last_kept) == (res.final_choice is not None)
    assert res.trials[res.best_trial].metric_after == pytest.approx(res.best_metric)
    assert res.best_model is not None
    model = copy.deepcopy(res.best_model)
    for prm in model.parameters():
        prm.data.zero_()
    extra = load_checkpoint(res.best_model_path, model)
    assert extra["trial"] == res.best_trial  # the model on disk is the returned trial's
    for a, b in zip(model.state_dict().values(), res.best_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
