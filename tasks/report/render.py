"""Rendering a run's report: the HTML page (jinja2 template, charts inlined), written atomically
next to the warehouse, and the key figures for the Prefect artifact."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

from tasks.issue_types import ACTIONS, TYPE_NOTES
from tasks.report.charts import (
    chart_drift,
    chart_evaluation,
    chart_issue_counts,
    chart_noise_matrix,
    chart_regression,
    chart_scores,
    chart_slices,
    chart_tag_noise,
    chart_trend,
    trend_series,
)
from tasks.report.read import ReportData, _spec, load_report_data
from tasks.warehouse import resolve_run

TEMPLATES = Path(__file__).parents[1] / "templates"  # tasks/templates/


def report_path(db: Path, dataset: str, run_id: str) -> Path:
    """Where a run's report lives: <db folder>/reports/<dataset>/<run_id>.html."""
    return Path(db).parent / "reports" / dataset / f"{run_id}.html"


def _status(score: float | None) -> str:
    if score is None:
        return "na"
    return "good" if score >= 0.95 else ("fair" if score >= 0.8 else "poor")


@functools.cache
def _environment():  # noqa: ANN202 - a jinja2 Environment
    """One template environment per process, its compiled template kept in jinja2's bytecode
    cache (a folder of this user's under the temporary directory): compiling the report's
    template took 0.5 s of every report, in every run."""
    from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True, bytecode_cache=FileSystemBytecodeCache())
    env.filters["pct"] = lambda v, d=1: "–" if v is None else f"{v:.{d}%}"
    env.filters["num"] = lambda v, d=3: "–" if v is None else (
        f"{v:,}" if isinstance(v, int) else f"{v:.{d}f}")
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M UTC") if isinstance(
        v, datetime) else (v or "–")
    env.filters["details"] = _details
    return env


def render_html(data: ReportData) -> str:
    """The report as one HTML string (charts inlined)."""
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
                             for m in ("accuracy", "macro_f1", "rmse", "mae", "r2",
                                       "micro_f1", "jaccard")}})
    env = _environment()
    unused = [r["issue_type"] for r in data.summary if r["issue_type"] not in data.flagged_types]
    return env.get_template("report.html.j2").render(
        d=data, run=run, prev=prev, n_rows=n_rows, status=_status(run.get("health_score")),
        notes=TYPE_NOTES, actions=[(a, data.actions.get(a)) for a in ACTIONS
                                   if a in data.actions or a in ("keep", "drop", "review")]
        + [(a, n) for a, n in data.actions.items() if a not in ACTIONS],
        n_issues=sum(r["num_issues"] for r in data.summary),
        unflagged=unused, evaluations=evaluations,
        trend_names=[name for _, _, _, name in trend_series(data.history)],
        failed_validations=sum(1 for v in data.validations if not v["success"]),
        charts={
            "trend": chart_trend(data.history, run["run_id"]),
            "issues": chart_issue_counts(data.summary, n_rows),
            "noise": chart_noise_matrix(data.noise),
            "scores": chart_scores(data.histograms, data.flagged_types),
            "evaluation": None if data.regression is not None or run.get("task") == "multilabel"
            else chart_evaluation(data.evaluations),
            "tags": chart_tag_noise(data.classes) if run.get("task") == "multilabel" else None,
            "regression": chart_regression(data.regression),
            "slices": chart_slices(data.slices),
            "drift": {b["batch_id"]: chart_drift(b) for b in data.batch_audits},
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
