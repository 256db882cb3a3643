"""`trainmedic fix -- python train.py --lr {lr=3.0} ...`: a real training script repaired as a subprocess per trial."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import trainmedic as tm
from trainmedic.cli import app
from trainmedic.errors import TrainmedicError
from trainmedic.remedies.script import ScriptTrainer, format_value, parse_template, render

# A user's script: plain PyTorch on digits, SGD with momentum; trainmedic only records it. It reads its run
# directory and model path from the environment variables the docs define.
SCRIPT = textwrap.dedent(
    """
    import argparse, os
    import torch
    from sklearn.datasets import load_digits
    from torch import nn
    import trainmedic as tm

    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()

    torch.manual_seed(0)
    X, Y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32); Y = torch.tensor(Y)
    xt, yt, xv, yv = X[:1200], Y[:1200], X[1200:], Y[1200:]

    def build():
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loss_fn = nn.CrossEntropyLoss()
    run = tm.watch(model, opt, run_dir=os.environ["TRAINMEDIC_RUN_DIR"], quiet=True)
    g = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", targets=yt, outputs=model(xt), loss=loss_fn(model(xt), yt))
            run.evaluate("val", targets=yv, outputs=model(xv), loss=loss_fn(model(xv), yv))
    run.close()
    torch.save(model.state_dict(), os.environ["TRAINMEDIC_MODEL_PATH"])
    """
)


def test_fix_repairs_a_training_script_and_keeps_its_best_model(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(SCRIPT)
    out = tmp_path / "out"
    cmd = ["python", str(tmp_path / "train.py"), "--lr", "{lr=3.0}", "--momentum", "{momentum=0.9}"]
    cmd += ["--epochs", "{epochs=5}"]
    res = CliRunner().invoke(app, ["fix", "--budget", "2", "--out", str(out), "--json", "--", *cmd])
    assert res.exit_code == 0, res.output
    audit = json.loads((out / "autofix.json").read_text())
    assert audit == json.loads(res.output)
    trials = audit["trials"]
    assert len(trials) == 2  # a subprocess per trial costs an interpreter start: the smallest budget
    assert trials[0]["codes_after"] and (trials[0]["metric_after"] or 0.0) < 0.3  # the faulty baseline
    # the effective step lr/(1-momentum) = 30 is brought back into SGD's range in one trial
    assert trials[1]["remedy"] == "lower_learning_rate" and trials[1]["kept"]
    assert 0.005 <= trials[1]["config_change"]["lr"][1] <= 0.05
    assert audit["best_trial"] == 1 and audit["best_metric"] > 0.75
    assert audit["config"]["lr"] < 3.0
    # the best model is the script's own file, and scores what the audit says it scored
    state = torch.load(out / "best" / "model.pt", weights_only=True)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    model.load_state_dict(state)
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xv, yv = torch.tensor(x[1200:] / 16.0, dtype=torch.float32), torch.tensor(y[1200:])
    with torch.no_grad():
        acc = float((model(xv).argmax(1) == yv).float().mean())
    assert acc == pytest.approx(audit["best_metric"], abs=1e-6)
    assert json.loads((out / "best" / "config.json").read_text())["lr"] == audit["config"]["lr"]
    # the audit is also stored in the best trial's run, as the function form does
    best_run = tm.open_run(out / f"trial-{audit['best_trial']:02d}")
    assert best_run.record("autofix")["best_trial"] == audit["best_trial"]


def test_a_script_that_fails_at_its_baseline_is_one_error_line(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('oops: no such dataset', file=sys.stderr)\nsys.exit(3)\n")
    res = CliRunner().invoke(
        app, ["fix", "--out", str(tmp_path / "o"), "--", "python", str(script), "--lr", "{lr=0.1}"]
    )
    assert res.exit_code != 0
    assert isinstance(res.exception, TrainmedicError)
    assert "status 3" in str(res.exception) and "no such dataset" in str(res.exception)


def test_a_script_that_records_no_run_is_told_how(tmp_path: Path) -> None:
    script = tmp_path / "silent.py"
    script.write_text("print('trained')\n")
    with pytest.raises(TrainmedicError, match="TRAINMEDIC_RUN_DIR"):
        tm.autofix(ScriptTrainer([sys.executable, str(script), "{lr=0.1}"]), {"lr": 0.1}, run_root=tmp_path)


def test_the_command_template() -> None:
    argv, starts, names = parse_template(["python", "t.py", "--lr={lr=3.0}", "--e", "{epochs}", "{bn=true}"])
    assert names == ["lr", "epochs", "bn"] and starts == {"lr": 3.0, "bn": True}
    assert render(argv, {"lr": 0.01, "epochs": 20, "bn": False}) == [
        "python",
        "t.py",
        "--lr=0.01",
        "--e",
        "20",
        "false",
    ]
    assert format_value(3.0) == "3.0" and format_value(1e-5) == "1e-05" and format_value(None) == "none"
    with pytest.raises(TrainmedicError, match="no value"):
        render(argv, {"lr": 0.1})
    with pytest.raises(TrainmedicError, match="names no hyperparameter"):
        parse_template(["python", "t.py", "--lr", "0.1"])


def test_a_placeholder_without_start_value_needs_the_config(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["fix", "--out", str(tmp_path), "--", "python", "t.py", "--lr", "{lr}"])
    assert res.exit_code != 0 and isinstance(res.exception, TrainmedicError)
    assert "no start value" in str(res.exception)
