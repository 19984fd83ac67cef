"""review: the human side of cleaning. Export the rows a person should look at, check and record
their decisions (keep / drop / relabel) in `review_decisions`, and load them for every later run.

Decisions are append-only: a new decision for a row supersedes the older one (latest wins), and
nothing is ever deleted, so who decided what, when and why stays auditable. Plain functions, light
imports (no Prefect, no scikit-learn): `cleanset review` starts quickly. The flow's stage that
loads the decisions is tasks/decide.py `load_decisions`.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from tasks.errors import CleansetError
from tasks.issue_types import ACTIONS, DECISIONS, ISSUE_TYPES, TO_REVIEW
from tasks.schema import transaction
from tasks.warehouse import (
    column_names,
    open_warehouse,
    quote_ident,
    resolve_run_in,
    table_names,
)

REQUIRED = ("row_id", "decision")
OPTIONAL = ("dataset", "new_label", "reviewer", "note", "given_label")
CONTENT_PREFIX = "row."


def default_reviewer() -> str:
    try:
        return os.environ.get("CLEANSET_REVIEWER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def read_decisions(db: Path, dataset: str) -> pd.DataFrame | None:
    """The dataset's decisions as the runs apply them, oldest first (None when there is none)."""
    if not db.exists():
        return None
    with open_warehouse(db) as con:
        if "review_decisions" not in table_names(con):
            return None
        frame = con.execute(
            "SELECT row_id, decision, new_label, note FROM review_decisions WHERE dataset = ? "
            "ORDER BY decided_at, rowid", [dataset]).df()
    return frame if len(frame) else None


def _latest_run(con: duckdb.DuckDBPyConnection, db: Path, dataset: str | None) -> dict:
    """The dataset's most recent run: run_id, dataset, snapshot_path, id_column."""
    name, run_id = resolve_run_in(con, db, dataset)
    have = set(column_names(con, "runs"))
    snap = "snapshot_path" if "snapshot_path" in have else "NULL"
    ident = "id_column" if "id_column" in have else "NULL"
    path, id_column = con.execute(f"SELECT {snap}, {ident} FROM runs WHERE run_id = ?",
                                  [run_id]).fetchall()[0]
    return {"run_id": run_id, "dataset": name, "snapshot_path": path, "id_column": id_column}


def reasons(issues: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: a readable reason ("label 0.03 -> 'cat' (0.91); outlier 0.12") and a severity
    (the lowest score among the row's issues; lower = worse, as in cleanlab)."""
    parts = pd.Series([[] for _ in range(len(issues))], index=issues.index, dtype=object)
    severity = np.ones(len(issues))
    for t in ISSUE_TYPES:
        flag, score = f"is_{t}_issue", f"{t}_score"
        if flag not in issues:
            continue
        flagged = issues[flag].fillna(False).to_numpy(dtype=bool)
        scores = (issues[score].to_numpy(dtype=float) if score in issues
                  else np.zeros(len(issues)))
        scores = np.where(np.isnan(scores), 0.0, scores)
        severity = np.where(flagged, np.minimum(severity, scores), severity)
        for i in np.flatnonzero(flagged):
            text = f"{t} {scores[i]:.2f}"
            if t in ("label", "unlabeled") and issues["suggested_label"].iloc[i] is not None:
                confidence = issues["suggested_label_confidence"].iloc[i]
                text += f" -> {issues['suggested_label'].iloc[i]!r}" + (
                    "" if pd.isna(confidence) else f" ({confidence:.2f})")
            parts.iloc[i].append(text)
    if "is_ambiguous" in issues and "plausible_labels" in issues:  # a judgement call, not an
        # error: several labels are plausible
        ambiguous = issues["is_ambiguous"].astype("boolean").fillna(False).to_numpy(bool)
        for i in np.flatnonzero(ambiguous):
            parts.iloc[i].append(f"ambiguous ({issues['plausible_labels'].iloc[i]})")
    return parts.map("; ".join), pd.Series(severity, index=issues.index)


ORDERS = ("severity", "priority")


def review_queue(db: Path, dataset: str | None = None, top: int | None = None,
                 actions: tuple[str, ...] | None = None, order: str = "severity",
                 ) -> tuple[str, pd.DataFrame]:
    """The dataset (default: the only one) and its latest run's rows that a person should look
    at: rows whose policy action is one of `actions` and that no reviewer has decided (in that
    run or since). Columns: the decision columns to fill in, the labels, scores and reason, then
    the row's content (`row.<column>`).

    `order`: `severity` (most severe issue first; default actions: review, relabel, drop) or
    `priority` (ActiveLab's `active_learning_score`, lowest first: the rows whose (re)labeling
    helps the model most; default actions: all, since a kept row may be worth relabeling too)."""
    if order not in ORDERS:
        raise CleansetError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    actions = actions or (TO_REVIEW if order == "severity" else tuple(ACTIONS))
    with open_warehouse(db) as con:
        run = _latest_run(con, db, dataset)
        dataset = run["dataset"]
        undecided = ("coalesce(decided_by, 'policy') = 'policy' AND "
                     if "decided_by" in column_names(con, "issues") else "")
        placeholders = ", ".join("?" * len(actions))
        issues = con.execute(
            f"SELECT * FROM issues WHERE run_id = ? AND action IN ({placeholders}) AND "
            f"{undecided}row_id NOT IN (SELECT row_id FROM review_decisions WHERE dataset = ?)",
            [run["run_id"], *actions, dataset]).df()
        content = None
        snap = run["snapshot_path"]
        if snap and Path(snap).exists() and len(issues):
            content = con.execute(
                f"SELECT * FROM read_parquet(?) WHERE CAST({quote_ident(run['id_column'])} AS "
                "VARCHAR) IN (SELECT unnest(?))", [snap, issues["row_id"].tolist()]).df()
        task = run_task(con, run["run_id"])
        delimiter = run_delimiter(run_id=run["run_id"], con=con)
    why, severity = reasons(issues)
    queue = pd.DataFrame({
        "dataset": dataset, "row_id": issues["row_id"].astype(str), "decision": "",
        "new_label": "", "reviewer": "", "note": "", "given_label": issues["given_label"],
        "suggested_label": issues["suggested_label"],
        "suggested_label_confidence": issues["suggested_label_confidence"].round(4),
        "policy_action": issues["action"], "reason": why, "severity": severity.round(4),
        "active_learning_score": (issues["active_learning_score"].round(4)
                                  if "active_learning_score" in issues else np.nan),
    })
    for col in ("plausible_labels", "is_well_labeled"):  # trust (tasks/trust.py)
        if col in issues:
            queue.insert(queue.columns.get_loc("reason") + 1, col,
                         issues[col].where(issues[col].notna(), None)
                         if col == "plausible_labels" else issues[col])
    if task == "multilabel":  # the tags the suggestion adds and removes, as text
        queue.attrs["delimiter"] = delimiter
        at = queue.columns.get_loc("suggested_label") + 1
        for i, col in enumerate(("tags_likely_missing", "tags_likely_wrong")):
            queue.insert(at + i, col, [delimiter.join(v) if v is not None else "" for v in
                                       issues[col]] if col in issues else "")
    for col in ("annotator_agreement", "consensus_quality"):  # several annotators (CROWDLAB)
        if col in issues and issues[col].notna().any():  # -> consensus_quality, agreement
            queue.insert(queue.columns.get_loc("severity") + 1, col, issues[col].round(4))
    if task == "regression":  # the suggested value's interval instead of a confidence
        queue = queue.drop(columns="suggested_label_confidence")
        queue.insert(queue.columns.get_loc("suggested_label") + 1, "suggested_interval", [
            "" if pd.isna(lo) else f"{lo:.6g} .. {hi:.6g}" for lo, hi in
            zip(issues["suggested_value_low"], issues["suggested_value_high"], strict=True)])
    queue = queue.sort_values(["severity" if order == "severity" else "active_learning_score",
                               "row_id"], kind="stable", na_position="last")
    if top:
        queue = queue.head(top)
    if content is not None and len(content):
        ident = run["id_column"]
        content = content.rename(columns={c: f"{CONTENT_PREFIX}{c}" for c in content.columns})
        content["row_id"] = content[f"{CONTENT_PREFIX}{ident}"].astype(str)
        content = content.drop(columns=[f"{CONTENT_PREFIX}{ident}"])
        queue = queue.merge(content, on="row_id", how="left")
    queue = queue.reset_index(drop=True)
    queue.attrs["task"] = task
    queue.attrs["delimiter"] = delimiter
    return dataset, queue


def run_task(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    """The task of a run (classification for runs made before tasks were recorded)."""
    if "task" not in column_names(con, "runs"):
        return "classification"
    rows = con.execute("SELECT task FROM runs WHERE run_id = ?", [run_id]).fetchall()
    return (rows[0][0] if rows else None) or "classification"


def run_delimiter(run_id: str, con: duckdb.DuckDBPyConnection) -> str:
    """A multilabel run's tag delimiter (runs.tag_delimiter; ";" when not recorded)."""
    if "tag_delimiter" not in column_names(con, "runs"):
        return ";"
    rows = con.execute("SELECT tag_delimiter FROM runs WHERE run_id = ?", [run_id]).fetchall()
    return (rows[0][0] if rows else None) or ";"


def known_tags(con: duckdb.DuckDBPyConnection, run_id: str, delimiter: str) -> set[str]:
    """Every tag a multilabel run saw (given or suggested)."""
    return {t.strip() for c in known_classes(con, run_id) for t in c.split(delimiter)
            if t.strip()}


def canonical_tags(frame: pd.DataFrame, tags: set[str], delimiter: str,
                   report) -> pd.Series:  # noqa: ANN001 - check_decisions' report
    """Reviewers' tag sets as canonical text (sorted, joined by `delimiter`; NO_TAGS for the
    empty set); unknown tags are reported (a typo would add a new tag)."""
    from tasks.task_type import NO_TAGS, split_text, tags_text

    sets = frame["new_label"].map(lambda v: split_text(v, delimiter))
    unknown = sets.map(lambda s: bool(s - tags)) & (frame["decision"] == "relabel")
    if unknown.any():
        shown = ", ".join(sorted(tags)[:20])
        report(unknown, f"new_label holds a tag the data does not have (known tags: {shown}; "
               f"tags are separated by {delimiter!r}, {NO_TAGS!r} means no tags)", "new_label")
    return sets.map(lambda s: tags_text(s, delimiter) or NO_TAGS)


def known_classes(con: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
    rows = con.execute("SELECT DISTINCT given_label FROM issues WHERE run_id = ? AND given_label "
                       "IS NOT NULL UNION SELECT DISTINCT suggested_label FROM issues WHERE "
                       "run_id = ? AND suggested_label IS NOT NULL", [run_id, run_id]).fetchall()
    return {r[0] for r in rows}


def check_decisions(frame: pd.DataFrame, dataset: str, known_rows: set[str],
                    classes: set[str], where: str = "review file",
                    task: str = "classification", delimiter: str = ";") -> pd.DataFrame:
    """Validate a filled-in review file; return the decisions to record (blank decisions are
    rows not reviewed yet and are skipped). Every problem is listed; nothing is half-applied.
    A regression run's new_label is a finite number (any value, not only known ones); a
    multilabel run's is a tag set of known tags (`classes`) joined by `delimiter` ("-": no
    tags), stored in canonical form."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise CleansetError(
            f"{where} lacks the column(s) {', '.join(missing)}; it needs {', '.join(REQUIRED)} "
            f"(and optionally {', '.join(OPTIONAL)}): start from `cleanset review export`")
    frame = frame.copy()
    for c in ("row_id", "decision", *OPTIONAL):
        if c in frame:
            frame[c] = frame[c].astype(object).where(frame[c].notna(), "").astype(str).str.strip()
        else:
            frame[c] = ""
    frame["decision"] = frame["decision"].str.lower()
    frame = frame[frame["decision"] != ""]
    problems: list[str] = []

    def report(mask: pd.Series, what: str, column: str | None = None) -> None:
        """One problem: its lines in the file (+2: the header line, 1-based), with the
        offending value of `column` when that names the culprit."""
        if mask.any():
            lines = (frame.index[mask] + 2).tolist()
            values = frame.loc[mask, column].tolist() if column else [None] * len(lines)
            shown = ", ".join(f"line {n}" + ("" if v is None else f" {column} {v!r}")
                              for n, v in zip(lines[:10], values[:10], strict=True))
            problems.append(f"{what} ({shown}{' ...' if len(lines) > 10 else ''})")

    other = (frame["dataset"] != "") & (frame["dataset"] != dataset)
    report(other, f"rows for another dataset than {dataset!r}", "dataset")
    report(~frame["decision"].isin(DECISIONS),
           f"unknown decision; use one of {', '.join(DECISIONS)}", "decision")
    report(~frame["row_id"].isin(known_rows), "row_id not in the latest run of the dataset",
           "row_id")
    relabel = frame["decision"] == "relabel"
    report(relabel & (frame["new_label"] == ""), "relabel without a new_label", "row_id")
    if task == "regression":
        value = pd.to_numeric(frame["new_label"], errors="coerce")
        report(relabel & (frame["new_label"] != "") & ~np.isfinite(value.fillna(np.inf)),
               "new_label is not a number (this dataset's label is a regression target)",
               "new_label")
        unknown = relabel & False
    elif task == "multilabel":
        frame["new_label"] = frame["new_label"].where(
            frame["new_label"] == "", canonical_tags(frame, classes, delimiter, report))
        unknown = relabel & False
    else:
        unknown = relabel & (frame["new_label"] != "") & ~frame["new_label"].isin(classes)
    if unknown.any():
        shown = ", ".join(sorted(classes)[:20])
        report(unknown, f"new_label is not a known class (known: {shown})", "new_label")
    report(frame.duplicated("row_id", keep=False), "the same row_id appears more than once",
           "row_id")
    if problems:
        raise CleansetError(f"{where}: nothing was applied, fix these first:\n  "
                            + "\n  ".join(problems))
    frame.loc[frame["decision"] != "relabel", "new_label"] = ""
    return frame


def record_decisions(db: Path, dataset: str, decisions: pd.DataFrame, reviewer: str,
                     source: str) -> int:
    """Append checked decisions to review_decisions in one transaction; returns how many."""
    if decisions.empty:
        return 0
    now = datetime.now(UTC)
    rows = [[dataset, r.row_id, r.decision, r.new_label or None, now, r.note or None,
             r.reviewer or reviewer, source, r.given_label or None]
            for r in decisions.itertuples(index=False)]
    with transaction(db) as con:
        con.executemany(
            "INSERT INTO review_decisions (dataset, row_id, decision, new_label, decided_at, "
            "note, reviewer, source, given_label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def apply_review_file(db: Path, path: Path, dataset: str | None = None,
                      reviewer: str | None = None) -> tuple[str, int, int]:
    """Check a filled-in review CSV against the latest run and record its decisions.
    Returns (dataset, decisions recorded, rows left blank)."""
    if not path.is_file():
        raise CleansetError(f"review file {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CleansetError(f"review file {path} is not a readable CSV: {exc}") from None
    if dataset is None:  # the file's own dataset column, else the warehouse's only dataset
        names = sorted(set(frame.get("dataset", pd.Series(dtype=str))) - {""})
        if len(names) > 1:
            raise CleansetError(f"review file {path} names several datasets "
                                f"({', '.join(names)}): say which with --dataset")
        dataset = names[0] if names else None
    with open_warehouse(db) as con:
        run = _latest_run(con, db, dataset)
        dataset = run["dataset"]
        known_rows = {r[0] for r in con.execute(
            "SELECT row_id FROM issues WHERE run_id = ?", [run["run_id"]]).fetchall()}
        task = run_task(con, run["run_id"])
        delimiter = run_delimiter(run_id=run["run_id"], con=con)
        classes = (known_tags(con, run["run_id"], delimiter) if task == "multilabel"
                   else known_classes(con, run["run_id"]))
    checked = check_decisions(frame, dataset, known_rows, classes, f"review file {path}", task,
                              delimiter)
    n = record_decisions(db, dataset, checked, reviewer or default_reviewer(), str(path))
    blank = len(frame) - len(checked)
    return dataset, n, blank
