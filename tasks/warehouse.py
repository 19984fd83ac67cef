"""The warehouse file, for every reader and writer: open it (retrying while another process
holds it, clear errors when it is missing or locked), list its tables and columns, quote
identifiers, and pick the run a command is about."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from tasks.errors import CleansetError


def quote_ident(name: str) -> str:
    """A SQL identifier, double-quoted with embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def connect(db: Path, attempts: int = 8, first_delay: float = 0.25, read_only: bool = False
            ) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (for writing unless read_only), retrying with backoff while another
    process holds it."""
    if not read_only:
        db.parent.mkdir(parents=True, exist_ok=True)
    delay = first_delay
    for attempt in range(attempts):
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == attempts - 1:
                if "lock" in str(exc).lower():
                    raise CleansetError(
                        f"warehouse {db} is locked by another process after {attempts} attempts; "
                        f"close other DuckDB sessions on it and run again ({exc})"
                    ) from None
                raise CleansetError(f"cannot open warehouse {db}: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def open_warehouse(db: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to an existing warehouse (a clear error when there is none)."""
    db = Path(db)
    if not db.is_file():
        raise CleansetError(f"warehouse {db} does not exist yet: run `cleanset run` or "
                            "`cleanset demo` first (or pass --db)")
    return connect(db, read_only=True)


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}


def column_names(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {quote_ident(table)}").fetchall()]


def _query(db: str | Path, table: str, sql: str, params: list | None, fetch):  # noqa: ANN001, ANN202
    """`fetch(cursor)` of a read-only query on `table`; None when the warehouse or the table
    does not exist yet."""
    if not Path(db).is_file():
        return None
    con = connect(Path(db), read_only=True)
    try:
        if table not in table_names(con):
            return None
        return fetch(con.execute(sql, params or []))
    finally:
        con.close()


def read_dicts(db: str | Path, table: str, sql: str, params: list | None = None) -> list[dict]:
    """The rows of a read-only query on `table` as dicts; [] when the warehouse or the table
    does not exist yet."""
    def fetch(cur) -> list[dict]:  # noqa: ANN001
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    return _query(db, table, sql, params, fetch) or []


def read_frame(db: str | Path, table: str, sql: str, params: list | None = None,
               columns: list[str] | None = None):  # noqa: ANN201 - a pandas DataFrame
    """read_dicts's query as a DataFrame of Python objects (missing values None), read in one
    go: a run's issues are a million rows at scale. Empty (with `columns`) when the warehouse
    or the table does not exist yet."""
    import pandas as pd

    frame = _query(db, table, sql, params, lambda cur: cur.df())
    if frame is None:
        return pd.DataFrame(columns=columns or [])
    return frame.astype(object).where(frame.notna(), None)


def resolve_run(db: str | Path, dataset: str | None = None, run: str | None = None
                ) -> tuple[str, str]:
    """(dataset, run_id) a command is about: the given run, else the dataset's latest run; the
    dataset may be left out when the warehouse holds only one. Raises CleansetError naming the
    choices."""
    with open_warehouse(db) as con:
        return resolve_run_in(con, db, dataset, run)


def resolve_run_in(con: duckdb.DuckDBPyConnection, db: str | Path, dataset: str | None = None,
                   run: str | None = None) -> tuple[str, str]:
    """resolve_run on an open connection."""
    if "runs" not in table_names(con):
        raise CleansetError(f"warehouse {db} has no runs yet: run `cleanset run` first")
    datasets = [r[0] for r in con.execute(  # failed runs published nothing to be about
        "SELECT DISTINCT dataset FROM runs WHERE status IS DISTINCT FROM 'failed' ORDER BY 1"
    ).fetchall()]
    if run is not None:
        found = con.execute("SELECT dataset, status FROM runs WHERE run_id = ?",
                            [run]).fetchall()
        if not found:
            recent = [r[0] for r in con.execute(
                "SELECT run_id FROM runs ORDER BY finished_at DESC NULLS LAST LIMIT 5"
            ).fetchall()]
            raise CleansetError(f"no run {run!r} in {db}; recent runs: {', '.join(recent)}")
        if found[0][1] == "failed":
            raise CleansetError(f"run {run} failed and published nothing; see `cleanset query "
                                f"\"SELECT stage, message FROM runs WHERE run_id = '{run}'\"`")
        if dataset is not None and found[0][0] != dataset:
            raise CleansetError(f"run {run} belongs to dataset {found[0][0]!r}, not "
                                f"{dataset!r}")
        return found[0][0], run
    if dataset is None:
        if not datasets:
            raise CleansetError(f"warehouse {db} has no runs yet: run `cleanset run` first")
        if len(datasets) > 1:
            raise CleansetError(f"{db} holds several datasets; pick one with --dataset: "
                                f"{', '.join(datasets)}")
        dataset = datasets[0]
    if dataset not in datasets:
        raise CleansetError(f"no runs of dataset {dataset!r} in {db}; datasets: "
                            f"{', '.join(datasets) or 'none'}")
    latest = con.execute(
        "SELECT run_id FROM runs WHERE dataset = ? AND status IS DISTINCT FROM 'failed' "
        "ORDER BY finished_at DESC NULLS LAST, "
        "started_at DESC NULLS LAST LIMIT 1", [dataset]).fetchall()
    return dataset, latest[0][0]
