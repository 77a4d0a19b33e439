"""Shared fixtures: tiny in-test data and a throwaway MLflow store."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The torchvision datasets of configs/ (data.root unset) are read from here: the folder CI and the benchmarks share.
os.environ.setdefault("SSGAN_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))

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
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def second_fails_in_epoch_2(monkeypatch):
    """The watchdog, watching seeds (or ensemble members) trained at once, stops the second at the end of epoch 2,
    as it would one whose D collapsed; with `tricks.watchdog.patience=100` it checks once per epoch. (That the
    watchdog does stop the right seed on its own is tests/test_seeds.py's.) Returns the CLI arguments of such a
    3-epoch run of configs/smoke.yaml on the tiny data: `args(npz_path, out, store_uri, "--seeds", "0,1")`."""
    from ssgan.training.watchdog import Watchdog

    checks = []

    def verdicts(self, diversity=None):
        checks.append(1)
        return [None, "d_loss_collapse" if len(checks) > 1 else None]  # check 1: the end of epoch 1

    monkeypatch.setattr(Watchdog, "verdicts", verdicts)
    config = Path(__file__).resolve().parents[1] / "configs/smoke.yaml"
    return lambda npz_path, out, store_uri, *extra: [
        "-q", "train", "-c", str(config), *extra, "--out", str(out), "--set", "data.name=npz",
        "--set", f"data.path={npz_path}", "--set", "data.labels=6", "--set", "train.epochs=3",
        "--set", "tricks.watchdog.patience=100", "--set", f"tracking.uri={store_uri}",
        "--set", "tracking.sample_every=0"]
