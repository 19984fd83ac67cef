"""The command line of datasets that grow: `cleanset init`, `cleanset datasets`, `cleanset gc`,
and `cleanset run DATASET_FOLDER/` (registered into the app by `register`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.options import split_commas

LandingOpt = Annotated[Path, typer.Option("--landing", help="The landing folder of the "
                                          "dataset folders.")]
DbOpt = Annotated[Path, typer.Option("--db", help="DuckDB warehouse file.")]


def mode_line(summary) -> str:  # noqa: ANN001 - a RunSummary
    """`mode: incremental (why)` and, against the previous run, the old rows whose verdict
    changed and why (or that every verdict is stable)."""
    line = f"mode: {summary.mode} ({summary.mode_reason})"
    if summary.n_verdicts_changed is None:
        return line
    if summary.n_verdicts_changed == 0:
        return line + "; verdicts: stable (no earlier row changed its flag or action)"
    return line + (f"; verdicts: {summary.n_verdicts_changed:,} earlier row(s) changed flag or "
                   f"action ({summary.verdicts_changed})")


def run_folder(folder: str, db: Path | None, work_dir: Path | None, refresh: bool, quiet: bool,
               runner: str, address: str | None, given: list[str], full: bool = False) -> None:
    """`cleanset run DATASET_FOLDER/`: the folder's new files become batches; all accepted
    batches are cleaned with the folder's cleanset.yaml."""
    from flows.options import console, fail
    from flows.progress import print_summary, run_flow
    from tasks.errors import CleansetError
    from tasks.landing import data_files
    from tasks.sources import precheck
    from tasks.spec import DATASET_FILE, load_dataset_spec

    if given:
        fail(f"{folder} is a dataset folder: its settings live in its cleanset.yaml, so "
              f"{', '.join(given)} cannot be given here (edit the file, or run the files "
              "one-off with a glob)")
    try:
        spec = load_dataset_spec(folder, db=str(db) if db else None,
                                 work_dir=str(work_dir) if work_dir else None)
    except CleansetError as exc:
        fail(str(exc))
    files = data_files(Path(folder))
    if files:  # a column the settings name that no batch file has: say so before anything starts
        try:
            precheck(spec, files=files, flags=False)
        except CleansetError as exc:
            fail(f"{Path(folder) / DATASET_FILE}: {exc}")
    started = time.perf_counter()
    summary = run_flow(spec, refresh, quiet, runner, address, folder=folder, full=full)
    print_summary(summary, time.perf_counter() - started)
    line = (f"batches: {summary.n_batches} accepted ({len(summary.new_batches)} new: "
            f"{', '.join(summary.new_batches) or 'none'})")
    if summary.quarantined_batches:
        line += f"; quarantined: {', '.join(summary.quarantined_batches)}"
    if summary.n_replaced:
        line += f"; {summary.n_replaced} row(s) replaced by a later batch (same id)"
    console.print(line, highlight=False, soft_wrap=True)
    console.print(mode_line(summary), highlight=False, soft_wrap=True, markup=False)
    for b in summary.batch_audits:  # each new batch against the dataset (tasks/audit.py)
        status = "accepted with warnings" if b["status"] == "accepted" and b["flagged"] else \
            b["status"]
        console.print(f"  batch {b['batch_id']} ({b['file']}): {status}: {b['reason']}",
                      highlight=False, soft_wrap=True, markup=False)
        for c in b["flagged"]:
            console.print(f"    {c['outcome']}: {c['message']}", highlight=False,
                          soft_wrap=True, markup=False)
    if summary.degraded:
        from flows.options import err

        err.print(f"[bold yellow]degraded:[/bold yellow] {summary.degraded}", highlight=False)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def datasets(
    landing: LandingOpt = Path("data/landing"),
    db: DbOpt = Path("data/warehouse.duckdb"),
) -> None:
    """List the datasets (batches, rows, last run, health, disk use) and stray landed files.

    Also lists the landed files that belong to no dataset folder: they start no run.

    Example: cleanset datasets --landing data/landing
    """
    from flows.options import console
    from tasks.batches import overview
    from tasks.landing import unregistered_files

    rows = overview(Path(landing), Path(db))
    if not rows:
        console.print(f"no datasets: no folder with a cleanset.yaml under {landing} and no run "
                      f"in {db} (start with `cleanset init {landing}/NAME --label COLUMN`)",
                      soft_wrap=True)
    else:
        table = Table("dataset", "folder", "batches", "rows", "last run", "status", "health",
                      "label health", "disk")
        for r in rows:
            batches = f"{r['accepted']}" + (f" (+{r['quarantined']} quarantined)"
                                            if r["quarantined"] else "")
            table.add_row(r["dataset"], r["folder"] or "-", batches if r["folder"] else "-",
                          f"{r['rows']:,}" if r["rows"] is not None else "-",
                          str(r["last_run"] or "-")[:19], r["status"] or "never run",
                          _score(r["health"]), _score(r["label_health"]), _mb(r["disk"]))
        console.print(table)
    stray = unregistered_files(Path(landing))
    if stray:
        console.print(f"[bold]unregistered files[/bold] ({len(stray)}: they start no run)")
        for path, why in stray:
            console.print(f"  {path}: {why}", highlight=False, soft_wrap=True)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def gc(
    db: DbOpt = Path("data/warehouse.duckdb"),
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="Intermediates folder. Default: <db folder>/work.")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Only this dataset's old runs (orphans are left alone).")
    ] = None,
    keep: Annotated[int | None, typer.Option(
        "--keep", help="Keep this many latest runs per dataset. Default: each dataset's "
        "retention.keep_runs (10).", min=1)] = None,
    grace: Annotated[float, typer.Option(
        "--grace", help="Work files no run names are deleted once older than this many hours "
        "(a run in progress keeps its files).", min=0)] = 24.0,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List what would be deleted and its size; delete nothing.")] = False,
) -> None:
    """Delete what retention no longer keeps (--dry-run lists it first).

    Old runs' work files, the Prefect cache records that name them, their
    `<dataset>_clean_history` and `issues` rows and their reports; and work files no run names
    (older than --grace hours). The latest runs (and every batch's snapshot) stay.

    Example: cleanset gc --dry-run
    """
    import logging

    from flows.options import console, fail
    from tasks.errors import CleansetError
    from tasks.retention import apply_gc, plan_gc
    from tasks.warehouse_lock import warehouse_slot

    work = work_dir or db.parent / "work"
    if not db.is_file():
        fail(f"warehouse {db} does not exist: nothing to collect")
    try:
        with warehouse_slot(db, logging.getLogger("cleanset.gc")):
            plan = plan_gc(db, work, dataset=dataset, keep=keep,
                           orphan_grace_hours=None if dataset else grace)
            if not dry_run:
                apply_gc(db, plan)
    except CleansetError as exc:
        fail(str(exc))
    verb = "would delete" if dry_run else "deleted"
    for name, ids in sorted(plan.pruned.items()):
        console.print(f"{name}: {len(ids)} old run(s): {', '.join(ids)}", highlight=False,
                      soft_wrap=True)
    for path, size, why in plan.files:
        console.print(f"  {verb} {path} ({_mb(size)}; {why})", highlight=False, soft_wrap=True)
    for path, size in plan.reports:
        console.print(f"  {verb} {path} ({_mb(size)})", highlight=False, soft_wrap=True)
    rows = sum(n for *_, n in plan.rows)
    console.print(f"{verb} {len(plan.files)} work file(s), {len(plan.records)} cache record(s), "
                  f"{len(plan.reports)} report(s): {_mb(plan.bytes)}; {rows:,} row(s) of "
                  "<dataset>_clean_history and issues", highlight=False, soft_wrap=True)


def init(
    folder: Annotated[Path, typer.Argument(help="The dataset folder, e.g. data/landing/churn.")],
    label: Annotated[str, typer.Option("--label", "-l", help="Label column.")],
    id: Annotated[str | None, typer.Option(
        "--id", help="Id column: a row of a later batch with the same id replaces the "
        "earlier one. Without it a row is <batch>-<row number>.")] = None,
    text: Annotated[list[str] | None, typer.Option(
        "--text", help="Free-text columns (comma-separated or repeated).",
        callback=split_commas)] = None,
    model: Annotated[str | None, typer.Option("--model", help="auto, logreg, hgb, ...")] = None,
    keep_runs: Annotated[int | None, typer.Option(
        "--keep-runs", help="Retention: keep this many latest runs (default 10).", min=1)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a cleanset.yaml.")] = False,
) -> None:
    """Make FOLDER a dataset: write its cleanset.yaml; each file dropped there is a batch.

    Example: cleanset init data/landing/churn --label churned --id customer_id
    """
    import yaml

    from flows.options import console, fail
    from tasks.errors import CleansetError
    from tasks.spec import DATASET_FILE, build_spec, folder_dataset_name

    path = folder / DATASET_FILE
    if path.exists() and not force:
        fail(f"{path} exists already (--force to overwrite it)")
    values: dict = {"label": label}
    if id:
        values["id"] = id
    if text:
        values["text"] = list(text)
    if model:
        values["model"] = model
    if keep_runs:
        values["retention"] = {"keep_runs": keep_runs}
    try:
        build_spec(source=str(folder), dataset=folder_dataset_name(folder), **values)
    except CleansetError as exc:
        fail(str(exc))
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("# cleanset settings of this dataset (a DatasetSpec without `source`: the "
                    "files in this folder\n# are its batches). See README.md, Settings.\n"
                    + yaml.safe_dump(values, sort_keys=False))
    console.print(f"wrote {path}: dataset {folder_dataset_name(folder)}; drop batch files into "
                  f"{folder}/ and run `cleanset run {folder}/`", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the dataset commands to the `cleanset` app."""
    app.command()(init)
    app.command()(datasets)
    app.command()(gc)
