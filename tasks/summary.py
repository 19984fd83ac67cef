"""summary: what the Prefect UI shows for a run, read back from the warehouse after publish.

A table artifact with the run's rows, issues per type and health scores next to the previous run
of the same dataset (and the change), and a markdown artifact listing the worst flagged rows.
Builders are plain functions of a DuckDB connection; `run_artifacts` is the thin @task.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import duckdb
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.caching import stage
from tasks.errors import CleansetError
from tasks.spec import DatasetSpec
from tasks.timing import calls_of, compare, stage_rows, stages_markdown
from tasks.warehouse import column_names, open_warehouse

FLAG_RE = re.compile(r"^is_(.+)_issue$")
RUN_METRICS = (("rows", "n_rows"), ("clean rows", "n_clean_rows"),
               ("health score", "health_score"), ("label health score", "label_health_score"),
               ("relabelled", "n_relabelled"), ("to review", "n_review"),
               ("decided by reviewers", "n_reviewed"),
               ("model out-of-fold accuracy", "model_accuracy"),
               ("model out-of-fold micro-F1 (tags)", "model_micro_f1"),
               ("chance accuracy (largest class)", "chance_accuracy"),
               ("model out-of-fold log loss", "model_log_loss"),
               ("chance log loss (class frequencies)", "chance_log_loss"),
               ("model trusted to fix labels", "model_trusted"))


def model_check_text(check: dict) -> str:
    """One line of the model check (runs' model_* columns): accuracy and log loss against
    chance, or for a regression (no accuracy) R^2 and MSE against the variance, or for tag sets
    (multilabel: no accuracy either) the micro-F1 and the per-tag log loss against chance."""
    if check.get("model_micro_f1") is not None:
        return (f"out-of-fold micro-F1 {check['model_micro_f1']:.3f}, per-tag log loss "
                f"{check['model_log_loss']:.3f} (chance {check.get('chance_log_loss', 0):.3f}: "
                "each tag's frequency)")
    if check.get("model_accuracy") is None and check.get("model_log_loss") is not None:
        return (f"out-of-fold R^2 {check.get('model_skill', 0.0):.3f} (MSE "
                f"{check['model_log_loss']:.4g}, variance {check.get('chance_log_loss', 0):.4g})")
    return (f"out-of-fold accuracy {check['model_accuracy']:.3f} (chance "
            f"{check['chance_accuracy']:.3f}), log loss {check['model_log_loss']:.3f} (chance "
            f"{check['chance_log_loss']:.3f})")


def _run_row(con: duckdb.DuckDBPyConnection, run_id: str) -> dict | None:
    cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    return dict(zip(names, rows[0], strict=True)) if rows else None


def previous_run_id(con: duckdb.DuckDBPyConnection, run_id: str, dataset: str) -> str | None:
    """The latest other run of the dataset that finished before this one."""
    rows = con.execute(
        "SELECT run_id FROM runs WHERE dataset = ? AND run_id <> ? AND status IS DISTINCT FROM "
        "'failed' AND finished_at <= "
        "(SELECT finished_at FROM runs WHERE run_id = ?) ORDER BY finished_at DESC LIMIT 1",
        [dataset, run_id, run_id]).fetchall()
    return rows[0][0] if rows else None


def _issue_counts(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    return {t: int(n) for t, n in con.execute(
        "SELECT issue_type, num_issues FROM issue_summary WHERE run_id = ? ORDER BY issue_type",
        [run_id]).fetchall()}


def _change(now: object, before: object) -> object:
    if now is None or before is None:
        return ""
    if isinstance(now, bool) or isinstance(before, bool):
        return "" if now == before else f"{before} -> {now}"
    delta = now - before
    if isinstance(delta, float):
        return f"{delta:+.4f}"
    return f"{delta:+d}"


def _fmt(value: object) -> object:
    if value is None:
        return ""
    return round(value, 4) if isinstance(value, float) else value


def summary_table(con: duckdb.DuckDBPyConnection, run_id: str, dataset: str) -> list[dict]:
    """Rows of the summary table artifact: metric, this run, previous run, change."""
    this = _run_row(con, run_id) or {}
    prev_id = previous_run_id(con, run_id, dataset)
    prev = (_run_row(con, prev_id) or {}) if prev_id else {}
    table = [{"metric": "run id", "this run": run_id, "previous run": prev_id or "none",
              "change": ""},
             {"metric": "model", "this run": this.get("model") or "",
              "previous run": prev.get("model") or "", "change": ""}]
    if this.get("model_warning"):
        table.append({"metric": "warning", "this run": this["model_warning"], "previous run": "",
                      "change": ""})
    for label, col in RUN_METRICS:
        now, before = this.get(col), prev.get(col)
        table.append({"metric": label, "this run": _fmt(now), "previous run": _fmt(before),
                      "change": _change(now, before)})
    if this.get("left_out"):  # data columns not used as features (nested, all empty)
        table.append({"metric": "columns left out", "this run": "; ".join(this["left_out"]),
                      "previous run": "", "change": ""})
    cols = set(column_names(con, "issues"))
    if {"is_well_labeled", "is_ambiguous"} <= cols:  # trust (tasks/trust.py)
        trust = con.execute(
            "SELECT count(*) FILTER (WHERE is_well_labeled), count(*) FILTER (WHERE "
            "is_ambiguous) FROM issues WHERE run_id = ?", [run_id]).fetchall()[0]
        before = con.execute(
            "SELECT count(*) FILTER (WHERE is_well_labeled), count(*) FILTER (WHERE "
            "is_ambiguous) FROM issues WHERE run_id = ?", [prev_id]).fetchall()[0] if (
                prev_id) else (None, None)
        for name, now, was in (("well-labeled rows (a reviewer can skip them)", trust[0],
                                before[0]), ("ambiguous rows", trust[1], before[1])):
            table.append({"metric": name, "this run": _fmt(now), "previous run": _fmt(was),
                          "change": _change(now, was)})
    tables_now = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    flagged = con.execute(
        "SELECT slice_column || '=' || slice_value || ': ' || round(100 * issue_rate, 1) || "
        "'% vs ' || round(100 * rest_issue_rate, 1) || '%' FROM slice_summary WHERE run_id = ? "
        "AND is_flagged ORDER BY issue_rate DESC", [run_id]).fetchall() if (
            "slice_summary" in tables_now) else []
    if flagged:  # slices with clearly worse labels (label-issue rate vs the rest)
        table.append({"metric": "flagged slices", "this run": "; ".join(r[0] for r in flagged),
                      "previous run": "", "change": ""})
    rated = con.execute(
        "SELECT annotator, annotator_quality FROM annotator_summary WHERE run_id = ? ORDER BY "
        "annotator_quality, annotator", [run_id]).fetchall() if (
            "annotator_summary" in tables_now) else []
    if rated:  # several annotators: CROWDLAB's quality of each, the weakest first
        table.append({"metric": "annotators (CROWDLAB quality, weakest first)",
                      "this run": "; ".join(f"{a} {q:.3f}" for a, q in rated),
                      "previous run": "", "change": ""})
    counts = _issue_counts(con, run_id)
    before_counts = _issue_counts(con, prev_id) if prev_id else {}
    for t in sorted(set(counts) | set(before_counts), key=lambda t: (-counts.get(t, 0), t)):
        now, before = counts.get(t), before_counts.get(t)
        table.append({"metric": f"issues: {t}", "this run": _fmt(now),
                      "previous run": _fmt(before) if prev_id else "",
                      "change": _change(now, before)})
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "evaluations" in tables:  # before/after test accuracy when the run was evaluated
        metrics = [m for m in ("accuracy", "macro_f1", "rmse", "mae", "r2")
                   if m in column_names(con, "evaluations")]
        scores = {(r[0], r[1]): r[2] for r in con.execute(
            f"SELECT trained_on, metric, value FROM (UNPIVOT (SELECT trained_on, "
            f"{', '.join(metrics)} FROM evaluations WHERE run_id = ?) ON {', '.join(metrics)} "
            "INTO NAME metric VALUE value)", [run_id]).fetchall()}
        for metric in metrics:
            if ("given", metric) in scores:
                given, cleaned = scores[("given", metric)], scores.get(("cleaned", metric))
                table.append({"metric": f"test {metric}: trained as given -> cleaned",
                              "this run": f"{given:.4f} -> {cleaned:.4f}", "previous run": "",
                              "change": _change(cleaned, given)})
    return table


def top_issues(con: duckdb.DuckDBPyConnection, run_id: str,
               limit: int = 15) -> tuple[list[dict], int]:
    """The `limit` flagged rows with the lowest score (lower = worse) and how many are flagged."""
    have = set(column_names(con, "issues"))
    types = sorted(m.group(1) for c in have if (m := FLAG_RE.match(c)))
    if not types:
        return [], 0
    flag = " OR ".join(f'coalesce("is_{t}_issue", false)' for t in types)
    scored = [t for t in types if f"{t}_score" in have]
    worst = ("least(" + ", ".join(f'CASE WHEN "is_{t}_issue" THEN "{t}_score" END' for t in scored)
             + ")") if scored else "NULL"
    extra = [c for c in ("suggested_label", "suggested_label_confidence", "final_label", "action")
             if c in have]
    cols = ["row_id", "given_label", *extra, *(f'"is_{t}_issue"' for t in types),
            *(f'"{t}_score"' for t in scored)]
    total = con.execute(f"SELECT count(*) FROM issues WHERE run_id = ? AND ({flag})",
                        [run_id]).fetchall()[0][0]
    cur = con.execute(f"SELECT {', '.join(cols)}, {worst} AS worst FROM issues WHERE run_id = ? "
                      f"AND ({flag}) ORDER BY worst ASC NULLS LAST, row_id LIMIT ?",
                      [run_id, limit])
    names = [d[0] for d in cur.description]
    out = []
    for values in cur.fetchall():
        r = dict(zip(names, values, strict=True))
        flagged = [t for t in types if r[f"is_{t}_issue"]]
        with_scores = [t for t in flagged if r.get(f"{t}_score") is not None]
        main = min(with_scores, key=lambda t: r[f"{t}_score"]) if with_scores else flagged[0]
        out.append({"row_id": r["row_id"], "issue": main,
                    "also": ", ".join(t for t in flagged if t != main),
                    "score": r.get(f"{main}_score"), "given_label": r["given_label"],
                    "suggested_label": r.get("suggested_label"),
                    "confidence": r.get("suggested_label_confidence"),
                    "final_label": r.get("final_label"), "action": r.get("action")})
    return out, int(total)


def top_issues_markdown(rows: list[dict], total: int, dataset: str, run_id: str) -> str:
    """Markdown for the top-issues artifact."""
    head = f"# Top issues: {dataset}\n\nrun `{run_id}` · {total:,} flagged rows"
    if not rows:
        return head + " · nothing to look at.\n"
    show_final = any(r.get("final_label") is not None for r in rows)
    lines = [head + f"; the {len(rows)} with the lowest score (lower = more likely a problem):",
             "",
             "| row_id | issue | also | score | given label | suggested label | confidence |"
             + (" final label |" if show_final else "") + " action |",
             "|---|---|---|---|---|---|---|" + ("---|" if show_final else "") + "---|"]

    def cell(v: object, key: str = "") -> str:
        if v is None:
            return ""
        if isinstance(v, float):  # scores can be tiny: keep 3 significant digits
            return f"{v:.3g}" if key == "score" else f"{v:.3f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    for r in rows:
        lines.append("| " + " | ".join(cell(r[k], k) for k in (
            "row_id", "issue", "also", "score", "given_label", "suggested_label", "confidence",
            *(("final_label",) if show_final else ()), "action")) + " |")
    lines += ["", f"All of them: `cleanset query \"SELECT * FROM issues WHERE run_id = '{run_id}'"
              "\"`"]
    return "\n".join(lines) + "\n"


def batch_audit_markdown(audits: list[dict], dataset: str, run_id: str) -> str:
    """This run's new batches against the dataset (report.read.run_batch_audits rows): each
    batch's outcome and reason, and its warned / failed checks."""
    lines = [f"# {dataset}: new batches against the dataset (run {run_id})", ""]
    for b in audits:
        outcome = b["status"] if b["status"] != "accepted" or not b["flagged"] else \
            "accepted with warnings"
        lines += [f"## batch {b['batch_id']} ({b['file']}, {b['rows'] or 0:,} rows): {outcome}",
                  "", b["reason"] or "", ""]
        if b["flagged"]:
            lines += ["| check | column | outcome | finding |", "|---|---|---|---|"]
            lines += [f"| {c['check_name']} | {c['column_name'] or ''} | {c['outcome']} "
                      f"({c['severity']}) | {c['message'].replace('|', '/')} |"
                      for c in b["flagged"]]
            lines.append("")
    lines.append(f"Every check: `cleanset query \"SELECT * FROM batch_audit WHERE run_id = "
                 f"'{run_id}'\"`")
    return "\n".join(lines) + "\n"


def artifact_key(dataset: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return f"cleanset-{dataset.lower().replace('_', '-')}"


@stage("run-artifacts", cache_policy=NO_CACHE, retries=0)
def run_artifacts(spec: DatasetSpec, run_id: str, top: int = 15) -> None:
    """Summary table and top-issues markdown artifacts; a failure here never fails the run."""
    from tasks.report.read import run_batch_audits  # tasks.report imports this module

    dataset = spec.dataset_name
    try:
        with open_warehouse(spec.db) as con:
            table = summary_table(con, run_id, dataset)
            rows, total = top_issues(con, run_id, top)
            audits = run_batch_audits(con, run_id, dataset)
    except (duckdb.Error, CleansetError) as exc:
        get_run_logger().warning("run artifacts skipped: cannot read %s: %s", spec.db, exc)
        return
    key = artifact_key(dataset)
    create_table_artifact(key=key, table=table,
                          description=f"cleanset run {run_id} of {dataset}: summary and change "
                          "against the previous run")
    create_markdown_artifact(key=f"{key}-top-issues",
                             markdown=top_issues_markdown(rows, total, dataset, run_id),
                             description=f"worst flagged rows of run {run_id}")
    if audits:
        create_markdown_artifact(key=f"{key}-batch-audit",
                                 markdown=batch_audit_markdown(audits, dataset, run_id),
                                 description=f"new batches of run {run_id} against the dataset")


STAGE_COLUMNS = ("position", "stage", "calls", "seconds", "busy_seconds", "rss_mib",
                 "peak_rss_mib", "model_stage")


def previous_stages(con: duckdb.DuckDBPyConnection, dataset: str, flow_run_id: str
                    ) -> tuple[str | None, list[dict]]:
    """The run id and stage rows of the dataset's latest other flow run in run_stages."""
    found = con.execute(
        "SELECT run_id, flow_run_id FROM run_stages WHERE dataset = ? AND flow_run_id <> ? "
        "ORDER BY recorded_at DESC LIMIT 1", [dataset, flow_run_id]).fetchall()
    if not found:
        return None, []
    cur = con.execute(f"SELECT {', '.join(STAGE_COLUMNS)} FROM run_stages WHERE flow_run_id = ? "
                      "ORDER BY position", [found[0][1]])
    return found[0][0], [dict(zip(STAGE_COLUMNS, r, strict=True)) for r in cur.fetchall()]


def write_stages(con: duckdb.DuckDBPyConnection, run_id: str, dataset: str, flow_run_id: str,
                 rows: list[dict]) -> None:
    """Replace this flow run's run_stages rows with `rows` (tasks.timing.stage_rows)."""
    con.execute("DELETE FROM run_stages WHERE flow_run_id = ?", [flow_run_id])
    now = datetime.now(UTC)
    con.executemany(
        f"INSERT INTO run_stages (run_id, dataset, flow_run_id, {', '.join(STAGE_COLUMNS)}, "
        f"recorded_at) VALUES ({', '.join('?' * (len(STAGE_COLUMNS) + 4))})",
        [[run_id, dataset, flow_run_id, i, r["stage"], r["calls"], r["seconds"],
          r["busy_seconds"], r["rss_mib"], r["peak_rss_mib"], r["model_stage"], now]
         for i, r in enumerate(rows)])


@stage("record-stages", cache_policy=NO_CACHE, retries=0, timed=False)
def record_stages(spec: DatasetSpec, run_id: str) -> list[dict]:
    """Write this flow run's stage timings to run_stages (the caller holds the warehouse lock)
    and the markdown artifact comparing them with the dataset's previous run. Returns the rows
    (with previous_seconds and ratio). A failure is a warning: the run is published."""
    from prefect.context import FlowRunContext

    from tasks.schema import transaction

    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx else None
    if flow_run is None:
        return []
    calls = calls_of(str(flow_run.id), forget=True)
    started = flow_run.start_time.timestamp() if flow_run.start_time else (
        min((c.started for c in calls), default=None))
    rows = stage_rows(calls, started, time.time())
    try:
        with transaction(spec.db_path) as con:
            previous_run, previous = previous_stages(con, spec.dataset_name, str(flow_run.id))
            write_stages(con, run_id, spec.dataset_name, str(flow_run.id), rows)
    except (duckdb.Error, CleansetError) as exc:
        get_run_logger().warning("stage timings not recorded in %s: %s", spec.db, exc)
        return rows
    rows = compare(rows, previous)
    create_markdown_artifact(key=f"{artifact_key(spec.dataset_name)}-stages",
                             markdown=stages_markdown(rows, spec.dataset_name, run_id,
                                                      previous_run),
                             description=f"seconds and memory per stage of run {run_id}")
    return rows
