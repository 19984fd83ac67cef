"""One writer per warehouse: the global concurrency slot serializes holders, queued not dropped;
`cleanset serve` / `watch` explain what they need instead of failing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.warehouse_lock import limit_name, warehouse_slot


def test_limit_name_is_per_file():
    here = Path("data/warehouse.duckdb")
    assert limit_name(here) == limit_name(here.absolute())
    assert limit_name("a/warehouse.duckdb") != limit_name("b/warehouse.duckdb")
    assert limit_name("data/My Warehouse.duckdb").startswith("cleanset-warehouse-my-warehouse-")


@pytest.mark.usefixtures("prefect_server")
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
    with warehouse_slot(tmp_path / "other.duckdb"):  # another file has its own slot
        with warehouse_slot(tmp_path / "third.duckdb"):
            pass


def test_serve_and_watch_need_a_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    for command in (["serve"], ["watch", "landing"]):
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *command], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert "needs a running Prefect server" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_serve_names_an_unknown_deployment(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--deployment", "nope"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no deployment named nope" in proc.stderr and "demo-nightly" in proc.stderr
