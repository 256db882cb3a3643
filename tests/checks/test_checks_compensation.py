"""Data facts vs. training problems: compensated imbalance, and small data judged at the restored epoch."""

from __future__ import annotations

from pathlib import Path

from trainmedic.findings import Severity
from trainmedic.scenarios import SCENARIOS, run_scenario


def _one(d, code):  # type: ignore[no-untyped-def]
    found = [f for f in d.findings if f.code == code]
    assert len(found) == 1, d.codes
    return found[0]


def test_imbalance_warns_until_the_training_compensates(tmp_path: Path) -> None:
    cfg = SCENARIOS["imbalance_mlp_r10"].config
    plain = _one(run_scenario(cfg, tmp_path / "plain"), "data_imbalance")
    assert plain.severity is Severity.WARNING and plain.evidence["compensated_by"] == []
    weighted = _one(run_scenario({**cfg, "class_weights": True}, tmp_path / "w"), "data_imbalance")
    assert weighted.severity is Severity.INFO
    assert weighted.evidence["compensated_by"] == ["class_weights"]
    assert weighted.evidence["ratio"] == plain.evidence["ratio"]  # the data fact is unchanged
    assert f"minority recall {weighted.evidence['minority_recall']:.0%} ≥ 50%" in weighted.message


def test_small_data_is_judged_at_the_restored_epoch(tmp_path: Path) -> None:
    cfg = SCENARIOS["overfit_tiny_mlp"].config
    d = run_scenario(cfg, tmp_path / "plain")
    assert d.has("overfitting")
    restored = run_scenario({**cfg, "early_stopping": True, "restore_best": True}, tmp_path / "restored")
    assert "overfitting" not in restored.codes
    info = _one(restored, "insufficient_data")
    assert info.severity is Severity.INFO and info.evidence["restored_epoch"] is not None
    assert "the gap is the data's limit" in info.message


def test_a_gap_on_small_data_without_restoring_still_warns(tmp_path: Path) -> None:
    """Held-out loss still falling but a 10%+ gap on 5 samples per class: until the run ends on its best
    epoch's weights, both the gap (overfitting) and the shortage (insufficient_data) are warnings."""
    d = run_scenario("insufficient_mlp", tmp_path / "run")
    gap = _one(d, "overfitting")
    assert gap.severity is Severity.WARNING and gap.evidence["rule"] == ["accuracy_gap"]
    assert gap.remedies[0].code == "early_stopping"
    assert _one(d, "insufficient_data").severity is Severity.WARNING


def test_a_resumed_run_near_its_floor_is_not_a_stall(tmp_path: Path) -> None:
    """A converged CNN trained 4 more epochs from its checkpoint: the per-batch loss only wobbles around its
    floor. Judged as a fresh run that wobble is an "oscillation"; as a resumed run whose held-out loss did not
    get worse, it is convergence."""
    import trainmedic as tm
    from trainmedic.remedies.checkpoint import save_checkpoint
    from trainmedic.scenarios.train import train_fn
    from trainmedic.store.writer import RunWriter

    cfg = {"arch": "cnn", "width": 16, "depth": 2, "activation": "leaky_relu", "init": "he", "epochs": 4}
    resumed_cfg = dict(cfg)
    for k in range(3):  # 12 epochs, continued 4 at a time (what autofix's train_longer does)
        run = tm.watch(run_dir=tmp_path / f"part{k}", overwrite=True, quiet=True, config=resumed_cfg)
        save_checkpoint(tmp_path / f"m{k}.pt", train_fn(resumed_cfg, run))
        run.close()
        resumed_cfg = {**cfg, "resume_from": str(tmp_path / f"m{k}.pt")}
    d = run_scenario(resumed_cfg, tmp_path / "resumed")
    assert "inefficient_learning" not in d.codes
    # the same curve judged as if trained from scratch: the model learned (high accuracy), so a wobble at
    # its floor is convergence too — converged is not stalled
    w = RunWriter(tmp_path / "resumed", mode="resume")
    w.set_meta(config=cfg)
    w.close(status="closed")
    assert not tm.diagnose(tmp_path / "resumed").has("inefficient_learning")
