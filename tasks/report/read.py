"""Reading a run's report figures back from the warehouse (read-only, aggregated in SQL).

Everything comes from DuckDB (runs, issues, issue_summary, validations, class_summary,
evaluations and review_decisions when present), aggregated in SQL so a million-row run never
loads its issues table into memory. Row content comes from the run's Parquet snapshot
(`runs.snapshot_path`) when that column and file exist, else from `<dataset>_clean_history`
(kept rows only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from tasks.errors import CleansetError
from tasks.issue_types import ISSUE_TYPES
from tasks.warehouse import column_names, open_warehouse, quote_ident, table_names

TOP_N = 5  # rows shown per issue type
MAX_FIELDS = 8  # row fields shown per row before "+N more"
TEXT_CHARS = 160  # text fields are cut to this length
BINS = 40  # score histogram bins over [0, 1]


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@dataclass
class ReportData:
    """Everything the report shows, read from the warehouse for one run."""

    run: dict[str, Any]
    spec: dict[str, Any]
    history: list[dict[str, Any]]  # this dataset's runs up to this one, oldest first
    failed_runs: list[dict[str, Any]]  # its failed runs up to this one (latest 10): stage, message
    summary: list[dict[str, Any]]  # issue_summary rows, in ISSUE_TYPES order
    flagged_types: list[str]
    histograms: dict[str, dict[str, list]]  # type -> bins / flagged / other counts, cut-off
    noise: list[tuple[str, str, int]]  # (given, suggested, rows) over label issues
    classes: list[dict[str, Any]]
    validations: list[dict[str, Any]]
    actions: dict[str, int]
    decided_by: dict[str, int]
    top: dict[str, list[dict[str, Any]]]  # type -> worst rows, with their content
    content_source: str  # where row content came from (or why there is none)
    evaluations: list[dict[str, Any]]
    reviews: dict[str, Any]
    screening: list[dict[str, Any]] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    trust: dict[str, Any] = field(default_factory=dict)  # well-labeled / ambiguous counts
    slices: list[dict[str, Any]] = field(default_factory=list)  # slice_summary, worst first
    regression: dict[str, list] | None = None  # a regression run: given vs predicted values
    batch_audits: list[dict[str, Any]] = field(default_factory=list)  # run_batch_audits
    annotators: list[dict[str, Any]] = field(default_factory=list)  # annotator_summary, best
    consensus: dict[str, Any] = field(default_factory=dict)  # rows' consensus quality figures


def _well_labeled_shares(con: duckdb.DuckDBPyConnection, dataset: str,
                         history: list[dict[str, Any]]) -> None:
    """Each run's `well_labeled_share`: rows certified is_well_labeled over its rows (the health
    trend's third series). From `runs.n_well_labeled`; a run published before that column
    existed is counted from its `issues` rows while they are kept. None: no classification
    certification ran (regression, multilabel) or nothing is left to count."""
    missing = [r["run_id"] for r in history if r.get("n_well_labeled") is None]
    counted: dict[str, int] = {}
    if missing and "is_well_labeled" in column_names(con, "issues"):
        counted = {run: n for run, n, certifiable in con.execute(
            "SELECT run_id, count(*) FILTER (WHERE is_well_labeled), count(is_well_labeled) "
            "FROM issues WHERE dataset = ? AND list_contains(?, run_id) GROUP BY run_id",
            [dataset, missing]).fetchall() if certifiable}
    for r in history:
        n = r.get("n_well_labeled")
        n = counted.get(r["run_id"]) if n is None else n
        r["well_labeled_share"] = n / r["n_rows"] if n is not None and r.get("n_rows") else None


def load_report_data(db: Path, dataset: str, run_id: str) -> ReportData:
    """Read one run's figures from the warehouse (read-only, aggregated in SQL)."""
    with open_warehouse(db) as con:
        tables = table_names(con)
        runs = _dicts(con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]))
        if not runs:
            raise CleansetError(f"no run {run_id!r} in {db}")
        run = runs[0]
        spec = _spec(run.get("spec"))
        run_cols = column_names(con, "runs")
        optional = ", ".join(c if c in run_cols else f"NULL AS {c}"
                             for c in ("label_health_score", "stage", "message",
                                       "n_well_labeled"))
        everything = _dicts(con.execute(
            "SELECT run_id, started_at, finished_at, status, n_rows, n_clean_rows, "
            f"n_label_issues, health_score, {optional} FROM runs WHERE dataset = ? AND "
            "(finished_at <= ? OR run_id = ?) ORDER BY finished_at NULLS FIRST, started_at",
            [dataset, run["finished_at"], run_id]))
        # Failed runs (recorded by the flow's failure hook) are listed, not charted.
        history = [r for r in everything if r["status"] != "failed" or r["run_id"] == run_id]
        failed_runs = [r for r in everything if r["status"] == "failed"][-10:]
        _well_labeled_shares(con, dataset, history)
        summary = _dicts(con.execute(
            "SELECT issue_type, num_issues, score FROM issue_summary WHERE run_id = ?", [run_id]))
        order = {t: i for i, t in enumerate(ISSUE_TYPES)}
        summary.sort(key=lambda r: (order.get(r["issue_type"], 99), r["issue_type"]))
        issue_cols = set(column_names(con, "issues"))
        types = [r["issue_type"] for r in summary
                 if {f"is_{r['issue_type']}_issue", f"{r['issue_type']}_score"} <= issue_cols]
        flagged = [r["issue_type"] for r in summary if r["num_issues"] and
                   r["issue_type"] in types]
        data = ReportData(
            run=run, spec=spec, history=history, failed_runs=failed_runs, summary=summary,
            flagged_types=flagged,
            histograms={t: _histogram(con, run_id, t) for t in types},
            noise=[tuple(r) for r in con.execute(
                "SELECT given_label, suggested_label, count(*) FROM issues WHERE run_id = ? AND "
                "is_label_issue GROUP BY ALL ORDER BY 3 DESC", [run_id]).fetchall()]
            if "is_label_issue" in issue_cols else [],
            classes=_dicts(con.execute(
                "SELECT * EXCLUDE (run_id, dataset) FROM class_summary WHERE run_id = ? "
                "ORDER BY label_quality, class_name", [run_id])) if "class_summary" in tables
            else [],
            validations=_dicts(con.execute(
                "SELECT * EXCLUDE (run_id, dataset) FROM validations WHERE run_id = ? "
                "ORDER BY success, suite, expectation, column_name", [run_id])),
            actions=dict(con.execute(
                "SELECT coalesce(action, 'none'), count(*) FROM issues WHERE run_id = ? "
                "GROUP BY ALL", [run_id]).fetchall()),
            decided_by=dict(con.execute(
                "SELECT coalesce(decided_by, 'policy'), count(*) FROM issues WHERE run_id = ? "
                "GROUP BY ALL", [run_id]).fetchall()) if "decided_by" in issue_cols else {},
            top={}, content_source="", evaluations=[], reviews={})
        data.batch_audits = run_batch_audits(con, run_id, dataset)
        data.top = {t: _dicts(con.execute(
            "SELECT row_id, given_label, suggested_label, suggested_label_confidence, "
            f"{quote_ident(t + '_score')} AS score, action"
            + (", final_label" if "final_label" in issue_cols else "")
            + (f", {quote_ident(t + '_set')} AS set_id" if f"{t}_set" in issue_cols else "")
            + f" FROM issues WHERE run_id = ? AND {quote_ident('is_' + t + '_issue')} "
            f"ORDER BY {quote_ident(t + '_score')} NULLS LAST, row_id LIMIT {TOP_N}", [run_id]))
            for t in flagged}
        data.content_source = _attach_content(con, tables, run, spec, dataset, data.top)
        if "evaluations" in tables:
            data.evaluations = _dicts(con.execute(
                "SELECT * EXCLUDE (run_id, dataset) FROM evaluations WHERE run_id = ? "
                "ORDER BY model, test_set, trained_on DESC", [run_id]))
        if "model_screening" in tables:
            data.screening = _dicts(con.execute(
                "SELECT * EXCLUDE (run_id, dataset) FROM model_screening WHERE run_id = ? "
                "ORDER BY log_loss", [run_id]))
        if "column_roles" in tables:
            data.columns = _dicts(con.execute(
                "SELECT column_name, role, reason FROM column_roles WHERE run_id = ? "
                "ORDER BY role = 'ignore' DESC, role, column_name", [run_id]))
        if {"is_well_labeled", "is_ambiguous"} <= issue_cols:
            data.trust = _dicts(con.execute(
                "SELECT count(*) FILTER (WHERE label_score IS NOT NULL) AS scored, "
                "count(*) FILTER (WHERE is_well_labeled) AS well_labeled, "
                "count(*) FILTER (WHERE is_ambiguous) AS ambiguous, "
                "count(*) FILTER (WHERE is_ambiguous AND is_label_issue) AS ambiguous_issues, "
                + ("count(*) FILTER (WHERE is_unlabeled_issue) " if "is_unlabeled_issue" in
                   issue_cols else "0 ") + "AS unlabeled "
                "FROM issues WHERE run_id = ?", [run_id]))[0]
            data.trust["per_class"] = _dicts(con.execute(
                "SELECT given_label AS class_name, count(*) AS n, "
                "avg(CASE WHEN is_well_labeled THEN 1.0 ELSE 0.0 END) AS well_labeled, "
                "avg(CASE WHEN is_ambiguous THEN 1.0 ELSE 0.0 END) AS ambiguous FROM issues "
                "WHERE run_id = ? AND label_score IS NOT NULL GROUP BY ALL ORDER BY 3, 1",
                [run_id]))
        if "slice_summary" in tables:
            data.slices = _dicts(con.execute(
                "SELECT * EXCLUDE (run_id, dataset) FROM slice_summary WHERE run_id = ? "
                "ORDER BY is_flagged DESC, issue_rate DESC, slice_column, slice_value",
                [run_id]))
        if "annotator_summary" in tables:
            data.annotators = _dicts(con.execute(
                "SELECT * EXCLUDE (run_id, dataset) FROM annotator_summary WHERE run_id = ? "
                "ORDER BY annotator_quality DESC, annotator", [run_id]))
        if data.annotators and "consensus_quality" in column_names(con, "issues"):
            data.consensus = _dicts(con.execute(
                "SELECT count(consensus_quality) AS rows, avg(consensus_quality) AS quality, "
                "avg(annotator_agreement) AS agreement, count(*) FILTER (WHERE "
                "annotator_agreement < 1) AS disputed, count(*) FILTER (WHERE "
                "consensus_quality < 0.5) AS low FROM issues WHERE run_id = ?", [run_id]))[0]
        if run.get("task") == "regression":  # values, not classes: no noise matrix
            data.noise, data.regression = [], regression_points(con, run_id)
        if run.get("task") == "multilabel":  # tag sets: noise per tag (class_summary) instead
            data.noise = []
        if "review_decisions" in tables:
            data.reviews = _dicts(con.execute(
                "SELECT count(*) AS n, count(DISTINCT row_id) AS n_rows, max(decided_at) AS "
                "latest FROM review_decisions WHERE dataset = ?", [dataset]))[0]
    return data


DRIFT_CHECKS = ("numeric_drift", "categorical_drift", "text_drift")


def run_batch_audits(con: duckdb.DuckDBPyConnection, run_id: str, dataset: str
                     ) -> list[dict[str, Any]]:
    """The batches this run saw first (`batches.run_id`), each with its status and reason, the
    audit checks that warned or failed, and every drift check's effect per column (for the
    chart). [] for a run of files, or a warehouse without the tables."""
    tables = table_names(con)
    if not {"batches", "batch_audit"} <= tables:
        return []
    batches = _dicts(con.execute(
        "SELECT batch_id, file, rows, status, reason FROM batches WHERE dataset = ? AND run_id = "
        "? ORDER BY arrived_at, batch_id", [dataset, run_id]))
    for b in batches:
        checks = _dicts(con.execute(
            "SELECT check_name, column_name, effect_size, threshold, severity, outcome, message "
            "FROM batch_audit WHERE dataset = ? AND batch_id = ? ORDER BY rowid",
            [dataset, b["batch_id"]]))
        b["file"] = Path(b["file"]).name
        b["audited"] = bool(checks)
        b["flagged"] = [c for c in checks if c["outcome"] != "pass"]
        b["drift"] = [c for c in checks if c["check_name"] in DRIFT_CHECKS
                      and c["effect_size"] is not None]
    return batches


def _spec(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}


def _histogram(con: duckdb.DuckDBPyConnection, run_id: str, t: str) -> dict[str, Any]:
    """Score counts in BINS equal bins over [0, 1], flagged rows apart; the cut-off is the
    highest score among flagged rows."""
    score, flag = quote_ident(f"{t}_score"), quote_ident(f"is_{t}_issue")
    rows = con.execute(
        f"SELECT least(greatest(floor({score} * {BINS}), 0), {BINS - 1})::INT AS b, "
        f"count(*) FILTER (WHERE {flag}), count(*) FILTER (WHERE NOT coalesce({flag}, false)) "
        f"FROM issues WHERE run_id = ? AND {score} IS NOT NULL AND NOT isnan({score}) "
        "GROUP BY ALL", [run_id]).fetchall()
    cut = con.execute(f"SELECT max({score}) FROM issues WHERE run_id = ? AND {flag}",
                      [run_id]).fetchall()[0][0]
    flagged, other = [0] * BINS, [0] * BINS
    for b, f, o in rows:
        flagged[b], other[b] = f, o
    return {"flagged": flagged, "other": other, "cut": cut}


def _attach_content(con: duckdb.DuckDBPyConnection, tables: set[str], run: dict, spec: dict,
                    dataset: str, top: dict[str, list[dict]]) -> str:
    """Put each top row's fields under "content"; return where they came from."""
    ids = sorted({str(r["row_id"]) for rows in top.values() for r in rows})
    if not ids:
        return "no flagged rows"
    id_col = spec.get("id") or "row_id"
    skip = {spec.get("label"), "run_id", id_col}
    snapshot = run.get("snapshot_path")
    found: dict[str, dict] = {}
    if snapshot and Path(snapshot).is_file():
        source = f"the run's input snapshot ({snapshot})"
        sql = f"SELECT * FROM read_parquet(?) WHERE CAST({quote_ident(id_col)} AS VARCHAR) IN " \
              f"({', '.join('?' * len(ids))})"
        params: list = [str(snapshot), *ids]
    elif f"{dataset}_clean_history" in tables:
        source = (f"{dataset}_clean_history: kept rows only, as this warehouse records no input "
                  "snapshot for the run")
        sql = f"SELECT * FROM {quote_ident(dataset + '_clean_history')} WHERE run_id = ? AND " \
              f"CAST({quote_ident(id_col)} AS VARCHAR) IN ({', '.join('?' * len(ids))})"
        params = [run["run_id"], *ids]
    else:
        return "not available: no input snapshot and no history table"
    try:
        for row in _dicts(con.execute(sql, params)):
            found[str(row[id_col])] = {k: v for k, v in row.items() if k not in skip}
    except duckdb.Error as exc:
        return f"not available ({str(exc).splitlines()[0]})"
    text = set(spec.get("text") or ())
    for rows in top.values():
        for r in rows:
            r["content"] = _fields(found.get(str(r["row_id"])), text)
    return source


def _fields(row: dict | None, text: set[str]) -> dict[str, Any] | None:
    """The row as (name, shown value) pairs: text cut to TEXT_CHARS, at most MAX_FIELDS."""
    if row is None:
        return None
    items = [(k, v) for k, v in row.items() if k in text] + \
        [(k, v) for k, v in row.items() if k not in text]
    shown = []
    for k, v in items[:MAX_FIELDS]:
        if isinstance(v, float):
            v = f"{v:.4g}"
        v = "∅" if v is None else str(v)
        if len(v) > TEXT_CHARS:
            v = v[: TEXT_CHARS - 1] + "…"
        shown.append((k, v, k in text or len(v) > 40))  # long values wrap on their own line
    return {"fields": shown, "more": max(0, len(items) - MAX_FIELDS)}


REGRESSION_POINTS = 5_000  # rows drawn in the predicted-vs-given chart (all flagged rows)


def regression_points(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, list]:
    """A regression run's given and suggested (out-of-fold predicted) values: every flagged row
    and an evenly spaced sample of the others (aggregated in SQL, so a large run stays small)."""
    n = con.execute("SELECT count(*) FROM issues WHERE run_id = ? AND given_value IS NOT NULL "
                    "AND suggested_value IS NOT NULL", [run_id]).fetchall()[0][0]
    step = max(1, math.ceil(n / REGRESSION_POINTS))
    rows = con.execute(
        "SELECT given_value, suggested_value, coalesce(is_label_issue, false) FROM (SELECT *, "
        "row_number() OVER (ORDER BY row_id) AS k FROM issues WHERE run_id = ? AND given_value "
        "IS NOT NULL AND suggested_value IS NOT NULL) WHERE is_label_issue OR k % ? = 0",
        [run_id, step]).fetchall()
    residuals = con.execute(
        "SELECT given_value - suggested_value FROM issues WHERE run_id = ? AND given_value IS "
        "NOT NULL AND suggested_value IS NOT NULL AND (is_label_issue OR hash(row_id) % ? = 0)",
        [run_id, step]).fetchall()
    return {"given": [r[0] for r in rows], "predicted": [r[1] for r in rows],
            "flagged": [bool(r[2]) for r in rows], "residual": [r[0] for r in residuals],
            "n": n}
