"""Root cause first, and keep going while there is headroom: faulty digits MLPs end near their healthy
counterpart (the same depth/width with healthy knobs) with budget 6, on real runs.

The two kinds of the issue: deep saturating nets under plain SGD (the cause is the activation, not the lr)
and a learning rate far too high under heavy momentum (lr / (1 - momentum) is the step that matters). A
representative subset runs by default (about 2 s per case); the rest is marked ``slow``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import trainmedic as tm
from trainmedic.findings import Diagnosis, Finding, RemedySuggestion, Severity
from trainmedic.remedies.autofix import (
    SAME_CAUSE_PENALTY,
    SIBLING_PENALTY,
    _penalize,
    autofix,
    effective_step,
    run_metric,
)
from trainmedic.scenarios.train import DEFAULTS, train_fn

TOLERANCE = 0.03


def healthy_counterpart(cfg: dict[str, Any], tmp: Path) -> float:
    keep = {k: cfg[k] for k in ("depth", "width", "epochs", "seed") if k in cfg}
    run = tm.watch(run_dir=tmp / "healthy", overwrite=True, quiet=True)
    train_fn(keep, run)
    run.close()
    v = run_metric(tmp / "healthy")
    assert v is not None and v > 0.8  # the counterpart itself learns
    return v


def sat(depth: int, width: int, act: str, lr: float) -> dict[str, Any]:
    return {"depth": depth, "width": width, "activation": act, "optimizer": "sgd", "lr": lr, "epochs": 10}


def mom(depth: int, width: int, lr: float, m: float) -> dict[str, Any]:
    return {"depth": depth, "width": width, "optimizer": "sgd", "lr": lr, "momentum": m, "epochs": 10}


FAST = [
    pytest.param(sat(10, 64, "sigmoid", 0.1), id="sigmoid-d10-w64-lr0.1"),
    pytest.param(sat(8, 64, "sigmoid", 0.5), id="sigmoid-d8-w64-lr0.5"),
    pytest.param(sat(10, 128, "tanh", 0.01), id="tanh-d10-w128-lr0.01"),
    pytest.param(mom(3, 64, 3.0, 0.9), id="momentum0.9-d3-w64-lr3"),
    pytest.param(mom(4, 128, 10.0, 0.95), id="momentum0.95-d4-w128-lr10"),
    pytest.param(mom(2, 32, 1.0, 0.9), id="momentum0.9-d2-w32-lr1"),
]
SLOW = [
    pytest.param(sat(6, 32, "sigmoid", 0.1), id="sigmoid-d6-w32-lr0.1", marks=pytest.mark.slow),
    pytest.param(sat(8, 48, "tanh", 0.02), id="tanh-d8-w48-lr0.02", marks=pytest.mark.slow),
    pytest.param(sat(6, 32, "tanh", 0.005), id="tanh-d6-w32-lr0.005", marks=pytest.mark.slow),
    pytest.param(sat(10, 64, "sigmoid", 0.05), id="sigmoid-d10-w64-lr0.05", marks=pytest.mark.slow),
    pytest.param(mom(3, 32, 0.5, 0.99), id="momentum0.99-d3-w32-lr0.5", marks=pytest.mark.slow),
    pytest.param(mom(2, 96, 2.0, 0.9), id="momentum0.9-d2-w96-lr2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("faulty", FAST + SLOW)
def test_faulty_mlp_ends_near_its_healthy_counterpart(faulty: dict[str, Any], tmp_path: Path) -> None:
    healthy = healthy_counterpart(faulty, tmp_path)
    res = autofix(train_fn, faulty, budget=6, run_root=tmp_path / "af", defaults=DEFAULTS)
    assert res.trials[0].codes_after  # the baseline is diagnosed as faulty
    assert res.best_metric is not None and res.best_metric >= healthy - TOLERANCE, res.summary()
    assert len(res.trials) <= 6
    first = res.trials[1]
    if faulty.get("activation") in ("sigmoid", "tanh"):
        # root cause first: the saturating activation is changed in the first trial, not the lr alone
        assert first.config_change["activation"][1] == "leaky_relu", res.summary()
    else:
        # the step lr / (1 - momentum) is brought into SGD's usual range at once, not lr / 10
        eff = effective_step({**faulty, "lr": first.config_change["lr"][1]})
        assert first.remedy == "lower_learning_rate" and eff is not None and eff <= 0.5, res.summary()
    # every polishing move that was kept beat the best by more than the split's noise
    for t in res.trials[1:]:
        if t.finding == "headroom" and t.kept:
            assert t.reason and t.margin is not None and t.margin > 0
            assert t.metric_after is not None and t.metric_before is not None
            assert t.metric_after > t.metric_before + t.margin


def test_a_silent_diagnosis_with_headroom_is_not_the_end(tmp_path: Path) -> None:
    """Adam at a tenth of its usual lr for 4 epochs: the model learns (the diagnosis may be silent) but
    held-out accuracy still rises at the last epoch; autofix keeps going and gains beyond the noise."""
    faulty = {"optimizer": "adam", "lr": 3e-4, "epochs": 4}
    res = autofix(train_fn, faulty, budget=4, run_root=tmp_path, defaults=DEFAULTS)
    assert len(res.trials) > 1 and res.trials[1].finding in ("headroom", *res.trials[0].codes_after)
    polish = [t for t in res.trials if t.finding == "headroom"]
    assert polish and all(t.reason for t in polish)
    base = res.trials[0].metric_after
    assert base is not None and res.best_metric is not None
    noise = math.sqrt(base * (1 - base) / 450)  # digits' validation split: 450 samples
    assert res.best_metric > base + noise, res.summary()
    # a rolled-back polishing move leaves the kept model as it was
    for t in polish:
        if not t.kept:
            assert t.metric_after is None or t.margin is not None


def test_a_failed_remedy_lowers_its_siblings_more_than_its_cause(tmp_path: Path) -> None:
    R = RemedySuggestion.of
    d = Diagnosis(str(tmp_path))
    f = Finding(
        "vanishing_gradient",
        Severity.WARNING,
        "first/last layer gradient norm ratio tiny",
        {"explains": ["underfitting"]},
        [R("non_saturating_activation"), R("lower_learning_rate"), R("smaller_model")],
    )
    d.extend([f])
    penalty: dict[str, float] = {}
    _penalize(penalty, "non_saturating_activation", "vanishing_gradient", d)
    # siblings (same family: activation/init/normalization) lowered most ...
    assert penalty["he_init"] == penalty["batch_norm"] == SIBLING_PENALTY
    # ... the cause's other remedies less
    assert penalty["lower_learning_rate"] == penalty["smaller_model"] == SAME_CAUSE_PENALTY
    assert SIBLING_PENALTY < SAME_CAUSE_PENALTY < 1.0
    assert "non_saturating_activation" not in penalty and "class_weights" not in penalty


def test_effective_step() -> None:
    assert effective_step({"optimizer": "sgd", "lr": 3.0, "momentum": 0.9}) == pytest.approx(30.0)
    assert effective_step({"optimizer": "sgd", "lr": 0.1}) == pytest.approx(0.1)
    assert effective_step({"optimizer": "adam", "lr": 1e-3, "momentum": 0.9}) == pytest.approx(1e-3)
    assert effective_step({"optimizer": "sgd"}) is None
