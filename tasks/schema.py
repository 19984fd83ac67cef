"""The warehouse's declared schema and its one way to write: `transaction`.

Every cleanset table's columns and types (TABLES), the DDL that creates them and the migrations
that bring an older warehouse up to date, applied in a short transaction before every write.
Light on purpose (duckdb and the issue-type registry only): `cleanset review` records decisions
through `transaction` without importing the stages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from tasks.issue_types import issue_columns
from tasks.warehouse import connect, quote_ident

# The declared schema of every cleanset table: (column, DuckDB type), in order. A warehouse is
# shared by many datasets and runs, so no column type may depend on one run's data (an all-null
# column would otherwise be created with DuckDB's NULL type and refuse every later value).


def _issue_columns() -> list[tuple[str, str]]:
    """issues: each registered issue type's columns (tasks/issue_types.py: a BOOLEAN flag, a
    DOUBLE score, set ids VARCHAR) between the row's given/suggested label and its decision.
    given_value / suggested_value(_low/_high): a regression run's target, its suggested value
    and interval (NULL in classification runs; the labels stay text in given/suggested_label).
    suggested_tags / tags_likely_missing / tags_likely_wrong: a multilabel run's suggested tag
    set and the tags it adds and removes (NULL in other runs; given/suggested_label hold the
    sets as text joined by runs.tag_delimiter).
    consensus_quality / annotator_agreement: with several annotators, CROWDLAB's quality of the
    consensus label and the share of annotators agreeing with it (NULL otherwise)."""
    cols = [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("row_id", "VARCHAR"),
            ("given_label", "VARCHAR"), ("suggested_label", "VARCHAR"),
            ("suggested_label_confidence", "DOUBLE"), ("suggested_label_agreement", "DOUBLE"),
            ("consensus_quality", "DOUBLE"), ("annotator_agreement", "DOUBLE"),
            ("given_value", "DOUBLE"), ("suggested_value", "DOUBLE"),
            ("suggested_value_low", "DOUBLE"), ("suggested_value_high", "DOUBLE"),
            ("suggested_tags", "VARCHAR[]"), ("tags_likely_missing", "VARCHAR[]"),
            ("tags_likely_wrong", "VARCHAR[]")]
    return [*cols, *issue_columns(), ("action", "VARCHAR"), ("final_label", "VARCHAR"),
            ("decided_by", "VARCHAR"), ("review_note", "VARCHAR"), ("batch_id", "VARCHAR"),
            ("data_hash", "VARCHAR")]


TABLES: dict[str, list[tuple[str, str]]] = {
    "runs": [("run_id", "VARCHAR PRIMARY KEY"), ("dataset", "VARCHAR"), ("flow_run_id", "VARCHAR"),
             ("source", "VARCHAR"), ("source_sha256", "VARCHAR"), ("started_at", "TIMESTAMPTZ"),
             ("finished_at", "TIMESTAMPTZ"), ("status", "VARCHAR"), ("n_rows", "BIGINT"),
             ("n_clean_rows", "BIGINT"), ("n_label_issues", "BIGINT"),
             ("health_score", "DOUBLE"), ("spec", "JSON"), ("cleanset_version", "VARCHAR"),
             ("model", "VARCHAR"), ("label_health_score", "DOUBLE"),
             ("snapshot_path", "VARCHAR"), ("id_column", "VARCHAR"), ("n_relabelled", "BIGINT"),
             ("n_review", "BIGINT"), ("n_reviewed", "BIGINT"), ("orphan_decisions", "VARCHAR[]"),
             ("stage", "VARCHAR"), ("message", "VARCHAR"), ("left_out", "VARCHAR[]"),
             ("model_accuracy", "DOUBLE"), ("model_log_loss", "DOUBLE"),
             ("chance_accuracy", "DOUBLE"), ("chance_log_loss", "DOUBLE"),
             ("model_skill", "DOUBLE"), ("model_trusted", "BOOLEAN"),
             ("model_warning", "VARCHAR"), ("auto_fix", "BOOLEAN"), ("task", "VARCHAR"),
             ("task_reason", "VARCHAR"), ("mode", "VARCHAR"), ("mode_reason", "VARCHAR"),
             ("n_batches", "BIGINT"), ("n_new_batches", "BIGINT"), ("models", "JSON"),
             ("models_run_id", "VARCHAR"), ("n_new_rows", "BIGINT"),
             ("n_verdicts_changed", "BIGINT"), ("verdicts_changed", "VARCHAR"),
             ("tag_delimiter", "VARCHAR"), ("model_micro_f1", "DOUBLE"),
             # rows certified is_well_labeled (tasks/trust.py); NULL: no classification
             # certification ran (regression, multilabel) or the run predates the column
             ("n_well_labeled", "BIGINT")],
    "issues": _issue_columns(),
    "issue_summary": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("issue_type", "VARCHAR"),
                      ("num_issues", "BIGINT"), ("score", "DOUBLE")],
    "validations": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("suite", "VARCHAR"),
                    ("expectation", "VARCHAR"), ("column_name", "VARCHAR"),
                    ("severity", "VARCHAR"), ("success", "BOOLEAN"),
                    ("unexpected_count", "BIGINT"), ("details", "JSON")],
    "class_summary": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("class_name", "VARCHAR"),
                      ("n_rows", "BIGINT"), ("n_label_issues", "BIGINT"),
                      ("label_noise", "DOUBLE"), ("inverse_label_noise", "DOUBLE"),
                      ("label_quality", "DOUBLE"), ("most_overlapping_class", "VARCHAR"),
                      ("overlap_joint_probability", "DOUBLE"),
                      ("n_tags_likely_wrong", "BIGINT"), ("n_tags_likely_missing", "BIGINT")],
    "slice_summary": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"),
                      ("slice_column", "VARCHAR"), ("slice_value", "VARCHAR"), ("rows", "BIGINT"),
                      ("label_issues", "BIGINT"), ("issue_rate", "DOUBLE"),
                      ("issue_rate_low", "DOUBLE"), ("issue_rate_high", "DOUBLE"),
                      ("rest_issue_rate", "DOUBLE"), ("mean_label_score", "DOUBLE"),
                      ("accuracy", "DOUBLE"), ("p_value", "DOUBLE"), ("q_value", "DOUBLE"),
                      ("is_flagged", "BOOLEAN")],
    # one row per annotator per run with several annotators (tasks/annotators.py), best first
    "annotator_summary": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"),
                          ("annotator", "VARCHAR"), ("annotator_quality", "DOUBLE"),
                          ("agreement_with_consensus", "DOUBLE"), ("worst_class", "VARCHAR"),
                          ("rows_labeled", "BIGINT")],
    "review_decisions": [("dataset", "VARCHAR"), ("row_id", "VARCHAR"), ("decision", "VARCHAR"),
                         ("new_label", "VARCHAR"), ("decided_at", "TIMESTAMPTZ"),
                         ("note", "VARCHAR"), ("reviewer", "VARCHAR"), ("source", "VARCHAR"),
                         ("given_label", "VARCHAR")],
    "model_screening": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("model", "VARCHAR"),
                        ("n_rows", "BIGINT"), ("log_loss", "DOUBLE"), ("accuracy", "DOUBLE"),
                        ("seconds", "DOUBLE"), ("projected_seconds", "DOUBLE"),
                        ("within_budget", "BOOLEAN"), ("chosen", "BOOLEAN"), ("mse", "DOUBLE"),
                        ("r2", "DOUBLE"), ("micro_f1", "DOUBLE")],
    "column_roles": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("column_name", "VARCHAR"),
                     ("role", "VARCHAR"), ("reason", "VARCHAR")],
    "evaluations": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("trained_on", "VARCHAR"),
                    ("model", "VARCHAR"), ("test_set", "VARCHAR"), ("n_train", "BIGINT"),
                    ("n_test", "BIGINT"), ("accuracy", "DOUBLE"), ("macro_f1", "DOUBLE"),
                    ("rmse", "DOUBLE"), ("mae", "DOUBLE"), ("r2", "DOUBLE"),
                    ("micro_f1", "DOUBLE"), ("jaccard", "DOUBLE")],
    # one row per batch of a dataset folder (tasks/batches.py); written with the run that
    # accepted (or quarantined) it, in that run's transaction
    "batches": [("dataset", "VARCHAR"), ("batch_id", "VARCHAR"), ("file", "VARCHAR"),
                ("sha256", "VARCHAR"), ("rows", "BIGINT"), ("arrived_at", "TIMESTAMPTZ"),
                ("run_id", "VARCHAR"), ("status", "VARCHAR"), ("reason", "VARCHAR"),
                ("snapshot_path", "VARCHAR")],
    # one row per check per batch (tasks/audit.py; publish.audit_frame builds the rows).
    # check_name, not `check`: an SQL keyword every query would have to quote
    "batch_audit": [("dataset", "VARCHAR"), ("run_id", "VARCHAR"), ("batch_id", "VARCHAR"),
                    ("check_name", "VARCHAR"), ("column_name", "VARCHAR"),
                    ("statistic", "VARCHAR"), ("value", "DOUBLE"), ("effect_size", "DOUBLE"),
                    ("threshold", "DOUBLE"), ("severity", "VARCHAR"), ("outcome", "VARCHAR"),
                    ("message", "VARCHAR")],
    # one row per stage per flow run (tasks/timing.py): wall seconds, process RSS at the stage's
    # end and the process's peak RSS so far; kept for every flow run (a re-run of the same
    # run_id adds rows), so a run compares with the previous one of its dataset
    "run_stages": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("flow_run_id", "VARCHAR"),
                   ("position", "INTEGER"), ("stage", "VARCHAR"), ("calls", "INTEGER"),
                   ("seconds", "DOUBLE"), ("busy_seconds", "DOUBLE"), ("rss_mib", "DOUBLE"),
                   ("peak_rss_mib", "DOUBLE"), ("model_stage", "BOOLEAN"),
                   ("recorded_at", "TIMESTAMPTZ")],
}
SCHEMA = [f"CREATE TABLE IF NOT EXISTS {t} ({', '.join(f'{quote_ident(c)} {d}' for c, d in cols)})"
          for t, cols in TABLES.items()]
# Migrations: every declared column is added to a warehouse written by an older cleanset (with its
# declared type), and a column an older cleanset created with DuckDB's NULL type (issue 12) is
# given its declared type (VARCHAR for a dataset's own columns). Applied on every write.
MIGRATIONS = [f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {quote_ident(c)} {d}"
              for t, cols in TABLES.items() for c, d in cols if "PRIMARY KEY" not in d]
RUN_TABLES = ("issues", "issue_summary", "validations", "class_summary", "evaluations",
              "model_screening", "column_roles", "slice_summary", "annotator_summary")


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the declared tables, add declared columns an older warehouse lacks, and give every
    column DuckDB typed NULL (made by cleanset before issue 12) its declared type or VARCHAR."""
    for ddl in [*SCHEMA, *MIGRATIONS]:
        con.execute(ddl)
    declared = {(t, c): d for t, cols in TABLES.items() for c, d in cols}
    for table, column in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE "
            "table_schema = 'main' AND trim(data_type, '\"') = 'NULL'").fetchall():
        dtype = declared.get((table, column), "VARCHAR")
        con.execute(f"ALTER TABLE {quote_ident(table)} ALTER COLUMN {quote_ident(column)} "
                    f"TYPE {dtype}")


@contextmanager
def _begun(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Committed when the block ends, rolled back on any error."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _schema_ready(con: duckdb.DuckDBPyConnection) -> None:
    """ensure_schema in its own short transaction (declared tables and columns only: no data)."""
    with _begun(con):
        ensure_schema(con)


@contextmanager
def transaction(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction on the warehouse, schema ensured: committed when the block ends,
    rolled back on any error (a crash before COMMIT leaves the warehouse as it was)."""
    con = connect(db)
    try:
        _schema_ready(con)
        with _begun(con):
            yield con
    finally:
        con.close()
