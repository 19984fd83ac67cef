"""Issue 12, item 5: random frames pushed through the real publish path (`write_run`, real
DuckDB) into ONE warehouse, in sequence, several datasets whose columns change between runs.

Each frame has random column types (integers, floats with NaN and infinities, booleans, unicode
text, timestamps, all-null and mostly-null columns, lists, structs, maps) and unicode column
names. Every frame the warehouse accepts must be published whole (every row, every column, every
value, in the clean table with its own types and in the history); every frame it rejects (a
CleansetError) must change nothing. Any other exception is a failure.
"""

from __future__ import annotations

import itertools
import os
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.errors import CleansetError
from tasks.warehouse import quote_ident
from tests.warehouse import checksums, null_typed_columns, publish_parts, run_parts

EXAMPLES = int(os.environ.get("CLEANSET_PROPERTY_EXAMPLES", "30"))
NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
               max_size=8).filter(lambda s: s.strip() and s.lower() not in ("label", "row_id",
                                                                             "run_id"))
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
T0 = datetime(2026, 1, 1)


def column(kind: str, n: int, draw) -> pa.Array:  # noqa: ANN001
    """n values of one kind; `mostly_null` keeps one value."""
    ints = draw(st.lists(st.integers(-2**40, 2**40), min_size=n, max_size=n))
    if kind == "int":
        return pa.array(ints, pa.int64())
    if kind == "small_int":
        return pa.array([i % 100 for i in ints], pa.int16())
    if kind == "float":
        return pa.array(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64),
                                      min_size=n, max_size=n)), pa.float64())
    if kind == "bool":
        return pa.array([i % 2 == 0 for i in ints], pa.bool_())
    if kind == "text":
        return pa.array(draw(st.lists(TEXT, min_size=n, max_size=n)), pa.string())
    if kind == "timestamp":
        return pa.array([T0 + timedelta(seconds=i % 10**8) for i in ints], pa.timestamp("us"))
    if kind == "all_null":
        return pa.nulls(n)
    if kind == "all_null_text":
        return pa.array([None] * n, pa.string())
    if kind == "mostly_null":
        return pa.array([ints[0]] + [None] * (n - 1), pa.int64())
    if kind == "list":
        return pa.array([[i, -i] if i % 3 else None for i in ints], pa.list_(pa.int64()))
    if kind == "struct":
        return pa.array([{"a": i, "é": str(i)} for i in ints])
    if kind == "map":
        return pa.array([[("k", i)] for i in ints], pa.map_(pa.string(), pa.int64()))
    raise AssertionError(kind)


KINDS = ["int", "small_int", "float", "bool", "text", "timestamp", "all_null", "all_null_text",
         "mostly_null", "list", "struct", "map"]


@st.composite
def frames(draw):  # noqa: ANN001, ANN201
    n = draw(st.integers(2, 12))
    names = draw(st.lists(NAME, min_size=1, max_size=5, unique=True))  # "a" and "A" may meet
    arrays = [column(draw(st.sampled_from(KINDS)), n, draw) for _ in names]
    pair = draw(st.sampled_from([("a", "b"), (0, 1), ("猫", "🐢 tortue")]))
    labels = pa.array([pair[i % 2] for i in range(n)])
    table = pa.Table.from_arrays([*arrays, labels], names=[*names, "label"])
    return draw(st.sampled_from(["p0", "p1", "p2"])), table, draw(st.booleans())


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared_property")
    log: list[tuple[str, str]] = []
    yield folder, folder / "wh.duckdb", itertools.count(), log
    out = os.environ.get("CLEANSET_PROPERTY_LOG")  # the examples' outcomes, for the record
    if out:
        Path(out).write_text("\n".join(f"{kind}\t{what}" for kind, what in log) + "\n")


def _text(con, sql: str, params: list) -> list:  # noqa: ANN001
    return [r[0] for r in con.execute(sql, params).fetchall()]


def assert_published_whole(db, run_id: str, dataset: str, snap, n: int) -> None:  # noqa: ANN001
    """Every row and value of the snapshot is in the clean table (same text per value, nested
    values as their JSON) and every row in the history."""
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, n_rows, n_clean_rows FROM runs WHERE run_id = ?",
                           [run_id]).fetchall() == [("completed", n, n)]
        assert _text(con, "SELECT count(*) FROM issues WHERE run_id = ?", [run_id]) == [n]
        history = quote_ident(f"{dataset}_clean_history")
        assert _text(con, f"SELECT count(*) FROM {history} WHERE run_id = ?", [run_id]) == [n]
        clean = quote_ident(f"{dataset}_clean")
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = ?", [f"{dataset}_clean"]).fetchall())
        ident = quote_ident(snap.id_column)
        for name in snap.columns:
            q = quote_ident(name)
            nested = types[name] == "JSON"
            source = f"CAST(to_json({q}) AS VARCHAR)" if nested else f"CAST({q} AS VARCHAR)"
            want = _text(con, f"SELECT {source} FROM read_parquet(?) ORDER BY {ident}",
                         [snap.table.path])
            got = _text(con, f"SELECT CAST({q} AS VARCHAR) FROM {clean} ORDER BY {ident}", [])
            if nested:  # a null nested value is stored as SQL NULL, not the JSON text 'null'
                want = [None if w in (None, "null") else w for w in want]
            if types[name] in ("DOUBLE", "FLOAT"):  # a NaN's sign bit is not data: a -nan of the
                # input may come back as nan (found by this test, 2026-12-08; it did before the
                # in-place clean-table update too); every other value must be identical
                want = ["nan" if w == "-nan" else w for w in want]
                got = ["nan" if g == "-nan" else g for g in got]
            assert got == want, (name, types[name], got, want)
            kept = _text(con, f"SELECT count({q}) FROM {history} WHERE run_id = ?", [run_id])
            assert kept == [sum(w is not None for w in want)], name


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(example=frames())
def test_every_frame_is_published_whole_or_changes_nothing(warehouse, example):
    folder, db, counter, log = warehouse
    dataset, table, sets = example
    i = next(counter)
    try:
        parts = run_parts(folder / f"f{i}", table, sets=sets)
    except CleansetError as exc:  # refused at ingest, before the warehouse is touched
        log.append(("ingest", str(exc)))
        return
    before = checksums(db) if db.exists() else None
    run_id = f"r{i}"
    try:
        publish_parts(db, run_id, dataset, parts)
    except CleansetError as exc:
        log.append(("rejected", str(exc)))
        assert (checksums(db) if db.exists() else None) in (before, {}), exc
        return
    log.append(("published", dataset))
    assert_published_whole(db, run_id, dataset, parts[0], table.num_rows)
    assert null_typed_columns(db) == []
