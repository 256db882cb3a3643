"""The autofix loop on real small runs: repair, rollback of a harmful remedy, the best model survives a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import trainmedic as tm
from trainmedic.findings import Diagnosis, Finding, RemedySuggestion, Severity
from trainmedic.remedies.autofix import autofix, run_metric
from trainmedic.remedies.checkpoint import load_checkpoint
from trainmedic.remedies.fit import fit

_X, _Y = load_digits(return_X_y=True)
_XT = torch.tensor(_X / 16.0, dtype=torch.float32)
_YT = torch.tensor(_Y)
TRAIN, VAL = (_XT[:1000], _YT[:1000]), (_XT[1000:1400], _YT[1000:1400])


def build(config: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    w = int(config.get("width", 32))
    return nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, 10))


def train_fn(config: dict[str, Any], run: Any) -> nn.Module:
    model = build(config)
    fit(model, train=TRAIN, val=VAL, config=config, run=run, progress=False)
    return model


def test_autofix_repairs_an_exploding_learning_rate(tmp_path):  # type: ignore[no-untyped-def]
    faulty = {"optimizer": "sgd", "lr": 5.0, "epochs": 4, "seed": 0, "width": 32}
    res = autofix(train_fn, faulty, budget=4, run_root=tmp_path)
    assert res.trials[0].codes_after  # the baseline is diagnosed as faulty
    assert res.best_metric is not None and res.best_metric > 0.85
    assert res.gain is not None and res.gain > 0.3
    kept = [t for t in res.trials[1:] if t.kept]
    assert kept and kept[0].remedy is not None
    assert kept[0].remedy.split("+")[0] in ("lower_learning_rate", "gradient_clipping", "switch_optimizer")
    assert res.config["lr"] < 5.0 or res.config.get("grad_clip") or res.config.get("optimizer") == "adam"
    # the audit log: on disk, in the final run, and with the fields the report renders
    audit = json.loads((tmp_path / "autofix.json").read_text())
    assert audit["best_trial"] == res.best_trial and len(audit["trials"]) == len(res.trials)
    fields = {
        "index",
        "remedy",
        "config_change",
        "metric_before",
        "metric_after",
        "kept",
        "codes_before",
        "codes_after",
        "seconds",
    }
    assert fields <= set(audit["trials"][1])
    rec = tm.open_run(res.final_run_dir).record("autofix")
    assert rec["best_metric"] == pytest.approx(res.best_metric)
    # the best model on disk is the best model in memory
    model = build(res.config)
    extra = load_checkpoint(res.best_model_path, model)
    assert extra["trial"] == res.best_trial
    with torch.no_grad():
        acc = float((model(VAL[0]).argmax(1) == VAL[1]).float().mean())
    assert acc == pytest.approx(run_metric(res.final_run_dir), abs=1e-6)


def _always(code: str, *remedies: str) -> Any:
    def diagnose(run_dir: Any) -> Diagnosis:
        rems = [RemedySuggestion.of(r) for r in remedies]
        return Diagnosis(str(run_dir), [Finding(code, Severity.WARNING, "forced", remedies=rems)])

    return diagnose


def test_a_remedy_that_hurts_is_rolled_back(tmp_path):  # type: ignore[no-untyped-def]
    good = {"lr": 1e-2, "epochs": 2, "seed": 0, "width": 32}
    harmful = {"raise_learning_rate": lambda ctx: {"lr": 30.0}}  # a "remedy" that wrecks training
    res = autofix(
        train_fn,
        good,
        budget=2,
        run_root=tmp_path,
        diagnose=_always("underfitting", "raise_learning_rate"),
        remedies=harmful,
    )
    assert len(res.trials) == 2
    t = res.trials[1]
    assert t.remedy == "raise_learning_rate" and t.config_change == {"lr": [1e-2, 30.0]}
    assert t.metric_after is None or t.metric_after < t.metric_before
    assert not t.kept and res.best_trial == 0 and res.config == good
    assert load_checkpoint(res.best_model_path, build(good))["trial"] == 0


class Crash(BaseException):
    """Stands in for a kill (KeyboardInterrupt, OOM) in the middle of a trial."""


def test_crash_during_autofix_leaves_best_model_on_disk(tmp_path):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def crashing(config: dict[str, Any], run: Any) -> nn.Module:
        calls.append(1)
        if len(calls) == 3:
            raise Crash("killed in trial 3")
        return train_fn(config, run)

    start = {"lr": 1e-2, "epochs": 1, "seed": 0, "width": 32}
    with pytest.raises(Crash):
        autofix(
            crashing,
            start,
            budget=5,
            run_root=tmp_path,
            diagnose=_always("underfitting", "train_longer", "larger_model"),
            remedies={
                "train_longer": lambda c: {"epochs": int(c.cfg["epochs"]) + 1},
                "larger_model": lambda c: {"width": 64},
            },
        )
    ckpt = tmp_path / "best" / "model.pt"
    assert ckpt.is_file()
    cfg = json.loads((tmp_path / "best" / "config.json").read_text())
    extra = load_checkpoint(ckpt, build(cfg))
    assert extra["trial"] in (0, 1)
    audit = json.loads((tmp_path / "autofix.json").read_text())
    assert len(audit["trials"]) == 2  # the two finished trials are in the audit log


def test_exception_in_a_retrial_is_recorded_and_rolled_back(tmp_path):  # type: ignore[no-untyped-def]
    def picky(config: dict[str, Any], run: Any) -> nn.Module:
        if config.get("dropout"):
            raise ValueError("this train_fn cannot do dropout")
        return train_fn(config, run)

    res = autofix(
        picky,
        {"lr": 1e-2, "epochs": 1, "seed": 0},
        budget=2,
        run_root=tmp_path,
        diagnose=_always("overfitting", "add_dropout"),
    )
    assert res.trials[1].error == "ValueError: this train_fn cannot do dropout"
    assert not res.trials[1].kept and res.best_trial == 0


def test_autofix_rejects_bad_arguments(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(tm.TrainmedicError, match="`metric` must be"):
        autofix(train_fn, {}, metric="accuracy", run_root=tmp_path)
    with pytest.raises(tm.TrainmedicError, match="`budget` must be"):
        autofix(train_fn, {}, budget=0, run_root=tmp_path)
