"""Shared fixtures: a real (temporary) Prefect server for flow tests, small frames built in code.

Fast and slow tests: `make test-fast` runs `pytest -m "not slow"`, the tests that start no Prefect
server, no flow run and no other process. A test is marked `slow` here, at collection, when it
uses a fixture of SLOW_FIXTURES (directly or through another fixture: `prefect_server` covers
every flow run), or by hand with `@pytest.mark.slow`. A test that is not marked slow and starts a
Python, Prefect, cleanset or browser process anyway fails, naming the fix, so a new slow test
cannot land in the fast set unnoticed (in `make test` as well as in `make test-fast`).
"""

from __future__ import annotations

import os

# CLEANSET_SERVER_KEEP=0: a CLI process started by a test stops its Prefect server when it ends
# (no server outlives the tests; tests/test_local_server.py tests the shared one).
for _k, _v in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "GX_ANALYTICS_ENABLED": "false", "CLEANSET_SERVER_KEEP": "0"}.items():
    os.environ.setdefault(_k, _v)

import tempfile  # noqa: E402

# Each test process (each pytest-xdist worker) gets a PREFECT_HOME of its own, so the temporary
# Prefect servers that CLI subprocesses start never share (or lock) one SQLite database, and no
# test touches the user's ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="cleanset-tests-prefect-")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

# Fixtures that make a test slow: a Prefect server (so any flow run) or a process of their own.
# (`invoke` is tests/test_cli.py's: the CLI in a process of its own.)
SLOW_FIXTURES = {"prefect_server", "invoke"}
# Programs a fast test may not start: a Python interpreter costs seconds of imports.
SLOW_PROGRAMS = ("python", "prefect", "cleanset", "chromium", "uvicorn")


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _slow_program(args) -> str | None:  # noqa: ANN001
    """The program name when `args` (Popen's first argument) starts a slow process."""
    first = args if isinstance(args, str | bytes | Path) else (args[0] if args else "")
    first = str(first.decode() if isinstance(first, bytes) else first).split()[0:1]
    name = Path(first[0]).name if first else ""
    if first and (Path(first[0]) == Path(sys.executable) or name.startswith(SLOW_PROGRAMS)
                  or Path(first[0]).parent == Path(sys.executable).parent):
        return name
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ANN001, ANN201
    """Around a test not marked slow (its fixtures' setup and teardown included), starting a
    Python/Prefect/browser process raises, naming the fix."""
    if item.get_closest_marker("slow"):
        yield
        return
    real = subprocess.Popen

    class Guarded(real):  # type: ignore[misc, valid-type]
        def __init__(self, args, *rest, **kw) -> None:  # noqa: ANN001, ANN002, ANN003
            name = _slow_program(args)
            if name:
                raise RuntimeError(
                    f"{item.nodeid} starts a process ({name}) but is not marked slow: add "
                    "@pytest.mark.slow (or use a fixture of SLOW_FIXTURES in tests/conftest.py) "
                    "so that `make test-fast` leaves it out")
            super().__init__(args, *rest, **kw)

    subprocess.Popen = Guarded
    try:
        yield
    finally:
        subprocess.Popen = real


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A temporary Prefect server and PREFECT_HOME for the whole test session."""
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect_home")
    with temporary_settings({PREFECT_HOME: str(home)}):
        # generous: on a 2-core machine shared with other work a fresh clone's first server
        # start (imports, database migrations) took over 120 s
        with prefect_test_harness(server_startup_timeout=600):
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


def flip_labels(X: np.ndarray, y: np.ndarray, shape: str, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, out-of-fold logistic-regression probabilities of them) for 3 classes with
    10% of the rows flipped: `symmetric` (random rows, any other class), `feature_dependent`
    (the rows a reference model finds hardest, to its runner-up class: the annotator's
    mistake); any other shape flips nothing."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    n = len(y)
    noisy, k = y.copy(), n // 10
    if shape == "symmetric":
        rows = rng.choice(n, k, replace=False)
        noisy[rows] = (y[rows] + rng.integers(1, 3, k)) % 3
    elif shape == "feature_dependent":
        ref = cross_val_predict(LogisticRegression(), X, y, cv=5, method="predict_proba")
        other = ref.copy()
        other[np.arange(n), y] = -1.0
        rows = np.argsort(ref[np.arange(n), y] - other.max(axis=1))[:k]
        noisy[rows] = other[rows].argmax(axis=1)
    probs = cross_val_predict(LogisticRegression(), X, noisy, cv=5, method="predict_proba")
    return noisy, probs
