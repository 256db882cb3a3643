"""Buggy programs (scenarios/buggy_programs.py): mistakes real training code makes, each in a whole loop.
The oracle checks first that the bug harmed the run (a bug that trained fine is a wrong program); then one of
the codes the bug should get must be reported as a warning or error."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainmedic.scenarios.buggy_programs import BUGGY, FIX_LEAVES_HARM, run_buggy


def test_there_are_enough_bugs() -> None:
    assert len(BUGGY) >= 34


def _alarms(diagnosis: object) -> dict[str, object]:
    return {f.code: f for f in diagnosis.findings if f.severity in ("warning", "error")}  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(BUGGY))
def test_bug_is_found(name: str, seed: int, tmp_path: Path) -> None:
    harm, diagnosis, found = run_buggy(name, tmp_path / "run", seed=seed)
    assert harm.harmed, f"the bug did not harm the run (a wrong program, not a miss): {harm}"
    expected = BUGGY[name][1]
    assert found, (expected, sorted(_alarms(diagnosis)))
    assert diagnosis.verdict != "healthy"


@pytest.mark.parametrize(
    "name", ["val_not_standardized", "val_from_other_distribution", "batchnorm_stats_frozen"]
)
def test_learning_that_does_not_carry_over_is_a_mismatch_not_overfitting(name: str, tmp_path: Path) -> None:
    _, diagnosis, _ = run_buggy(name, tmp_path / "run", seed=0)
    alarms = _alarms(diagnosis)
    assert "train_test_mismatch" in alarms
    assert alarms["train_test_mismatch"].evidence["kind"] == "no_transfer"  # type: ignore[attr-defined]
    # one verdict: regularising a model whose learning does not reach the held-out split would not help
    assert "overfitting" not in alarms


@pytest.mark.parametrize("name", ["detached_outputs", "forgot_optimizer_step"])
def test_weights_that_never_move_are_an_error(name: str, tmp_path: Path) -> None:
    _, diagnosis, _ = run_buggy(name, tmp_path / "run", seed=1)
    f = _alarms(diagnosis)["inefficient_learning"]
    assert f.severity == "error" and f.evidence["kind"] == "no_updates"  # type: ignore[attr-defined]
    assert f.evidence["gradients_zero"] is (name == "detached_outputs")  # type: ignore[attr-defined]


def test_a_plateau_under_a_step_far_too_large_is_not_a_noise_floor(tmp_path: Path) -> None:
    _, diagnosis, _ = run_buggy("transformer_lr_too_high", tmp_path / "run", seed=2)
    f = _alarms(diagnosis)["underfitting"]
    assert "usual range" in f.message  # type: ignore[attr-defined]
    assert f.remedies[0].code == "lower_learning_rate"  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(set(BUGGY) - FIX_LEAVES_HARM))
def test_published_fix_is_silent(name: str, seed: int, tmp_path: Path) -> None:
    """The fixed twin of each bug trains to what the data allows and gets no warning or error."""
    harm, diagnosis, _ = run_buggy(name, tmp_path / "run", seed=seed, fixed=True)
    assert not harm.harmed, f"the fix did not train as it should (a program problem, not a finding): {harm}"
    alarms = [
        (f.code, f.severity, f.message) for f in diagnosis.findings if f.severity in ("warning", "error")
    ]
    assert not alarms, alarms
    assert diagnosis.verdict == "healthy", diagnosis.verdict


def test_an_oscillation_under_a_step_far_too_large_is_judged_on_heldout_swings(tmp_path: Path) -> None:
    _, diagnosis, _ = run_buggy("lstm_sgd_no_clipping", tmp_path / "run", seed=0)
    f = _alarms(diagnosis)["inefficient_learning"]
    assert f.evidence["kind"] == "oscillating" and "heldout_swing" in f.evidence  # type: ignore[attr-defined]
    assert f.remedies[0].code == "lower_learning_rate"  # type: ignore[attr-defined]


def test_a_collapse_to_chance_is_underfitting_and_names_an_unbounded_loss(tmp_path: Path) -> None:
    _, diagnosis, _ = run_buggy("nll_loss_on_logits", tmp_path / "run", seed=0)
    f = _alarms(diagnosis)["underfitting"]
    assert "collapsed to chance" in f.message and "not bounded below" in f.message  # type: ignore[attr-defined]


def test_outputs_squashed_before_the_loss_are_gradient_masking(tmp_path: Path) -> None:
    _, diagnosis, _ = run_buggy("sigmoid_before_cross_entropy", tmp_path / "run", seed=0)
    f = _alarms(diagnosis)["gradient_masking"]
    assert f.evidence["kind"] == "squashed_outputs"  # type: ignore[attr-defined]
    assert f.evidence["loss_end"] > f.evidence["calibrated_bound"]  # type: ignore[attr-defined]


def test_a_loss_flat_at_ln_c_is_a_stall_without_any_accuracy_recorded(tmp_path: Path) -> None:
    _, diagnosis, _ = run_buggy("loss_only_adam_lr_half", tmp_path / "run", seed=0)
    f = _alarms(diagnosis)["inefficient_learning"]
    assert f.evidence["chance_plateau_classes"] == 10  # type: ignore[attr-defined]
    assert f.remedies[0].code == "lower_learning_rate"  # type: ignore[attr-defined]
