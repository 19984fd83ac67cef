"""The run-summary and top-issues builders, on a warehouse written by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from tasks.publish import ensure_schema
from tasks.summary import previous_run_id, summary_table, top_issues, top_issues_markdown


@pytest.fixture()
def con(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_schema(con)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i, (run, ds, n, health) in enumerate([("r1", "d", 100, 0.9), ("other", "e", 5, 0.1),
                                              ("r2", "d", 120, 0.8)]):
        con.execute("INSERT INTO runs (run_id, dataset, n_rows, n_clean_rows, health_score, "
                    "label_health_score, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [run, ds, n, n - 10, health, 0.95, t0 + timedelta(hours=i)])
    con.executemany("INSERT INTO issue_summary VALUES (?, ?, ?, ?, ?)", [
        ["r1", "d", "label", 7, 0.9], ["r1", "d", "outlier", 2, 0.5],
        ["r2", "d", "label", 4, 0.9], ["r2", "d", "outlier", 5, 0.5],
        ["r2", "d", "null", 0, 1.0]])
    # row_id, given, suggested, is_label, label_score, is_outlier, outlier_score, action
    rows = [("0", "a", "a", False, 0.9, False, 0.8, "keep"),
            ("1", "a", "b", True, 0.05, False, 0.7, "drop"),
            ("2", "b", "b", False, 0.8, True, 0.01, "review"),
            ("3", "b", "a", True, 0.2, True, 0.3, "drop"),
            ("4", "a|x", None, False, None, True, None, "review")]
    for r in rows:
        con.execute("INSERT INTO issues (run_id, dataset, row_id, given_label, suggested_label, "
                    "is_label_issue, label_score, is_outlier_issue, outlier_score, action, "
                    "is_invalid_issue) VALUES ('r2', 'd', ?, ?, ?, ?, ?, ?, ?, ?, false)", list(r))
    yield con
    con.close()


def test_summary_compares_with_the_previous_run_of_the_same_dataset(con):
    assert previous_run_id(con, "r2", "d") == "r1"
    assert previous_run_id(con, "r1", "d") is None
    table = {r["metric"]: r for r in summary_table(con, "r2", "d")}
    assert table["run id"]["previous run"] == "r1"
    assert (table["rows"]["this run"], table["rows"]["previous run"], table["rows"]["change"]) == (
        120, 100, "+20")
    assert table["health score"]["change"] == "-0.1000"
    assert table["issues: label"]["change"] == "-3"
    assert table["issues: outlier"]["change"] == "+3"
    assert table["issues: null"]["previous run"] == "" and table["issues: null"]["change"] == ""
    first = {r["metric"]: r for r in summary_table(con, "r1", "d")}
    assert first["run id"]["previous run"] == "none" and first["rows"]["change"] == ""


def test_top_issues_are_the_lowest_scores_with_their_type(con):
    rows, total = top_issues(con, "r2", limit=3)
    assert total == 4
    assert [(r["row_id"], r["issue"], r["also"], r["score"]) for r in rows] == [
        ("2", "outlier", "", 0.01), ("1", "label", "", 0.05), ("3", "label", "outlier", 0.2)]
    assert rows[1]["given_label"] == "a" and rows[1]["suggested_label"] == "b"
    everything, _ = top_issues(con, "r2", limit=10)
    assert everything[-1]["row_id"] == "4" and everything[-1]["score"] is None  # unscored last
    md = top_issues_markdown(everything, total, "d", "r2")
    assert "4 flagged rows" in md and "| 2 | outlier |  | 0.01 | b | b |" in md
    assert "a\\|x" in md  # a pipe in a label does not break the table
    assert "nothing to look at" in top_issues_markdown([], 0, "d", "r9")
