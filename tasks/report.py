"""report: one self-contained HTML data-health report per run, read back from the warehouse.

Everything comes from DuckDB (runs, issues, issue_summary, validations, class_summary,
evaluations and review_decisions when present), aggregated in SQL so a million-row run never
loads its issues table into memory. Row content comes from the run's Parquet snapshot
(`runs.snapshot_path`) when that column and file exist, else from `<dataset>_clean_history`
(kept rows only). Charts are matplotlib PNGs inlined as base64: the file works offline, with
no CDN, script or external stylesheet.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE

from tasks.caching import stage
from tasks.errors import CleansetError
from tasks.issue_types import ISSUE_TYPES, TYPE_NOTES
from tasks.summary import artifact_key
from tasks.warehouse import (
    column_names,
    open_warehouse,
    quote_ident,
    resolve_run,
    table_names,
)

if TYPE_CHECKING:  # importing publish would pull in cleanlab: seconds for `cleanset report`
    from tasks.publish import RunSummary

TOP_N = 5  # rows shown per issue type
MAX_FIELDS = 8  # row fields shown per row before "+N more"
TEXT_CHARS = 160  # text fields are cut to this length
MATRIX_CLASSES = 15  # the noise matrix shows at most this many classes (most issues first)
BINS = 40  # score histogram bins over [0, 1]
ACTIONS = ("keep", "relabel", "review", "drop")


def report_path(db: Path, dataset: str, run_id: str) -> Path:
    """Where a run's report lives: <db folder>/reports/<dataset>/<run_id>.html."""
    return Path(db).parent / "reports" / dataset / f"{run_id}.html"


# ---------------------------------------------------------------------------- reading


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
    regression: dict[str, list] | None = None  # a regression run: given vs predicted values


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
                             for c in ("label_health_score", "stage", "message"))
        everything = _dicts(con.execute(
            "SELECT run_id, started_at, finished_at, status, n_rows, n_clean_rows, "
            f"n_label_issues, health_score, {optional} FROM runs WHERE dataset = ? AND "
            "(finished_at <= ? OR run_id = ?) ORDER BY finished_at NULLS FIRST, started_at",
            [dataset, run["finished_at"], run_id]))
        # Failed runs (recorded by the flow's failure hook) are listed, not charted.
        history = [r for r in everything if r["status"] != "failed" or r["run_id"] == run_id]
        failed_runs = [r for r in everything if r["status"] == "failed"][-10:]
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
        if run.get("task") == "regression":  # values, not classes: no noise matrix
            data.noise, data.regression = [], regression_points(con, run_id)
        if "review_decisions" in tables:
            data.reviews = _dicts(con.execute(
                "SELECT count(*) AS n, count(DISTINCT row_id) AS n_rows, max(decided_at) AS "
                "latest FROM review_decisions WHERE dataset = ?", [dataset]))[0]
    return data


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


# ---------------------------------------------------------------------------- charts

INK, MUTED, RED, GREEN, BLUE, AMBER = "#1f2933", "#9aa5b1", "#d64545", "#3f9142", "#2680c2", \
    "#de911d"


def _plt():  # noqa: ANN202 - matplotlib is imported lazily and without a display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
        "axes.edgecolor": MUTED, "axes.labelcolor": INK, "xtick.color": INK, "ytick.color": INK,
        "axes.titlesize": 10, "axes.titleweight": "bold", "svg.hashsalt": "cleanset",
    })
    return plt


DPI = 192  # 2x the CSS pixel density (96 per inch): sharp on high-density screens


@dataclass(frozen=True)
class Chart:
    """A rendered chart: its data: URI and the width (CSS px) that shows it at its design size,
    so every chart's text has the same size on the page."""

    src: str
    width: int


def _png(fig) -> Chart:  # noqa: ANN001
    """The figure as an inline PNG, closed afterwards."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    data = buf.getvalue()
    width = int.from_bytes(data[16:20], "big")  # the PNG header's IHDR width
    return Chart("data:image/png;base64," + base64.b64encode(data).decode(),
                 round(width * 96 / DPI))


def chart_trend(history: list[dict], run_id: str) -> Chart | None:
    """Health over this dataset's runs; None when this is the first."""
    if len(history) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 2.4))
    x = list(range(len(history)))
    for key, colour, name in (("health_score", BLUE, "health (rows with no issue)"),
                              ("label_health_score", AMBER, "label health")):
        ys = [r[key] for r in history]
        if all(y is None for y in ys):
            continue
        ax.plot(x, [math.nan if y is None else y for y in ys], marker="o", color=colour,
                label=name, lw=2, ms=4)
    here = [i for i, r in enumerate(history) if r["run_id"] == run_id]
    if here:
        ax.axvline(here[0], color=MUTED, ls=":", lw=1)
    ax.set_ylim(min(0.5, *(r["health_score"] or 1 for r in history)) - 0.02, 1.01)
    labels = [f"{_short_time(r['finished_at'] or r['started_at'])}\n{r['run_id'][:8]}"
              for r in history]
    step = max(1, len(x) // 8)
    ax.set_xticks(x[::step], labels[::step], rotation=0)
    ax.set_ylabel("score")
    ax.legend(frameon=False, loc="lower left", fontsize=8)
    ax.grid(axis="y", color="#e4e7eb", lw=0.8)
    return _png(fig)


def _short_time(value: Any) -> str:
    return value.strftime("%m-%d %H:%M") if isinstance(value, datetime) else str(value or "")


def chart_issue_counts(summary: list[dict], n_rows: int) -> Chart | None:
    """Rows flagged per issue type (horizontal bars, counts and shares written on them)."""
    if not summary:
        return None
    plt = _plt()
    rows = list(reversed(summary))
    fig, ax = plt.subplots(figsize=(5.6, 0.32 * len(rows) + 0.6))
    counts = [r["num_issues"] for r in rows]
    colours = [RED if r["issue_type"] == "label" and c else (AMBER if c else MUTED)
               for r, c in zip(rows, counts, strict=True)]
    bars = ax.barh([r["issue_type"].replace("_", " ") for r in rows], counts, color=colours)
    top = max(counts) or 1
    for bar, c in zip(bars, counts, strict=True):
        share = f" ({c / n_rows:.1%})" if n_rows and c else ""
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                f"{c:,}{share}", va="center", fontsize=8, color=INK)
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("rows flagged")
    ax.tick_params(axis="y", length=0)
    return _png(fig)


def chart_noise_matrix(noise: list[tuple[str, str, int]]) -> Chart | None:
    """Given label (rows) x suggested label (columns), counts of label issues, as a heatmap."""
    if not noise:
        return None
    import numpy as np

    plt = _plt()
    weight: dict[str, int] = {}
    for g, s, n in noise:
        weight[g] = weight.get(g, 0) + n
        weight[s] = weight.get(s, 0) + n
    classes = sorted(sorted(weight), key=lambda c: -weight[c])[:MATRIX_CLASSES]
    classes = sorted(classes, key=_natural)
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=int)
    for g, s, n in noise:
        if g in index and s in index:
            m[index[g], index[s]] += n
    size = min(4.6, max(3.0, 1.4 + 0.34 * len(classes)))
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(m, cmap="Reds", vmin=0)
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 6 else 0,
                  ha="right" if len(classes) > 6 else "center")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("suggested label")
    ax.set_ylabel("given label")
    ax.spines[:].set_visible(False)
    peak = m.max() or 1
    for i in range(len(classes)):
        for j in range(len(classes)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > peak * 0.55 else INK)
    fig.colorbar(im, ax=ax, shrink=0.7, label="label issues")
    return _png(fig)


def _natural(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def chart_scores(histograms: dict[str, dict], types: list[str]) -> Chart | None:
    """Score histograms, one panel per type: flagged rows in red, the cut-off dashed."""
    if not types:
        return None
    plt = _plt()
    cols = min(4, len(types))
    nrows = math.ceil(len(types) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.9 * max(cols, 3), 2.2 * nrows),
                             squeeze=False)
    width = 1 / BINS
    lefts = [i * width for i in range(BINS)]
    for ax, t in zip(axes.flat, types, strict=False):
        h = histograms[t]
        ax.bar(lefts, h["other"], width=width, align="edge", color=MUTED, label="not flagged")
        ax.bar(lefts, h["flagged"], width=width, align="edge", bottom=h["other"], color=RED,
               label="flagged")
        if h["cut"] is not None:
            ax.axvline(h["cut"], color=INK, ls="--", lw=1)
            ax.text(h["cut"], 1.0, f" {h['cut']:.2f}", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=7.5, color=INK)
        ax.set_title(t.replace("_", " "), loc="left")
        ax.set_xlim(0, 1)
        totals = [a + b for a, b in zip(h["other"], h["flagged"], strict=True)]
        if max(totals) > 0.6 * (sum(totals) or 1):  # one bin dwarfs the rest: keep all visible
            ax.set_yscale("symlog")
            ax.set_ylabel("rows (log)", fontsize=7.5)
    for ax in list(axes.flat)[len(types):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, frameon=False, fontsize=8, loc="lower right", ncols=2,
               bbox_to_anchor=(1, 0.98))
    fig.supxlabel("score (lower = more likely a problem)", fontsize=8.5)
    fig.tight_layout()
    return _png(fig)


def chart_evaluation(evaluations: list[dict]) -> Chart | None:
    """Accuracy and macro F1 trained on the given labels vs on the cleaned data."""
    if not evaluations:
        return None
    plt = _plt()
    groups = sorted({(e.get("model"), e.get("test_set")) for e in evaluations}, key=str)
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.2 + 0.1 * len(groups)), sharey=True)
    for ax, metric in zip(axes, ("accuracy", "macro_f1"), strict=True):
        for k, (trained, colour) in enumerate((("given", MUTED), ("cleaned", GREEN))):
            vals = [next((e.get(metric) for e in evaluations if e.get("trained_on") == trained
                          and (e.get("model"), e.get("test_set")) == g), None) for g in groups]
            ys = [i + (0.2 if k == 0 else -0.2) for i in range(len(groups))]
            ax.barh(ys, [v or 0 for v in vals], height=0.38, color=colour,
                    label=f"trained on {trained} labels")
            for y, v in zip(ys, vals, strict=True):
                if v is not None:
                    ax.text(v, y, f" {v:.3f}", va="center", fontsize=7.5)
        ax.set_xlim(0, 1.15)
        ax.set_title(metric.replace("_", " "), loc="left")
    axes[0].set_yticks(range(len(groups)), [f"{m} / {t}" for m, t in groups])
    axes[0].legend(frameon=False, fontsize=7.5, loc="lower left", bbox_to_anchor=(0, 1.08),
                   ncols=2)
    return _png(fig)


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


def chart_regression(points: dict[str, list] | None) -> Chart | None:
    """Predicted (out of fold) against given values, flagged rows in red, and the residual
    distribution (given - predicted)."""
    if not points or not points["given"]:
        return None
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.4, 3.0))
    flagged = points["flagged"]
    for is_flagged, colour, name in ((False, MUTED, "not flagged"), (True, RED, "label issue")):
        xs = [g for g, f in zip(points["given"], flagged, strict=True) if f == is_flagged]
        ys = [p for p, f in zip(points["predicted"], flagged, strict=True) if f == is_flagged]
        left.scatter(xs, ys, s=8 if is_flagged else 5, color=colour, label=name,
                     alpha=0.9 if is_flagged else 0.5, linewidths=0)
    low = min(min(points["given"]), min(points["predicted"]))
    high = max(max(points["given"]), max(points["predicted"]))
    left.plot([low, high], [low, high], color=INK, lw=0.8, ls="--")
    left.set_xlabel("given value", fontsize=8.5)
    left.set_ylabel("predicted (out of fold)", fontsize=8.5)
    left.set_title("predicted vs given", loc="left")
    left.legend(frameon=False, fontsize=7.5)
    right.hist(points["residual"], bins=40, color=MUTED)
    right.axvline(0, color=INK, lw=0.8, ls="--")
    right.set_xlabel("residual: given - predicted", fontsize=8.5)
    right.set_ylabel("rows", fontsize=7.5)
    right.set_title("residuals", loc="left")
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------- rendering


def _status(score: float | None) -> str:
    if score is None:
        return "na"
    return "good" if score >= 0.95 else ("fair" if score >= 0.8 else "poor")


def render_html(data: ReportData) -> str:
    """The report as one HTML string (charts inlined)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    run = data.run
    previous = [r for r in data.history if r["run_id"] != run["run_id"]]
    prev = previous[-1] if previous else None
    n_rows = run.get("n_rows") or 0
    evaluations = []
    for e in data.evaluations:
        base = next((b for b in data.evaluations if b.get("trained_on") == "given"
                     and b.get("model") == e.get("model")
                     and b.get("test_set") == e.get("test_set")), None)
        evaluations.append({**e, "delta": None if base is None or e is base else
                            {m: (e.get(m) or 0) - (base.get(m) or 0)
                             for m in ("accuracy", "macro_f1", "rmse", "mae", "r2")}})
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["pct"] = lambda v, d=1: "–" if v is None else f"{v:.{d}%}"
    env.filters["num"] = lambda v, d=3: "–" if v is None else (
        f"{v:,}" if isinstance(v, int) else f"{v:.{d}f}")
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M UTC") if isinstance(
        v, datetime) else (v or "–")
    env.filters["details"] = _details
    unused = [r["issue_type"] for r in data.summary if r["issue_type"] not in data.flagged_types]
    return env.get_template("report.html.j2").render(
        d=data, run=run, prev=prev, n_rows=n_rows, status=_status(run.get("health_score")),
        notes=TYPE_NOTES, actions=[(a, data.actions.get(a)) for a in ACTIONS
                                   if a in data.actions or a in ("keep", "drop", "review")]
        + [(a, n) for a, n in data.actions.items() if a not in ACTIONS],
        n_issues=sum(r["num_issues"] for r in data.summary),
        unflagged=unused, evaluations=evaluations,
        failed_validations=sum(1 for v in data.validations if not v["success"]),
        charts={
            "trend": chart_trend(data.history, run["run_id"]),
            "issues": chart_issue_counts(data.summary, n_rows),
            "noise": chart_noise_matrix(data.noise),
            "scores": chart_scores(data.histograms, data.flagged_types),
            "evaluation": None if data.regression is not None else chart_evaluation(
                data.evaluations),
            "regression": chart_regression(data.regression),
        },
        generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    )


def _details(raw: Any) -> str:
    """The interesting part of a validation's details JSON: observed value, unexpected sample."""
    d = _spec(raw)
    parts = []
    kwargs = {k: v for k, v in (d.get("kwargs") or {}).items() if k != "column"}
    if kwargs:
        parts.append(", ".join(f"{k}={v}" for k, v in kwargs.items()))
    if d.get("observed_value") is not None:
        parts.append(f"observed {d['observed_value']}")
    if d.get("unexpected_sample"):
        parts.append("e.g. " + ", ".join(map(str, d["unexpected_sample"][:5])))
    if d.get("error"):
        parts.append(f"error: {d['error']}")
    text = "; ".join(parts)
    return text if len(text) <= 140 else text[:139] + "…"


def build_report(db: Path, dataset: str | None = None, run: str | None = None) -> Path:
    """Write the report of a run (default: the dataset's latest) and return its path."""
    return write_report(db, *resolve_run(Path(db), dataset, run))[0]


def write_report(db: Path, dataset: str, run_id: str) -> tuple[Path, ReportData]:
    """Write one run's report; return its path and the figures it shows."""
    data = load_report_data(Path(db), dataset, run_id)
    path = report_path(Path(db), dataset, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(data), encoding="utf-8")
    tmp.replace(path)  # readers never see half a report
    return path, data


def key_figures(data: ReportData, dataset: str, run_id: str, path: Path) -> str:
    """Markdown for the Prefect artifact: the headline numbers and a link to the report."""
    run = data.run
    counts = [(r["issue_type"], r["num_issues"]) for r in data.summary if r["num_issues"]]
    acts = sorted(((a, n) for a, n in data.actions.items() if n), key=lambda an: -an[1])
    uri = path.resolve().as_uri()
    lines = [
        f"# cleanset report: {dataset}", "",
        f"**[Open the HTML report]({uri})** — `{path.resolve()}`", "",
        "| figure | value |", "| --- | --- |",
        f"| run | `{run_id}` |",
        f"| health (rows with no issue) | {run['health_score']:.3f} |",
    ]
    if run.get("label_health_score") is not None:
        lines.append(f"| label health | {run['label_health_score']:.3f} |")
    lines += [f"| rows in → clean rows | {run['n_rows']:,} → {run['n_clean_rows']:,} |",
              f"| issues | {', '.join(f'{t} {n:,}' for t, n in counts) or 'none'} |",
              f"| actions | {', '.join(f'{a} {n:,}' for a, n in acts)} |"]
    return "\n".join(lines) + "\n"


@stage("report", cache_policy=NO_CACHE, retry_delay_seconds=3)
def report(summary: RunSummary) -> str:
    """Write the run's HTML report and link it from a markdown artifact (never cached: it reads
    the warehouse)."""
    from prefect.artifacts import create_markdown_artifact

    path, data = write_report(Path(summary.db), summary.dataset, summary.run_id)
    create_markdown_artifact(
        key=f"{artifact_key(summary.dataset)}-report",
        markdown=key_figures(data, summary.dataset, summary.run_id, path),
        description=f"data-health report of run {summary.run_id}")
    get_run_logger().info("report: %s", path.resolve().as_uri())
    return str(path)
