"""Shared pieces of the command line: its consoles, the error exit, common options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console


def split_commas(values: list[str] | None) -> list[str] | None:
    """A repeatable option's values with comma-separated ones split: `--text title,body` and
    `--text title --text body` both give ["title", "body"] (spaces around names are dropped)."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


console = Console()
err = Console(stderr=True)

DbOpt = Annotated[Path, typer.Option("--db", help="DuckDB warehouse file to publish into.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """A user's mistake: `error: message` on stderr (printed as is, no markup) and exit `code`."""
    err.print("[bold red]error:[/bold red] ", end="")
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)

