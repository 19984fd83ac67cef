"""The `cleanset` command line, assembled: one Typer app, its commands from one module per group.

run, demo: flows/run_cli.py (the live progress and summary: flows/progress.py); query, report:
flows/warehouse_cli.py; serve, watch: flows/serve_cli.py (the local Prefect server:
flows/local_server.py); review: flows/review_cli.py; init, datasets, gc (and `run DATASET_FOLDER/`):
flows/datasets_cli.py. Shared consoles and options:
flows/options.py. Nothing heavy is imported here: each command imports what it needs."""

from __future__ import annotations

import inspect
import os
import sys

import typer

from flows import run_cli, serve_cli, warehouse_cli
from flows.review_cli import review_app
from flows.warm import CLI_DEFAULTS

# Quiet, offline-friendly defaults; set before Prefect is imported. A user's own settings win.
for _key, _value in CLI_DEFAULTS.items():
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


def reflow(doc: str) -> str:
    """A docstring as the rich help shows it well at any terminal width: each prose
    paragraph's lines joined (rich wraps them; typer keeps the docstring's own line breaks, so an
    80-column terminal showed every line broken twice), paragraphs with indented lines
    (examples) or list items kept as written."""
    out = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines = paragraph.split("\n")
        kept = any(line.startswith((" ", "\b", "- ", "* ")) for line in lines)
        out.append(paragraph if kept else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Every command's and sub-app's help from its docstring, reflowed (see reflow)."""
    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = reflow(info.callback.__doc__)
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        callback = sub.registered_callback if sub is not None else None
        if callback is not None and callback.callback is not None and \
                callback.callback.__doc__ and not isinstance(callback.help, str):
            callback.help = reflow(callback.callback.__doc__)
        if sub is not None:
            _reflow_help(sub)


_reflow_help(app)


def main() -> None:  # pragma: no cover - console entry point
    """Run the command (`run` and `demo` in a waiting warm process when one is ready:
    flows/warm.py), leave the next warm process behind, then exit without the interpreter's
    teardown (see exit_now)."""
    from flows import warm

    env = dict(os.environ)  # as this command found it (with the defaults above)
    code = warm.forward(sys.argv, env)
    if code is None:  # no warm process took it: run it here
        try:
            app()
            code = 0
        except SystemExit as exc:
            code = exc.code
    try:
        warm.prepare_next(sys.argv, env)
    except OSError:
        pass  # never fail a finished command for the next one's sake
    exit_now(code)


def exit_now(code: int | str | None, before=None) -> None:  # noqa: ANN001 - Callable[[int], None]
    """End the process the way the interpreter would, less its teardown: join the non-daemon
    threads (threading's own shutdown), run the atexit handlers (Prefect's queued logs and
    events are sent, the local server is stopped), flush the console, call `before(code)` (a warm
    process answers the CLI that handed it the command), then `os._exit`. Freeing
    every module's objects one by one is all that is skipped: after a run it took 4.5-5.6 s
    (load ~7, 2 cores; ~2 s for Prefect + Great Expectations alone), after the summary was on
    screen. Warehouse files are closed by then (every connection is a `with` block)."""
    import atexit
    import threading

    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    try:
        threading._shutdown()  # noqa: SLF001 - what Py_FinalizeEx calls first
        atexit._run_exitfuncs()  # noqa: SLF001 - then the atexit handlers
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if before is not None:
            try:
                before(code or 0)
            except OSError:
                pass
        os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
