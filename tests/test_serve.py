"""Deployments end to end against a real local Prefect server started here (subprocess, temporary
PREFECT_HOME, free port, analytics off): `cleanset serve` from prefect.yaml, files dropped into a
landing folder, runs published in DuckDB; stopping serve leaves no trigger; `prefect deploy --all`
with a process work pool."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from tests.conftest import blobs

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # a Prefect server and `cleanset serve` processes of its own
RUN_TIMEOUT = 300  # s, for one cleaning run of 150 rows including the served subprocess start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 1.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect_home_serve")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
           # a queued run re-checks its deployment slot every 5 s (default 30) to keep this short
           "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "5"}
    for key in ("PREFECT_PROFILES_PATH", "PREFECT_API_KEY"):
        env.pop(key, None)
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert proc.poll() is None, (home / "server.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    _wait(healthy, 120, "the Prefect server")
    yield {"url": url, "env": env, "home": home}
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def client(server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server["url"]}):
        with get_client(sync_client=True) as c:
            yield c


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The user's folder: served runs write data/warehouse.duckdb and read data/landing/."""
    root = tmp_path_factory.mktemp("project")
    for dataset in ("blobs", "pair"):  # dataset folders: their settings, then their batches
        (root / "data" / "landing" / dataset).mkdir(parents=True)
        (root / "data" / "landing" / dataset / "cleanset.yaml").write_text("label: label\n")
    return root


@pytest.fixture(scope="module")
def served(server, client, project):
    """`cleanset serve` (all deployments of prefect.yaml, watcher on) as a subprocess."""
    log = open(project / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(BIN / "cleanset"), "serve", "--landing", "data/landing",
                             "--poll", "1"], cwd=project, env=server["env"], stdout=log,
                            stderr=subprocess.STDOUT)

    def ready():  # noqa: ANN202
        assert proc.poll() is None, (project / "serve.log").read_text()
        try:
            dep = client.read_deployment_by_name("cleanset-dataset/on-arrival")
        except Exception:  # noqa: BLE001 - not registered yet
            return None
        return dep if _owned_automations(client, dep.id) else None

    _wait(ready, 120, "the served deployments")
    yield {"proc": proc, "log": project / "serve.log"}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    log.close()


def _owned_automations(client, deployment_id) -> list:  # noqa: ANN001
    return [a for a in client.read_automations()
            if any(getattr(x, "deployment_id", None) == deployment_id for x in a.actions)]


def _arrival_runs(client) -> list:  # noqa: ANN001
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["on-arrival"])),
        sort=FlowRunSort.START_TIME_ASC)


def _drop(path: Path, frame) -> Path:  # noqa: ANN001
    """Write like a careful producer: a .part file, renamed when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    frame.to_csv(part, index=False)
    part.rename(path)
    return path.absolute()


def _published(project: Path) -> list[tuple]:
    db = project / "data" / "warehouse.duckdb"
    if not db.exists():
        return []
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            return con.execute("SELECT dataset, source, flow_run_id, run_id FROM runs "
                               "ORDER BY finished_at").fetchall()
    except duckdb.Error:  # being written right now
        return []


def _finished(client, n: int, timeout: float = RUN_TIMEOUT) -> list:  # noqa: ANN001
    def done():  # noqa: ANN202
        runs = _arrival_runs(client)
        failed = [r for r in runs if r.state and r.state.is_final() and not r.state.is_completed()]
        assert not failed, f"run {failed[0].name} ended {failed[0].state.name}: {failed[0].state}"
        complete = [r for r in runs if r.state and r.state.is_completed()]
        return complete if len(complete) >= n else None

    return _wait(done, timeout, f"{n} completed on-arrival run(s)", interval=2)


def test_nightly_schedule_registered(served, client):
    dep = client.read_deployment_by_name("cleanset-nightly/nightly")
    assert [(s.schedule.cron, s.schedule.timezone) for s in dep.schedules] == [("0 2 * * *",
                                                                                "UTC")]
    assert dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert dep.parameters["landing"] == "data/landing"
    arrival = client.read_deployment_by_name("cleanset-dataset/on-arrival")
    (automation,) = _owned_automations(client, arrival.id)
    assert automation.trigger.expect == {"cleanset.file.arrived"}
    assert automation.actions[0].parameters["folder"] == "{{ event.payload.folder }}"


def test_dropped_file_is_cleaned_and_published(served, client, project):
    started = time.monotonic()
    path = _drop(project / "data" / "landing" / "blobs" / "b1.csv", blobs(150, seed=1))
    (run,) = _finished(client, 1)
    assert run.parameters["folder"] == str(path.parent)
    assert run.parameters["arrived"] == str(path)
    published = _wait(lambda: [r for r in _published(project) if r[2] == str(run.id)], 30,
                      "the run in DuckDB")
    assert published[0][:2] == ("blobs", str(path.parent))
    assert time.monotonic() - started < RUN_TIMEOUT
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    arts = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    kinds = {(a.key, a.type) for a in arts}
    assert {("cleanset-blobs", "table"), ("cleanset-blobs-top-issues", "markdown"),
            ("cleanset-blobs-folds", "progress")} <= kinds


def test_two_files_give_two_serialized_runs(served, client, project):
    before = len(_arrival_runs(client))
    landing = project / "data" / "landing" / "pair"
    a = _drop(landing / "a.csv", blobs(150, seed=2))
    b = _drop(landing / "b.csv", blobs(150, seed=3))
    _drop(project / "data" / "landing" / "blobs" / "again.csv", blobs(150, seed=1))  # seen
    _drop(project / "data" / "landing" / "stray.csv", blobs(30, seed=4))  # no dataset folder
    runs = _finished(client, before + 2)
    new = [r for r in runs if r.parameters["folder"] == str(landing)]
    assert sorted(r.parameters["arrived"] for r in new) == sorted([str(a), str(b)])
    first, second = sorted(new, key=lambda r: r.start_time)
    assert first.end_time <= second.start_time, "the two runs overlapped"
    waited = [st.name for st in client.read_flow_run_states(second.id)]
    assert "AwaitingConcurrencySlot" in waited  # queued behind the first, not dropped

    def both():  # noqa: ANN202 - both files are batches of "pair", cleaned together
        db = project / "data" / "warehouse.duckdb"
        try:
            with duckdb.connect(str(db), read_only=True) as con:
                files = con.execute("SELECT file FROM batches WHERE dataset = 'pair' AND "
                                    "status = 'accepted'").fetchall()
                rows = con.execute("SELECT count(*) FROM pair_clean").fetchall()[0][0]
        except duckdb.Error:
            return None
        return (files, rows) if len(files) == 2 else None

    files, rows = _wait(both, 30, "both batches in DuckDB")
    assert sorted(f for (f,) in files) == sorted([str(a), str(b)])
    assert rows > 250  # the two batches' 300 rows, less any dropped
    time.sleep(4)  # the copy of b1.csv (same content) and stray.csv must not have started a run
    assert len(_arrival_runs(client)) == before + 2
    assert "not cleaned: " in served["log"].read_text()  # stray.csv, reported


def test_stopping_serve_leaves_no_trigger(server, served, client, project):
    arrival = client.read_deployment_by_name("cleanset-dataset/on-arrival")
    assert _owned_automations(client, arrival.id)
    served["proc"].send_signal(signal.SIGTERM)
    assert served["proc"].wait(timeout=60) == 0, served["log"].read_text()
    assert "removed 1 trigger automation" in served["log"].read_text()
    assert _owned_automations(client, arrival.id) == []
    nightly = client.read_deployment_by_name("cleanset-nightly/nightly")
    assert nightly.paused  # Prefect pauses served deployments (and their schedules) on shutdown
    before = len(_arrival_runs(client))
    # from a separate process: this one's events client may be bound to the session's server
    code = ("from prefect.events import emit_event; from prefect.events.worker import "
            "EventsWorker; emit_event('cleanset.file.arrived', resource={'prefect.resource.id': "
            f"'cleanset.file.x'}}, payload={{'path': {str(project / 'no.csv')!r}, "
            "'dataset': 'no'}); EventsWorker.drain_all(timeout=10)")
    subprocess.run([sys.executable, "-c", code], env=server["env"], check=True, timeout=120)

    def received() -> bool:  # the event reached the server: only the trigger is gone
        found = client.request("POST", "/events/filter", json={
            "filter": {"resource": {"id": ["cleanset.file.x"]}}, "limit": 5}).json()
        return bool(found["events"])

    _wait(received, 20, "the event on the server")
    time.sleep(5)
    assert len(_arrival_runs(client)) == before


def test_cleanset_watch_emits_one_event_per_new_file(server, client, tmp_path):
    landing = tmp_path / "landing"
    log = open(tmp_path / "watch.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(BIN / "cleanset"), "watch", str(landing), "--poll", "0.5"],
                            env=server["env"], stdout=log, stderr=subprocess.STDOUT)
    try:
        (landing / "w").mkdir(parents=True)
        (landing / "w" / "cleanset.yaml").write_text("label: label\n")
        first = _drop(landing / "w" / "w1.csv", blobs(20, seed=7))
        second = _drop(landing / "w" / "same_bytes.csv", blobs(20, seed=7))
        stray = _drop(landing / "stray.csv", blobs(20, seed=8))

        def events() -> list:
            found = client.request("POST", "/events/filter", json={
                "filter": {"event": {"name": ["cleanset.file.arrived"]}}, "limit": 50}).json()
            return [e for e in found["events"] if e["payload"]["path"].startswith(str(landing))]

        (event,) = _wait(events, 30, "the watcher's event")
        # both settle in one poll; whichever is announced, the other is the same content
        assert event["payload"]["path"] in (str(first), str(second))
        assert event["payload"]["dataset"] == "w"
        assert event["payload"]["folder"] == str(landing / "w")
        assert event["payload"]["size"] == first.stat().st_size

        def unregistered() -> list:
            found = client.request("POST", "/events/filter", json={
                "filter": {"event": {"name": ["cleanset.file.unregistered"]}},
                "limit": 50}).json()
            return [e for e in found["events"] if e["payload"]["path"] == str(stray)]

        (reported,) = _wait(unregistered, 30, "the unregistered file's event")
        assert "landing root" in reported["payload"]["why"]
        time.sleep(3)
        assert len(events()) == 1  # the copy with the same content was not announced
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "watch.log").read_text()
        log.close()


def test_prefect_deploy_all_with_a_process_pool(server, client, tmp_path):
    env = {**server["env"], "CLEANSET_HOME": str(tmp_path)}
    prefect = str(BIN / "prefect")
    made = subprocess.run([prefect, "work-pool", "create", "cleanset", "--type", "process",
                           "--overwrite"], env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    out = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("cleanset-nightly/nightly", "cleanset-dataset/on-arrival"):
        dep = client.read_deployment_by_name(name)
        assert dep.work_pool_name == "cleanset"
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
            "directory": str(tmp_path)}}]
    nightly = client.read_deployment_by_name("cleanset-nightly/nightly")
    assert [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules] == [
        ("0 2 * * *", "UTC")]
    arrival = client.read_deployment_by_name("cleanset-dataset/on-arrival")
    (automation,) = _owned_automations(client, arrival.id)
    assert automation.actions[0].parameters == {
        "folder": "{{ event.payload.folder }}", "arrived": "{{ event.payload.path }}",
        "db": "data/warehouse.duckdb"}


@pytest.fixture(autouse=True)
def _no_stray_tools():
    assert shutil.which(str(BIN / "cleanset")), "the cleanset console script is not installed"
