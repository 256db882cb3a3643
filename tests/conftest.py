"""Suite-wide settings: one torch thread per test worker (CI runs `pytest -n 2` on 2 cores), no hub access,
derandomized hypothesis in CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(1)

# CI explores a fixed set of examples (reproducible, never flaky); local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


RunCli = Callable[[list[str]], tuple[int, str]]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """Run the real entry point (``trainmedic.cli:main``, which turns errors into one line + exit 2) with
    ``argv``; return its exit code and everything it printed."""
    from trainmedic.cli import main

    def run(argv: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["trainmedic", *argv])
        with pytest.raises(SystemExit) as ex:
            main()
        out = capsys.readouterr()
        return int(ex.value.code or 0), out.out + out.err

    return run
