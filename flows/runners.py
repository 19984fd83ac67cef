"""The task runner, chosen in one place: a thread pool on this machine (default) or a Dask
cluster through prefect-dask (`--runner dask`, optionally `--address tcp://scheduler:8786`).

Only the submitted tasks (one per model, fold and pass: the expensive part) go to the runner;
the other stages run in the flow's own process. Dask workers must see the same file system
paths as the flow (the work folder and the warehouse), e.g. a shared volume.
"""

from __future__ import annotations

import os

RUNNERS = ("threads", "dask")


def task_runner(runner: str = "threads", workers: int = 0, address: str | None = None):  # noqa: ANN201
    """A Prefect task runner. `workers` = 0: one per CPU core. `address`: an existing Dask
    scheduler; without it a temporary LocalCluster of `workers` single-threaded processes."""
    from tasks.errors import CleansetError

    if runner not in RUNNERS:
        raise CleansetError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    if address and runner != "dask":
        raise CleansetError("--address names a Dask scheduler: use it with --runner dask")
    n = workers or os.cpu_count() or 2
    if runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=n)
    from prefect_dask import DaskTaskRunner

    if address:
        reachable(address)
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast, with a message, when no Dask scheduler answers at `address` (otherwise the
    flow would crash after a 30 s timeout with Dask's tracebacks)."""
    from distributed import Client

    from tasks.errors import CleansetError

    try:
        Client(address, timeout=timeout).close()
    except (OSError, TimeoutError, ValueError) as exc:
        raise CleansetError(f"no Dask scheduler answers at {address} ({exc}); start one "
                            "(`dask scheduler`) or drop --address for a local cluster") from None
