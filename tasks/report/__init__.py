"""report: one self-contained HTML data-health report per run, read back from the warehouse.

read.py reads the figures (ReportData, load_report_data), charts.py draws them, render.py
writes the page; this module holds the Prefect task.

Everything comes from DuckDB (runs, issues, issue_summary, validations, class_summary,
evaluations and review_decisions when present), aggregated in SQL so a million-row run never
loads its issues table into memory. Row content comes from the run's Parquet snapshot
(`runs.snapshot_path`) when that column and file exist, else from `<dataset>_clean_history`
(kept rows only). Charts are matplotlib PNGs inlined as base64: the file works offline, with
no CDN, script or external stylesheet.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE

from tasks.caching import stage
from tasks.issue_types import TYPE_NOTES
from tasks.report.charts import (
    Chart,
    chart_evaluation,
    chart_issue_counts,
    chart_noise_matrix,
    chart_scores,
    chart_trend,
)
from tasks.report.read import TEXT_CHARS, ReportData, _fields, load_report_data
from tasks.report.render import build_report, key_figures, render_html, report_path, write_report
from tasks.summary import artifact_key

if TYPE_CHECKING:  # importing publish would pull in cleanlab: seconds for `cleanset report`
    from tasks.publish import RunSummary

__all__ = ["TEXT_CHARS", "TYPE_NOTES", "Chart", "ReportData", "_fields", "build_report",
           "chart_evaluation", "chart_issue_counts", "chart_noise_matrix", "chart_scores",
           "chart_trend", "key_figures", "load_report_data", "render_html", "report",
           "report_path", "write_report"]


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
