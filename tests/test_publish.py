import subprocess
import sys
import time

import duckdb
import numpy as np
import pandas as pd
import pytest

from tasks.decide import Decided, apply_policy
from tasks.detect import Detection, issues_frame, summarize
from tasks.errors import CleansetError
from tasks.ingest import read_snapshot
from tasks.publish import connect, quote_ident, write_run
from tasks.spec import Policy
from tasks.store import write_array, write_table
from tasks.validate import ExpectationOutcome, Validation


@pytest.fixture()
def run_inputs(tmp_path):
    """A 6-row run with one label issue (row 2) and one quarantined row (row 5)."""
    df = pd.DataFrame({"x": [0.0, 1, 2, 3, 4, 5], "label": ["a", "a", "b", "b", "b", None]})
    df.to_csv(tmp_path / "d.csv", index=False)
    work = tmp_path / "work"
    snap = read_snapshot(str(tmp_path / "d.csv"), None, work)
    probs = np.array([[.9, .1], [.8, .2], [.95, .05], [.1, .9], [.2, .8]], dtype=np.float32)
    frame = issues_frame(pd.Series(range(6)), df["label"], np.arange(5),
                         np.array([0, 0, 1, 1, 1]), ("a", "b"), probs, np.array([5]))
    frame.loc[2, "is_label_issue"] = True  # pin the flag: this test is about publishing
    frame = apply_policy(frame, Policy(label="drop"))
    detection = Detection(issues=write_table(frame, work, "issues"),
                          summary=tuple(summarize(frame)), health_score=0.8,
                          label_health_score=0.9)
    outcome = ExpectationOutcome(suite="s", expectation="e", column_name="label",
                                 severity="warning", success=False, unexpected_count=1,
                                 details="{}")
    validation = Validation(outcomes=(outcome,), quarantined=write_array(np.array([5]), work, "q"))
    decided = Decided(table=write_table(frame, work, "decided"))
    return snap, decided, validation, detection


def publish(db, run_id, inputs, dataset="toy"):
    snap, decided, validation, detection = inputs
    return write_run(db, run_id, dataset, "label", snap, decided, validation, detection,
                     {"flow_run_id": "f", "source": "d.csv", "source_sha256": snap.source_sha256,
                      "started_at": pd.Timestamp.now(tz="UTC"), "spec": "{}",
                      "cleanset_version": "t"})


def table_counts(db):
    with duckdb.connect(str(db), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {quote_ident(t)}").fetchall()[0][0]
                for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def test_publish_writes_contract_tables(tmp_path, run_inputs):
    db = tmp_path / "w.duckdb"
    summary = publish(db, "r1", run_inputs)
    assert (summary.n_rows, summary.n_clean_rows, summary.n_label_issues, summary.n_invalid) == (
        6, 4, 1, 1)
    with duckdb.connect(str(db), read_only=True) as con:
        clean = con.execute("SELECT row_id FROM toy_clean ORDER BY row_id").fetchall()
        assert [r[0] for r in clean] == [0, 1, 3, 4]
        issue = con.execute("SELECT row_id, given_label, suggested_label, is_label_issue, action "
                            "FROM issues WHERE is_label_issue").fetchall()
        assert issue == [("2", "b", "a", True, "drop")]
        run = con.execute("SELECT run_id, dataset, n_rows, n_clean_rows, n_label_issues, status "
                          "FROM runs").fetchall()
        assert run == [("r1", "toy", 6, 4, 1, "completed")]
        assert con.execute("SELECT count(*) FROM validations").fetchall() == [(1,)]


def test_publishing_the_same_run_twice_adds_no_rows(tmp_path, run_inputs):
    db = tmp_path / "w.duckdb"
    publish(db, "r1", run_inputs)
    first = table_counts(db)
    publish(db, "r1", run_inputs)
    assert table_counts(db) == first
    publish(db, "r2", run_inputs)
    counts = table_counts(db)
    assert counts["runs"] == 2 and counts["issues"] == 12 and counts["toy_clean"] == 4
    assert counts["toy_clean_history"] == 8


def test_failure_inside_the_transaction_leaves_warehouse_unchanged(tmp_path, run_inputs):
    db = tmp_path / "w.duckdb"
    publish(db, "r1", run_inputs)
    before = table_counts(db)
    snap, decided, validation, detection = run_inputs
    broken = detection.model_copy(update={"summary": (("label", "not a number", 0.5),)})
    with pytest.raises(duckdb.Error):
        publish(db, "r2", (snap, decided, validation, broken))
    assert table_counts(db) == before


def test_dataset_name_is_quoted_as_identifier():
    assert quote_ident('we"ird') == '"we""ird"'


@pytest.mark.slow  # another process holds the warehouse
def test_locked_warehouse_is_retried_then_reported(tmp_path):
    db = tmp_path / "w.duckdb"
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb, time; c = duckdb.connect({str(db)!r}); "
                               "print('ready', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        with pytest.raises(CleansetError, match="locked by another process after 3 attempts"):
            connect(db, attempts=3, first_delay=0.2)
        assert time.monotonic() - started >= 0.6  # waited 0.2 + 0.4 between attempts
    finally:
        holder.kill()
        holder.wait()
    connect(db).close()  # free again once the other process is gone
