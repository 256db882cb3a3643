"""Autofix on representative catalogue scenarios: remedy bundles, compensated imbalance, the restored epoch,
trials cut early. The full sweep (fix rate, time ratio) is ``benchmarks/autofix_bench.py``."""

from __future__ import annotations

from pathlib import Path

import trainmedic as tm
from trainmedic.demo import FAULTY_CONFIG
from trainmedic.findings import Diagnosis, Finding, RemedySuggestion, Severity
from trainmedic.remedies.autofix import _bundle, _Ctx, autofix
from trainmedic.scenarios import SCENARIOS
from trainmedic.scenarios.train import DEFAULTS, train_fn


def test_train_fn_declares_its_defaults() -> None:
    assert train_fn.defaults is DEFAULTS  # type: ignore[attr-defined]


def test_deep_sigmoid_sgd_is_repaired_by_one_bundled_trial(tmp_path: Path) -> None:
    """The demo's faulty run: activation, init and optimizer change together, and the result is healthy."""
    res = autofix(train_fn, FAULTY_CONFIG, budget=5, run_root=tmp_path)
    base = res.trials[0]
    assert {"vanishing_gradient", "underfitting"} <= set(base.codes_after)
    # the baseline sits at chance with a diagnosed cause: it is cut after a third of its epochs
    assert base.stop_reason is not None and base.stop_reason.startswith("cut at epoch 2")
    assert len(tm.open_run(base.run_dir).eval_series("val", "accuracy")) == 3
    bundle = res.trials[1]
    assert bundle.remedy == "non_saturating_activation+he_init+switch_optimizer" and bundle.kept
    assert bundle.config_change["activation"] == ["sigmoid", "leaky_relu"]
    assert bundle.config_change["init"] == ["default", "he"]
    assert bundle.config_change["optimizer"] == ["sgd", "adam"]
    assert res.healthy and res.best_metric is not None and res.best_metric >= 0.95


def test_class_weights_make_the_imbalance_a_compensated_info(tmp_path: Path) -> None:
    res = autofix(train_fn, SCENARIOS["imbalance_mlp_r10"].config, budget=4, run_root=tmp_path)
    assert "data_imbalance" in res.trials[0].codes_after  # uncompensated: a warning
    assert res.trials[1].remedy == "class_weights" and res.trials[1].kept
    assert res.healthy and res.best_metric is not None and res.best_metric > 0.8
    final = tm.diagnose(res.final_run_dir)
    (imb,) = [f for f in final.findings if f.code == "data_imbalance"]
    assert imb.severity is Severity.INFO and imb.message.startswith(
        "imbalanced data, compensated (class_weights)"
    )
    assert imb.evidence["minority_recall"] >= imb.evidence["thresholds"]["min_recall"]


def test_early_stopping_is_judged_at_the_restored_epoch(tmp_path: Path) -> None:
    res = autofix(train_fn, SCENARIOS["overfit_tiny_mlp"].config, budget=3, run_root=tmp_path)
    assert "overfitting" in res.trials[0].codes_after
    # early stopping repairs it; a polishing move may then improve on it, keeping restore_best
    assert res.trials[1].remedy == "early_stopping" and res.trials[1].kept
    assert res.config["restore_best"] is True
    r = tm.open_run(res.final_run_dir)
    restored = r.record("fit")["restored_epoch"]
    val_loss = r.eval_series("val", "loss")
    assert restored == int(val_loss.steps[val_loss.values.argmin()])
    assert res.healthy and "overfitting" not in tm.diagnose(res.final_run_dir).codes


def _forced(run_dir: object) -> Diagnosis:
    return Diagnosis(
        str(run_dir),
        [
            Finding(
                "underfitting",
                Severity.WARNING,
                "forced",
                remedies=[RemedySuggestion.of("lower_learning_rate")],
            )
        ],
    )


def test_a_trial_clearly_worse_than_the_best_is_cut_and_rolled_back(tmp_path: Path) -> None:
    good = {"epochs": 6}
    frozen = {"lower_learning_rate": lambda ctx: {"lr": 1e-7}}  # learns nothing: far below the baseline
    res = autofix(train_fn, good, budget=2, run_root=tmp_path, diagnose=_forced, remedies=frozen)
    t = res.trials[1]
    assert t.stop_reason is not None and t.stop_reason.startswith("cut at epoch 1:"), t.stop_reason
    assert len(tm.open_run(t.run_dir).eval_series("val", "accuracy")) == 2  # 2 of 6 epochs trained
    assert not t.kept and res.best_trial == 0 and res.config == good
    # without cutting, the same trial runs all its epochs (and is still rolled back)
    res2 = autofix(
        train_fn,
        good,
        budget=2,
        run_root=tmp_path / "nocut",
        diagnose=_forced,
        remedies=frozen,
        cut_margin=None,
    )
    assert res2.trials[1].stop_reason is None and not res2.trials[1].kept
    assert len(tm.open_run(res2.trials[1].run_dir).eval_series("val", "accuracy")) == 6


def _diag(*codes: str) -> Diagnosis:
    return Diagnosis("x", [Finding(c, Severity.WARNING, "m") for c in codes])


def test_bundles_follow_the_diagnosis_and_the_known_keys() -> None:
    cfg = {**DEFAULTS, "activation": "sigmoid", "optimizer": "sgd", "lr": 0.1}
    known = set(DEFAULTS)
    ctx = _Ctx(cfg, Path("."), known, _diag("vanishing_gradient", "underfitting"))
    name, change = _bundle("non_saturating_activation", {"activation": "leaky_relu"}, ctx)
    assert name == "non_saturating_activation+he_init+switch_optimizer"
    assert change["activation"] == "leaky_relu" and change["init"] == "he" and change["optimizer"] == "adam"
    # plain SGD at a lr far beyond its range: lowering it means switching to Adam
    hot = _Ctx({**DEFAULTS, "optimizer": "sgd", "lr": 5.0}, Path("."), known, _diag("gradient_masking"))
    name, change = _bundle("lower_learning_rate", {"lr": 0.5}, hot)
    assert (
        name == "lower_learning_rate+switch_optimizer"
        and change["optimizer"] == "adam"
        and change["lr"] < 0.5
    )
    warm = _Ctx({**DEFAULTS, "optimizer": "sgd", "lr": 0.8}, Path("."), known, _diag("gradient_masking"))
    assert _bundle("lower_learning_rate", {"lr": 0.08}, warm) == ("lower_learning_rate", {"lr": 0.08})
    # a ReLU net with momentum SGD: nothing to widen
    relu = _Ctx(
        {**DEFAULTS, "optimizer": "sgd", "momentum": 0.9}, Path("."), known, _diag("vanishing_gradient")
    )
    assert _bundle("he_init", {"init": "he"}, relu) == ("he_init", {"init": "he"})
    # a training function that has no `init` key keeps the single change
    no_init = _Ctx({**cfg, "momentum": 0.9}, Path("."), known - {"init"}, _diag("gradient_masking"))
    assert _bundle("non_saturating_activation", {"activation": "leaky_relu"}, no_init)[0] == (
        "non_saturating_activation"
    )
