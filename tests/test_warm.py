"""The warm process (flows/warm.py): a `cleanset run` leaves a process that has imported the
libraries; the next run with the same code and settings is served by it, on the caller's
terminal, with the caller's exit code and messages; another setting starts its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import blobs

pytestmark = pytest.mark.slow  # CLI processes and a warm process of their own

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cli(tmp_path, prefect_server):  # noqa: ARG001 - the session's Prefect server
    """`python -m flows.cli ...` in tmp_path with warm processes on (CLEANSET_SERVER_KEEP > 0),
    their sockets in a folder of this test (TMPDIR, short: a socket path has ~100 characters);
    the waiting processes are stopped after."""
    from prefect.settings import get_current_settings

    sockets = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))
    (tmp_path / "tmp").symlink_to(sockets)
    env = {**os.environ, "COLUMNS": "200", "CLEANSET_SERVER_KEEP": "120",
           "TMPDIR": str(sockets), "PYTHONPATH": str(ROOT),
           "PREFECT_API_URL": str(get_current_settings().api.url)}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=tmp_path,
                              env={**env, **extra}, capture_output=True, text=True, timeout=300)

    yield run
    subprocess.run([sys.executable, "-c", "from flows.warm import stop_waiting; stop_waiting()"],
                   env=env, cwd=tmp_path, timeout=60)
    shutil.rmtree(sockets, ignore_errors=True)


def waiting(tmp_path: Path, timeout: float = 120.0) -> list[Path]:
    """The sockets of waiting processes, once one is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((tmp_path / "tmp").glob("cleanset-*/*.sock"))
        if found:
            return found
        time.sleep(0.2)
    return []


def test_the_next_run_is_served_by_the_waiting_process(tmp_path, cli):
    blobs(120).to_csv(tmp_path / "a.csv", index=False)
    blobs(150, seed=1).to_csv(tmp_path / "b.csv", index=False)

    first = cli("run", "a.csv", "--label", "label", "--db", "w.duckdb")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "preloaded" not in first.stdout  # nothing was waiting: it ran in its own process
    assert waiting(tmp_path), "the run left no waiting process"

    second = cli("run", "b.csv", "--label", "label", "--db", "w.duckdb")
    assert second.returncode == 0, second.stderr[-2000:]
    # served by the waiting process, and its summary reached this process's stdout
    assert "preloaded by a waiting process" in second.stdout
    assert "b_clean" in second.stdout
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM b_clean").fetchall()[0][0] == 150
        assert sorted(r[0] for r in con.sql("SELECT dataset FROM runs").fetchall()) == ["a", "b"]

    # a mistake in a served command: its message on this stderr, its exit code here
    assert waiting(tmp_path), "the served run left no waiting process for the next one"
    typo = cli("run", "b.csv", "--label", "lable", "--db", "w.duckdb")
    assert typo.returncode == 2
    assert "lable" in typo.stderr and "Traceback" not in typo.stderr

    # other settings read at import (here the thread count): not served by this process
    assert waiting(tmp_path)
    other = cli("run", "b.csv", "--label", "label", "--db", "w.duckdb", "--refresh",
                OMP_NUM_THREADS="2")
    assert other.returncode == 0, other.stderr[-2000:]
    assert "preloaded" not in other.stdout
    # ... and the process it leaves stops the one waiting for the old settings in this folder
    def pid_files() -> int:
        return len(list((tmp_path / "tmp").glob("cleanset-*/*.pid")))

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and pid_files() != 1:
        time.sleep(0.2)
    assert pid_files() == 1


def test_help_and_verbose_run_in_their_own_process(tmp_path, cli):
    from flows.warm import eligible

    assert eligible(["run", "x.csv", "--label", "y"])
    assert eligible(["demo"])
    assert not eligible(["run", "x.csv", "--verbose"])
    assert not eligible(["run", "--help"])
    assert not eligible(["query", "SELECT 1"])
    assert not eligible([])
    helped = cli("run", "--help")
    assert helped.returncode == 0 and "--label" in helped.stdout
    assert not list((tmp_path / "tmp").glob("cleanset-*/*.sock"))  # --help leaves none behind
