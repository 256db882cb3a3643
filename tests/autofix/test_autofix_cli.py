"""`trainmedic fix module:train_fn --config config.json`: exit codes and output."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from trainmedic.cli import app
from trainmedic.errors import TrainmedicError

TRAIN_FN = textwrap.dedent(
    """
    import torch
    from sklearn.datasets import load_digits
    from torch import nn
    from trainmedic.remedies.fit import fit

    X, Y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32); Y = torch.tensor(Y)

    def train_fn(config, run):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        fit(model, train=(X[:800], Y[:800]), val=(X[800:1100], Y[800:1100]), config=config, run=run, progress=False)
        return model
    """
)


def test_fix_runs_autofix_and_prints_the_audit(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "user_train.py").write_text(TRAIN_FN)
    (tmp_path / "config.json").write_text(json.dumps({"optimizer": "sgd", "lr": 5.0, "epochs": 2, "seed": 0}))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "fix",
            f"{tmp_path / 'user_train.py'}:train_fn",
            "--config",
            str(tmp_path / "config.json"),
            "--budget",
            "2",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    audit = json.loads(res.output)
    # plain SGD at 10x the top of its lr range: the lr is lowered by switching to Adam (one bundled trial)
    assert (
        len(audit["trials"]) == 2 and audit["trials"][1]["remedy"] == "lower_learning_rate+switch_optimizer"
    )
    assert (out / "best" / "model.pt").is_file() and (out / "autofix.json").is_file()

    table = CliRunner().invoke(
        app,
        [
            "fix",
            f"{tmp_path / 'user_train.py'}:train_fn",
            "-c",
            str(tmp_path / "config.json"),
            "-b",
            "1",
            "-o",
            str(tmp_path / "o2"),
        ],
    )
    assert table.exit_code == 0 and "baseline" in table.output and "best model:" in table.output


def test_fix_rejects_a_bad_train_fn_spec(tmp_path):  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(app, ["fix", "no_colon_here"])
    assert isinstance(res.exception, TrainmedicError) and "`TRAIN_FN` must be" in str(res.exception)
    res = CliRunner().invoke(app, ["fix", f"{tmp_path / 'missing.py'}:train_fn"])
    assert isinstance(res.exception, TrainmedicError) and "does not exist" in str(res.exception)
    with pytest.raises(TrainmedicError, match="`--config` must be an existing JSON file"):
        from trainmedic.remedies.commands import _load_config

        _load_config(tmp_path / "nope.json")
