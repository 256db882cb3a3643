"""User strings printed to a terminal are text, never Rich markup (issue 12, item 3): a run named ``[/]``, a
path holding ``[/x]``, a name holding ``[link=...]`` print as themselves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import trainmedic as tm
from trainmedic.cli import app

runner = CliRunner()
HOSTILE = ["[/]", "[link=https://example.invalid]click[/link]", "[bold red]x", "a[/x]b"]


def _run(run_dir: Path, name: str, split: str) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    with tm.watch(m, opt, run_dir=run_dir, name=name, quiet=True) as run:
        for _ in range(3):
            for _ in range(4):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(m(x), y)
                loss.backward()
                opt.step()
                run.log(**{"loss": loss, name: loss})
            run.evaluate("train", targets=y, outputs=m(x))
            run.evaluate(split, targets=y, outputs=m(x))


@pytest.mark.parametrize("name", HOSTILE)
def test_inspect_and_diagnose_print_hostile_names_as_text(tmp_path: Path, name: str) -> None:
    d = tmp_path / "run"
    _run(d, name, split=name)
    env = {"FORCE_COLOR": "1", "COLUMNS": "300"}  # a terminal: styles and hyperlinks would be emitted
    for cmd in (["inspect", str(d)], ["diagnose", str(d), "--verbose"]):
        r = runner.invoke(app, cmd, env=env)
        assert r.exit_code == 0, (cmd, r.output, r.exception)
        assert "\x1b]8;" not in r.output  # no hyperlink escape reaches the user's terminal
        assert name in _plain(r.output), (cmd, r.output)


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_the_error_printer_prints_a_path_with_markup_as_itself(
    tmp_path: Path, run_cli: Callable[[list[str]], tuple[int, str]]
) -> None:
    missing = tmp_path / "a[/x]b" / "run"
    code, out = run_cli(["diagnose", str(missing)])
    assert code == 2 and "a[/x]b" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1, out
