"""The `cleanset` command line: run the flow on a file, run the demo, query the warehouse."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.options import split_commas

# Quiet, offline-friendly defaults; set before Prefect is imported. A user's own settings win.
for _key, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_key, _value)

app = typer.Typer(
    help="cleanset: find label errors and bad rows in a labeled dataset and publish a cleaned "
    "copy to DuckDB.\n\nStart with `cleanset demo`, then `cleanset run YOUR.csv --label COLUMN`.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

DbOpt = Annotated[Path, typer.Option("--db", help="DuckDB warehouse file to publish into.")]


def _fail(message: str, code: int = 2) -> None:
    err.print("[bold red]error:[/bold red] ", end="")
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _quiet_prefect(verbose: bool) -> None:
    """Unless --verbose, Prefect's console shows warnings only; the live progress shows stages.
    (Its API log handler keeps everything, so the Prefect UI still has the full logs.)"""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


class _StageProgress(logging.Handler):
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


def _run_flow(spec, refresh: bool, quiet: bool = False, runner: str = "threads",  # noqa: ANN001, ANN202
              address: str | None = None, folder: str | None = None):
    """Run the cleaning flow (of a dataset `folder`, flows/folders.py, when given) with a live
    status line; user errors become a message and a non-zero exit."""
    from flows.local_server import LocalServer, reporting_to, wanted
    from flows.runners import task_runner
    from tasks.errors import CleansetError

    try:
        chosen = task_runner(runner, spec.workers, address)
    except CleansetError as exc:
        _fail(str(exc))
    server = LocalServer() if wanted() else None  # boots while the libraries below import
    from flows.clean import clean_dataset
    from flows.folders import clean_folder

    clean_dataset = clean_dataset.with_options(task_runner=chosen)
    clean_folder = clean_folder.with_options(task_runner=chosen)

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=err, transient=True, disable=quiet)
    line = progress.add_task(f"cleaning {spec.dataset_name} ...", total=None)
    watcher = _StageProgress(progress, line)
    loggers = [logging.getLogger(n) for n in ("prefect.task_runs", "prefect.flow_runs")]
    try:
        with progress:
            for logger in loggers:
                logger.addHandler(watcher)
            with reporting_to(server, lambda: progress.update(
                    line, description="starting a local Prefect server ...")):
                if folder is not None:
                    return clean_folder(folder, db=spec.db, work_dir=spec.work_dir,
                                        refresh=refresh)
                return clean_dataset(spec, refresh=refresh)
    except CleansetError as exc:
        _fail(str(exc))
    finally:
        for logger in loggers:
            logger.removeHandler(watcher)


def _print_summary(summary, seconds: float) -> None:  # noqa: ANN001
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("run", summary.run_id)
    t.add_row("rows", f"{summary.n_rows:,}")
    check = summary.model_check
    if check:
        t.add_row("model", f"{summary.model}")
        t.add_row("model check", f"out-of-fold accuracy {check['model_accuracy']:.3f} (chance "
                                 f"{check['chance_accuracy']:.3f}), log loss "
                                 f"{check['model_log_loss']:.3f} (chance "
                                 f"{check['chance_log_loss']:.3f})" + (
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
    if summary.left_out:
        t.add_row("left out", "\n".join(summary.left_out))
    t.add_row("clean rows", f"{summary.n_clean_rows:,} -> table {summary.clean_table}")
    t.add_row("health", f"{summary.health_score:.3f} of rows have no issue; label health "
                        f"{summary.label_health_score:.3f}")
    if summary.evaluation:
        before, after = summary.evaluation["given"], summary.evaluation["cleaned"]
        t.add_row("test accuracy", f"{before['accuracy']:.3f} trained as given -> "
                                   f"{after['accuracy']:.3f} trained cleaned (macro-F1 "
                                   f"{before['macro_f1']:.3f} -> {after['macro_f1']:.3f}), "
                                   f"scored on {summary.test_set}")
    t.add_row("warehouse", summary.db)
    from tasks.report import report_path

    page = report_path(Path(summary.db), summary.dataset, summary.run_id)
    if page.exists():
        t.add_row("report", str(page))
    t.add_row("time", f"{seconds:.1f} s")
    console.print(t)
    if check and check.get("model_warning"):
        err.print(f"[bold yellow]warning:[/bold yellow] {check['model_warning']}",
                  highlight=False)


@app.command()
def run(
    source: Annotated[str | None, typer.Argument(
        help="CSV/TSV/Parquet/JSON Lines/Excel file, a folder of them, or a quoted glob "
        "like 'landing/*.csv'. May instead be `source:` in --config.", show_default=False)
    ] = None,
    label: Annotated[str | None, typer.Option(
        "--label", "-l", help="Label column (required here or in --config).")] = None,
    id: Annotated[str | None, typer.Option(
        "--id", help="Unique id column; without it a `row_id` (0, 1, ...) is added.")] = None,
    text: Annotated[list[str] | None, typer.Option(
        "--text", help="Free-text columns (TF-IDF): comma-separated or repeated, e.g. "
        "--text title,body.", callback=split_commas)] = None,
    features: Annotated[list[str] | None, typer.Option(
        "--feature", "--features", help="Use only these feature columns: comma-separated or "
        "repeated. Default: all columns but label and id.", callback=split_commas)] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Dataset name (tables are named after it). Default: file stem.")
    ] = None,
    db: Annotated[Path | None, typer.Option(
        "--db", help="DuckDB warehouse file. Default: data/warehouse.duckdb.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML file with DatasetSpec settings; flags override it.")] = None,
    suite: Annotated[Path | None, typer.Option(
        "--suite", help="GX Core 1.x suite JSON for this dataset. Default: "
        "expectations/<dataset>.json when present.")] = None,
    group: Annotated[str | None, typer.Option(
        "--group", help="Rows sharing this column's value stay in one fold (e.g. a user or "
        "product id), so near-copies cannot leak between training and scoring.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="auto (default: candidates measured by log loss on a sample of the data),"
        " or force a family: logreg, hgb, nb (text only), knn, ensemble (best two).")] = None,
    budget: Annotated[float | None, typer.Option(
        "--budget", help="Seconds the model fits may take (projected from the screening). "
        "Default: 3x logistic regression's, at least 30 s.", min=0.1)] = None,
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="Force a column's role: COLUMN=numeric|categorical|text|datetime|"
        "high_cardinality|ignore; repeat for several.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Publish every finding but change nothing: no relabel, no drop "
        "(<dataset>_clean = the data as given).")] = False,
    prune: Annotated[str | None, typer.Option(
        "--prune", help="Second pass without first-pass flagged rows: auto (default), off, "
        "replace, average.")] = None,
    pred_probs: Annotated[Path | None, typer.Option(
        "--pred-probs", help="Your own out-of-fold probabilities (.npy, one row per input row, "
        "one column per class in sorted order); skips training.")] = None,
    pred_prob_columns: Annotated[list[str] | None, typer.Option(
        "--pred-prob-column", help="Or: data columns holding each class's probability, one "
        "per class in sorted class order (comma-separated or repeated).",
        callback=split_commas)] = None,
    embeddings: Annotated[Path | None, typer.Option(
        "--embeddings", help="Your own features (.npy, one row per input row) instead of the "
        "data's columns.")] = None,
    test: Annotated[Path | None, typer.Option(
        "--test", help="A labelled test file with the same columns: train the default model on "
        "the data as given and on the cleaned data and report both accuracies.")] = None,
    eval_holdout: Annotated[float | None, typer.Option(
        "--eval-holdout", help="Or: hold out this share of rows (e.g. 0.2) as the test set; "
        "its labels are taken as given.", min=0.01, max=0.89)] = None,
    folds: Annotated[int | None, typer.Option(
        "--folds", help="Cross-validation folds (default 5).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Tasks run at once (fold fits in parallel). Default: one per core.")
    ] = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="Where intermediates and cache live. Default: <db folder>/work.")
    ] = None,
    runner: Annotated[str, typer.Option(
        "--runner", help="Where the fold fits run: threads (this machine, default) or dask "
        "(a temporary local Dask cluster, or the one at --address).")] = "threads",
    address: Annotated[str | None, typer.Option(
        "--address", help="Dask scheduler address for --runner dask, e.g. tcp://host:8786.")
    ] = None,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Recompute every stage instead of reusing cached results.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No live progress: only warnings and the summary.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show Prefect's full run log.")] = False,
) -> None:
    """Clean a dataset and publish it to DuckDB.

    Ingests SOURCE, validates it with Great Expectations, estimates out-of-fold probabilities,
    finds label issues with cleanlab, and publishes the tables runs, issues, issue_summary,
    validations and <dataset>_clean in one transaction. Re-running on unchanged data reuses
    every cached stage and republishes the same run id.

    Examples:

      cleanset run data/reviews.csv --label sentiment --text review

      cleanset run 'landing/*.parquet' --label y --id customer_id --dataset churn

      cleanset run data/iris.csv --config cleanset.yaml --db /srv/warehouse.duckdb

      cleanset run reviews.parquet --label y --text body --group product_id

      cleanset run images.csv --label y --embeddings clip.npy
    """
    _quiet_prefect(verbose)  # before anything imports Prefect (it reads logging settings once)
    from tasks.errors import CleansetError
    from tasks.ingest import resolve_source
    from tasks.spec import build_spec, is_dataset_folder, parse_roles

    if source and is_dataset_folder(source):  # a dataset folder: its batches, its settings
        from flows.datasets_cli import run_folder

        given = [f"--{k}" for k, v in {"label": label, "id": id, "text": text, "config": config,
                                       "dataset": dataset, "model": model}.items() if v]
        return run_folder(source, db, work_dir, refresh, quiet, runner, address, given)

    try:
        spec = build_spec(
            config, source=source, label=label, id=id, text=tuple(text or ()),
            features=tuple(features) if features else None, dataset=dataset,
            db=str(db) if db else None, suite=str(suite) if suite else None, folds=folds,
            seed=seed, work_dir=str(work_dir) if work_dir else None, group=group, model=model,
            prune=prune, pred_probs=str(pred_probs) if pred_probs else None,
            pred_prob_columns=tuple(pred_prob_columns or ()),
            embeddings=str(embeddings) if embeddings else None, workers=workers,
            test=str(test) if test else None, eval_holdout=eval_holdout, budget=budget,
            roles=parse_roles(role), dry_run=dry_run or None,
        )
        resolve_source(spec.source)  # fail fast, before any server starts
        if spec.test:
            resolve_source(spec.test)
    except CleansetError as exc:
        _fail(str(exc))
    started = time.perf_counter()
    summary = _run_flow(spec, refresh, quiet, runner, address)
    _print_summary(summary, time.perf_counter() - started)


@app.command()
def demo(
    name: Annotated[str, typer.Option(
        "--data", help="Bundled scikit-learn dataset: digits, wine, breast_cancer, iris.")
    ] = "digits",
    noise: Annotated[float, typer.Option(
        "--noise", help="Fraction of labels to flip (planted errors).", min=0.0, max=0.9)] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the planted noise.")] = 0,
    db: DbOpt = Path("data/warehouse.duckdb"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show Prefect's full run log.")] = False,
) -> None:
    """Run the whole pipeline on a bundled dataset with planted label errors.

    Builds a CSV from scikit-learn's bundled data (no download), flips --noise of its labels with
    a fixed seed, cleans it, publishes to --db, and scores what was found against the plant.

    Example: cleanset demo --data wine --noise 0.2
    """
    import duckdb
    import numpy as np

    _quiet_prefect(verbose)
    from tasks.errors import CleansetError
    from tasks.sample import load_builtin, plant_noise, precision_recall
    from tasks.spec import build_spec

    try:
        frame = load_builtin(name)
    except CleansetError as exc:
        _fail(str(exc))
    truth = frame["label"].astype(str).to_numpy()
    noisy, mask = plant_noise(frame["label"].to_numpy(), noise, seed)
    frame["label"] = noisy
    out_dir = db.parent / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / f"{name}_noisy.csv"
    frame.to_csv(csv, index=False)
    console.print(f"[bold]demo:[/bold] {name}, {len(frame):,} rows, {int(mask.sum())} labels "
                  f"flipped ({noise:.0%}, seed {seed}) -> {csv}")
    spec = build_spec(source=str(csv), label="label", dataset=f"demo_{name}", db=str(db))
    started = time.perf_counter()
    summary = _run_flow(spec, refresh=False, quiet=quiet)
    seconds = time.perf_counter() - started
    with duckdb.connect(str(db), read_only=True) as con:
        flagged = con.execute(
            "SELECT CAST(row_id AS BIGINT), is_label_issue, action, final_label FROM issues "
            "WHERE run_id = ? ORDER BY 1", [summary.run_id]).fetchall()
    found = np.zeros(len(mask), dtype=bool)
    dropped = np.zeros(len(mask), dtype=bool)
    relabelled = right = 0
    for rid, flag, action, final in flagged:
        found[rid] = bool(flag)
        dropped[rid] = action == "drop"
        if action == "relabel":
            relabelled += 1
            right += final == truth[rid]
    p, r, f1 = precision_recall(found, mask)
    _print_summary(summary, seconds)
    kept = ~dropped
    before, after = 1 - mask.mean(), 1 - mask[kept].mean() if kept.any() else float("nan")
    fixes = f"; {right} of {relabelled} relabelled rows got their true label back" if (
        relabelled) else ""
    console.print(f"[bold]against the planted errors:[/bold] precision {p:.2f}, recall {r:.2f}, "
                  f"F1 {f1:.2f} ({int((found & mask).sum())} of {int(mask.sum())} found); "
                  f"{int(dropped.sum())} rows left out, {int((dropped & mask).sum())} of them "
                  f"planted errors; labels right {before:.1%} as given -> {after:.1%} in the "
                  f"clean table{fixes}", soft_wrap=True)
    query = (f"SELECT row_id, given_label, suggested_label, round(label_score, 3) AS score "
             f"FROM issues WHERE run_id = '{summary.run_id}' AND is_label_issue "
             f"ORDER BY label_score LIMIT 10")
    db_flag = "" if db == Path("data/warehouse.duckdb") else f" --db {db}"
    console.print("[bold]look at the worst rows:[/bold]")
    console.print(f'  uv run cleanset query{db_flag} "{query}"', highlight=False, soft_wrap=True)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL to run (read-only).", show_default=False)],
    db: DbOpt = Path("data/warehouse.duckdb"),
    limit: Annotated[int, typer.Option("--limit", help="Print at most this many rows.")] = 50,
    csv: Annotated[bool, typer.Option(
        "--csv", help="Print all rows as CSV (for piping) instead of a table.")] = False,
) -> None:
    """Run a read-only SQL query on the warehouse and print the result as a table.

    On a terminal the table fits the window (long values are cut with …); piped or redirected,
    it is plain text with every value in full, one line per row (--csv for a program to read).

    Example: cleanset query "SELECT dataset, run_id, n_rows, n_label_issues FROM runs"
    """
    import duckdb

    if not db.exists():
        _fail(f"warehouse {db} does not exist yet: run `cleanset demo` or `cleanset run` first")
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
    except duckdb.Error as exc:
        _fail(f"query failed: {str(exc).splitlines()[0]}")
    if csv:
        import csv as csvlib

        writer = csvlib.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
        return
    more = f"({len(rows) - limit} more rows; raise --limit to see them)"
    if not console.is_terminal:  # a file or a pipe has no width to fit: nothing is cut
        sys.stdout.write(plain_table(names, rows[:limit]))
        if len(rows) > limit:
            err.print(more, markup=False, highlight=False)
        return
    table = Table(*names)
    for column in table.columns:
        column.no_wrap, column.overflow = True, "ellipsis"
    for row in rows[:limit]:
        table.add_row(*("" if v is None else _cell(v) for v in row))
    console.print(table)
    if len(rows) > limit:
        console.print(more)


def _cell(value: object, width: int = 60) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def plain_table(names: list[str], rows: list[tuple]) -> str:
    """Rows as aligned plain text, every value in full (newlines shown as spaces, None empty):
    a header, a rule of dashes, one line per row."""
    cells = [[("" if v is None else str(v)).replace("\r", " ").replace("\n", " ") for v in row]
             for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    lines = [names, ["-" * w for w in widths], *cells]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                   + "\n" for line in lines)


def _needs_server(what: str) -> None:
    from prefect.settings import PREFECT_API_URL

    start = ("start one with `uv run prefect server start --host 127.0.0.1` and "
             "`export PREFECT_API_URL=http://127.0.0.1:4200/api`")
    if not PREFECT_API_URL.value():
        _fail(f"{what} needs a running Prefect server: {start}")
    from prefect import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        _fail(f"{what} cannot reach the Prefect server at {PREFECT_API_URL.value()} "
              f"({str(problem).splitlines()[0] if str(problem) else type(problem).__name__}): "
              f"{start}")


@app.command()
def serve(
    prefect_file: Annotated[Path | None, typer.Option(
        "--prefect-file", help="Deployment definitions. Default: the project's prefect.yaml.")
    ] = None,
    deployment: Annotated[list[str] | None, typer.Option(
        "--deployment", help="Serve only these deployments (comma-separated or repeated). "
        "Default: all.", callback=split_commas)] = None,
    landing: Annotated[Path, typer.Option(
        "--landing", help="Landing folder to watch for new files.")] = Path("data/landing"),
    watch_files: Annotated[bool, typer.Option(
        "--watch/--no-watch", help="Watch --landing and emit an event per new file.")] = True,
    poll: Annotated[float, typer.Option(
        "--poll", help="Seconds between landing-folder scans and between queries for "
        "runs.", min=0.2)] = 2.0,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Runs executed at once by this process. Default: Prefect's.")] = None,
    notify: Annotated[str | None, typer.Option(
        "--notify", help="Notification block TYPE/NAME (e.g. slack-webhook/data-team): create "
        "the automation that sends cleanset.dataset.degraded events through it.")] = None,
) -> None:
    """Serve prefect.yaml's deployments from this process (no work pool needed).

    The nightly schedule, the on-arrival trigger and the concurrency limits are those of
    prefect.yaml. With --watch (default) a file dropped into a dataset folder of --landing
    (one with a cleanset.yaml) is announced as a `cleanset.file.arrived` event, which starts a
    run of that dataset folder; other files are only reported. Stop with Ctrl-C
    (or SIGTERM): schedules are paused and the trigger automations removed, so nothing creates
    runs while no process serves them.

    Example: PREFECT_API_URL=http://127.0.0.1:4200/api cleanset serve
    """
    from flows.serve import DEFAULT_PREFECT_FILE, read_deployment_specs
    from flows.serve import serve as serve_deployments
    from tasks.errors import CleansetError

    path = prefect_file or DEFAULT_PREFECT_FILE
    try:
        read_deployment_specs(path, deployment)
    except CleansetError as exc:
        _fail(str(exc))
    _needs_server("serve")
    try:
        serve_deployments(path, deployment, landing if watch_files else None, poll, limit,
                          notify)
    except CleansetError as exc:
        _fail(str(exc))


@app.command()
def watch(
    directory: Annotated[Path, typer.Argument(help="Landing folder (watched recursively).")] = Path(
        "data/landing"),
    poll: Annotated[float, typer.Option("--poll", help="Seconds between scans.", min=0.2)] = 2.0,
    state: Annotated[Path | None, typer.Option(
        "--state", help="Where seen content hashes are kept. Default: DIR/.cleanset-landing.json")
    ] = None,
    db: Annotated[Path, typer.Option(
        "--db", help="Warehouse the runs publish into: a seen file dropped again is announced "
        "again when its last run there failed.")] = Path("data/warehouse.duckdb"),
    retry: Annotated[Path | None, typer.Option(
        "--retry", help="Forget FILE's content in the state file, so the watcher (this one, or "
        "one already running) announces it again; then exit.", metavar="FILE")] = None,
) -> None:
    """Emit a Prefect event for each new complete file in DIR (for deployments served elsewhere).

    A file counts once its size and modification time hold still for one poll; temporary names
    (.part, .tmp, ...) and hidden files are ignored; content already announced (by sha256, kept in
    the state file) is not announced again, also across restarts. The event,
    `cleanset.file.arrived`, carries path, sha256, size, dataset and folder (the file's dataset
    folder under DIR) in its payload; a file outside a dataset folder (no cleanset.yaml) is
    reported as `cleanset.file.unregistered` instead. A seen file is skipped with a logged
    reason; one dropped
    again (copied or touched) after its run failed is announced again. Stop with Ctrl-C.

    Example: cleanset watch data/landing --retry data/landing/churn/2026-01-02.csv
    """
    if retry is not None:
        from tasks.landing import STATE_FILE, forget

        if not retry.is_file():
            _fail(f"--retry {retry}: no such file")
        state_file = state or directory / STATE_FILE
        digest, record = forget(state_file, retry)
        if record is None:
            console.print(f"{retry} ({digest[:12]}) is not in {state_file}: the watcher will "
                          "announce it as new", soft_wrap=True)
        else:
            console.print(f"forgot {retry} ({digest[:12]}, announced {record.get('at')}) in "
                          f"{state_file}: the watcher announces it again at its next poll",
                          soft_wrap=True)
        return
    _needs_server("watch")
    import signal

    from flows.watch import watch as watch_folder

    def _interrupt(*_):  # noqa: ANN002, ANN202 - SIGTERM stops like Ctrl-C: queued events are sent
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        watch_folder(directory, poll, state_path=state, db=db)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # DIR is a file, the state file is a folder, no permission, ...
        _fail(f"cannot watch {directory}: {exc}")
    finally:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)


@app.command()
def report(
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Dataset to report on. Default: the only one in the warehouse.")
    ] = None,
    run: Annotated[str | None, typer.Option(
        "--run", "-r", help="Run id. Default: the dataset's latest run.")] = None,
    db: DbOpt = Path("data/warehouse.duckdb"),
) -> None:
    """(Re)generate a run's HTML data-health report and print its path.

    The report is one self-contained file, <db folder>/reports/<dataset>/<run_id>.html: health
    and its trend, issues per type, the label noise matrix, per-class quality, score
    distributions, the worst rows, validation, actions and evaluation. It works offline.

    Example: cleanset report --dataset demo_digits
    """
    import duckdb

    from tasks.errors import CleansetError
    from tasks.report import build_report

    try:
        path = build_report(db, dataset, run)
    except CleansetError as exc:
        _fail(str(exc))
    except duckdb.Error as exc:  # e.g. a warehouse not written by cleanset
        _fail(f"cannot read the run from {db}: {str(exc).splitlines()[0]}")
    except OSError as exc:  # the reports folder cannot be written
        _fail(f"cannot write the report: {exc}")
    print(path)


from flows.review_cli import review_app  # noqa: E402 - a sub-command group of its own module

app.add_typer(review_app, name="review")

from flows.datasets_cli import register  # noqa: E402 - init, datasets, gc

register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
