"""One writer per warehouse file, across every deployment, process and run: an OS file lock on
`<warehouse>.lock` held around publish.

DuckDB admits one writer process per file. A deployment's concurrency limit only serializes runs
of that one deployment (the nightly run and an on-arrival run are two deployments), so the
publish step of every run takes this lock first; waiting runs queue (no timeout) and are never
dropped. The kernel releases the lock the moment its holder dies, so a run killed during publish
never blocks the next one. (A Prefect global concurrency limit was tried first: a killed holder
kept its slot until the lease expired, and forever when the server restarted in between, since
leases live in the server's memory while the slot count lives in its database.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

NOTICE_AFTER_SECONDS = 2.0


def lock_path(db: str | Path) -> Path:
    """The lock file beside the warehouse: `<warehouse>.lock`."""
    path = Path(db).expanduser().absolute()
    return path.with_name(path.name + ".lock")


@contextmanager
def warehouse_slot(db: str | Path, log=None) -> Iterator[Path]:  # noqa: ANN001
    """Hold the warehouse's single write slot for the duration of the block; wait for it (no
    timeout) while another run holds it, saying so once through `log` (a logger) if given."""
    path = lock_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    started = time.monotonic()
    try:
        lock.acquire(timeout=NOTICE_AFTER_SECONDS)
    except Timeout:
        if log is not None:
            log.info("waiting for another run to finish writing %s", Path(db))
        lock.acquire()  # queue: no timeout, never dropped
        if log is not None:
            log.info("got the warehouse after %.1f s", time.monotonic() - started)
    try:
        yield path
    finally:
        lock.release()
