"""One writer per warehouse: the file lock serializes holders across processes, queued not
dropped, and a killed holder frees it at once; `cleanset serve` / `watch` explain what they need
instead of failing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.warehouse_lock import lock_path, warehouse_slot


def test_lock_file_is_per_warehouse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = Path("data/warehouse.duckdb")
    assert lock_path(here) == lock_path(here.absolute()) == tmp_path / "data/warehouse.duckdb.lock"
    assert lock_path("a/warehouse.duckdb") != lock_path("b/warehouse.duckdb")


def test_holders_of_one_warehouse_take_turns(tmp_path):
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with warehouse_slot(tmp_path / "w.duckdb"):
                start = time.monotonic()
                time.sleep(1.0)
                spans.append((start, time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(spans) == 2  # both ran: the second waited, it was not dropped
    first, second = sorted(spans)
    assert first[1] <= second[0]
    with warehouse_slot(tmp_path / "w.duckdb"):  # while this warehouse is held ...
        started = time.monotonic()
        with warehouse_slot(tmp_path / "other.duckdb"):  # ... another one is free at once
            assert time.monotonic() - started < 1.0


HOLD = """
import sys, time
from tasks.warehouse_lock import warehouse_slot
with warehouse_slot(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow  # starts a process
def test_a_killed_holder_frees_the_warehouse_at_once(tmp_path):
    db = tmp_path / "w.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        got = threading.Event()

        def take() -> None:
            with warehouse_slot(db):
                got.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not got.wait(1.5)  # held by the other process: we queue
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        assert got.wait(10), "the lock of a killed process was not released"
        assert time.monotonic() - started < 12
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow  # starts a process
def test_serve_and_watch_need_a_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    for command in (["serve"], ["watch", "landing"]):
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *command], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert "needs a running Prefect server" in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.slow  # starts a process
def test_serve_names_an_unknown_deployment(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--deployment", "nope"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no deployment named nope" in proc.stderr and "nightly" in proc.stderr


@pytest.mark.slow  # starts a process
def test_serve_says_when_the_server_does_not_answer(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "serve"],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "cannot reach the Prefect server at http://127.0.0.1:9/api" in proc.stderr
    assert "Traceback" not in proc.stderr
