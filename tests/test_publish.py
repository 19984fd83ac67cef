import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tasks.decide import Decided, apply_policy
from tasks.detect import Detection, issues_frame, summarize
from tasks.errors import CleansetError
from tasks.ingest import read_snapshot
from tasks.publish import connect, failed_stage, quote_ident, record_failed_run, write_run
from tasks.spec import Policy
from tasks.store import write_array, write_table
from tasks.validate import ExpectationOutcome, Validation
from tasks.warehouse import resolve_run
from tests.warehouse import checksums, null_typed_columns, publish_parts, run_parts


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


# ---- issue 12: a shared warehouse ------------------------------------------------------------

def frame_a(n: int = 8) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(n, dtype=np.int64), "y": np.linspace(0, 1, n),
                         "tag": [f"t{i}" for i in range(n)],
                         "label": ["a", "b"] * (n // 2)})


def column_types(db, table):
    with duckdb.connect(str(db), read_only=True) as con:
        return {r[0]: r[1] for r in con.execute(f"DESCRIBE {quote_ident(table)}").fetchall()}


def test_a_quiet_dataset_does_not_poison_the_warehouse(tmp_path):
    """Issue 12, item 1: a run without duplicates first, then one with them (was: the set
    columns created with DuckDB's NULL type, and a ConversionException for every later run)."""
    db = tmp_path / "w.duckdb"
    publish_parts(db, "quiet", "a", run_parts(tmp_path / "a", frame_a()))
    types = column_types(db, "issues")
    assert types["near_duplicate_set"] == types["exact_duplicate_set"] == "VARCHAR"
    assert types["is_outlier_issue"] == "BOOLEAN" and types["outlier_score"] == "DOUBLE"
    publish_parts(db, "dups", "b", run_parts(tmp_path / "b", frame_a(), sets=True))
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT row_id, near_duplicate_set, exact_duplicate_set FROM issues "
                           "WHERE run_id = 'dups' AND is_exact_duplicate_issue ORDER BY 1"
                           ).fetchall() == [("0", "0", "0"), ("1", "0", "0")]
    assert null_typed_columns(db) == []


def test_a_warehouse_poisoned_by_an_older_cleanset_is_repaired(tmp_path):
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:  # what cleanset before issue 12 left behind
        con.execute("CREATE TABLE issues AS SELECT 'r' AS run_id, NULL AS near_duplicate_set")
        con.execute('CREATE TABLE "a_clean_history" AS SELECT \'r\' AS run_id, NULL AS empty')
    assert len(null_typed_columns(db)) == 2
    publish_parts(db, "dups", "b", run_parts(tmp_path / "b", frame_a(), sets=True))
    assert null_typed_columns(db) == []
    assert column_types(db, "issues")["near_duplicate_set"] == "VARCHAR"


def test_a_value_that_does_not_fit_is_named_and_nothing_is_written(tmp_path):
    db = tmp_path / "w.duckdb"
    publish_parts(db, "r1", "a", run_parts(tmp_path / "a", frame_a()))
    before = checksums(db)
    snap, decided, validation, detection = run_parts(tmp_path / "b", frame_a())
    frame = decided.table.read()
    frame["label_score"] = "not a number"
    bad = Decided(table=write_table(frame, tmp_path / "b" / "work", "decided"))
    with pytest.raises(CleansetError, match=r"table issues: column 'label_score' is declared "
                       r"DOUBLE but 8 value\(s\) of this run's type VARCHAR do not fit"):
        publish_parts(db, "r2", "a", (snap, bad, validation, detection))
    assert checksums(db) == before


def test_one_dataset_through_columns_that_appear_disappear_and_change_type(tmp_path):
    """Issue 12, item 2: the history widens (new columns added, missing ones NULL, a retyped
    column takes a type holding both); the clean table is each run's own rows and types."""
    db = tmp_path / "w.duckdb"
    first = frame_a()
    publish_parts(db, "r1", "d", run_parts(tmp_path / "1", first))
    second = first.drop(columns=["tag"]).assign(  # tag disappears, x becomes text, z appears
        x=[f"code-{i}" for i in range(8)], z=np.arange(8) * 1.5)
    publish_parts(db, "r2", "d", run_parts(tmp_path / "2", second))
    third = first.assign(y=np.arange(8, dtype=np.int32),  # y: DOUBLE -> INTEGER
                         empty=pd.Series([None] * 8, dtype=object))  # an all-null column
    third_table = pa.Table.from_pandas(third, preserve_index=False).append_column(
        "nested", pa.array([{"k": i, "v": [i, i]} for i in range(8)]))
    summary = publish_parts(db, "r3", "d", run_parts(tmp_path / "3", third_table))
    assert any(line.startswith("nested: nested values") for line in summary.left_out)
    assert any(line.startswith("empty: all values missing") for line in summary.left_out)
    history = column_types(db, "d_clean_history")
    assert (history["x"], history["y"], history["z"], history["tag"]) == (
        "VARCHAR", "DOUBLE", "DOUBLE", "VARCHAR")
    assert history["empty"] == "VARCHAR" and history["nested"] == "JSON"
    clean = column_types(db, "d_clean")
    assert (clean["x"], clean["y"], clean["empty"], clean["nested"]) == (
        "BIGINT", "INTEGER", "VARCHAR", "JSON")
    assert "z" not in clean
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT run_id, count(*), count(tag), count(z), min(x), max(x) FROM "
                           "d_clean_history GROUP BY 1 ORDER BY 1").fetchall()
        assert rows == [("r1", 8, 8, 0, "0", "7"), ("r2", 8, 0, 8, "code-0", "code-7"),
                        ("r3", 8, 8, 0, "0", "7")]
        assert con.execute("SELECT nested->>'$.k', nested->'$.v' FROM d_clean WHERE x = 3"
                           ).fetchall() == [("3", "[3,3]")]
        assert con.execute("SELECT left_out FROM runs WHERE run_id = 'r3'").fetchall()[0][0]
    assert null_typed_columns(db) == []


def test_a_failed_run_is_recorded_apart_and_never_taken_as_the_latest(tmp_path):
    db = tmp_path / "w.duckdb"
    publish_parts(db, "r1", "a", run_parts(tmp_path / "a", frame_a()))
    before = checksums(db)
    run_id = record_failed_run(db, "a", "validate", "label column missing", flow_run_id="f1")
    after = checksums(db)
    assert {t: v for t, v in after.items() if t != "runs"} == {
        t: v for t, v in before.items() if t != "runs"}
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, stage, message, n_rows FROM runs WHERE run_id = ?",
                           [run_id]).fetchall() == [("failed", "validate",
                                                     "label column missing", None)]
    assert resolve_run(db, "a") == ("a", "r1")
    with pytest.raises(CleansetError, match="failed and published nothing"):
        resolve_run(db, run=run_id)


def test_failed_stage_is_the_outermost_stage_module():
    from tasks.ingest import read_snapshot as reader

    try:
        reader("/nonexistent/file.csv", None, Path("/tmp"))
    except CleansetError as exc:
        assert failed_stage(exc) == "ingest"
    assert failed_stage(ValueError("no traceback")) == "flow"


def test_failed_stage_names_a_stage_package_by_its_folder(tmp_path):
    """tasks/report/ is a package: an error in tasks/report/render.py is the `report` stage."""
    from tasks.report import write_report

    try:
        write_report(tmp_path / "missing.duckdb", "d", "r")
    except CleansetError as exc:
        assert failed_stage(exc) == "report"
    else:
        raise AssertionError("no error")


def _clean_after(rows, before, key="id"):
    """replace_clean on an in-memory table holding `before`, given `rows` as the run's."""
    from tasks.publish import replace_clean

    con = duckdb.connect()
    con.execute("CREATE TABLE t (id VARCHAR, x DOUBLE, label VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", before)
    values = ", ".join("(?, ?, ?)" for _ in rows)
    sql = f"SELECT ? AS run_id, * FROM (VALUES {values}) v(id, x, label)"
    params = ["r", *[v for row in rows for v in row]]
    with con.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute(f"CREATE TEMP TABLE run_rows AS {sql}", params)
        replace_clean(cur, "t", "run_rows", [("id", "VARCHAR"), ("x", "DOUBLE"),
                                             ("label", "VARCHAR")], key)
        cur.execute("DROP TABLE run_rows")
        cur.execute("COMMIT")
    got = sorted((tuple("nan" if v != v else v for v in r)  # NaN != NaN in Python
                  for r in con.execute("SELECT * FROM t").fetchall()), key=str)
    temps = con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall()[0][0]
    con.close()
    return got, temps


def test_the_clean_table_holds_exactly_the_runs_rows_when_rows_change_by_id():
    before = [("a", 1.0, "x"), ("b", 2.0, "x"), ("c", float("nan"), "y"), ("d", 4.0, None),
              ("f", 0.0, "x")]
    run = [("a", 1.0, "x"),            # the same
           ("b", 2.0, "z"),            # relabelled
           ("c", float("nan"), "y"),   # the same, NaN included
           ("e", 5.0, "x"),            # new; d is gone
           ("f", -0.0, "x")]           # equal to 0.0, and hashed alike, but not the same text
    got, temps = _clean_after(run, before)
    assert got == sorted([r if r[0] != "c" else ("c", "nan", "y") for r in run], key=str)
    assert temps == 0
    con = duckdb.connect()  # the sign of the stored zero is the run's
    assert con.execute("SELECT CAST(?::DOUBLE AS VARCHAR)", [got[-1][1]]).fetchall() == [
        ("-0.0",)]
    # a repeated id: rows cannot be matched, the table is the run's all the same
    run2 = [("a", 1.0, "x"), ("a", 9.0, "x"), ("b", 2.0, "x")]
    got, temps = _clean_after(run2, before)
    assert got == sorted(run2, key=str) and temps == 0
    # no id column to match on: recreated from the run
    got, _ = _clean_after(run2, before, key=None)
    assert got == sorted(run2, key=str)


def test_the_api_reads_a_clean_table_updated_in_place_in_input_order(tmp_path, run_inputs):
    """A second run of the dataset that changes one row's clean values replaces that row at the
    table's end (replace_clean); the run's clean rows still read back in input order."""
    from cleanset.api import read_run

    db = tmp_path / "w.duckdb"
    snap, decided, validation, detection = run_inputs
    publish(db, "r1", run_inputs)
    frame = decided.table.read()
    frame.loc[0, ["action", "final_label"]] = ["relabel", "b"]  # row 0 now carries label b
    changed = Decided(table=write_table(frame, tmp_path / "work", "decided"))
    summary = publish(db, "r2", (snap, changed, validation, detection))
    _, clean, _ = read_run(summary)
    assert list(clean["row_id"]) == sorted(clean["row_id"])  # read back in input order
    assert clean.loc[clean["row_id"] == stored_first(clean), "label"].item() == "b"


def stored_first(clean: pd.DataFrame):  # noqa: ANN201 - the first input row's id
    return clean["row_id"].iloc[0]
