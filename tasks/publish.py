"""publish: write one run into the DuckDB warehouse in a single transaction.

The run id is derived from the input's content and the settings, so publishing the same run twice
replaces that run's rows instead of adding copies (idempotent), and a crash before COMMIT leaves
the warehouse exactly as it was. DuckDB admits one writer process: connections are short and a
locked file is retried with backoff.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import duckdb
from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from pydantic import BaseModel, ConfigDict

from tasks.choose import ModelChoice
from tasks.decide import Decided
from tasks.detect import Detection
from tasks.errors import is_retryable
from tasks.estimate import ModelCheck
from tasks.evaluate import Evaluation
from tasks.featurize import Design, FeaturePlan
from tasks.ingest import Snapshot
from tasks.spec import DatasetSpec
from tasks.validate import Validation
from tasks.warehouse import connect, quote_ident

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, dataset VARCHAR, flow_run_id VARCHAR, source VARCHAR,
        source_sha256 VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR,
        n_rows BIGINT, n_clean_rows BIGINT, n_label_issues BIGINT, health_score DOUBLE,
        spec JSON, cleanset_version VARCHAR, model VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS issues (
        run_id VARCHAR, dataset VARCHAR, row_id VARCHAR, given_label VARCHAR,
        suggested_label VARCHAR, suggested_label_confidence DOUBLE, is_label_issue BOOLEAN,
        label_score DOUBLE, is_invalid_issue BOOLEAN, invalid_score DOUBLE, action VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS issue_summary (
        run_id VARCHAR, dataset VARCHAR, issue_type VARCHAR, num_issues BIGINT, score DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS validations (
        run_id VARCHAR, dataset VARCHAR, suite VARCHAR, expectation VARCHAR,
        column_name VARCHAR, severity VARCHAR, success BOOLEAN, unexpected_count BIGINT,
        details JSON)""",
    """CREATE TABLE IF NOT EXISTS class_summary (
        run_id VARCHAR, dataset VARCHAR, class_name VARCHAR, n_rows BIGINT,
        n_label_issues BIGINT, label_noise DOUBLE, inverse_label_noise DOUBLE,
        label_quality DOUBLE, most_overlapping_class VARCHAR,
        overlap_joint_probability DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS review_decisions (
        dataset VARCHAR, row_id VARCHAR, decision VARCHAR, new_label VARCHAR,
        decided_at TIMESTAMPTZ, note VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS model_screening (
        run_id VARCHAR, dataset VARCHAR, model VARCHAR, n_rows BIGINT, log_loss DOUBLE,
        accuracy DOUBLE, seconds DOUBLE, projected_seconds DOUBLE, within_budget BOOLEAN,
        chosen BOOLEAN)""",
    """CREATE TABLE IF NOT EXISTS column_roles (
        run_id VARCHAR, dataset VARCHAR, column_name VARCHAR, role VARCHAR, reason VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS evaluations (
        run_id VARCHAR, dataset VARCHAR, trained_on VARCHAR, model VARCHAR, test_set VARCHAR,
        n_train BIGINT, n_test BIGINT, accuracy DOUBLE, macro_f1 DOUBLE)""",
]
# Columns added after a table was first released: applied to existing warehouses on connect.
MIGRATIONS = [
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS model VARCHAR",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS label_health_score DOUBLE",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS snapshot_path VARCHAR",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS id_column VARCHAR",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS n_relabelled BIGINT",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS n_review BIGINT",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS n_reviewed BIGINT",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS orphan_decisions VARCHAR[]",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS model_accuracy DOUBLE",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS model_log_loss DOUBLE",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS chance_accuracy DOUBLE",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS chance_log_loss DOUBLE",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS model_skill DOUBLE",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS model_trusted BOOLEAN",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS model_warning VARCHAR",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS auto_fix BOOLEAN",
    "ALTER TABLE review_decisions ADD COLUMN IF NOT EXISTS reviewer VARCHAR",
    "ALTER TABLE review_decisions ADD COLUMN IF NOT EXISTS source VARCHAR",
    "ALTER TABLE review_decisions ADD COLUMN IF NOT EXISTS given_label VARCHAR",
]
RUN_TABLES = ("issues", "issue_summary", "validations", "class_summary", "evaluations",
              "model_screening", "column_roles")


class RunSummary(BaseModel):
    """What a finished run published: returned by the flow and printed by the CLI."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    dataset: str
    db: str
    n_rows: int
    n_clean_rows: int
    n_label_issues: int
    n_invalid: int
    n_relabelled: int = 0
    n_review: int = 0
    n_reviewed: int = 0
    orphan_decisions: tuple[str, ...] = ()
    health_score: float
    label_health_score: float = 1.0
    issue_counts: dict[str, int] = {}
    evaluation: dict[str, dict[str, float]] = {}  # trained_on -> {accuracy, macro_f1}
    test_set: str = ""
    clean_table: str
    model: str = ""
    model_check: dict[str, float | bool | str] = {}  # estimate.ModelCheck as a dict
    auto_fix: bool = True
    left_out: tuple[tuple[str, str], ...] = ()  # (column, why) not used as a feature


CHECK_COLUMNS = ("model_accuracy", "model_log_loss", "chance_accuracy", "chance_log_loss",
                 "model_skill", "model_trusted", "model_warning")


def check_row(check: ModelCheck | None) -> dict:
    """The runs columns of the model check (empty when the user supplied pred_probs unchecked)."""
    if check is None:
        return {}
    return {"model_accuracy": check.accuracy, "model_log_loss": check.log_loss,
            "chance_accuracy": check.chance_accuracy, "chance_log_loss": check.chance_log_loss,
            "model_skill": check.skill, "model_trusted": check.trusted,
            "model_warning": check.warning}


def column_rows(plan: FeaturePlan) -> list[tuple[str, str, str]]:
    """(column, role, why) for every column the run considered: used ones and left-out ones."""
    why = dict(plan.reasons)
    used = [(c, plan.role_of(c), why.get(c, "")) for c in plan.used]
    return used + [(c, "ignore", reason) for c, reason in plan.dropped]


def cleanset_version() -> str:
    try:
        return version("cleanset")
    except PackageNotFoundError:
        return "0+unknown"


def run_key(source_sha256: str, spec_fingerprint: str, decisions_sha256: str | None = None
            ) -> str:
    """The run id: same input bytes + same settings + same review decisions + same cleanset
    version = same run."""
    raw = f"{source_sha256}|{spec_fingerprint}|{cleanset_version()}"
    if decisions_sha256:
        raw += f"|{decisions_sha256}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in [*SCHEMA, *MIGRATIONS]:
        con.execute(ddl)


@contextmanager
def transaction(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction on the warehouse, schema ensured: committed when the block ends,
    rolled back on any error (a crash before COMMIT leaves the warehouse as it was)."""
    con = connect(db)
    try:
        con.execute("BEGIN TRANSACTION")
        ensure_schema(con)
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _add_missing_columns(con: duckdb.DuckDBPyConnection, table: str, source_sql: str,
                         params: list) -> None:
    """Schema evolution: add to `table` any column the new rows have and it lacks."""
    have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    new = con.execute(f"DESCRIBE {source_sql}", params).fetchall()
    for name, dtype, *_ in new:
        if name not in have:  # an all-null column has type NULL: store it as text
            dtype = "VARCHAR" if dtype == "NULL" else dtype
            con.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(name)} {dtype}")


def label_original_column(label: str, columns: list[str]) -> str:
    """The clean table's column keeping the data's own label beside a relabelled one."""
    name = f"{label}_original"
    while name in columns:
        name += "_"
    return name


def write_run(
    db: Path, run_id: str, dataset: str, label: str, snapshot: Snapshot, decided: Decided,
    validation: Validation, detection: Detection, run_row: dict,
    evaluation: Evaluation | None = None, screening: list[dict] | None = None,
    columns: list[tuple[str, str, str]] | None = None,
) -> RunSummary:
    """Replace everything for run_id in one transaction and swap <dataset>_clean to this run.

    The clean table holds the rows whose action is not `drop`; a relabelled row carries its new
    label in the label column and the data's own label in `<label>_original`."""
    clean = quote_ident(f"{dataset}_clean")
    history = quote_ident(f"{dataset}_clean_history")
    lab = quote_ident(label)
    original = quote_ident(label_original_column(label, list(snapshot.columns)))
    with transaction(db) as con:
        label_type = con.execute(f"SELECT {lab} FROM read_parquet(?) LIMIT 0",
                                 [snapshot.table.path]).description[0][1]
        clean_rows_sql = (
            f"SELECT ? AS run_id, s.* REPLACE (CASE WHEN i.action = 'relabel' THEN "
            f"CAST(i.final_label AS {label_type}) ELSE s.{lab} END AS {lab}), "
            f"s.{lab} AS {original} FROM read_parquet(?) s POSITIONAL JOIN "
            "(SELECT action, final_label FROM read_parquet(?)) i WHERE i.action <> 'drop'"
        )
        clean_params = [run_id, snapshot.table.path, decided.table.path]
        for table in (*RUN_TABLES, "runs"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        issues_sql = "SELECT ? AS run_id, ? AS dataset, * FROM read_parquet(?)"
        issues_params = [run_id, dataset, decided.table.path]
        _add_missing_columns(con, "issues", issues_sql, issues_params)
        con.execute(f"INSERT INTO issues BY NAME {issues_sql}", issues_params)
        con.executemany(
            "INSERT INTO issue_summary VALUES (?, ?, ?, ?, ?)",
            [[run_id, dataset, t, n, s] for t, n, s in detection.summary],
        )
        if detection.classes is not None:
            con.execute("INSERT INTO class_summary BY NAME SELECT ? AS run_id, ? AS dataset, * "
                        "FROM read_parquet(?)", [run_id, dataset, detection.classes.path])
        if validation.outcomes:
            con.executemany(
                "INSERT INTO validations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[run_id, dataset, o.suite, o.expectation, o.column_name, o.severity, o.success,
                  o.unexpected_count, o.details] for o in validation.outcomes],
            )
        if evaluation is not None:
            con.executemany(
                "INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[run_id, dataset, r["trained_on"], r["model"], r["test_set"], r["n_train"],
                  r["n_test"], r["accuracy"], r["macro_f1"]] for r in evaluation.rows])
        if screening:
            con.executemany(
                "INSERT INTO model_screening VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[run_id, dataset, r["model"], r["rows"], r["log_loss"], r["accuracy"],
                  r["seconds"], r["projected_seconds"], r["within_budget"], r["chosen"]]
                 for r in screening])
        if columns:
            con.executemany("INSERT INTO column_roles VALUES (?, ?, ?, ?, ?)",
                            [[run_id, dataset, c, role, why] for c, role, why in columns])
        con.execute(f"CREATE TABLE IF NOT EXISTS {history} AS {clean_rows_sql} LIMIT 0",
                    clean_params)
        _add_missing_columns(con, history, clean_rows_sql, clean_params)
        con.execute(f"DELETE FROM {history} WHERE run_id = ?", [run_id])
        con.execute(f"INSERT INTO {history} BY NAME {clean_rows_sql}", clean_params)
        con.execute(f"CREATE OR REPLACE TABLE {clean} AS SELECT * EXCLUDE (run_id) FROM {history} "
                    "WHERE run_id = ?", [run_id])
        n_clean = con.execute(f"SELECT count(*) FROM {clean}").fetchall()[0][0]
        n_label, n_invalid, n_relabelled, n_review = con.execute(
            "SELECT count(*) FILTER (WHERE is_label_issue), count(*) FILTER (WHERE "
            "is_invalid_issue), count(*) FILTER (WHERE action = 'relabel'), count(*) FILTER "
            "(WHERE action = 'review') FROM issues WHERE run_id = ?", [run_id]).fetchall()[0]
        row = {**run_row, "run_id": run_id, "dataset": dataset, "n_rows": snapshot.table.n_rows,
               "n_clean_rows": n_clean, "n_label_issues": n_label,
               "health_score": detection.health_score,
               "label_health_score": detection.label_health_score, "status": "completed",
               "finished_at": datetime.now(UTC), "snapshot_path": snapshot.table.path,
               "id_column": snapshot.id_column, "n_relabelled": n_relabelled,
               "n_review": n_review, "n_reviewed": decided.n_reviewed,
               "orphan_decisions": list(decided.orphan_decisions)}
        cols = list(row)
        con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [row[c] for c in cols])
    return RunSummary(
        run_id=run_id, dataset=dataset, db=str(db), n_rows=snapshot.table.n_rows,
        n_clean_rows=n_clean, n_label_issues=n_label, n_invalid=n_invalid,
        n_relabelled=n_relabelled, n_review=n_review, n_reviewed=decided.n_reviewed,
        orphan_decisions=decided.orphan_decisions, health_score=detection.health_score,
        label_health_score=detection.label_health_score,
        issue_counts={t: n for t, n, _ in detection.summary},
        evaluation={r["trained_on"]: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
                    for r in evaluation.rows} if evaluation else {},
        test_set=evaluation.test_set if evaluation else "",
        clean_table=f"{dataset}_clean", model=run_row.get("model") or "",
        model_check={k: run_row[k] for k in CHECK_COLUMNS if run_row.get(k) is not None},
        auto_fix=bool(run_row.get("auto_fix", True)),
        left_out=tuple((c, why) for c, role, why in (columns or []) if role == "ignore"))


@task(
    name="publish",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[2, 5, 10],
    retry_condition_fn=is_retryable,
)
def publish(
    spec: DatasetSpec, snapshot: Snapshot, validation: Validation, detection: Detection,
    decided: Decided, model: str = "", evaluation: Evaluation | None = None,
    check: ModelCheck | None = None, choice: ModelChoice | None = None,
    design: Design | None = None,
) -> RunSummary:
    """Publish the run to DuckDB (never cached: the warehouse is the side effect)."""
    run_id = run_key(snapshot.source_sha256, spec.fingerprint(), decided.decisions_sha256)
    flow_ctx = FlowRunContext.get()
    started = flow_ctx.flow_run.start_time if flow_ctx and flow_ctx.flow_run else None
    run_row = {
        "flow_run_id": str(runtime.flow_run.id or ""),
        "source": spec.source,
        "source_sha256": snapshot.source_sha256,
        "started_at": started if started else datetime.now(UTC),
        "spec": json.dumps(spec.model_dump(mode="json")),
        "cleanset_version": cleanset_version(),
        "model": model,
        "auto_fix": spec.policy.auto_fix,
        **check_row(check),
    }
    screening = [s.model_dump() for s in choice.screening] if choice else None
    columns = column_rows(design.plan) if design else None
    summary = write_run(spec.db_path, run_id, spec.dataset_name, spec.label, snapshot, decided,
                        validation, detection, run_row, evaluation, screening, columns)
    get_run_logger().info("published run %s to %s: %d rows, %d clean, %d label issues",
                          run_id, spec.db, summary.n_rows, summary.n_clean_rows,
                          summary.n_label_issues)
    return summary
