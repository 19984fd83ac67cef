"""publish: write one run into the DuckDB warehouse in a single transaction.

The run id is derived from the input's content and the settings, so publishing the same run twice
replaces that run's rows instead of adding copies (idempotent), and a crash before COMMIT leaves
the warehouse exactly as it was. DuckDB admits one writer process: connections are short and a
locked file is retried with backoff.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import duckdb
import pandas as pd
from prefect import get_run_logger, runtime
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from pydantic import BaseModel, ConfigDict

from tasks.annotators import Consensus
from tasks.audit import AuditResult
from tasks.batches import Accumulated, Batch
from tasks.caching import TASKS_DIR, stage
from tasks.choose import ModelChoice
from tasks.decide import Decided
from tasks.detect import Detection
from tasks.errors import CleansetError
from tasks.estimate import ModelCheck
from tasks.evaluate import Evaluation
from tasks.featurize import Design, FeaturePlan
from tasks.incremental import ModeDecision, ModelStore
from tasks.ingest import Snapshot
from tasks.schema import (  # noqa: F401 - TABLES, ensure_schema, transaction: still importable here
    RUN_TABLES,
    TABLES,
    _begun,
    _schema_ready,
    ensure_schema,
    transaction,
)
from tasks.spec import DatasetSpec
from tasks.store import file_sha256
from tasks.timing import calls_of
from tasks.validate import Validation
from tasks.warehouse import connect, quote_ident
from tasks.warehouse_lock import warehouse_slot


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
    left_out: tuple[str, ...] = ()  # data columns not used as features, and why
    health_score: float
    label_health_score: float = 1.0
    issue_counts: dict[str, int] = {}
    evaluation: dict[str, dict[str, float]] = {}  # trained_on -> {accuracy, macro_f1} or
    #                                               {rmse, mae, r2} (regression)
    test_set: str = ""
    clean_table: str
    model: str = ""
    model_check: dict[str, float | bool | str] = {}  # estimate.ModelCheck as a dict
    auto_fix: bool = True
    n_well_labeled: int = 0
    flagged_slices: tuple[str, ...] = ()  # "column=value: rate vs rest" of flagged slices
    task: str = "classification"
    task_reason: str = ""
    mode: str = "full"
    mode_reason: str = ""
    models_run_id: str = ""  # the full run whose fold models scored (a dataset folder's run)
    n_new_rows: int = 0  # incremental: rows scored by the stored fold models
    n_verdicts_changed: int | None = None  # old rows whose flag or action changed, None: no
    verdicts_changed: str = ""  # previous run; why, e.g. "model changed 12, label changed 1"
    n_batches: int = 0  # a dataset folder's accepted batches (0: a one-off run of files)
    new_batches: tuple[str, ...] = ()  # batch ids accepted by this run
    quarantined_batches: tuple[str, ...] = ()  # batch ids quarantined by this run
    n_replaced: int = 0  # rows of earlier batches replaced by a later batch's (same id)
    degraded: str = ""  # why the run emitted cleanset.dataset.degraded, when it did
    report_error: str = ""  # why the HTML report failed, when it did (the run is published)
    batch_audits: tuple[dict, ...] = ()  # this run's new batches against the dataset
    #                                      (batch_audit_summary)
    annotators: tuple[dict, ...] = ()  # with several annotators: annotator_summary rows
    #                                    (annotator, annotator_quality, ...), best first
    consensus: str = ""  # how the label was made from them: CROWDLAB, or majority vote (why)
    n_consensus_changed: int = 0  # scored rows whose consensus differs from the majority vote
    stages: tuple[dict, ...] = ()  # seconds and memory per stage, against the previous run
    #                                (tasks/timing.py; summary.record_stages)


EVALUATION_METRICS = ("accuracy", "macro_f1", "rmse", "mae", "r2", "micro_f1", "jaccard")
CHECK_COLUMNS = ("model_accuracy", "model_log_loss", "chance_accuracy", "chance_log_loss",
                 "model_skill", "model_trusted", "model_warning", "model_micro_f1")


def check_row(check: ModelCheck | None) -> dict:
    """The runs columns of the model check (empty when the user supplied pred_probs unchecked)."""
    if check is None:
        return {}
    row = {"model_accuracy": check.accuracy, "model_log_loss": check.log_loss,
           "chance_accuracy": check.chance_accuracy, "chance_log_loss": check.chance_log_loss,
           "model_skill": check.skill, "model_trusted": check.trusted,
           "model_warning": check.warning, "model_micro_f1": check.micro_f1}
    # a regression has no accuracy (NaN): NULL; its log_loss fields hold MSE and variance;
    # a multilabel run has none either: its log loss is per tag, its micro-F1 its own column
    return {k: None if isinstance(v, float) and v != v else v for k, v in row.items()}


def column_rows(plan: FeaturePlan) -> list[tuple[str, str, str]]:
    """(column, role, why) for every column the run considered: used ones and left-out ones."""
    why = dict(plan.reasons)
    used = [(c, plan.role_of(c), why.get(c, "")) for c in plan.used]
    return used + [(c, "ignore", reason) for c, reason in plan.dropped]


def mode_row(accumulated: Accumulated | None, mode: ModeDecision | None = None,
             kept: ModelStore | None = None) -> dict:
    """runs.mode and why (tasks/incremental.py), the models kept or used, and the batch counts
    of a dataset folder's run."""
    if accumulated is None:
        return {"mode": "full", "mode_reason": "a run of the given file(s)"}
    new = sum(b.run_id is None and b.status == "accepted" for b in accumulated.batches)
    n = sum(b.status == "accepted" for b in accumulated.batches)
    row = {"mode": "full", "mode_reason": f"every run of a dataset cleans all its accepted "
           f"batches ({n}, {new} new)", "n_batches": n, "n_new_batches": new}
    if mode is not None:
        row.update(mode=mode.mode, mode_reason=mode.reason)
    if mode is not None and mode.incremental:
        row.update(models_run_id=mode.models_run_id,
                   n_new_rows=mode.n_new + mode.n_label_changed + mode.n_data_changed)
    elif kept is not None:
        row["models"] = kept.model_dump_json()
    return row


def audit_frame(result: AuditResult, dataset: str, run_id: str, batch_id: str) -> pd.DataFrame:
    """A batch's audit as `batch_audit` rows: the declared columns, in order, with their types."""
    rows = [{"dataset": dataset, "run_id": run_id, "batch_id": batch_id, "check_name": c.check,
             "column_name": c.column, "statistic": c.statistic, "value": c.value,
             "effect_size": c.effect_size, "threshold": c.threshold, "severity": c.severity,
             "outcome": c.outcome, "message": c.message} for c in result.checks]
    columns = TABLES["batch_audit"]
    frame = pd.DataFrame(rows, columns=[c for c, _ in columns])
    return frame.astype({c: "float64" if d == "DOUBLE" else "str" for c, d in columns
                         if c != "column_name"})


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



# ---- types: what a dataset's own columns become in the warehouse -----------------------------

SMALL_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                  "UINTEGER")  # all fit BIGINT
NUMERIC_TYPES = (*SMALL_INTEGERS, "UBIGINT", "HUGEINT", "UHUGEINT", "FLOAT", "DOUBLE")


def is_nested(dtype: str) -> bool:
    """LIST, ARRAY, STRUCT, MAP or UNION: stored as JSON text (see stored_type)."""
    return dtype.endswith("]") or dtype.startswith(("STRUCT", "MAP", "UNION"))


def is_null_type(dtype: str) -> bool:
    return dtype.strip('"') == "NULL"


def stored_type(dtype: str) -> str:
    """The type a data column is stored with: its own, except nested values as JSON (one type
    whatever fields or lengths a run brings) and an all-null column (DuckDB's NULL type, which
    accepts no later value) as VARCHAR."""
    if is_nested(dtype):
        return "JSON"
    return "VARCHAR" if is_null_type(dtype) else dtype


def widened(old: str, new: str) -> str:
    """The history column type holding both `old` and `new` values: integers -> BIGINT, numbers
    -> DOUBLE, anything else -> VARCHAR (every value keeps its text)."""
    if old == new:
        return old
    if old in SMALL_INTEGERS and new in SMALL_INTEGERS:
        return "BIGINT"
    numeric = [t in NUMERIC_TYPES or t.startswith("DECIMAL") for t in (old, new)]
    return "DOUBLE" if all(numeric) else "VARCHAR"


def _describe(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {sql}", params).fetchall()]


def _table_types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
        "'main' AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()}


def _check_fits(con: duckdb.DuckDBPyConnection, table: str, source_sql: str, params: list,
                casts: dict[str, tuple[str, str]]) -> None:
    """Raise a CleansetError naming table, column and types when a value of the source cannot be
    cast to its column's type (run before the write transaction starts)."""
    for column, (src, dst) in casts.items():
        q = quote_ident(column)
        bad = con.execute(
            f"SELECT count(*), any_value(CAST({q} AS VARCHAR)) FROM ({source_sql}) WHERE {q} IS "
            f"NOT NULL AND TRY_CAST({q} AS {dst}) IS NULL", params).fetchall()[0]
        if bad[0]:
            raise CleansetError(
                f"cannot publish into table {table}: column {column!r} is declared {dst} but "
                f"{bad[0]} value(s) of this run's type {src} do not fit (e.g. {bad[1]!r}); "
                "nothing was published")


def _insert_plan(con: duckdb.DuckDBPyConnection, table: str, source_sql: str, params: list
                 ) -> tuple[list[str], str]:
    """(ALTER statements, INSERT statement) putting the rows of `source_sql` into a declared
    table, every value cast to its column's type. A source column the table lacks is added (its
    own type; VARCHAR for an all-null one); a value that cannot be cast is a CleansetError."""
    have = _table_types(con, table)
    alters, select, casts = [], [], {}
    for name, dtype in _describe(con, source_sql, params):
        q = quote_ident(name)
        target = have.get(name)
        if target is None:
            target = stored_type(dtype)
            alters.append(f"ALTER TABLE {quote_ident(table)} ADD COLUMN {q} {target}")
        elif dtype != target and not is_null_type(dtype):
            casts[name] = (dtype, target)
        select.append(f"CAST({q} AS {target}) AS {q}")
    _check_fits(con, table, source_sql, params, casts)
    return alters, (f"INSERT INTO {quote_ident(table)} BY NAME SELECT {', '.join(select)} "
                    f"FROM ({source_sql})")


def clean_rows(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, decided: Decided, label: str
               ) -> tuple[str, list, list[tuple[str, str]], list[str]]:
    """The run's clean rows as SQL: (sql, params, [(column, stored type)], notes on columns left
    out of the features). Nested columns become JSON text, all-null ones VARCHAR; the label
    carries the decided label (relabelled rows) and `<label>_original` the data's own."""
    source = snapshot.table.path
    own = _describe(con, "SELECT * FROM read_parquet(?)", [source])
    lab = quote_ident(label)
    original = label_original_column(label, [c for c, _ in own])
    nulls = con.execute("SELECT " + ", ".join(
        f"count({quote_ident(c)})" for c, _ in own) + " FROM read_parquet(?)", [source]
    ).fetchall()[0] if own else ()
    select, types, notes = [], [], []
    for (name, dtype), n_values in zip(own, nulls, strict=True):
        q = quote_ident(name)
        kept = stored_type(dtype)
        if name == label:
            expr = (f"CASE WHEN i.action = 'relabel' THEN CAST(i.final_label AS {kept}) "
                    f"ELSE CAST(s.{q} AS {kept}) END")
        elif is_nested(dtype):
            expr = f"CAST(to_json(s.{q}) AS JSON)"
            notes.append(f"{name}: nested values ({dtype.split('(')[0]}) not used as features; "
                         "kept as JSON text in the clean table")
        else:
            expr = f"CAST(s.{q} AS {kept})"
        if n_values == 0 and name not in (label, snapshot.id_column):
            notes.append(f"{name}: all values missing; not used as a feature")
        select.append(f"{expr} AS {q}")
        types.append((name, kept))
    label_type = dict(types)[label]
    select.append(f"CAST(s.{lab} AS {label_type}) AS {quote_ident(original)}")
    types.append((original, label_type))
    sql = (f"SELECT ? AS run_id, {', '.join(select)} FROM read_parquet(?) s POSITIONAL JOIN "
           "(SELECT action, final_label FROM read_parquet(?)) i WHERE i.action <> 'drop' "
           "AND i.final_label IS NOT NULL")  # an unlabeled row enters once a reviewer labels it
    return sql, ["", source, decided.table.path], types, notes


def _history_plan(con: duckdb.DuckDBPyConnection, history: str, types: list[tuple[str, str]]
                  ) -> tuple[list[str], dict[str, str]]:
    """Schema evolution of `<dataset>_clean_history`: (DDL, column -> type to insert as).

    The history widens and never loses a value: a new column is added (earlier runs read NULL),
    a column this run lacks is NULL for its rows, and a column whose type changed takes the type
    holding both (`widened`: integers -> BIGINT, numbers -> DOUBLE, else VARCHAR)."""
    have = _table_types(con, history)
    q = quote_ident(history)
    if not have:
        cols = ", ".join(f"{quote_ident(c)} {t}" for c, t in [("run_id", "VARCHAR"), *types])
        return [f"CREATE TABLE {q} ({cols})"], dict(types)
    ddl, as_type = [], {}
    for name, dtype in types:
        old = have.get(name)
        if old is None:
            ddl.append(f"ALTER TABLE {q} ADD COLUMN {quote_ident(name)} {dtype}")
            as_type[name] = dtype
            continue
        wide = stored_type(old) if is_null_type(old) else widened(old, dtype)
        if wide != old:
            ddl.append(f"ALTER TABLE {q} ALTER COLUMN {quote_ident(name)} TYPE {wide}")
        as_type[name] = wide
    return ddl, as_type


CLEAN_ROWS = "cleanset_clean_rows"  # the run's clean rows, once, inside publish's transaction


def replace_clean(con: duckdb.DuckDBPyConnection, table: str, source: str,
                  types: list[tuple[str, str]], id_column: str | None) -> None:
    """Make `table` hold exactly the rows of the table `source` (less its run_id), inside the
    caller's transaction.

    When the table already has this run's columns and types, and the ids are unique and
    present on both sides, only the rows whose content changed are deleted and inserted
    (rows compared by id and a 64-bit hash of all their values): an incremental run changes a
    few rows of a million, and recreating the table wrote them all (1,010,000 rows: 3.6-5.8 s
    against 2.6-4.6 s with the comparison). Otherwise the table is recreated from the run.
    The same rows either way; their order in the table is not kept (read it with ORDER BY)."""
    q, src = quote_ident(table), quote_ident(source)
    have = _table_types(con, table)
    if not id_column or id_column not in have or list(have.items()) != list(types):
        con.execute(f"CREATE OR REPLACE TABLE {q} AS SELECT * EXCLUDE (run_id) FROM {src}")
        return
    key = quote_ident(id_column)
    # DuckDB hashes NaN and -NaN, 0.0 and -0.0 alike: a float's sign is hashed too, so that a
    # value whose text changed (`-0.0`, `-nan`) is replaced
    values = ", ".join([quote_ident(c) for c, _ in types] + [
        f"signbit({quote_ident(c)})" for c, t in types if t in ("FLOAT", "DOUBLE")])
    touched = "cleanset_clean_touched"
    unique = [f"(SELECT count(*) = count(DISTINCT {key}) AND count({key}) = count(*) FROM {t})"
              for t in (src, q)]
    if not con.execute(f"SELECT {unique[0]} AND {unique[1]}").fetchall()[0][0]:
        # an id missing or repeated: rows cannot be matched by id
        con.execute(f"CREATE OR REPLACE TABLE {q} AS SELECT * EXCLUDE (run_id) FROM {src}")
        return
    # (temporary tables end with the connection: dropped here when all went well, as after an
    # error the transaction only rolls back)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {touched} AS SELECT coalesce(w.k, c.k) AS k FROM "
        f"(SELECT {key} AS k, hash({values}) AS h FROM {src}) w FULL JOIN (SELECT {key} "
        f"AS k, hash({values}) AS h FROM {q}) c ON w.k = c.k WHERE w.h IS DISTINCT FROM c.h")
    con.execute(f"DELETE FROM {q} WHERE {key} IN (SELECT k FROM {touched})")
    con.execute(f"INSERT INTO {q} SELECT * EXCLUDE (run_id) FROM {src} WHERE {key} IN "
                f"(SELECT k FROM {touched})")
    con.execute(f"DROP TABLE {touched}")


def label_original_column(label: str, columns: list[str]) -> str:
    """The clean table's column keeping the data's own label beside a relabelled one."""
    name = f"{label}_original"
    while name in columns:
        name += "_"
    return name


VERDICT_REASONS = ("label changed", "data changed", "reviewed", "model changed",
                   "neighbours changed")


def verdict_changes(con: duckdb.DuckDBPyConnection, dataset: str, run_id: str,
                    issues_path: str, models_run_id: str | None) -> tuple[int | None, str]:
    """How many rows of the dataset's previous completed run changed verdict in this one (their
    label-issue flag or their action), and why, in this order: their given label changed, their
    feature values changed (`data_hash`), a reviewer's decision, the model changed (another
    estimation scored them: `models_run_id`), else `neighbours changed` (rows that joined or
    changed moved a kNN, duplicate or class-level check). (None, "") with no previous run."""
    prev = con.execute("SELECT run_id, models_run_id FROM runs WHERE dataset = ? AND status = "
                       "'completed' AND run_id <> ? ORDER BY finished_at DESC NULLS LAST LIMIT 1",
                       [dataset, run_id]).fetchall()
    if not prev:
        return None, ""
    prev_id, prev_models = prev[0]
    model_changed = models_run_id is None or prev_models != models_run_id
    have = {name for name, _ in _describe(con, "SELECT * FROM read_parquet(?)", [issues_path])}
    if not {"row_id", "given_label", "is_label_issue", "action"} <= have:
        return None, ""
    current = ("(SELECT *" + "".join(f", NULL::VARCHAR AS {c}" for c in ("data_hash",
               "decided_by") if c not in have) + " FROM read_parquet(?))")
    counts = dict(con.execute(
        "SELECT CASE WHEN p.given_label IS DISTINCT FROM CAST(c.given_label AS VARCHAR) THEN "
        "'label changed' WHEN p.data_hash <> c.data_hash THEN 'data changed' "
        "WHEN p.decided_by IS DISTINCT FROM c.decided_by OR c.decided_by = 'review' THEN "
        "'reviewed' WHEN ? THEN 'model changed' ELSE 'neighbours changed' END AS why, count(*) "
        f"FROM issues p JOIN {current} c ON p.row_id = CAST(c.row_id AS VARCHAR) "
        "WHERE p.run_id = ? AND (coalesce(p.is_label_issue, false) <> "
        "coalesce(c.is_label_issue, false) OR p.action IS DISTINCT FROM c.action) GROUP BY why",
        [model_changed, issues_path, prev_id]).fetchall())
    return sum(counts.values()), ", ".join(f"{why} {counts[why]}" for why in VERDICT_REASONS
                                           if counts.get(why))


def write_run(
    db: Path, run_id: str, dataset: str, label: str, snapshot: Snapshot, decided: Decided,
    validation: Validation, detection: Detection, run_row: dict,
    evaluation: Evaluation | None = None, screening: list[dict] | None = None,
    columns: list[tuple[str, str, str]] | None = None, accumulated: Accumulated | None = None,
    consensus: Consensus | None = None,
) -> RunSummary:
    """Replace everything for run_id in one transaction and swap <dataset>_clean to this run.

    The clean table holds the rows whose action is not `drop` and that have a label (an
    unlabeled row enters once a reviewer labels it); a relabelled row carries its new
    label in the label column and the data's own label in `<label>_original`."""
    clean = quote_ident(f"{dataset}_clean")
    history_name = f"{dataset}_clean_history"
    history = quote_ident(history_name)
    issues_sql = "SELECT ? AS run_id, ? AS dataset, * FROM read_parquet(?)"
    issues_params = [run_id, dataset, decided.table.path]
    if accumulated is not None:  # each row's batch, from the provenance in the same row order
        issues_sql = ("SELECT ? AS run_id, ? AS dataset, d.*, p.batch_id FROM read_parquet(?) d "
                      "POSITIONAL JOIN (SELECT batch_id FROM read_parquet(?)) p")
        issues_params.append(accumulated.provenance.path)
    con = connect(db)
    try:
        # Before the write transaction: the declared schema, then every type decision and every
        # check a value could fail (a CleansetError here leaves the warehouse as it was).
        _schema_ready(con)
        n_changed, why_changed = verdict_changes(con, dataset, run_id, decided.table.path,
                                                 run_row.get("models_run_id"))
        run_row = {**run_row, "n_verdicts_changed": n_changed, "verdicts_changed": why_changed}
        issue_ddl, insert_issues = _insert_plan(con, "issues", issues_sql, issues_params)
        class_ddl, insert_classes = _insert_plan(
            con, "class_summary", "SELECT ? AS run_id, ? AS dataset, * FROM read_parquet(?)",
            [run_id, dataset, detection.classes.path]) if detection.classes is not None else (
                [], None)
        slice_ddl, insert_slices = _insert_plan(
            con, "slice_summary", "SELECT ? AS run_id, ? AS dataset, * FROM read_parquet(?)",
            [run_id, dataset, detection.slices.path]) if detection.slices is not None else (
                [], None)
        rated = consensus.annotators if consensus is not None else None
        rated_ddl, insert_rated = _insert_plan(
            con, "annotator_summary", "SELECT ? AS run_id, ? AS dataset, * FROM read_parquet(?)",
            [run_id, dataset, rated.path]) if rated is not None else ([], None)
        clean_sql, clean_params, types, left_out = clean_rows(con, snapshot, decided, label)
        noted = {note.split(":")[0] for note in left_out}
        left_out = [*left_out, *(f"{c}: {why}" for c, role, why in (columns or [])
                                 if role == "ignore" and c not in noted)]
        clean_params[0] = run_id
        history_ddl, as_type = _history_plan(con, history_name, types)
        names = ", ".join(quote_ident(c) for c, _ in types)
        history_insert = (
            f"INSERT INTO {history} (run_id, {names}) SELECT run_id, " + ", ".join(
                f"CAST({quote_ident(c)} AS {as_type[c]})" for c, _ in types)
            + f" FROM {CLEAN_ROWS}")
        with _begun(con):
            for table in (*RUN_TABLES, "runs"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            for ddl in issue_ddl:
                con.execute(ddl)
            con.execute(insert_issues, issues_params)
            con.executemany(
                "INSERT INTO issue_summary VALUES (?, ?, ?, ?, ?)",
                [[run_id, dataset, t, n, s] for t, n, s in detection.summary],
            )
            if insert_classes is not None:
                for ddl in class_ddl:
                    con.execute(ddl)
                con.execute(insert_classes, [run_id, dataset, detection.classes.path])
            if insert_slices is not None:
                for ddl in slice_ddl:
                    con.execute(ddl)
                con.execute(insert_slices, [run_id, dataset, detection.slices.path])
            if insert_rated is not None:
                for ddl in rated_ddl:
                    con.execute(ddl)
                con.execute(insert_rated, [run_id, dataset, rated.path])
            if validation.outcomes:
                con.executemany(
                    "INSERT INTO validations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[run_id, dataset, o.suite, o.expectation, o.column_name, o.severity,
                      o.success, o.unexpected_count, o.details] for o in validation.outcomes],
                )
            if evaluation is not None:
                con.executemany(
                    "INSERT INTO evaluations (run_id, dataset, trained_on, model, test_set, "
                    "n_train, n_test, accuracy, macro_f1, rmse, mae, r2, micro_f1, jaccard) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[run_id, dataset, r["trained_on"], r["model"], r["test_set"], r["n_train"],
                      r["n_test"], *(r.get(m) for m in EVALUATION_METRICS)]
                     for r in evaluation.rows])
            if screening:
                # a regression's screening measured MSE and R^2, a multilabel one per-tag log
                # loss and micro-F1 (in log_loss / accuracy of choose.Screened): stored under
                # their own names
                con.executemany(
                    "INSERT INTO model_screening (run_id, dataset, model, n_rows, log_loss, "
                    "accuracy, seconds, projected_seconds, within_budget, chosen, mse, r2, "
                    "micro_f1) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[run_id, dataset, r["model"], r["rows"],
                      None if r.get("regression") else r["log_loss"],
                      None if r.get("regression") or r.get("multilabel") else r["accuracy"],
                      r["seconds"], r["projected_seconds"], r["within_budget"], r["chosen"],
                      r["log_loss"] if r.get("regression") else None,
                      r["accuracy"] if r.get("regression") else None,
                      r["accuracy"] if r.get("multilabel") else None]
                     for r in screening])
            if columns:
                con.executemany("INSERT INTO column_roles VALUES (?, ?, ?, ?, ?)",
                                [[run_id, dataset, c, role, why] for c, role, why in columns])
            if accumulated is not None:
                write_batch_rows(con, dataset, run_id, accumulated)
            for ddl in history_ddl:
                con.execute(ddl)
            con.execute(f"DELETE FROM {history} WHERE run_id = ?", [run_id])
            # the run's clean rows are read from its files once, for the history and the table
            con.execute(f"CREATE OR REPLACE TEMP TABLE {CLEAN_ROWS} AS {clean_sql}", clean_params)
            con.execute(history_insert)
            # The clean table is this run's rows with this run's own types (not the history's
            # widened ones): its columns follow the data.
            replace_clean(con, f"{dataset}_clean", CLEAN_ROWS, types, snapshot.id_column)
            con.execute(f"DROP TABLE {CLEAN_ROWS}")  # (a failed run's ends with the connection)
            n_clean = con.execute(f"SELECT count(*) FROM {clean}").fetchall()[0][0]
            n_label, n_invalid, n_relabelled, n_review, n_well, n_certifiable = con.execute(
                "SELECT count(*) FILTER (WHERE is_label_issue), count(*) FILTER (WHERE "
                "is_invalid_issue), count(*) FILTER (WHERE action = 'relabel'), count(*) FILTER "
                "(WHERE action = 'review'), count(*) FILTER (WHERE is_well_labeled), "
                "count(is_well_labeled) FROM issues WHERE run_id = ?", [run_id]).fetchall()[0]
            flagged_slices = tuple(
                f"{c}={v}: {rate:.1%} label issues vs {rest:.1%} in the rest" for c, v, rate, rest
                in con.execute("SELECT slice_column, slice_value, issue_rate, rest_issue_rate "
                               "FROM slice_summary WHERE run_id = ? AND is_flagged ORDER BY "
                               "issue_rate DESC", [run_id]).fetchall())
            annotators = tuple(
                dict(zip(("annotator", "annotator_quality", "agreement_with_consensus",
                          "worst_class", "rows_labeled"), r, strict=True))
                for r in con.execute(
                    "SELECT annotator, annotator_quality, agreement_with_consensus, worst_class, "
                    "rows_labeled FROM annotator_summary WHERE run_id = ? ORDER BY "
                    "annotator_quality DESC, annotator", [run_id]).fetchall())
            row = {**run_row, "run_id": run_id, "dataset": dataset,
                   "n_rows": snapshot.table.n_rows, "n_clean_rows": n_clean,
                   "n_label_issues": n_label, "health_score": detection.health_score,
                   "label_health_score": detection.label_health_score, "status": "completed",
                   "finished_at": datetime.now(UTC), "snapshot_path": snapshot.table.path,
                   "id_column": snapshot.id_column, "n_relabelled": n_relabelled,
                   "n_review": n_review, "n_reviewed": decided.n_reviewed,
                   "orphan_decisions": list(decided.orphan_decisions), "left_out": left_out,
                   "n_well_labeled": n_well if n_certifiable else None}
            cols = list(row)
            con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES "
                        f"({', '.join('?' * len(cols))})", [row[c] for c in cols])
    finally:
        con.close()
    return RunSummary(
        run_id=run_id, dataset=dataset, db=str(db), n_rows=snapshot.table.n_rows,
        n_clean_rows=n_clean, n_label_issues=n_label, n_invalid=n_invalid,
        n_relabelled=n_relabelled, n_review=n_review, n_reviewed=decided.n_reviewed,
        orphan_decisions=decided.orphan_decisions, left_out=tuple(left_out),
        health_score=detection.health_score,
        label_health_score=detection.label_health_score,
        issue_counts={t: n for t, n, _ in detection.summary},
        evaluation={r["trained_on"]: {m: r[m] for m in EVALUATION_METRICS if r.get(m) is not None}
                    for r in evaluation.rows} if evaluation else {},
        test_set=evaluation.test_set if evaluation else "",
        clean_table=f"{dataset}_clean", model=run_row.get("model") or "",
        model_check={k: run_row[k] for k in CHECK_COLUMNS if run_row.get(k) is not None},
        auto_fix=bool(run_row.get("auto_fix", True)), mode=run_row.get("mode") or "full",
        mode_reason=run_row.get("mode_reason") or "",
        models_run_id=run_row.get("models_run_id") or "",
        n_new_rows=run_row.get("n_new_rows") or 0,
        n_verdicts_changed=run_row.get("n_verdicts_changed"),
        verdicts_changed=run_row.get("verdicts_changed") or "",
        n_well_labeled=n_well, flagged_slices=flagged_slices,
        task=run_row.get("task") or "classification", task_reason=run_row.get("task_reason") or "",
        annotators=annotators, consensus=consensus.method if consensus is not None else "",
        n_consensus_changed=consensus.n_changed if consensus is not None else 0,
        **batch_summary(accumulated))


def batch_summary(accumulated: Accumulated | None) -> dict:
    """The RunSummary fields about a dataset folder's batches."""
    if accumulated is None:
        return {}
    new = [b for b in accumulated.batches if b.run_id is None]
    return {"n_batches": sum(b.status == "accepted" for b in accumulated.batches),
            "new_batches": tuple(b.batch_id for b in new if b.status == "accepted"),
            "quarantined_batches": tuple(b.batch_id for b in new if b.status != "accepted"),
            "n_replaced": accumulated.n_replaced,
            "batch_audits": tuple(batch_audit_summary(b) for b in new)}


def batch_audit_summary(batch: Batch) -> dict:
    """One new batch against the dataset, for the run summary, shaped like the report's
    (report.read.run_batch_audits): status, reason, the checks that warned or failed."""
    checks = (batch.audit or {}).get("checks", ())
    flagged = [{"check_name": c["check"], "column_name": c["column"], "outcome": c["outcome"],
                "severity": c["severity"], "effect_size": c["effect_size"],
                "threshold": c["threshold"], "message": c["message"]}
               for c in checks if c["outcome"] != "pass"]
    return {"batch_id": batch.batch_id, "file": Path(batch.file).name,
            "rows": batch.snapshot.n_rows if batch.snapshot else None, "status": batch.status,
            "reason": batch.reason, "audited": bool(checks), "flagged": flagged}


def write_batch_rows(con: duckdb.DuckDBPyConnection, dataset: str, run_id: str,
                     accumulated: Accumulated) -> None:
    """Record the batches this run saw first (accepted or quarantined) and their audits
    (`batch_audit`), in the run's transaction: replaced when the same run is published again,
    never half-written."""
    new = [b for b in accumulated.batches if b.run_id is None]
    if not new:
        return
    con.executemany("DELETE FROM batches WHERE dataset = ? AND batch_id = ?",
                    [[dataset, b.batch_id] for b in new])
    con.executemany(
        "INSERT INTO batches (dataset, batch_id, file, sha256, rows, arrived_at, run_id, status, "
        "reason, snapshot_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [[dataset, b.batch_id, b.file, b.sha256, b.snapshot.n_rows if b.snapshot else None,
          b.arrived_at, run_id, b.status, b.reason or None,
          b.snapshot.path if b.snapshot else None] for b in new])
    audited = [audit_frame(AuditResult.model_validate(b.audit), dataset, run_id, b.batch_id)
               for b in new if b.audit]
    if audited:  # one row per check per batch, replaced (never doubled) on a re-publish
        con.executemany("DELETE FROM batch_audit WHERE dataset = ? AND batch_id = ?",
                        [[dataset, b.batch_id] for b in new])
        con.register("cleanset_audit_rows", pd.concat(audited, ignore_index=True))
        try:
            con.execute("INSERT INTO batch_audit SELECT * FROM cleanset_audit_rows")
        finally:
            con.unregister("cleanset_audit_rows")


@stage("publish", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 10])
def publish(
    spec: DatasetSpec, snapshot: Snapshot, validation: Validation, detection: Detection,
    decided: Decided, model: str = "", evaluation: Evaluation | None = None,
    check: ModelCheck | None = None, choice: ModelChoice | None = None,
    design: Design | None = None, accumulated: Accumulated | None = None,
    mode: ModeDecision | None = None, kept: ModelStore | None = None,
    consensus: Consensus | None = None,
) -> RunSummary:
    """Publish the run to DuckDB (never cached: the warehouse is the side effect). `mode`: a
    dataset folder's full or incremental decision; `kept`: a full run's kept models."""
    run_id = run_key(snapshot.source_sha256, spec.fingerprint(), decided.decisions_sha256)
    if mode is not None and mode.incremental:  # not the full run of the same data
        run_id = hashlib.sha256(f"{run_id}|incremental|{mode.models_run_id}".encode()
                                ).hexdigest()[:16]
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
        "task": design.task if design else None,
        "task_reason": design.task_reason if design else None,
        "tag_delimiter": design.tag_delimiter if design else None,
        **check_row(check),
        **mode_row(accumulated, mode, kept),
    }
    if run_row.get("models"):  # a full run's models are its own
        run_row["models_run_id"] = run_id
    screening = [s.model_dump() for s in choice.screening] if choice else None
    columns = column_rows(design.plan) if design else None
    summary = write_run(spec.db_path, run_id, spec.dataset_name, spec.label, snapshot, decided,
                        validation, detection, run_row, evaluation, screening, columns,
                        accumulated, consensus)
    get_run_logger().info("published run %s to %s: %d rows, %d clean, %d label issues",
                          run_id, spec.db, summary.n_rows, summary.n_clean_rows,
                          summary.n_label_issues)
    return summary


# ---- failed runs ------------------------------------------------------------------------------

HELPER_MODULES = {"errors", "store", "caching", "timing", "warehouse", "warehouse_lock",
                  "textfiles", "spec", "schema", "values"}


def failed_stage(exc: BaseException) -> str:
    """The stage an error came from: the outermost tasks/<stage>.py (or tasks/<stage>/...) frame
    of its traceback (helpers such as tasks/store.py are skipped), else `flow`."""
    tb = exc.__traceback__
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename)
        if path.is_relative_to(TASKS_DIR):
            name = path.relative_to(TASKS_DIR).parts[0].removesuffix(".py")
            if name not in HELPER_MODULES:
                return name
        tb = tb.tb_next
    return "flow"


def record_failed_run(db: Path, dataset: str, stage: str, message: str, *, flow_run_id: str = "",
                      source: str = "", source_sha256: str | None = None,
                      started_at: datetime | None = None, spec: str | None = None) -> str:
    """Write one `runs` row with status `failed`, the stage and the message, in its own short
    transaction (nothing of the run is published). Returns its run id (`failed-...`, never one of
    the content-derived ids of completed runs). The caller holds the warehouse lock."""
    run_id = "failed-" + hashlib.sha256(
        f"{flow_run_id}|{dataset}|{time.time_ns()}".encode()).hexdigest()[:9]
    row = {"run_id": run_id, "dataset": dataset, "flow_run_id": flow_run_id, "source": source,
           "source_sha256": source_sha256, "started_at": started_at or datetime.now(UTC),
           "finished_at": datetime.now(UTC), "status": "failed", "stage": stage,
           "message": message[:4000], "spec": spec, "cleanset_version": cleanset_version()}
    with transaction(db) as con:
        cols = list(row)
        con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [row[c] for c in cols])
    return run_id


def on_flow_failure(flow, flow_run, state) -> None:  # noqa: ANN001 - Prefect's hook signature
    """The cleaning flow's on_failure hook: record the failed run in the warehouse (its stage and
    message), under the warehouse lock. Never raises: a failure to record is a warning."""
    from prefect.logging import get_logger

    logger = get_logger("cleanset.failed_run")
    calls_of(str(flow_run.id), forget=True)  # a failed run's stage timings are not kept
    try:
        spec = flow_run.parameters.get("spec")
        spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.model_validate(spec)
        exc = state.result(raise_on_failure=False)
        if isinstance(exc, BaseException):
            stage = failed_stage(exc)
            message = str(exc) if isinstance(exc, CleansetError) else (
                f"{type(exc).__name__}: {exc}")
        else:
            stage, message = "flow", state.message or "failed"
        source = Path(spec.source)
        sha = file_sha256(source) if source.is_file() else None
        with warehouse_slot(spec.db_path, logger):
            run_id = record_failed_run(
                spec.db_path, spec.dataset_name, stage, message, flow_run_id=str(flow_run.id),
                source=spec.source, source_sha256=sha, started_at=flow_run.start_time,
                spec=json.dumps(spec.model_dump(mode="json")))
        logger.info("recorded failed run %s (stage %s) in %s", run_id, stage, spec.db)
    except Exception as exc:  # noqa: BLE001 - the run has failed already; say why we could not
        logger.warning("could not record the failed run in the warehouse: %s", exc)
