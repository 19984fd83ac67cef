"""Test helpers: run the CLI in-process, and fingerprint a warehouse to prove it did not change."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb


def checksums(db: Path) -> dict[str, tuple[int, str]]:
    """Per table: (row count, md5 over the sorted md5s of its rows): equal iff same content."""
    with duckdb.connect(str(db), read_only=True) as con:
        names = sorted(t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall())
        out = {}
        for t in names:
            q = '"' + t.replace('"', '""') + '"'
            out[t] = tuple(con.execute(
                f"SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h), '')) FROM "
                f"(SELECT md5(CAST(r AS VARCHAR)) AS h FROM {q} r)").fetchall()[0])
        return out


class TracebackRecords(logging.Handler):
    """Collects Prefect log records that carry a traceback (exc_info)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback (most recent call last)" in record.getMessage():
            self.records.append(record)
