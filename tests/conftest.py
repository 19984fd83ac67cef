"""Shared fixtures: a real (temporary) Prefect server for flow tests, small frames built in code."""

from __future__ import annotations

import os

for _k, _v in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "GX_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_k, _v)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A temporary Prefect server and PREFECT_HOME for the whole test session."""
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect_home")
    with temporary_settings({PREFECT_HOME: str(home)}):
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture()
def workdir(tmp_path, monkeypatch) -> Path:
    """Run each test in its own folder so relative defaults (data/, expectations/) are isolated."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def blobs(n: int = 300, k: int = 3, d: int = 4, seed: int = 0) -> pd.DataFrame:
    """Well separated Gaussian classes: an easy case where planted flips are clearly findable."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centers = rng.normal(0, 6, size=(k, d))
    X = centers[y] + rng.normal(0, 1, size=(n, d))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(d)])
    frame["label"] = np.array(["ant", "bee", "cat", "dog", "eel"])[y]
    return frame
