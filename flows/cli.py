"""The `cleanset` command line, assembled: one Typer app, its commands from one module per group.

run, demo: flows/run_cli.py (the live progress and summary: flows/progress.py); query, report:
flows/warehouse_cli.py; serve, watch: flows/serve_cli.py (the local Prefect server:
flows/local_server.py); review: flows/review_cli.py; init, datasets, gc (and `run DATASET_FOLDER/`):
flows/datasets_cli.py. Shared consoles and options:
flows/options.py. Nothing heavy is imported here: each command imports what it needs."""

from __future__ import annotations

import os
import sys

import typer

from flows import run_cli, serve_cli, warehouse_cli
from flows.review_cli import review_app

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

# Registered in this order: `cleanset --help` lists them so.
for command in (run_cli.run, run_cli.demo, warehouse_cli.query, serve_cli.serve, serve_cli.watch,
                warehouse_cli.report):
    app.command()(command)
app.add_typer(review_app, name="review")

from flows.datasets_cli import register  # noqa: E402 - init, datasets, gc

register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
