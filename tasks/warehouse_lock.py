"""One writer per warehouse file, across every deployment and process: a Prefect global
concurrency limit (limit 1) named after the warehouse's absolute path.

DuckDB admits one writer process per file. A deployment's concurrency limit only serializes runs
of that one deployment (the nightly run and an on-arrival run are two deployments), so the
publish step of every run takes this slot first. Waiting runs queue (no timeout) and are never
dropped; a crashed holder's lease expires after `LEASE_SECONDS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LEASE_SECONDS = 600.0


def limit_name(db: str | Path) -> str:
    """`cleanset-warehouse-<stem>-<sha256 of the absolute path, 12 hex>`: stable per file."""
    path = Path(db).expanduser().absolute()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "-" for c in path.stem.lower())[:30]
    return f"cleanset-warehouse-{stem}-{digest}"


def ensure_limit(name: str) -> None:
    """Create the limit (1 slot) if it does not exist yet; tolerate a concurrent creator."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass


@contextmanager
def warehouse_slot(db: str | Path) -> Iterator[str]:
    """Hold the warehouse's single write slot for the duration of the block."""
    from prefect.concurrency.sync import concurrency

    name = limit_name(db)
    ensure_limit(name)
    with concurrency(name, occupy=1, timeout_seconds=None, lease_duration=LEASE_SECONDS,
                     strict=True):
        yield name
