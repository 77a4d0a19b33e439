"""Shared fixtures: tiny in-test data and a throwaway MLflow store."""
from __future__ import annotations

import numpy as np
import pytest

K, N_PER_CLASS = 3, 40


def tiny_images(seed: int = 0, n_per_class: int = N_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 8, 8) images of three easy classes: a bright top, middle or bottom band, plus noise."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for k in range(K):
        img = np.zeros((n_per_class, 1, 8, 8), dtype=np.float32)
        img[:, :, 3 * k : 3 * k + 2, :] = 200.0
        x.append(img + rng.uniform(0, 40, img.shape))
        y.append(np.full(n_per_class, k))
    return np.concatenate(x).astype(np.float32), np.concatenate(y)


def write_tiny_npz(path):
    """Tiny partially labeled set: every third training label hidden (-1), plus a labeled test set."""
    x, y = tiny_images(0)
    y_partial = y.copy()
    y_partial[::3] = -1
    x_test, y_test = tiny_images(1, n_per_class=10)
    np.savez(path, X=x, y=y_partial, X_test=x_test, y_test=y_test)
    return path


@pytest.fixture
def npz_path(tmp_path):
    return write_tiny_npz(tmp_path / "tiny.npz")


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory):
    """One SQLite MLflow store for the session (creating its tables takes seconds)."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
