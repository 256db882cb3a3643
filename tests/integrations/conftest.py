"""Small real data shared by the integration tests: sklearn's bundled digits, standardized."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_val, y_val): 1437 / 360 8x8 digit images as float32 rows, labels int64."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, va = idx[:1437], idx[1437:]
    return X[tr], y[tr].astype(np.int64), X[va], y[va].astype(np.int64)
