"""`cleanset serve` and `cleanset watch`: serve the deployments, announce arriving files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.options import console, fail, split_commas


def _needs_server(what: str) -> None:
    from prefect.settings import PREFECT_API_URL

    start = ("start one with `uv run prefect server start --host 127.0.0.1` and "
             "`export PREFECT_API_URL=http://127.0.0.1:4200/api`")
    if not PREFECT_API_URL.value():
        fail(f"{what} needs a running Prefect server: {start}")
    from prefect import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        fail(f"{what} cannot reach the Prefect server at {PREFECT_API_URL.value()} "
              f"({str(problem).splitlines()[0] if str(problem) else type(problem).__name__}): "
              f"{start}")


def serve(
    prefect_file: Annotated[Path | None, typer.Option(
        "--prefect-file", help="Deployment definitions. Default: the project's prefect.yaml.")
    ] = None,
    deployment: Annotated[list[str] | None, typer.Option(
        "--deployment", help="Serve only these deployments (comma-separated or repeated). "
        "Default: all.", callback=split_commas)] = None,
    landing: Annotated[Path, typer.Option(
        "--landing", help="Landing folder to watch for new files.")] = Path("data/landing"),
    watch_files: Annotated[bool, typer.Option(
        "--watch/--no-watch", help="Watch --landing and emit an event per new file.")] = True,
    poll: Annotated[float, typer.Option(
        "--poll", help="Seconds between landing-folder scans and between queries for "
        "runs.", min=0.2)] = 2.0,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Runs executed at once by this process. Default: Prefect's.")] = None,
    notify: Annotated[str | None, typer.Option(
        "--notify", help="Notification block TYPE/NAME (e.g. slack-webhook/data-team): create "
        "the automation that sends cleanset.dataset.degraded events through it.")] = None,
) -> None:
    """Serve prefect.yaml's deployments from this process (no work pool needed).

    The nightly schedule, the on-arrival trigger and the concurrency limits are those of
    prefect.yaml. With --watch (default) a file dropped into a dataset folder of --landing
    (one with a cleanset.yaml) is announced as a `cleanset.file.arrived` event, which starts a
    run of that dataset folder; other files are only reported. Stop with Ctrl-C
    (or SIGTERM): schedules are paused and the trigger automations removed, so nothing creates
    runs while no process serves them.

    Example: PREFECT_API_URL=http://127.0.0.1:4200/api cleanset serve
    """
    from flows.serve import DEFAULT_PREFECT_FILE, read_deployment_specs
    from flows.serve import serve as serve_deployments
    from tasks.errors import CleansetError

    path = prefect_file or DEFAULT_PREFECT_FILE
    try:
        read_deployment_specs(path, deployment)
    except CleansetError as exc:
        fail(str(exc))
    _needs_server("serve")
    try:
        serve_deployments(path, deployment, landing if watch_files else None, poll, limit,
                          notify)
    except CleansetError as exc:
        fail(str(exc))


def watch(
    directory: Annotated[Path, typer.Argument(help="Landing folder (watched recursively).")] = Path(
        "data/landing"),
    poll: Annotated[float, typer.Option("--poll", help="Seconds between scans.", min=0.2)] = 2.0,
    state: Annotated[Path | None, typer.Option(
        "--state", help="Where seen content hashes are kept. Default: DIR/.cleanset-landing.json")
    ] = None,
    db: Annotated[Path, typer.Option(
        "--db", help="Warehouse the runs publish into: a seen file dropped again is announced "
        "again when its last run there failed.")] = Path("data/warehouse.duckdb"),
    retry: Annotated[Path | None, typer.Option(
        "--retry", help="Forget FILE's content in the state file, so the watcher (this one, or "
        "one already running) announces it again; then exit.", metavar="FILE")] = None,
) -> None:
    """Emit a Prefect event for each new complete file in DIR (for deployments served elsewhere).

    A file counts once its size and modification time hold still for one poll; temporary names
    (.part, .tmp, ...) and hidden files are ignored; content already announced (by sha256, kept in
    the state file) is not announced again, also across restarts. The event,
    `cleanset.file.arrived`, carries path, sha256, size, dataset and folder (the file's dataset
    folder under DIR) in its payload; a file outside a dataset folder (no cleanset.yaml) is
    reported as `cleanset.file.unregistered` instead. A seen file is skipped with a logged
    reason; one dropped
    again (copied or touched) after its run failed is announced again. Stop with Ctrl-C.

    Example: cleanset watch data/landing --retry data/landing/churn/2026-01-02.csv
    """
    if retry is not None:
        from tasks.landing import STATE_FILE, forget

        if not retry.is_file():
            fail(f"--retry {retry}: no such file")
        state_file = state or directory / STATE_FILE
        digest, record = forget(state_file, retry)
        if record is None:
            console.print(f"{retry} ({digest[:12]}) is not in {state_file}: the watcher will "
                          "announce it as new", soft_wrap=True)
        else:
            console.print(f"forgot {retry} ({digest[:12]}, announced {record.get('at')}) in "
                          f"{state_file}: the watcher announces it again at its next poll",
                          soft_wrap=True)
        return
    _needs_server("watch")
    import signal

    from flows.watch import watch as watch_folder

    def _interrupt(*_):  # noqa: ANN002, ANN202 - SIGTERM stops like Ctrl-C: queued events are sent
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        watch_folder(directory, poll, state_path=state, db=db)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # DIR is a file, the state file is a folder, no permission, ...
        fail(f"cannot watch {directory}: {exc}")
    finally:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)
