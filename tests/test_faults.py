"""Faults: a task failing once is retried and the run completes; the process SIGKILLed during
estimate or during publish leaves the warehouse exactly as before (table checksums) and the
next run completes; a warehouse held by another process is retried with backoff, then a clear
failure; a truncated input is a message, not a traceback."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from typer.testing import CliRunner

import tasks.estimate
import tasks.publish
from flows.clean import clean_dataset
from flows.cli import app
from tasks.errors import CleansetError
from tasks.publish import connect
from tasks.spec import DatasetSpec
from tests.conftest import blobs
from tests.warehouse import checksums, kill_at_planted_hang

pytestmark = pytest.mark.usefixtures("prefect_server")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def api_env(monkeypatch):
    from prefect.settings import get_current_settings

    url = str(get_current_settings().api.url)
    monkeypatch.setenv("PREFECT_API_URL", url)
    return {**os.environ, "PREFECT_API_URL": url, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def cli_in_process(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, ["run", *args, "--quiet"])


def test_task_failing_on_first_attempt_is_retried_and_the_run_completes(workdir, monkeypatch):
    """A transient error in one fold fit (first attempt only): Prefect retries that task and the
    run publishes as if nothing happened."""
    real = tasks.estimate.fit_predict_fold
    failures = []

    def flaky(X, y, folds, fold, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if fold == 0 and not failures:
            failures.append(fold)
            raise OSError("transient: worker lost its scratch disk")
        return real(X, y, folds, fold, *args, **kwargs)

    monkeypatch.setattr(tasks.estimate, "fit_predict_fold", flaky)
    blobs(60).to_csv(workdir / "d.csv", index=False)
    spec = DatasetSpec(source="d.csv", label="label", db=str(workdir / "wh.duckdb"),
                       prune="off", model="logreg")
    state = clean_dataset(spec, return_state=True)
    assert state.is_completed() and failures == [0]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    fold0 = [r for r in runs if r.name.startswith("estimate-logreg") and r.name.endswith("fold-0")]
    assert len(fold0) == 1 and fold0[0].run_count == 2 and fold0[0].state.is_completed()
    assert all(r.state.is_completed() for r in runs)
    with duckdb.connect(spec.db, read_only=True) as con:
        assert con.execute("SELECT n_rows, status FROM runs").fetchall() == [(60, "completed")]


def _killed_run(workdir: Path, env: dict, stage: str, source: str) -> None:
    """Start the CLI with a hang planted at `stage`, wait until it hangs there, SIGKILL it."""
    assembled = set((workdir / "work").glob("pred_probs/*.npy"))

    def still_inside() -> None:  # estimate: no probabilities were assembled yet
        if stage == "estimate":
            assert set((workdir / "work").glob("pred_probs/*.npy")) == assembled

    kill_at_planted_hang(["run", source, "--label", "label", "--db", "wh.duckdb", "--quiet"],
                         workdir, env, stage, timeout=180, while_hanging=still_inside)


def test_sigkill_during_estimate_and_during_publish_leaves_the_warehouse_as_before(
        workdir, api_env):
    blobs(60, seed=1).to_csv(workdir / "d.csv", index=False)
    assert cli_in_process("d.csv", "--label", "label", "--db", "wh.duckdb").exit_code == 0
    before = checksums(workdir / "wh.duckdb")
    blobs(90, seed=2).to_csv(workdir / "d.csv", index=False)  # tonight's data: a new run

    _killed_run(workdir, api_env, "estimate", "d.csv")
    assert checksums(workdir / "wh.duckdb") == before

    _killed_run(workdir, api_env, "publish", "d.csv")  # killed with every row inserted
    assert checksums(workdir / "wh.duckdb") == before

    result = cli_in_process("d.csv", "--label", "label", "--db", "wh.duckdb")
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(workdir / "wh.duckdb"), read_only=True) as con:
        assert sorted(con.execute("SELECT n_rows FROM runs").fetchall()) == [(60,), (90,)]
        assert con.execute("SELECT count(*) FROM issues").fetchall() == [(150,)]
        n_clean = con.execute("SELECT n_clean_rows FROM runs WHERE n_rows = 90").fetchall()
        assert con.execute("SELECT count(*) FROM d_clean").fetchall() == n_clean


def _hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process with a write connection to db, for `seconds`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(float(sys.argv[2])); con.close()",
         str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_locked_warehouse_is_retried_with_backoff_then_a_clear_failure(tmp_path):
    db = tmp_path / "wh.duckdb"
    duckdb.connect(str(db)).close()
    holder = _hold_lock(db, 60)
    try:
        started = time.monotonic()
        with pytest.raises(CleansetError, match="locked by another process after 3 attempts"):
            connect(db, attempts=3, first_delay=0.2)
        assert time.monotonic() - started >= 0.2 + 0.4  # two backoff sleeps
    finally:
        holder.kill()
        holder.wait()


def test_lock_released_during_backoff_then_connect_succeeds(tmp_path):
    db = tmp_path / "wh.duckdb"
    duckdb.connect(str(db)).close()
    holder = _hold_lock(db, 1.0)
    started = time.monotonic()
    con = connect(db, attempts=8, first_delay=0.25)
    waited = time.monotonic() - started
    con.close()
    holder.wait()
    assert 0.5 <= waited < 10


def test_run_against_a_locked_warehouse_fails_clearly_and_publishes_nothing(
        workdir, api_env, monkeypatch):
    blobs(60).to_csv(workdir / "d.csv", index=False)
    assert cli_in_process("d.csv", "--label", "label", "--db", "wh.duckdb").exit_code == 0
    before = checksums(workdir / "wh.duckdb")
    blobs(90, seed=3).to_csv(workdir / "d.csv", index=False)
    # fewer, shorter attempts than the default ~18 s of backoff, to keep the test short
    monkeypatch.setattr(tasks.publish, "connect",
                        functools.partial(connect, attempts=3, first_delay=0.1))
    holder = _hold_lock(workdir / "wh.duckdb", 120)
    try:
        result = cli_in_process("d.csv", "--label", "label", "--db", "wh.duckdb")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "locked by another process" in result.output
    assert "Traceback" not in result.output
    assert checksums(workdir / "wh.duckdb", published_only=True) == before


def test_truncated_input_through_the_real_cli_process(workdir, api_env):
    blobs(60).to_parquet(workdir / "d.parquet", index=False)
    data = (workdir / "d.parquet").read_bytes()
    (workdir / "d.parquet").write_bytes(data[: len(data) // 2])
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "d.parquet", "--label",
                           "label", "--db", "wh.duckdb"], cwd=workdir, env=api_env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "error:" in out and "cannot read" in out
    assert "Traceback" not in out
    with duckdb.connect(str(workdir / "wh.duckdb"), read_only=True) as con:  # only the failure
        assert con.execute("SELECT status, stage FROM runs").fetchall() == [("failed", "ingest")]
        assert con.execute("SELECT count(*) FROM issues").fetchall() == [(0,)]
