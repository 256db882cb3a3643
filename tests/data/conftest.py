"""Shared data for the data-audit tests: scikit-learn's bundled datasets, split with trainmedic.split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

from trainmedic.data import split

LOADERS = {"digits": load_digits, "wine": load_wine, "breast_cancer": load_breast_cancer}


@pytest.fixture(scope="session")
def bundled() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: f(return_X_y=True) for name, f in LOADERS.items()}


@pytest.fixture(scope="session")
def digits_splits(bundled: dict[str, Any]) -> Any:
    return split(bundled["digits"], seed=0)
