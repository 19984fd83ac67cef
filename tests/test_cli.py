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
                             "expect_column_to_exist(column='target')"),
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
