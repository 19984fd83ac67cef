"""`--runner dask --address ...`: the fold fits run on a Dask cluster through prefect-dask."""

from __future__ import annotations

import duckdb
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from typer.testing import CliRunner

from flows.cli import app
from flows.runners import task_runner
from tasks.errors import CleansetError
from tests.conftest import blobs

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_runner_choice_is_validated():
    with pytest.raises(CleansetError, match="unknown runner"):
        task_runner("ray")
    with pytest.raises(CleansetError, match="use it with --runner dask"):
        task_runner("threads", address="tcp://127.0.0.1:8786")
    # without --address: a temporary local cluster, started only when the flow runs (the
    # --address form is checked against a live scheduler below, and a dead one just after)
    assert type(task_runner("dask")).__name__ == "DaskTaskRunner"


def test_fold_tasks_run_on_a_dask_cluster(workdir, monkeypatch):
    from distributed import Client, LocalCluster, get_task_stream
    from prefect.settings import get_current_settings

    monkeypatch.setenv("PREFECT_API_URL", str(get_current_settings().api.url))
    blobs(60).to_csv(workdir / "onDask.csv", index=False)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:
            result = CliRunner().invoke(app, [
                "run", "onDask.csv", "--label", "label", "--db", "wh.duckdb", "--quiet",
                "--model", "logreg", "--prune", "replace", "--runner", "dask",
                "--address", cluster.scheduler_address])
        assert result.exit_code == 0, result.output
        ran_on_dask = len(stream.data)
    with get_client(sync_client=True) as api:
        flow_runs = api.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["clean-onDask"])))
        assert len(flow_runs) == 1 and flow_runs[0].state.is_completed()
        task_runs = api.read_task_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["clean-onDask"])))
    folds = [t for t in task_runs if t.name.startswith("estimate-")]
    assert len(folds) == 10 and all(t.state.is_completed() for t in folds)  # 5 folds x 2 passes
    assert ran_on_dask == len(folds)  # exactly the submitted fold tasks went to the cluster
    with duckdb.connect(str(workdir / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT n_rows FROM runs").fetchall() == [(60,)]


def test_an_unreachable_scheduler_is_a_message():
    from flows.runners import reachable

    with pytest.raises(CleansetError, match="no Dask scheduler answers at tcp://127.0.0.1:1"):
        reachable("tcp://127.0.0.1:1", timeout=1)
