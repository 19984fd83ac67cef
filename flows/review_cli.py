"""`cleanset review`: go through flagged rows one at a time in the terminal, or export them to a
CSV for a spreadsheet and apply the filled-in file. Decisions land in `review_decisions` and every
later run honours them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel
from rich.table import Table

from flows.options import console, err, fail, split_commas

review_app = typer.Typer(
    invoke_without_command=True,
    rich_markup_mode="rich",
)

DbOpt = Annotated[Path, typer.Option("--db", help="DuckDB warehouse file.")]
DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", "-d", help="Dataset to review (default: the only one in the warehouse).")]
TopOpt = Annotated[int | None, typer.Option("--top", "-n", help="At most this many rows.")]
ActionsOpt = Annotated[list[str] | None, typer.Option(
    "--action", help="Rows whose policy action is one of these (comma-separated or repeated). "
    "Default: review, relabel and drop.", callback=split_commas)]
OrderOpt = Annotated[str, typer.Option(
    "--order", help="severity: most severe issue first. priority: ActiveLab's "
    "active_learning_score, lowest first (the rows whose (re)labeling helps the model most; "
    "every action unless --action).")]
ReviewerOpt = Annotated[str | None, typer.Option(
    "--reviewer", help="Who decides (default: $CLEANSET_REVIEWER or your login).")]


def _queue(db: Path, dataset: str | None, top: int | None, action: list[str] | None,  # noqa: ANN202
           order: str = "severity"):
    from tasks.errors import CleansetError
    from tasks.review import review_queue

    try:
        return review_queue(db, dataset, top, tuple(action) if action else None, order)
    except CleansetError as exc:
        fail(str(exc))


@review_app.callback()
def review(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    db: DbOpt = Path("data/warehouse.duckdb"),
    top: TopOpt = None,
    action: ActionsOpt = None,
    reviewer: ReviewerOpt = None,
    order: OrderOpt = "severity",
) -> None:
    r"""Review flagged rows, most severe first: one at a time here, or as a CSV (export, apply).

    Without a sub-command, shows each row and takes one key: \[k]eep (the label is right),
    \[r]elabel to the suggestion, \[o]ther label, \[d]rop, \[s]kip, \[q]uit. Each decision is saved
    at once, so quitting loses nothing. Decisions land in review_decisions and every later run
    honours them.
    """
    if ctx.invoked_subcommand is not None:
        return
    import pandas as pd

    from tasks.errors import CleansetError
    from tasks.review import check_decisions, default_reviewer, record_decisions

    name, queue = _queue(db, dataset, top, action, order)
    if queue.empty:
        console.print(f"nothing to review in {name}: every flagged row has a decision")
        return
    who = reviewer or default_reviewer()
    classes = sorted({*queue["given_label"].dropna(), *queue["suggested_label"].dropna()})
    task, delimiter = queue.attrs.get("task", "classification"), queue.attrs.get("delimiter", ";")
    if task == "multilabel":  # tags, not sets, are what a new label is made of
        from tasks.task_type import NO_TAGS

        classes = sorted({t for c in classes for t in c.split(delimiter) if t})
    console.print(f"{len(queue)} row(s) of {name} to review, as {who}. Keys: k keep (the "
                  "label is right), r relabel to the suggestion, o other label, d drop, s skip, "
                  "q quit", markup=False)
    done = 0
    for i, row in queue.iterrows():
        console.print(_panel(row, i + 1, len(queue)))
        key = _key("decision (k/r/o/d/s/q): ")
        if key == "q":
            break
        if key not in ("k", "r", "o", "d"):
            continue
        decision, new_label = {"k": ("keep", ""), "d": ("drop", ""),
                               "r": ("relabel", row["suggested_label"] or (
                                   NO_TAGS if task == "multilabel" else "")),
                               "o": ("relabel", None)}[key]
        if new_label is None:
            console.print(("tags (join with " + repr(delimiter) + f"; {NO_TAGS} for none): "
                           if task == "multilabel" else "labels: ") + ", ".join(classes))
            new_label = _line("new label: ")
        note = _line("note (Enter for none): ")
        one = pd.DataFrame([{"row_id": row["row_id"], "decision": decision,
                             "new_label": new_label, "note": note,
                             "given_label": row["given_label"] or "", "dataset": name}])
        try:
            checked = check_decisions(one, name, {row["row_id"]}, set(classes), "decision",
                                      task, delimiter)
            record_decisions(db, name, checked, who, "interactive")
        except CleansetError as exc:  # a typo or a busy warehouse should not end the session
            err.print(f"not saved: {exc}", markup=False)
            continue
        done += 1
        console.print(f"[green]saved[/green]: {decision} {new_label}".rstrip())
    console.print(f"{done} decision(s) saved to review_decisions; the next run applies them.")


MAX_FIELDS = 16


def _panel(row, n: int, total: int) -> Panel:  # noqa: ANN001
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("given label", str(row["given_label"]))
    if row["suggested_label"] is not None and "suggested_interval" in row:  # a regression
        t.add_row("suggested", f"{row['suggested_label']} (interval "
                               f"{row['suggested_interval']})")
    elif row["suggested_label"] is not None:
        t.add_row("suggested", f"{row['suggested_label']} (confidence "
                               f"{row['suggested_label_confidence']:.2f})")
    if "consensus_quality" in row and row["consensus_quality"] == row["consensus_quality"]:
        t.add_row("consensus", f"quality {row['consensus_quality']:.2f}, "
                               f"{row['annotator_agreement']:.0%} of annotators agree")
    if row.get("plausible_labels") and row["plausible_labels"] == row["plausible_labels"]:
        t.add_row("plausible", f"{row['plausible_labels']} (ambiguous: several labels fit)")
    if str(row.get("is_well_labeled")) == "True":
        t.add_row("trust", "well labeled: the model and the neighbours agree with the label")
    t.add_row("why", str(row["reason"]))
    t.add_row("policy", str(row["policy_action"]))
    content = [(str(c)[4:], v) for c, v in row.items() if str(c).startswith("row.")]
    for col, value in content[:MAX_FIELDS]:
        text = str(value).replace("\n", " ")
        t.add_row(col, text if len(text) <= 300 else text[:300] + " ...")
    if len(content) > MAX_FIELDS:
        t.add_row("", f"... {len(content) - MAX_FIELDS} more column(s) (see `review export`)")
    return Panel(t, title=f"row {row['row_id']}  ({n}/{total})", title_align="left")


def _key(prompt: str) -> str:
    """One key press on a terminal; a line when input is piped (scripts, tests)."""
    console.print(prompt, end="")
    if sys.stdin.isatty():
        key = typer.getchar()
        console.print(key)
        return key.lower()
    line = sys.stdin.readline()
    console.print()
    if not line:
        return "q"  # end of input: stop
    return line.strip().lower()[:1]


def _line(prompt: str) -> str:
    console.print(prompt, end="")
    return (sys.stdin.readline() or "").strip()


@review_app.command("export")
def export(
    dataset: DatasetOpt = None,
    db: DbOpt = Path("data/warehouse.duckdb"),
    top: TopOpt = None,
    action: ActionsOpt = None,
    order: OrderOpt = "severity",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="CSV to write (default: review_<dataset>.csv).")] = None,
) -> None:
    """Write the rows to review to a CSV, most severe first (or by ActiveLab priority).

    Fill in `decision` (keep, drop or relabel), `new_label` for relabel, optionally `reviewer`
    and `note`; then run `cleanset review apply FILE`. Rows left blank are skipped.
    """
    name, queue = _queue(db, dataset, top, action, order)
    path = out or Path(f"review_{name}.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    queue.to_csv(path, index=False)
    console.print(f"wrote {len(queue)} row(s) to review to {path}")


@review_app.command("apply")
def apply(
    file: Annotated[Path, typer.Argument(help="The filled-in review CSV.", show_default=False)],
    dataset: DatasetOpt = None,
    db: DbOpt = Path("data/warehouse.duckdb"),
    reviewer: ReviewerOpt = None,
) -> None:
    """Record the decisions of a filled-in review CSV.

    The whole file is checked first (row ids, decisions, labels); on any problem nothing is
    applied.
    """
    from tasks.errors import CleansetError
    from tasks.review import apply_review_file

    try:
        name, n, blank = apply_review_file(db, file, dataset, reviewer)
    except CleansetError as exc:
        fail(str(exc))
    console.print(f"recorded {n} decision(s) for {name}" + (
        f"; {blank} row(s) left blank were skipped" if blank else "")
        + ". The next run applies them.")
