"""Session fixtures: the recorded runs of :mod:`report_runs`, built once per test worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_runs import make_exploding, make_healthy, make_imbalanced, make_overfit


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report_runs")


@pytest.fixture(scope="session")
def healthy_run(runs_root: Path) -> Path:
    return make_healthy(runs_root)


@pytest.fixture(scope="session")
def overfit_run(runs_root: Path) -> Path:
    return make_overfit(runs_root)


@pytest.fixture(scope="session")
def exploding_run(runs_root: Path) -> Path:
    return make_exploding(runs_root)


@pytest.fixture(scope="session")
def imbalanced_run(runs_root: Path) -> Path:
    return make_imbalanced(runs_root)
