"""A run on the command line: Prefect quietened, one live status line while the flow runs, the
summary table when it is done. Shared by `cleanset run` and `cleanset demo`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.options import console, err, fail


def quiet_prefect(verbose: bool) -> None:
    """Unless --verbose, Prefect's console shows warnings only; the live progress shows stages.
    (Its API log handler keeps everything, so the Prefect UI still has the full logs.)"""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


class StageProgress(logging.Handler):
    """Turns Prefect's task-run records into one live status line: stage, cache hits, fits."""

    def __init__(self, progress, line) -> None:  # noqa: ANN001
        super().__init__(logging.INFO)
        self.progress, self.line = progress, line
        self.fits = self.cached = self.stages = 0

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "task_name", None)
        message = record.getMessage()
        if not name or not message.startswith("Finished in state"):
            return
        self.stages += 1
        self.cached += "Cached" in message
        self.fits += name == "estimate-fold"
        self.progress.update(self.line, description=(
            f"[bold]{name}[/bold] done · {self.stages} tasks ({self.cached} from cache) · "
            f"{self.fits} model fits"))


def run_flow(spec, refresh: bool, quiet: bool = False, runner: str = "threads",  # noqa: ANN001, ANN202
             address: str | None = None, folder: str | None = None, full: bool = False):
    """Run the cleaning flow (of a dataset `folder`, flows/folders.py, when given) with a live
    status line; user errors become a message and a non-zero exit."""
    from flows.local_server import cli_server, reporting_to
    from flows.runners import task_runner
    from tasks.errors import CleansetError

    try:
        chosen = task_runner(runner, spec.workers, address)
    except CleansetError as exc:
        fail(str(exc))
    server = cli_server()  # a new one boots while the libraries below import
    from flows.clean import clean_dataset
    from flows.folders import clean_folder

    clean_dataset = clean_dataset.with_options(task_runner=chosen)
    clean_folder = clean_folder.with_options(task_runner=chosen)

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=err, transient=True, disable=quiet)
    line = progress.add_task(f"cleaning {spec.dataset_name} ...", total=None)
    watcher = StageProgress(progress, line)
    loggers = [logging.getLogger(n) for n in ("prefect.task_runs", "prefect.flow_runs")]
    try:
        with progress:
            for logger in loggers:
                logger.addHandler(watcher)
            # stop=False: the server is stopped (or, shared, left for the next run) at exit,
            # after the summary is on screen
            with reporting_to(server, lambda: progress.update(
                    line, description="starting a local Prefect server ..."), stop=False):
                if folder is not None:
                    return clean_folder(folder, db=spec.db, work_dir=spec.work_dir,
                                        refresh=refresh, full=full)
                return clean_dataset(spec, refresh=refresh)
    except CleansetError as exc:
        fail(str(exc))
    finally:
        for logger in loggers:
            logger.removeHandler(watcher)


def annotators_text(summary) -> str:  # noqa: ANN001 - a tasks.publish.RunSummary
    """The run summary's annotators line: how the label was made and the weakest annotators."""
    rated = summary.annotators
    if not rated:
        return f"label = {summary.consensus}"
    worst = ", ".join(f"{a['annotator']} {a['annotator_quality']:.2f}" for a in rated[-2:][::-1])
    return (f"{len(rated)} rated; label = {summary.consensus} consensus (differs from the "
            f"majority vote on {summary.n_consensus_changed:,} rows); lowest quality: {worst} "
            "(table annotator_summary)")


def print_summary(summary, seconds: float) -> None:  # noqa: ANN001
    from tasks.summary import model_check_text

    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("run", summary.run_id)
    t.add_row("rows", f"{summary.n_rows:,}")
    t.add_row("task", f"{summary.task} ({summary.task_reason})")
    check = summary.model_check
    if check:
        t.add_row("model", f"{summary.model}")
        t.add_row("model check", model_check_text(check) + (
            "" if check.get("model_trusted") else " - TOO WEAK"))
    t.add_row("label issues", f"{summary.n_label_issues:,}")
    others = ", ".join(f"{t} {n:,}" for t, n in summary.issue_counts.items()
                       if n and t not in ("label",))
    t.add_row("other issues", others or "none")
    t.add_row("actions", f"{summary.n_rows - summary.n_clean_rows:,} dropped, "
                         f"{summary.n_relabelled:,} relabelled, {summary.n_review:,} to review "
                         f"(`uv run cleanset review -d {summary.dataset}`)" + (
                             "" if summary.auto_fix else " - dry run: nothing changed"))
    if summary.n_reviewed or summary.orphan_decisions:
        orphans = summary.orphan_decisions
        t.add_row("decisions", f"{summary.n_reviewed:,} rows decided by reviewers" + (
            f"; {len(orphans)} decision(s) for rows no longer in the data: "
            + ", ".join(orphans[:5]) + (" ..." if len(orphans) > 5 else "") if orphans else ""))
    if summary.n_well_labeled:
        t.add_row("well labeled", f"{summary.n_well_labeled:,} rows a reviewer can skip "
                                  "(is_well_labeled)")
    if summary.issue_counts.get("unlabeled"):
        t.add_row("no label", f"{summary.issue_counts['unlabeled']:,} rows with a suggested "
                  "label, in review; not in the clean table until labeled (review export "
                  "--order priority: what to label next)")
    if summary.consensus:
        t.add_row("annotators", annotators_text(summary))
    if summary.flagged_slices:
        t.add_row("slices", "\n".join(summary.flagged_slices))
    if summary.left_out:
        t.add_row("left out", "\n".join(summary.left_out))
    t.add_row("clean rows", f"{summary.n_clean_rows:,} -> table {summary.clean_table}")
    t.add_row("health", f"{summary.health_score:.3f} of rows have no issue; label health "
                        f"{summary.label_health_score:.3f}")
    if summary.evaluation and "rmse" in summary.evaluation["given"]:  # a regression
        before, after = summary.evaluation["given"], summary.evaluation["cleaned"]
        t.add_row("test RMSE", f"{before['rmse']:.4g} trained as given -> {after['rmse']:.4g} "
                               f"trained cleaned (MAE {before['mae']:.4g} -> {after['mae']:.4g}, "
                               f"R^2 {before['r2']:.3f} -> {after['r2']:.3f}), scored on "
                               f"{summary.test_set}")
    elif summary.evaluation and "jaccard" in summary.evaluation["given"]:  # tag sets
        before, after = summary.evaluation["given"], summary.evaluation["cleaned"]
        t.add_row("test micro-F1", f"{before['micro_f1']:.3f} trained as given -> "
                                   f"{after['micro_f1']:.3f} trained cleaned (Jaccard "
                                   f"{before['jaccard']:.3f} -> {after['jaccard']:.3f})")
    elif summary.evaluation:
        before, after = summary.evaluation["given"], summary.evaluation["cleaned"]
        t.add_row("test accuracy", f"{before['accuracy']:.3f} trained as given -> "
                                   f"{after['accuracy']:.3f} trained cleaned (macro-F1 "
                                   f"{before['macro_f1']:.3f} -> {after['macro_f1']:.3f}), "
                                   f"scored on {summary.test_set}")
    t.add_row("warehouse", summary.db)
    from tasks.report import report_path

    page = report_path(Path(summary.db), summary.dataset, summary.run_id)
    if summary.report_error:
        from rich.markup import escape

        t.add_row("report", f"[red]failed[/red]: {escape(summary.report_error)} (the run is "
                            f"published; `cleanset report --db {summary.db} --run "
                            f"{summary.run_id}` retries)")
    elif page.exists():
        t.add_row("report", str(page))
    if summary.stages:
        from tasks.timing import stage_lines, totals

        flow = totals(list(summary.stages))["seconds"]
        t.add_row("time", f"{seconds:.1f} s ({flow:.1f} s in the flow, {seconds - flow:.1f} s "
                          "starting up" + ("; libraries preloaded by a waiting process"
                                           if os.environ.get("CLEANSET_PRELOADED") else "")
                          + ")")
        t.add_row("slowest stages", "\n".join(stage_lines(list(summary.stages))))
    else:
        t.add_row("time", f"{seconds:.1f} s")
    console.print(t)
    if check and check.get("model_warning"):
        err.print(f"[bold yellow]warning:[/bold yellow] {check['model_warning']}",
                  highlight=False)
