"""The CLI as a user meets it: help, the demo, and every kind of bad input (clear message, non-zero
exit, nothing published)."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest

from tests.conftest import blobs


class Result:
    def __init__(self, exit_code: int, output: str):
        self.exit_code, self.output = exit_code, output


@pytest.fixture()
def invoke(workdir):
    """Run `cleanset ...` as a user would: a separate process, in the test's folder, talking to
    the test session's Prefect server when one is running."""
    from prefect.settings import get_current_settings

    env = {**os.environ, "COLUMNS": "200"}
    api = get_current_settings().api.url
    if api:
        env["PREFECT_API_URL"] = str(api)

    def run(*args: str) -> Result:
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=300)
        return Result(proc.returncode, proc.stdout + proc.stderr)

    return run


def test_help_explains_every_option_with_examples(invoke):
    result = invoke("run", "--help")
    assert result.exit_code == 0
    for option in ("--label", "--id", "--text", "--dataset", "--db", "--config", "--suite",
                   "--folds", "--refresh", "Examples"):
        assert option in result.output


@pytest.mark.usefixtures("prefect_server")
def test_demo_reports_precision_recall_and_a_query(workdir, invoke):
    result = invoke("demo", "--data", "iris", "--noise", "0.1", "--db", "wh.duckdb")
    assert result.exit_code == 0, result.output
    assert "against the planted errors: precision" in result.output
    assert "Finished in state" not in result.output  # Prefect's log stays out unless --verbose
    assert "cleanset query --db wh.duckdb" in result.output
    recall = float(result.output.split("recall ")[1].split(",")[0])
    assert recall >= 0.6
    q = invoke("query", "SELECT dataset, n_rows FROM runs", "--db", "wh.duckdb")
    assert q.exit_code == 0 and "demo_iris" in q.output and "150" in q.output


def _good_db(workdir, invoke):
    """A warehouse that already holds one published run: bad inputs must leave it untouched."""
    blobs(60).to_csv(workdir / "good.csv", index=False)
    result = invoke("run", "good.csv", "--label", "label", "--db", "wh.duckdb", "--quiet")
    assert result.exit_code == 0, result.output
    return workdir / "wh.duckdb"


def snapshot_tables(db):
    """Rows per table; `runs` counts completed runs only (a rejected run leaves one `failed`
    row there and nothing anywhere else)."""
    with duckdb.connect(str(db), read_only=True) as con:
        names = sorted(t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()")
                       .fetchall())
        return {t: con.execute(f'SELECT count(*) FROM "{t}"' + (
            " WHERE status <> 'failed'" if t == "runs" else "")).fetchall()[0][0] for t in names}


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def frame_csv(**changes) -> str:
    df = blobs(30)
    for col, values in changes.items():
        df[col] = values
    return df.to_csv(index=False)


# A few bad inputs through a real process; the full corpus (45 cases) runs in-process in
# tests/test_corpus.py.
BAD_INPUTS = {
    "missing file": (None, ["--label", "label"], "does not exist"),
    "unreadable file": (b"PAR1\x00\x01garbage", ["--label", "label"], "cannot read"),
    "missing label column": (frame_csv(), ["--label", "target"],
                             "--label column 'target' is not in"),
    "bad dataset name": (frame_csv(), ["--label", "label", "--dataset", "x;drop"],
                         "not usable as a table name"),
}


@pytest.mark.usefixtures("prefect_server")
def test_bad_inputs_are_rejected_clearly_and_publish_nothing(workdir, invoke):
    db = _good_db(workdir, invoke)
    before = snapshot_tables(db)
    for case, (content, args, needle) in BAD_INPUTS.items():
        name = "bad.parquet" if case == "unreadable file" else "bad.csv"
        path = workdir / name
        path.unlink(missing_ok=True)
        if content is not None:
            write(path, content)
        result = invoke("run", name, *args, "--db", "wh.duckdb", "--quiet")
        assert result.exit_code == 2, (case, result.output)
        assert "error:" in result.output and needle in result.output, (case, result.output)
        assert "Traceback" not in result.output, case
        assert snapshot_tables(db) == before, case


def test_query_errors_are_messages(workdir, invoke):
    assert "does not exist yet" in invoke("query", "SELECT 1", "--db", "none.duckdb").output
    duckdb.connect("x.duckdb").close()
    result = invoke("query", "SELEC nonsense", "--db", "x.duckdb")
    assert result.exit_code == 2 and "query failed" in result.output


def test_bad_config_file_is_a_message(workdir, invoke):
    (workdir / "c.yaml").write_text("label: [unclosed\n")
    result = invoke("run", "a.csv", "--config", "c.yaml")
    assert result.exit_code == 2 and "not valid YAML" in result.output


def _commands(group, path=()):  # noqa: ANN001, ANN202
    """Every (path, click command) of the typer app, sub-groups included (typer's own click
    classes are not click.Group: a group is what has sub-commands)."""
    yield path, group
    if getattr(group, "commands", None):
        for name, command in group.commands.items():
            yield from _commands(command, (*path, name))


def test_every_help_text_is_printed_whole():
    """Rich markup must not eat words: `[k]eep` in a docstring once printed as `eep`."""
    import re

    import typer
    from typer.testing import CliRunner

    from flows.cli import app

    root = typer.main.get_command(app)
    for path, command in _commands(root):
        result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        shown = set(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
        doc = (command.help or "").replace("\\[", "[").replace("\b", "")
        lost = [word for word in doc.split() if word not in shown]
        assert not lost, f"cleanset {' '.join(path)} --help lost {lost}"
    review = CliRunner().invoke(app, ["review", "--help"], terminal_width=200).output
    assert "[k]eep" in review and "[q]uit" in review


def test_help_paragraphs_wrap_to_the_terminal_not_to_the_docstring():
    """At 80 columns `cleanset run --help` broke each docstring line twice (typer keeps the
    docstring's line breaks and rich wraps again): a 5-word line after every full one. Prose now
    flows to the terminal's width; the indented examples stay one per line."""
    from typer.testing import CliRunner

    from flows.cli import app

    out = CliRunner().invoke(app, ["run", "--help"], terminal_width=80).output
    prose = [line.strip() for line in out.splitlines()
             if line.strip() and not line.lstrip().startswith(("│", "╭", "╰", "Usage"))]
    start = next(i for i, line in enumerate(prose) if line.startswith("Ingests SOURCE"))
    paragraph = prose[start:prose.index("Examples:")]
    assert len(paragraph) >= 3
    assert all(len(line) > 60 for line in paragraph[:-1]), paragraph  # full lines but the last
    assert "  cleanset run data/reviews.csv --label sentiment --text review" in out


def test_query_into_a_file_or_pipe_prints_every_value_in_full(tmp_path):
    """Piped, the rich table once squeezed 30 columns into 80 characters (zero-width columns)."""
    from typer.testing import CliRunner

    from flows.cli import app

    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        columns = ", ".join(f"'value_{i}_' || repeat('x', {i}) AS column_{i}" for i in range(30))
        con.execute(f"CREATE TABLE wide AS SELECT {columns} FROM range(3)")
    result = CliRunner().invoke(app, ["query", "SELECT * FROM wide", "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [f"column_{i}" for i in range(30)]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == [f"value_{i}_" + "x" * i for i in range(30)]
    assert len(lines) == 5 and "…" not in result.output
    limited = CliRunner().invoke(app, ["query", "SELECT * FROM range(5)", "--db", str(db),
                                       "--limit", "2"])
    assert limited.stdout.splitlines() == ["range", "-----", "0", "1"]
    assert "3 more rows" in limited.stderr


class _Stop(Exception):
    pass


@pytest.fixture()
def spec_of(workdir, monkeypatch):
    """`cleanset run ...` in-process up to the flow: returns the DatasetSpec the flow would get
    (or the CLI's result when it stopped before that)."""
    from typer.testing import CliRunner

    import flows.run_cli
    from flows.cli import app

    seen = []

    def stop(spec, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(spec)
        raise _Stop

    monkeypatch.setattr(flows.run_cli, "run_flow", stop)
    blobs(30).assign(title="a b", body="c d").to_csv(workdir / "d.csv", index=False)

    def run(*args: str):  # noqa: ANN202
        result = CliRunner().invoke(app, ["run", *args])
        return seen.pop() if seen else result

    return run


def test_source_may_come_from_the_config_file(spec_of, workdir):
    (workdir / "c.yaml").write_text("source: d.csv\nlabel: label\n")
    assert spec_of("--config", "c.yaml").source == "d.csv"
    (workdir / "other.csv").write_bytes((workdir / "d.csv").read_bytes())
    assert spec_of("other.csv", "--config", "c.yaml").source == "other.csv"  # flags win
    (workdir / "c.yaml").write_text("label: label\n")
    result = spec_of("--config", "c.yaml")
    assert result.exit_code == 2 and "no data to read" in result.output
    assert "source:" in result.output and "Traceback" not in result.output


def test_list_flags_take_comma_separated_values(spec_of):
    spec = spec_of("d.csv", "--label", "label", "--text", "title, body", "--features",
                   "x0,x1", "--feature", "x2")
    assert spec.text == ("title", "body") and spec.features == ("x0", "x1", "x2")
    assert spec_of("d.csv", "--label", "label", "--text", "title", "--text",
                   "body").text == ("title", "body")
