"""A corpus of bad inputs, each run through the `cleanset run` command: it is either cleaned
correctly (what was published is checked) or rejected with a clear message (exit 2, an `error:`
line, no traceback anywhere, nothing published: the warehouse byte-for-byte as before but for
one `runs` row with status `failed`, its stage and the message).

All cases run in order against ONE warehouse (issue 12: nothing a dataset contains may break the
warehouse for the next one); after each case a normal dataset with near and exact duplicates
must still publish into it.

The files are built in code. Cases run through the Typer app in-process against the session's
Prefect server (a subprocess per case would spend ~5 s importing); tests/test_cli.py and
tests/test_faults.py keep real subprocesses for the process-level behaviour.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import blobs
from tests.warehouse import TracebackRecords, checksums

pytestmark = pytest.mark.usefixtures("prefect_server")


def base(n: int = 45) -> pd.DataFrame:
    return blobs(n, k=3, d=3)


def csv(df: pd.DataFrame, **kw) -> bytes:
    return df.to_csv(index=False, **kw).encode()


def xlsx(df: pd.DataFrame, **other_sheets: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    with pd.ExcelWriter(out, engine="openpyxl") as book:
        for name, frame in {"data": df, **other_sheets}.items():
            frame.to_excel(book, sheet_name=name, index=False)
    return out.getvalue()


@dataclass
class Case:
    """One input: `make(folder)` writes it and returns the source argument."""

    name: str
    make: Callable[[Path], str]
    args: list[str] = field(default_factory=lambda: ["--label", "label"])
    needle: str | None = None  # rejected: this must be in the message
    check: Callable[[duckdb.DuckDBPyConnection, str], None] | None = None  # cleaned: checks
    outcome: str = ""  # one line for bench/results/faults_and_corpus.md

    @property
    def rejected(self) -> bool:
        return self.needle is not None


def file(name: str, content: bytes | Callable[[], bytes]) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        (folder / name).write_bytes(content() if callable(content) else content)
        return name
    return make


def parquet(name: str, table: Callable[[], pa.Table]) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        pq.write_table(table(), folder / name)
        return name
    return make


def one(con, sql: str, *params):  # noqa: ANN001, ANN201
    return con.execute(sql, list(params)).fetchall()[0][0]


def run_row(con, dataset: str):  # noqa: ANN001, ANN201
    """The dataset's latest completed run (the shared warehouse may hold several)."""
    return con.execute("SELECT n_rows, n_clean_rows, run_id FROM runs WHERE dataset = ? AND "
                       "status = 'completed' ORDER BY finished_at DESC LIMIT 1",
                       [dataset]).fetchall()[0]


def left_out(fragment: str):  # noqa: ANN201
    """The run's `left_out` notes (also in the CLI summary and the report) mention fragment."""
    def check(con, dataset: str) -> None:  # noqa: ANN001
        run_id = run_row(con, dataset)[2]
        notes = one(con, "SELECT left_out FROM runs WHERE run_id = ?", run_id) or []
        assert any(fragment in n for n in notes), notes
    return check


def published(n_rows: int, columns: list[str] | None = None):  # noqa: ANN201
    """The run is in `runs` with n_rows rows, one issues row per input row, and the clean table
    has the given columns (in order, after row_id when added), then `label_original` (the data's
    own label beside a relabelled one)."""
    def check(con, dataset: str) -> None:  # noqa: ANN001
        rows, n_clean, run_id = run_row(con, dataset)
        assert rows == n_rows and 0 < n_clean <= n_rows
        assert one(con, "SELECT count(*) FROM issues WHERE run_id = ?", run_id) == n_rows
        assert one(con, f'SELECT count(*) FROM "{dataset}_clean"') == n_clean
        if columns is not None:
            got = [r[0] for r in con.execute(f'DESCRIBE "{dataset}_clean"').fetchall()]
            assert got == [*columns, "label_original"], got
    return check


def both(*checks):  # noqa: ANN002, ANN201
    def check(con, dataset: str) -> None:  # noqa: ANN001
        for c in checks:
            c(con, dataset)
    return check


def clean_values(column: str, expected: set):  # noqa: ANN201
    def check(con, dataset: str) -> None:  # noqa: ANN001
        q = '"' + column.replace('"', '""') + '"'
        got = {r[0] for r in con.execute(f'SELECT {q} FROM "{dataset}_clean"').fetchall()}
        assert got and got <= expected, got
    return check


# ---- inputs built in code -------------------------------------------------------------------

def with_column(name: str, values, df: pd.DataFrame | None = None) -> pd.DataFrame:  # noqa: ANN001
    df = base() if df is None else df
    df.insert(0, name, values)
    return df


def mixed_encodings() -> bytes:
    df = with_column("city", ["café"] * 45)
    lines = csv(df).decode().splitlines(keepends=True)
    return b"".join(line.encode("latin-1" if i % 2 else "utf-8") for i, line in enumerate(lines))


def ragged() -> bytes:
    return csv(base()) + b"1.0,2.0\n3.0,4.0,5.0,ant,extra\n"


def quoted_newlines() -> bytes:
    return csv(with_column("note", [f"line one\nline two, with a comma {i}" for i in range(45)]))


def huge_field() -> bytes:
    df = with_column("blob", ["x"] * 45)
    df.loc[3, "blob"] = "y" * 3_000_000  # past DuckDB's default 2 MB line limit
    return csv(df)


def infinities() -> bytes:
    df = base()
    df.loc[[1, 7], "x0"] = np.inf
    df.loc[[2], "x1"] = -np.inf
    return csv(df)


def float_labels() -> bytes:
    df = base()
    df["label"] = df["label"].map({"ant": 1.0, "bee": 2.0, "cat": 3.0})
    df.loc[[0, 10, 20], "label"] = np.nan
    return csv(df)


def relabel(mapping: dict) -> Callable[[], bytes]:
    def make() -> bytes:
        df = base()
        df["label"] = [mapping.get((v, i % 2), v) for i, v in
                       zip(range(len(df)), df["label"], strict=True)]
        return csv(df)
    return make


def unicode_labels() -> bytes:
    df = base()
    df["label"] = df["label"].map({"ant": "猫", "bee": "chien ñandú", "cat": "🐢 tortue"})
    return csv(df)


def many_classes() -> bytes:
    big = blobs(40, k=2, d=3)
    rng = np.random.default_rng(1)
    rare = pd.DataFrame(rng.normal(0, 6, size=(2000, 3)), columns=["x0", "x1", "x2"])
    rare["label"] = [f"class_{i:04d}" for i in range(2000)]
    return csv(pd.concat([big, rare], ignore_index=True))


def duplicate_names_parquet() -> pa.Table:
    df = base()
    return pa.Table.from_arrays([pa.array(df["x0"]), pa.array(df["x1"]), pa.array(df["x2"]),
                                 pa.array(df["label"])], names=["x", "x", "x2", "label"])


SQL_NAME = 'x"); DROP TABLE runs; --'


def sql_columns() -> bytes:
    df = base().rename(columns={"x0": 'a"b', "x1": "c;d", "x2": SQL_NAME})
    return csv(df)


def sql_label_and_id() -> bytes:
    df = base().rename(columns={"label": "lab'el; DROP TABLE issues"})
    df.insert(0, "id; --", [f"'); DROP TABLE runs; -- {i}" for i in range(len(df))])
    return csv(df)


def nested() -> pa.Table:
    df = base()
    return pa.table({
        "x0": df["x0"], "x1": df["x1"],
        "meta": pa.array([{"source": "web", "n": i} for i in range(len(df))]),
        "tags": pa.array([[i, i + 1] for i in range(len(df))]),
        "attrs": pa.array([[("k", i)] for i in range(len(df))], type=pa.map_(pa.string(),
                                                                            pa.int64())),
        "label": df["label"]})


def run_id_column() -> bytes:
    return csv(with_column("run_id", [f"r{i}" for i in range(45)]))


def mixed_types() -> bytes:
    return csv(with_column("code", [str(i) if i % 3 else f"A{i}" for i in range(45)]))


def infinities_parquet() -> pa.Table:
    df = base()
    df.loc[[1, 7], "x0"] = np.inf
    return pa.Table.from_pandas(df, preserve_index=False)


def truncated(data: Callable[[], bytes], keep: float) -> Callable[[], bytes]:
    return lambda: data()[: int(len(data()) * keep)]


def cut_mid_row() -> bytes:
    """A CSV cut short inside a row, after its first field."""
    data = csv(base())
    start = data.index(b"\n", len(data) // 2) + 1
    return data[: data.index(b",", start) + 1]


def parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(base(), preserve_index=False), sink)
    return sink.getvalue().to_pybytes()


def folder(files: dict[str, bytes]) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        (root / "in").mkdir()
        for name, content in files.items():
            (root / "in" / name).write_bytes(content)
        return "in"
    return make


def empty_folder(root: Path) -> str:
    (root / "landing").mkdir()
    return "landing"


CASES = [
    # --- cleaned correctly ---
    Case("wrong delimiter (semicolons)", file("semi.csv", csv(base(), sep=";")),
         check=published(45, ["row_id", "x0", "x1", "x2", "label"]),
         outcome="cleaned: delimiter detected from the data"),
    Case("tabs in a .csv file", file("tabs.csv", csv(base(), sep="\t")),
         check=published(45, ["row_id", "x0", "x1", "x2", "label"]),
         outcome="cleaned: delimiter detected from the data"),
    Case("old Mac line endings (bare CR)", file("cr.csv", csv(base(), lineterminator="\r")),
         check=published(45, ["row_id", "x0", "x1", "x2", "label"]),
         outcome="cleaned: bare CR line breaks read as line breaks"),
    Case("byte order mark", file("bom.csv", b"\xef\xbb\xbf" + csv(base())),
         check=published(45, ["row_id", "x0", "x1", "x2", "label"]),
         outcome="cleaned: BOM dropped, first column named correctly"),
    Case("mixed encodings (UTF-8 and latin-1 lines)", file("mixed.csv", mixed_encodings),
         check=both(published(45), clean_values("city", {"café"})),
         outcome="cleaned: each line decoded as UTF-8 or latin-1 (warning logged)"),
    Case("latin-1 file", file("latin.csv", lambda: csv(with_column("city", ["Zürich"] * 45))
                                                    .decode().encode("latin-1")),
         check=both(published(45), clean_values("city", {"Zürich"})),
         outcome="cleaned: read as latin-1 (warning logged)"),
    Case("quoted newlines", file("quoted.csv", quoted_newlines),
         check=both(published(45), lambda con, d: _assert(one(
             con, f'SELECT count(*) FROM "{d}_clean" WHERE note LIKE '
             "'line one' || chr(10) || 'line two%'") > 0)),
         outcome="cleaned: multi-line values kept intact"),
    Case("huge field (3 MB)", file("huge.csv", huge_field),
         check=both(published(45), lambda con, d: _assert(one(
             con, f'SELECT max(length(blob)) FROM "{d}_clean"') in (1, 3_000_000))),
         outcome="cleaned: lines up to 64 MiB accepted"),
    Case("all-NaN feature", file("allnan.csv", lambda: csv(with_column("empty", [np.nan] * 45))),
         check=both(published(45), left_out("empty: all values missing")),
         outcome="cleaned: the empty column is not used as a feature (said in the summary, "
         "runs.left_out and the report); stored as VARCHAR"),
    Case("infinities (CSV text inf/-inf)", file("inf.csv", infinities), check=published(45),
         outcome="cleaned: numeric text is numeric; infinities imputed like missing values"),
    Case("infinities (Parquet float)", parquet("inf.parquet", infinities_parquet),
         check=published(45), outcome="cleaned: infinities imputed like missing values"),
    Case("float labels with NaN", file("floatlab.csv", float_labels),
         check=both(published(45), lambda con, d: _assert(con.execute(
             "SELECT count(*) FILTER (WHERE is_unlabeled_issue AND NOT is_invalid_issue "
             "AND suggested_label IS NOT NULL), list(DISTINCT given_label "
             "ORDER BY given_label) FROM issues WHERE dataset = ?", [d]).fetchall()[0]
             == (3, ["1", "2", "3", None]))),
         outcome="cleaned: labels 1/2/3; the 3 NaN-label rows get a suggested label "
         "(unlabeled, review; not in the clean table)"),
    Case("unicode labels", file("uni.csv", unicode_labels),
         check=both(published(45), clean_values("label", {"猫", "chien ñandú", "🐢 tortue"})),
         outcome="cleaned: labels kept exactly"),
    Case("thousands of classes (2,000 singletons + 2 classes)", file("many.csv", many_classes),
         check=both(published(2040), lambda con, d: _assert(one(
             con, "SELECT count(*) FROM issues WHERE dataset = ? AND is_class_imbalance_issue "
             "AND action = 'review'", d) >= 2000)),
         outcome="cleaned: rare classes not scored, flagged class_imbalance -> review"),
    Case("duplicate column names (CSV)", file("dupcols.csv", lambda: csv(base()).replace(
        b"x0,x1", b"x0,x0", 1)), check=published(45, ["row_id", "x0", "x0_1", "x2", "label"]),
         outcome="cleaned: the second copy renamed x0_1"),
    Case("duplicate column names (Parquet)", parquet("dupcols.parquet",
                                                     duplicate_names_parquet),
         check=published(45, ["row_id", "x", "x_1", "x2", "label"]),
         outcome="cleaned: the second copy renamed x_1"),
    Case("column names with quotes, semicolons, SQL", file("sqlcols.csv", sql_columns),
         check=both(published(45, ["row_id", 'a"b', "c;d", SQL_NAME, "label"]),
                    lambda con, d: _assert(one(con, "SELECT count(*) FROM runs WHERE dataset = "
                                               "'good'") == 1)),
         outcome="cleaned: names quoted everywhere; no statement injected"),
    Case("label and id columns named with SQL, ids with quotes", file("sqlid.csv",
                                                                     sql_label_and_id),
         args=["--label", "lab'el; DROP TABLE issues", "--id", "id; --"],
         check=both(published(45), lambda con, d: _assert(one(
             con, "SELECT count(*) FROM issues WHERE dataset = ? AND row_id LIKE "
             "'''); DROP TABLE runs; -- %'", d) == 45)),
         outcome="cleaned: identifiers quoted, values bound as parameters"),
    Case("nested Parquet types (struct, list, map)", parquet("nested.parquet", nested),
         check=both(published(45), left_out("meta: nested values"), left_out("tags: nested"),
                    left_out("attrs: nested"), lambda con, d: _assert(one(
                        con, f'SELECT count(*) FROM "{d}_clean" WHERE meta->>\'$.source\' = '
                        "'web' AND tags->>'$[1]' IS NOT NULL") == 45)),
         outcome="cleaned: nested columns not used as features (said in the summary and "
         "report), kept as JSON text in the clean table"),
    Case("a data column named run_id", file("runidcol.csv", run_id_column),
         needle="name cleanset reserves", outcome="rejected: run_id is the history table's "
         "key (was: a DuckDB binder error and a traceback at publish)"),
    Case("numbers and text in one column", file("mixedtypes.csv", mixed_types),
         check=published(45), outcome="cleaned: read as text (categorical)"),
    # --- rejected with a message ---
    Case("ragged rows", file("ragged.csv", ragged), needle="line 47: 2 field(s) where the "
         "header has 4", outcome="rejected: names the line and the field counts"),
    Case("truncated CSV (cut mid-row)", file("cut.csv", cut_mid_row),
         needle="field(s) where the header has 4",
         outcome="rejected: names the short line"),
    Case("truncated csv.gz", file("cut.csv.gz", truncated(lambda: gzip.compress(csv(base())),
                                                          0.5)),
         needle="is the file truncated", outcome="rejected: truncated compressed stream"),
    Case("truncated Parquet", file("cut.parquet", truncated(parquet_bytes, 0.5)),
         needle="cannot read", outcome="rejected: DuckDB's reason (no magic bytes)"),
    Case("corrupt Parquet", file("bad.parquet", b"PAR1\x00\x01garbage"), needle="cannot read",
         outcome="rejected"),
    Case("binary garbage named .csv", file("garbage.csv", bytes(range(256)) * 40),
         needle="field(s) where the header has", outcome="rejected: names the line"),
    Case("malformed JSON Lines", file("bad.jsonl", b'{"x0": 1, "label": "a"}\n{"x0": 2, '),
         needle="cannot read", outcome="rejected: DuckDB's reason with the line"),
    Case("labels differing only in case", file("case.csv", relabel({("ant", 1): "Ant"})),
         needle="differ only in case or surrounding spaces",
         outcome="rejected: names the variants ('Ant' / 'ant')"),
    Case("labels differing only in trailing spaces", file("spaces.csv",
                                                         relabel({("bee", 0): "bee "})),
         needle="'bee' / 'bee '", outcome="rejected: names the variants"),
    Case("one row", file("one.csv", csv(base().head(1))), needle="observed 1",
         outcome="rejected: label needs at least two classes"),
    Case("two classes of one row each", file("two.csv", csv(base().head(2))),
         needle="fewer than two classes", outcome="rejected: too few rows per class to score"),
    Case("dataset name with a path separator", file("ok1.csv", csv(base())),
         args=["--label", "label", "--dataset", "../../etc/evil"],
         needle="not usable as a table name", outcome="rejected before any work"),
    Case("dataset name with SQL", file("ok2.csv", csv(base())),
         args=["--label", "label", "--dataset", 'x"; DROP TABLE runs; --'],
         needle="not usable as a table name", outcome="rejected before any work"),
    Case("empty folder", empty_folder, needle="holds no CSV/TSV/Parquet/JSON Lines/Excel files",
         outcome="rejected before any work"),
    Case("glob matching nothing", lambda root: "nothing/*.csv", needle="no CSV/TSV/Parquet",
         outcome="rejected before any work"),
    Case("unsupported file type", file("data.docx", b"PK\x03\x04"), needle="cannot tell the "
         "format", outcome="rejected before any work"),
    Case("Excel workbook, two sheets", file("book.xlsx", lambda: xlsx(base(), notes=base()[:2])),
         check=published(45, ["row_id", "x0", "x1", "x2", "label"]),
         outcome="cleaned: the first sheet, with a warning naming the others"),
    Case("password-protected workbook", file("locked.xlsx", bytes.fromhex("d0cf11e0a1b11ae1")
                                             + bytes(504)),
         needle="password-protected workbook", outcome="rejected: save it without a password"),
    Case("damaged workbook", file("cut.xlsx", lambda: xlsx(base())[:300]),
         needle="as an Excel workbook", outcome="rejected: save it again"),
    Case("folder mixing CSV and Parquet", folder({"a.csv": csv(base()),
                                                  "b.parquet": parquet_bytes()}),
         needle="mixes file formats", outcome="rejected"),
    Case("folder with different delimiters", folder({"a.csv": csv(base()),
                                                     "b.csv": csv(base(), sep=";")}),
         needle="use different delimiters", outcome="rejected"),
    Case("only a label column", file("labelonly.csv", csv(base()[["label"]])),
         needle="no usable feature columns", outcome="rejected"),
    Case("empty file", file("empty.csv", b""), needle="is empty", outcome="rejected"),
    Case("header only", file("header.csv", b"x0,x1,label\n"), needle="no data rows",
         outcome="rejected"),
    Case("missing label column", file("nolabel.csv", csv(base())),
         args=["--label", "target"], needle="--label column 'target' is not in",
         outcome="rejected: lists the available columns"),
    Case("label all null", file("nulllabel.csv", lambda: csv(base().assign(label=None))),
         needle="expect_column_unique_value_count_to_be_between", outcome="rejected"),
    Case("duplicate ids", file("dupid.csv", lambda: csv(with_column(
        "key", [1, 1, *range(43)]))), args=["--label", "label", "--id", "key"],
         needle="expect_column_values_to_be_unique", outcome="rejected"),
    Case("null ids", file("nullid.csv", lambda: csv(with_column(
        "key", [None, *range(44)]))), args=["--label", "label", "--id", "key"],
         needle="expect_column_values_to_not_be_null", outcome="rejected"),
]


def _assert(condition: bool) -> None:
    assert condition


def with_duplicates() -> pd.DataFrame:
    """A normal dataset with exact duplicates (rows 0-4 copied) and near duplicates (rows 5-9
    copied with a tiny offset)."""
    df = blobs(90, k=3, d=3, seed=3)
    near = df.iloc[5:10].copy()
    near[["x0", "x1", "x2"]] += 1e-6
    return pd.concat([df, df.iloc[0:5], near], ignore_index=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, prefect_server) -> Path:
    """ONE warehouse for the whole module, holding a first run of `good`: every case publishes
    into it in turn, followed each time by the duplicates dataset."""
    folder = tmp_path_factory.mktemp("shared")
    blobs(60).to_csv(folder / "good.csv", index=False)
    with_duplicates().to_csv(folder / "dups.csv", index=False)
    result = _invoke(folder, ["run", str(folder / "good.csv"), "--label", "label", "--db",
                              str(folder / "wh.duckdb"), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "wh.duckdb"


def _invoke(cwd: Path, args: list[str]):  # noqa: ANN202
    from prefect.settings import get_current_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_API_URL", str(get_current_settings().api.url))
    mp.setenv("COLUMNS", "200")
    mp.chdir(cwd)
    try:
        _drop_closed_console_handlers()
        return CliRunner().invoke(app, args)
    finally:
        mp.undo()


@pytest.fixture()
def cli(workdir, shared):
    """Run `cleanset run ...` in-process against the session's Prefect server, into the shared
    warehouse; returns (result, tracebacks logged by Prefect)."""
    handler = TracebackRecords()
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(handler)

    def run(*args: str):  # noqa: ANN202
        handler.records.clear()
        result = _invoke(workdir, ["run", *args, "--db", str(shared), "--quiet"])
        return result, list(handler.records)

    yield run
    for logger in loggers:
        logger.removeHandler(handler)


def failed_rows(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT run_id, dataset, stage, message FROM runs WHERE status = "
                           "'failed' ORDER BY finished_at").fetchall()


def assert_duplicates_still_publish(cli, db: Path) -> None:  # noqa: ANN001
    """The normal dataset with near and exact duplicates publishes into the shared warehouse."""
    result, tracebacks = cli(str(db.parent / "dups.csv"), "--label", "label")
    assert result.exit_code == 0 and not tracebacks, (result.output, tracebacks)
    with duckdb.connect(str(db), read_only=True) as con:
        n_rows, n_clean, run_id = run_row(con, "dups")
        assert n_rows == 100
        near, exact = con.execute(
            "SELECT count(near_duplicate_set), count(exact_duplicate_set) FROM issues WHERE "
            "run_id = ? ", [run_id]).fetchall()[0]
        assert near >= 10 and exact == 10, (near, exact)
        assert con.execute("SELECT count(*) FROM information_schema.columns WHERE "
                           "trim(data_type, '\"') = 'NULL'").fetchall() == [(0,)]


def _drop_closed_console_handlers() -> None:
    """Prefect's console handler, set up during an earlier in-process invocation, writes to that
    invocation's captured stream, closed since: writing to it would print a logging error."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(getattr(h, "stream", None), "closed", False):
            root.removeHandler(h)


def dataset_of(source: str, args: list[str]) -> str:
    from tasks.spec import build_spec

    return build_spec(source=source, label="label", dataset=(
        args[args.index("--dataset") + 1] if "--dataset" in args else None)).dataset_name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Case, cli, workdir, shared):
    source = case.make(workdir)
    before = checksums(shared, published_only=True)
    failed_before = failed_rows(shared)
    result, tracebacks = cli(source, *case.args)
    output = result.output
    assert "Traceback" not in output and not tracebacks, (output, tracebacks)
    if case.rejected:
        assert result.exit_code == 2, output
        assert isinstance(result.exception, SystemExit)
        assert "error:" in output and case.needle in output, output
        assert checksums(shared, published_only=True) == before
        new = failed_rows(shared)[len(failed_before):]
        assert len(new) <= 1, new  # none when rejected before the flow started (bad settings)
        for _, dataset, stage, message in new:
            assert dataset == dataset_of(source, case.args) and stage
            assert case.needle in message, message
        what = f"rejected (exit 2); failed run recorded, stage {new[0][2]}" if new else (
            "rejected (exit 2) before the flow started; nothing recorded")
    else:
        assert result.exit_code == 0, output
        with duckdb.connect(str(shared), read_only=True) as con:
            case.check(con, dataset_of(source, case.args))
            assert one(con, "SELECT count(*) FROM good_clean") == before["good_clean"][0]
        what = "published (exit 0)"
    assert_duplicates_still_publish(cli, shared)
    log = os.environ.get("CLEANSET_CORPUS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"| {case.name} | {what} | dups dataset published |\n")


def test_file_changing_while_read_is_rejected(cli, workdir, shared):
    """A writer appends to the file while cleanset streams it: the snapshot would not match
    the sha256 recorded for it, so the run stops before anything is published."""
    rng = np.random.default_rng(0)
    big = pd.DataFrame(rng.normal(size=(300_000, 3)), columns=["x0", "x1", "x2"])
    big["label"] = np.where(big["x0"] > 0, "a", "b")
    big.to_csv(workdir / "growing.csv", index=False)
    before = checksums(shared, published_only=True)
    done = threading.Event()

    def writer() -> None:  # append once the snapshot is being written
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            if list((shared.parent / "work" / "snapshots").glob("*.tmp")):
                with open(workdir / "growing.csv", "a") as f:
                    f.write("0.1,0.2,0.3,a\n")
                return
            time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result, tracebacks = cli("growing.csv", "--label", "label")
    finally:
        done.set()
        thread.join()
    assert result.exit_code == 2, result.output
    assert "changed while it was being read" in result.output and not tracebacks
    assert checksums(shared, published_only=True) == before
    assert failed_rows(shared)[-1][1:3] == ("growing", "ingest")
