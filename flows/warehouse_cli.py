"""`cleanset query` and `cleanset report`: read the warehouse, (re)write a run's HTML report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.options import DbOpt, console, err, fail


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
        fail(f"warehouse {db} does not exist yet: run `cleanset demo` or `cleanset run` first")
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
    except duckdb.Error as exc:
        fail(f"query failed: {str(exc).splitlines()[0]}")
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
        fail(str(exc))
    except duckdb.Error as exc:  # e.g. a warehouse not written by cleanset
        fail(f"cannot read the run from {db}: {str(exc).splitlines()[0]}")
    except OSError as exc:  # the reports folder cannot be written
        fail(f"cannot write the report: {exc}")
    print(path)
