"""Test helpers: run the CLI in-process, and fingerprint a warehouse to prove it did not change."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb


def checksums(db: Path, published_only: bool = False) -> dict[str, tuple[int, str]]:
    """Per table: (row count, md5 over the sorted md5s of its rows): equal iff same content.
    `published_only`: leave out the `runs` rows of failed runs (a failed run is recorded there,
    and only there)."""
    with duckdb.connect(str(db), read_only=True) as con:
        names = sorted(t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall())
        out = {}
        for t in names:
            q = '"' + t.replace('"', '""') + '"'
            if published_only and t == "runs":
                q = "(SELECT * FROM runs WHERE status IS DISTINCT FROM 'failed')"
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


def run_parts(folder: Path, frame, label: str = "label", name: str = "data",  # noqa: ANN001
              sets: bool = False):  # noqa: ANN201
    """The pure inputs of `write_run` for a frame (Parquet snapshot, issues frame with every
    row kept): (snapshot, decided, validation, detection). With `sets`, rows 0 and 1 form a
    near- and an exact-duplicate set; without, both set columns are all null."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.decide import Decided, apply_policy
    from tasks.detect import Detection, summarize
    from tasks.ingest import read_snapshot
    from tasks.spec import Policy
    from tasks.store import write_array, write_table
    from tasks.validate import Validation

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(
        frame, preserve_index=False)
    pq.write_table(table, path)
    work = folder / "work"
    snap = read_snapshot(str(path), None, work)
    ids = pd.Series(range(table.num_rows)).astype(str)
    given = pd.Series(table.column(label).to_pylist(), dtype=object)
    n = table.num_rows
    issues = pd.DataFrame({
        "row_id": ids, "given_label": given.map(lambda v: None if v is None else str(v)),
        "suggested_label": pd.Series([None] * n, dtype=object),
        "suggested_label_confidence": np.full(n, np.nan),
        "is_label_issue": np.zeros(n, dtype=bool), "label_score": np.ones(n),
        "is_invalid_issue": np.zeros(n, dtype=bool), "invalid_score": np.ones(n),
        "is_near_duplicate_issue": np.zeros(n, dtype=bool), "near_duplicate_score": np.ones(n),
        "near_duplicate_set": pd.Series([None] * n, dtype=object),
        "is_exact_duplicate_issue": np.zeros(n, dtype=bool), "exact_duplicate_score": np.ones(n),
        "exact_duplicate_set": pd.Series([None] * n, dtype=object),
    })
    if sets and n >= 2:
        for kind in ("near", "exact"):
            issues.loc[[0, 1], f"is_{kind}_duplicate_issue"] = True
            issues.loc[[0, 1], f"{kind}_duplicate_set"] = "0"
    decided_frame = apply_policy(issues, Policy(exact_duplicate="keep"))
    detection = Detection(issues=write_table(issues, work, "issues"),
                          summary=tuple(summarize(issues)), health_score=1.0,
                          label_health_score=1.0)
    validation = Validation(outcomes=(), quarantined=write_array(np.array([], dtype=np.int64),
                                                                 work, "q"))
    return snap, Decided(table=write_table(decided_frame, work, "decided")), validation, detection


def publish_parts(db: Path, run_id: str, dataset: str, parts, label: str = "label"):  # noqa: ANN001, ANN201
    """write_run for run_parts' output."""
    import pandas as pd

    from tasks.publish import write_run

    snap, decided, validation, detection = parts
    return write_run(db, run_id, dataset, label, snap, decided, validation, detection,
                     {"flow_run_id": "f", "source": "t", "source_sha256": snap.source_sha256,
                      "started_at": pd.Timestamp.now(tz="UTC"), "spec": "{}",
                      "cleanset_version": "t"})


def null_typed_columns(db: Path) -> list[tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE trim(data_type, '\"') = 'NULL'").fetchall()


def kill_at_planted_hang(args: list[str], cwd: Path, env: dict, stage: str,
                         timeout: float = 240.0,
                         while_hanging: Callable[[], None] | None = None) -> None:
    """Run `cleanset <args>` in a process of its own with a hang planted at `stage`
    (tests/fault_launcher.py), wait until it hangs there, call `while_hanging` (assertions on the
    hung run's leftovers), then SIGKILL it: also when an assertion failed, never leaving it
    hanging."""
    marker = Path(cwd) / f"{stage}.marker"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fault_launcher", *args], cwd=cwd,
                            env={**env, "FAULT_STAGE": stage, "FAULT_MARKER": str(marker)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the planted hang was never reached"
            time.sleep(0.05)
        if while_hanging is not None:
            while_hanging()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
