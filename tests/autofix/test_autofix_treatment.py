"""Live treatment on real runs: a NaN/explosion is skipped and training goes on; overfitting stops and restores."""

from __future__ import annotations

import math

import torch
from sklearn.datasets import load_digits
from torch import nn

import trainmedic as tm
from trainmedic.remedies.treatment import Treatment


def _digits(n_train: int, n_val: int = 400) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(y), generator=g)
    X = torch.tensor(x / 16.0, dtype=torch.float32)[idx]
    Y = torch.tensor(y)[idx]
    return X[:n_train], Y[:n_train], X[-n_val:], Y[-n_val:]


def _loop(run_dir, treat, lr_at_epoch, epochs, n_train, width=64, lr=0.1, opt="sgd"):  # type: ignore[no-untyped-def]
    xtr, ytr, xva, yva = _digits(n_train)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    optimizer = (
        torch.optim.SGD(model.parameters(), lr=lr)
        if opt == "sgd"
        else torch.optim.Adam(model.parameters(), lr=lr)
    )
    loss_fn = nn.CrossEntropyLoss()
    run = tm.watch(model, optimizer, run_dir=run_dir, overwrite=True, quiet=True, treat=treat)
    last_epoch = -1
    for epoch in range(epochs):
        if epoch in lr_at_epoch:
            for g in optimizer.param_groups:
                g["lr"] = lr_at_epoch[epoch]
        for i in range(0, len(ytr), 64):
            optimizer.zero_grad()
            loss = loss_fn(model(xtr[i : i + 64]), ytr[i : i + 64])
            loss.backward()
            optimizer.step()
            run.log(loss=loss)
            if run.control.should_stop:
                break
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            break  # NaN outputs cannot be scored
        with torch.no_grad():
            run.evaluate("train", ytr, model(xtr), loss=loss_fn(model(xtr), ytr))
            run.evaluate("val", yva, model(xva), loss=loss_fn(model(xva), yva))
        last_epoch = epoch
        if run.control.should_stop:
            break
    run.close()
    with torch.no_grad():
        val_loss = float(loss_fn(model(xva), yva))
    return model, run, last_epoch, val_loss


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_nonfinite_update_is_skipped_and_training_continues(tmp_path):  # type: ignore[no-untyped-def]
    # an absurd learning rate from epoch 2 on: the very next gradients overflow
    untreated, _, _, _ = _loop(tmp_path / "raw", None, {2: 1e30}, 4, 600, lr=1e-2, opt="adam")
    assert not _finite(untreated)  # the provocation is real

    model, run, last_epoch, val_loss = _loop(
        tmp_path / "treated", "safe", {2: 1e30}, 4, 600, lr=1e-2, opt="adam"
    )
    assert _finite(model) and math.isfinite(val_loss)
    actions = [e["data"] for e in tm.open_run(tmp_path / "treated").events("treatment")]
    assert actions and actions[0]["action"] == "skip_update"
    assert actions[0]["cause"] in ("nonfinite", "explosion")
    assert actions[0]["lr_after"][0] < actions[0]["lr_before"][0]  # the lr was lowered
    assert "threshold_explode_ratio" in actions[0]
    if run.control.should_stop:  # retries ran out: the best weights were put back
        assert "bad updates skipped" in (run.control.stop_reason or "")
    else:
        assert last_epoch == 3  # it trained on to the end
    before = tm.open_run(tmp_path / "treated").eval_series("val", "loss").values[:2]
    assert val_loss <= float(before.min()) + 1e-6  # no worse than the best weights before the blow-up
    assert val_loss < 1.0  # a useful model (chance level is 2.3)


def test_spike_in_gradient_is_skipped_but_healthy_run_is_untouched(tmp_path):  # type: ignore[no-untyped-def]
    _, run, last_epoch, _ = _loop(tmp_path / "healthy", "safe", {}, 3, 600)
    assert last_epoch == 2 and not run.control.should_stop
    assert tm.open_run(tmp_path / "healthy").events("treatment") == []


def test_overfitting_stops_and_restores_best_weights(tmp_path):  # type: ignore[no-untyped-def]
    treat = Treatment(overfit_patience=3, reduce_on_plateau=False)
    model, run, last_epoch, val_loss = _loop(
        tmp_path / "overfit", treat, {}, 40, 30, width=256, lr=1e-2, opt="adam"
    )
    assert run.control.should_stop and (run.control.stop_reason or "").startswith("overfitting")
    assert last_epoch < 39
    r = tm.open_run(tmp_path / "overfit")
    vl = r.eval_series("val", "loss")
    best = int(vl.steps[vl.values.argmin()])
    assert run.control.restored_epoch == best == treat.best_epoch
    assert abs(val_loss - float(vl.values.min())) < 1e-5  # the model now is the best epoch's model
    assert val_loss < float(vl.values[-1])  # and better than where training was stopped
    ev = r.events("treatment")[-1]["data"]
    assert (
        ev["action"] == "stop_restore_best"
        and ev["threshold_overfit_val_loss_rise"] == run.thresholds.overfit_val_loss_rise
    )


def test_plateau_lowers_learning_rate(tmp_path):  # type: ignore[no-untyped-def]
    """Adam at lr 0.05 on digits: the training loss stops falling at a level the step size sets, validation stops
    improving; one reduction after a plateau long in evaluations and in steps."""
    treat = Treatment(stop_on_overfitting=False, max_lr_reductions=1)
    _, run, _, _ = _loop(tmp_path / "plateau", treat, {}, 40, 1000, width=64, lr=0.05, opt="adam")
    events = [e["data"] for e in tm.open_run(tmp_path / "plateau").events("treatment")]
    lowered = [e for e in events if e["action"] == "lower_lr"]
    assert len(lowered) == 1 and treat.lr_reductions == 1
    ev = lowered[0]
    assert ev["steps_since_best"] >= ev["min_steps"] >= treat.plateau_min_steps
    assert ev["train_loss"] >= 0.99 * ev["train_loss_at_best"]  # the training loss had stopped falling
    assert abs(run.optimizers["optimizer"].param_groups[0]["lr"] - 5e-3) < 1e-12


def test_no_plateau_while_the_model_still_learns(tmp_path):  # type: ignore[no-untyped-def]
    """Full batch, scored on a 36-sample validation set after every step (accuracy only): the accuracy moves
    in 2.8-point steps and does not beat its best for many evaluations while the loss still falls. The old rule
    (3 evaluations) cut the lr 100x within the first 20 steps and left the model at 40% accuracy."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    for seed in (0, 1):
        X, y = load_iris(return_X_y=True)
        xtr, xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
        sc = StandardScaler().fit(xtr)
        xtr_t, xte_t = torch.tensor(sc.transform(xtr)).float(), torch.tensor(sc.transform(xte)).float()
        ytr_t, yte_t = torch.tensor(ytr), torch.tensor(yte)
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        d = tmp_path / f"s{seed}"
        run = tm.watch(model, opt, run_dir=d, treat="safe", quiet=True)
        for _ in range(200):
            loss = nn.functional.cross_entropy(model(xtr_t), ytr_t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
            with torch.no_grad():
                run.evaluate("val", targets=yte_t, outputs=model(xte_t))
        run.close()
        lowered = [e for e in tm.open_run(d).events("treatment") if e["data"]["action"] == "lower_lr"]
        assert all(e["step"] >= 100 for e in lowered), lowered
        with torch.no_grad():
            acc = float((model(xte_t).argmax(1) == yte_t).float().mean())
        assert acc >= 0.85, (seed, acc)


def test_treat_rejects_unknown_mode(tmp_path):  # type: ignore[no-untyped-def]
    import pytest

    with pytest.raises(tm.TrainmedicError, match="`treat` must be"):
        tm.watch(run_dir=tmp_path / "x", treat="aggressive")


def test_a_gradient_that_stays_large_is_taken_once_clipping_is_on(tmp_path):  # type: ignore[no-untyped-def]
    """Full-batch regression of a sine that leaves its early plateau: the gradient grows 30x over its running
    median and stays there (the landscape, not a spike). One update may be skipped, which installs clipping;
    after that the clipped updates are taken — no cascade of skips that cuts the lr to nothing and stops a
    healthy run (as a 'two bad steps in a row' reset to the first step's weights once did)."""
    torch.manual_seed(1)
    x = torch.linspace(-2, 2, 400).unsqueeze(1)
    y = torch.sin(3 * x) + 0.1 * torch.randn_like(x)
    idx = torch.randperm(400)
    tr, va = idx[:320], idx[320:]
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    run = tm.watch(net, opt, run_dir=tmp_path / "run", treat="safe", quiet=True)
    for _ in range(800):
        loss = nn.functional.mse_loss(net(x[tr]), y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log(loss=loss.item())
        assert not run.control.should_stop
    run.close()
    with torch.no_grad():
        val_mse = float(nn.functional.mse_loss(net(x[va]), y[va]))
    skips = [
        e for e in tm.open_run(tmp_path / "run").events("treatment") if e["data"]["action"] == "skip_update"
    ]
    assert len(skips) <= 1
    assert val_mse < 0.02  # the noise floor is 0.01
    assert not [f for f in tm.diagnose(tmp_path / "run").findings if f.is_problem]
