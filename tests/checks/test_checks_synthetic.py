"""Decision robustness on synthetic stored histories (written with RunWriter): each check fires on the
fault and stays quiet on its healthy look-alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainmedic.checks import diagnose
from trainmedic.findings import Diagnosis, Finding, Severity
from trainmedic.store import RunWriter


def _cm(per_class_correct: list[int], n: int, confuse_into: int = 0) -> list[list[int]]:
    c = len(per_class_correct)
    cm = np.zeros((c, c), dtype=int)
    for i, k in enumerate(per_class_correct):
        cm[i, i] = k
        cm[i, confuse_into if i != confuse_into else (i + 1) % c] += n - k
    return cm.tolist()


def write_run(
    path: Path,
    loss: np.ndarray | None = None,
    grad: np.ndarray | None = None,
    evals: dict[str, dict[str, list[float]]] | None = None,
    cms: dict[str, list[list[list[int]]]] | None = None,
    scalars: dict[str, np.ndarray] | None = None,
    events: list[dict[str, Any]] | None = None,
    records: list[tuple[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    w = RunWriter(path, mode="overwrite")
    w.set_meta(name=path.name, status="closed", **(meta or {}))
    if loss is not None:
        w.add_scalars("loss", np.arange(len(loss)), loss)
    if grad is not None:
        w.add_scalars("grad_norm", np.arange(len(grad)), grad)
    for k, v in (scalars or {}).items():
        w.add_scalars(k, np.arange(len(v)), v)
    for split, names in (evals or {}).items():
        for name, vals in names.items():
            for e, v in enumerate(vals):
                w.add_eval(split, e, e * 10, name, v)
    for split, mats in (cms or {}).items():
        for e, cm in enumerate(mats):
            w.add_record("classification", {"confusion_matrix": cm}, epoch=e, step=e * 10, split=split)
        w.set_meta(
            **{
                f"split/{split}": {
                    "samples": int(np.sum(mats[-1])),
                    "class_counts": np.sum(mats[-1], axis=1).tolist(),
                }
            }
        )
    for ev in events or []:
        w.add_event(
            ev["kind"],
            ev["message"],
            step=ev.get("step"),
            code=ev.get("code"),
            severity=ev.get("severity"),
            data=ev.get("data"),
        )
    for kind, data in records or []:
        w.add_record(kind, data)
    w.close()
    return path


def healthy_loss(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 2.3 * np.exp(-t / 80) + 0.05 + rng.normal(0, 0.03, n) * (0.3 + np.exp(-t / 80))


def healthy_grad(n: int = 600, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(1.0 + 0.2 * rng.standard_normal(n))


def codes(d: Diagnosis) -> set[str]:
    return d.codes


# ---- exploding gradients ------------------------------------------------------------------------------
def test_single_spike_in_converging_run_is_not_an_explosion(tmp_path: Path) -> None:
    g = healthy_grad()
    g[300] = 500.0  # one spike
    d = diagnose(write_run(tmp_path / "r", loss=healthy_loss(), grad=g))
    assert "exploding_gradient" not in d.codes


def test_sustained_growth_with_rising_loss_is_an_explosion(tmp_path: Path) -> None:
    g = healthy_grad()
    loss = healthy_loss()
    g[400:] = np.geomspace(1, 1e6, 200)
    loss[400:] = np.linspace(0.2, 8.0, 200)
    d = diagnose(write_run(tmp_path / "r", loss=loss, grad=g))
    f = d.by_code("exploding_gradient")[0]
    assert f.severity is Severity.ERROR
    assert 400 <= f.step <= 460
    assert f.evidence["thresholds"]["explode_ratio"] == 20.0
    assert "threshold 20x" in f.message


def test_explode_ratio_threshold_is_honoured(tmp_path: Path) -> None:
    g = healthy_grad()
    loss = healthy_loss()
    g[400:] = 10.0  # 10x the median: below the default 20x, above 5x
    loss[400:] = 3.0
    p = write_run(tmp_path / "r", loss=loss, grad=g)
    assert "exploding_gradient" not in diagnose(p).codes
    assert "exploding_gradient" in diagnose(p, thresholds={"explode_ratio": 5.0}).codes


def test_growing_gradients_while_loss_falls_are_not_an_explosion(tmp_path: Path) -> None:
    g = np.geomspace(1e-4, 1.0, 600)  # e.g. a tiny init warming up
    d = diagnose(write_run(tmp_path / "r", loss=healthy_loss(), grad=g))
    assert "exploding_gradient" not in d.codes


# ---- oscillation and stalls ---------------------------------------------------------------------------
def test_healthy_minibatch_noise_is_not_oscillation(tmp_path: Path) -> None:
    for seed in range(5):
        d = diagnose(write_run(tmp_path / f"r{seed}", loss=healthy_loss(seed=seed)))
        assert "inefficient_learning" not in d.codes


def test_iid_batch_noise_around_a_flat_level_is_a_stall_not_an_oscillation(tmp_path: Path) -> None:
    """Per-step swings of ~30% with window means that move only by their noise: the loss never fell."""
    rng = np.random.default_rng(0)
    loss = 1.8 + 1.5 * np.abs(rng.standard_normal(600))
    f = diagnose(write_run(tmp_path / "r", loss=loss)).by_code("inefficient_learning")
    assert f and f[0].evidence["kind"] == "stalled"


def test_high_lr_bouncing_loss_is_oscillation(tmp_path: Path) -> None:
    """The windowed loss swings up and down by far more than the mini-batch noise of a window mean."""
    rng = np.random.default_rng(0)
    steps = np.arange(600)
    level = 2.0 - 1.2 * np.sign(np.sin(2 * np.pi * steps / 60))  # down/up every 30 steps (one window)
    loss = level * (1 + 0.8 * np.abs(rng.standard_normal(600)))
    f = diagnose(write_run(tmp_path / "r", loss=loss)).by_code("inefficient_learning")
    assert f and f[0].evidence["kind"] == "oscillating"
    assert f[0].evidence["median_window_move"] >= 3 * np.sqrt(2) * f[0].evidence["window_noise_se"]


def test_flat_quiet_loss_is_a_stall_not_oscillation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    loss = 2.3 + 0.01 * rng.standard_normal(600)
    f = diagnose(write_run(tmp_path / "r", loss=loss)).by_code("inefficient_learning")
    assert f and f[0].evidence["kind"] == "stalled"


# ---- performance ---------------------------------------------------------------------------------------
def test_minority_class_with_good_recall_is_not_a_recall_problem(tmp_path: Path) -> None:
    # class 2 is rare (10 samples) but recalled 90%
    cm = [[95, 3, 2], [4, 94, 2], [1, 0, 9]]
    ev = {"val": {"accuracy": [0.9, 0.93], "loss": [0.5, 0.3]}}
    d = diagnose(write_run(tmp_path / "r", evals=ev, cms={"val": [cm, cm]}))
    assert "low_recall" not in d.codes and "low_precision" not in d.codes


def test_low_recall_needs_both_best_and_last_epoch(tmp_path: Path) -> None:
    good = [[45, 5], [5, 45]]
    bad = [[49, 1], [30, 20]]  # class 1 recall 40% at the last epoch only
    ev = {"val": {"accuracy": [0.9, 0.69], "loss": [0.3, 0.6]}}
    d = diagnose(write_run(tmp_path / "a", evals=ev, cms={"val": [good, bad]}))
    assert "low_recall" not in d.codes
    ev2 = {"val": {"accuracy": [0.69, 0.69], "loss": [0.6, 0.6]}}
    d2 = diagnose(write_run(tmp_path / "b", evals=ev2, cms={"val": [bad, bad]}))
    f = d2.by_code("low_recall")[0]
    assert f.evidence["classes"][0]["class"] == "1" and f.split == "val"
    assert "40%" in f.message and f.evidence["thresholds"] == {"min_recall": 0.5}


def test_low_accuracy_judged_on_heldout_split(tmp_path: Path) -> None:
    ev = {"train": {"accuracy": [0.9, 0.95]}, "val": {"accuracy": [0.5, 0.55]}}
    d = diagnose(write_run(tmp_path / "r", evals=ev))
    f = d.by_code("low_accuracy")[0]
    assert f.split == "val" and f.evidence["thresholds"]["min_accuracy"] == 0.6
    d2 = diagnose(write_run(tmp_path / "r2", evals=ev), thresholds={"min_accuracy": 0.5})
    assert "low_accuracy" not in d2.codes


def test_a_live_treatment_that_acted_is_named_in_the_outcome_findings(tmp_path: Path) -> None:
    ev = {"train": {"accuracy": [0.9, 0.95]}, "val": {"accuracy": [0.5, 0.55]}}
    acted = [
        {
            "kind": "treatment",
            "message": "epoch 1: plateau; lr x0.1",
            "step": 10,
            "data": {"action": "lower_lr", "cause": "plateau", "factor": 0.1},
        }
    ]
    f = diagnose(write_run(tmp_path / "r", evals=ev, events=acted)).by_code("low_accuracy")[0]
    assert "lowered the learning rate x0.1 at step 10 (plateau)" in f.message
    assert f.evidence["treatment"] == [{"action": "lower_lr", "step": 10}]
    quiet = diagnose(write_run(tmp_path / "q", evals=ev)).by_code("low_accuracy")[0]
    assert "treatment" not in quiet.message and "treatment" not in quiet.evidence


# ---- integration of live findings, internal errors, audit records --------------------------------------
def test_live_finding_merges_with_posthoc_verdict(tmp_path: Path) -> None:
    loss = healthy_loss()
    loss[500] = np.nan
    live = Finding("nonfinite", Severity.ERROR, "NaN in the loss (loss) at step 500", step=500, source="live")
    ev = [
        {
            "kind": "live_finding",
            "message": live.message,
            "step": 500,
            "code": "nonfinite",
            "severity": "error",
            "data": live.to_dict(),
        }
    ]
    d = diagnose(write_run(tmp_path / "r", loss=loss, events=ev))
    fs = d.by_code("nonfinite")
    assert len(fs) == 1
    assert fs[0].source == "training+live" and fs[0].evidence["live"]["step"] == 500


def test_live_finding_without_posthoc_match_is_kept(tmp_path: Path) -> None:
    live = Finding(
        "exploding_gradient",
        Severity.ERROR,
        "gradient norm 1e3 is 500x its running median",
        step=42,
        source="live",
    )
    ev = [
        {
            "kind": "live_finding",
            "message": live.message,
            "step": 42,
            "code": live.code,
            "severity": "error",
            "data": live.to_dict(),
        }
    ]
    d = diagnose(write_run(tmp_path / "r", loss=healthy_loss(), grad=healthy_grad(), events=ev))
    f = d.by_code("exploding_gradient")[0]
    # one verdict per code: the post-hoc check did not confirm the live alarm, so it is a note
    assert f.source == "live" and f.severity is Severity.INFO and "post_hoc" in f.evidence
    assert d.healthy


def test_internal_error_events_become_a_warning_naming_missing_signals(tmp_path: Path) -> None:
    ev = [
        {
            "kind": "internal_error",
            "message": "activations: ValueError: boom",
            "step": 7,
            "code": "internal_error",
            "severity": "warning",
            "data": {"probe": "activations", "count": 3, "traceback": "tb"},
        }
    ]
    d = diagnose(write_run(tmp_path / "r", loss=healthy_loss(), events=ev))
    f = d.by_code("internal_error")[0]
    assert f.severity is Severity.WARNING and "act_dead" in f.message and f.step == 7


def test_audit_records_are_added_with_source_audit(tmp_path: Path) -> None:
    audit = Diagnosis(
        run="audit", findings=[Finding("data_leakage", Severity.ERROR, "12 samples shared by train and val")]
    )
    d = diagnose(write_run(tmp_path / "r", loss=healthy_loss(), records=[("audit", audit.to_dict())]))
    f = d.by_code("data_leakage")[0]
    assert f.source == "audit" and f.severity is Severity.ERROR


def test_crashing_check_is_reported_and_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainmedic.checks import registry

    registry.all_checks()
    chk = registry.CHECKS["underfitting"]

    def boom(ctx: Any) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setitem(registry.CHECKS, "underfitting", registry.Check(**{**chk.__dict__, "fn": boom}))
    loss = healthy_loss()
    loss[500] = np.inf
    d = diagnose(write_run(tmp_path / "r", loss=loss, evals={"train": {"accuracy": [0.2, 0.3]}}))
    assert "nonfinite" in d.codes
    ie = d.by_code("internal_error")[0]
    assert "kaboom" in ie.message and ie.evidence["code"] == "underfitting"
    assert any(s.code == "underfitting" and "crashed" in s.reason for s in d.skipped)


def test_missing_signals_skip_checks_with_reasons(tmp_path: Path) -> None:
    d = diagnose(write_run(tmp_path / "r", loss=healthy_loss()))
    reasons = {s.code: s.reason for s in d.skipped}
    assert "vanishing_gradient" in reasons and "per-layer gradient norms" in reasons["vanishing_gradient"]
    assert "overfitting" in reasons and "held-out" in reasons["overfitting"]
    assert d.healthy


# ---- GAN (bonus) ---------------------------------------------------------------------------------------
def test_discriminator_overpowering_and_balanced_gan(tmp_path: Path) -> None:
    n = 400
    d_loss = np.linspace(1.4, 0.01, n)
    g_loss = np.linspace(0.7, 5.0, n)
    d = diagnose(write_run(tmp_path / "a", scalars={"loss_d": d_loss, "loss_g": g_loss}))
    assert "discriminator_overpowering" in d.codes
    rng = np.random.default_rng(0)
    bal = diagnose(
        write_run(
            tmp_path / "b",
            scalars={
                "loss_d": 1.3 + 0.05 * rng.standard_normal(n),
                "loss_g": 0.8 + 0.05 * rng.standard_normal(n),
            },
        )
    )
    assert "discriminator_overpowering" not in bal.codes


def test_mode_collapse_from_diversity(tmp_path: Path) -> None:
    div = np.concatenate([np.linspace(1.0, 1.2, 200), np.linspace(1.2, 0.05, 200)])
    assert "mode_collapse" in diagnose(write_run(tmp_path / "a", scalars={"diversity": div})).codes
    assert (
        "mode_collapse"
        not in diagnose(write_run(tmp_path / "b", scalars={"diversity": np.full(400, 1.0)})).codes
    )
