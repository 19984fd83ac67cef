"""ingest: read CSV/TSV/Parquet/JSON Lines/Excel (a file, a folder or a glob) into a Parquet
snapshot.

DuckDB reads the files and streams record batches into the snapshot, so a large input never sits
in memory whole. Excel workbooks (.xlsx/.xlsm: the first sheet, its first row the header) are read
by pandas with openpyxl, whole (a sheet holds at most 1,048,576 rows). A `row_id` column is added
(0, 1, ...) when the data has no id column.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pyarrow as pa
from prefect import get_run_logger
from prefect.cache_policies import CacheKeyFnPolicy
from pydantic import BaseModel, ConfigDict

from tasks.caching import STAGE_CACHE, stage
from tasks.errors import CleansetError
from tasks.sources import FORMATS, _format_of, resolve_source  # noqa: F401 - re-exported
from tasks.store import TableRef, file_sha256, write_batches
from tasks.textfiles import DELIMITERS, MAX_FIELD, inspect_text_file

ZIP_MAGIC = b"PK\x03\x04"  # an .xlsx is a zip archive
EXCEL_MISSING = ["", "#N/A", "#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!"]
OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")  # a password-protected workbook, or an old .xls
ROW_ID = "row_id"
BATCH_ROWS = 100_000


class Snapshot(BaseModel):
    """The ingested data: a Parquet snapshot plus where it came from."""

    model_config = ConfigDict(frozen=True)
    table: TableRef
    source_sha256: str
    files: tuple[str, ...]
    id_column: str
    columns: tuple[str, ...]
    row_id_added: bool = False  # True when cleanset made the id column (not part of the data)
    warnings: tuple[str, ...] = ()


def source_sha256(files: list[Path]) -> str:
    """sha256 of one file's bytes, or of the (name, sha256) list of several files."""
    if len(files) == 1:
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def _reader_sql(files: list[Path], fmt: str, delimiter: str = ",") -> tuple[str, list]:
    names = [str(f) for f in files]
    if fmt == "csv":
        if delimiter not in DELIMITERS:  # it goes into the SQL text: only the known ones
            raise ValueError(f"unexpected delimiter {delimiter!r}")
        opts = (f"header = true, sample_size = -1, union_by_name = true, delim = '{delimiter}', "
                f"max_line_size = {MAX_FIELD}")
        return f"SELECT * FROM read_csv(?, {opts})", [names]
    if fmt == "parquet":
        return "SELECT * FROM read_parquet(?, union_by_name = true)", [names]
    return "SELECT * FROM read_json(?, format = 'newline_delimited', union_by_name = true)", [names]


def _clean_duckdb_error(exc: Exception, width: int = 300) -> str:
    """DuckDB's first lines, each cut short: its messages quote whole input lines."""
    text = str(exc).strip().splitlines()
    return " ".join(line.strip()[:width] + ("..." if len(line.strip()) > width else "")
                    for line in text[:3])


def excel_sheet(path: Path) -> tuple[pa.Table, list[str]]:
    """The first sheet of an Excel workbook as an Arrow table (its first row is the header),
    and warnings. A column mixing numbers and text is kept as text."""
    import pandas as pd

    with open(path, "rb") as f:
        magic = f.read(8)
    if magic == OLE_MAGIC:
        raise CleansetError(
            f"cannot read {path}: it is a password-protected workbook or an old Excel 97-2003 "
            ".xls file; open it in Excel and save it without a password as .xlsx (or as CSV)")
    if magic[:4] != ZIP_MAGIC:
        raise CleansetError(f"cannot read {path}: it is not an Excel .xlsx workbook (not a zip "
                            "archive); save it again from Excel as .xlsx, or as CSV")
    try:
        with pd.ExcelFile(path, engine="openpyxl") as book:
            sheets = [str(name) for name in book.sheet_names]
            if not sheets:
                raise CleansetError(f"{path} holds no worksheet")
            # cells as openpyxl gives them; only empty cells and Excel's error values are
            # missing (as for CSV, "NA" or "None" may be a label)
            frame = book.parse(sheets[0], dtype=object, keep_default_na=False,
                               na_values=EXCEL_MISSING)
    except CleansetError:
        raise
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types for a damaged workbook
        raise CleansetError(f"cannot read {path} as an Excel workbook ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'damaged'}); save "
                            "it again from Excel, or as CSV") from None
    warnings = []
    if len(sheets) > 1:
        warnings.append(f"{path}: read its first sheet, {sheets[0]!r}; the workbook's other "
                        f"sheet(s) ({', '.join(map(repr, sheets[1:]))}) are not read")
    if frame.columns.empty:
        raise CleansetError(f"the first sheet of {path}, {sheets[0]!r}, is empty")
    frame.columns = [str(c) for c in frame.columns]
    for col in frame.columns:  # numbers and text in one column (a "n/a" among numbers): text
        if pd.api.types.infer_dtype(frame[col], skipna=True) in ("mixed", "mixed-integer"):
            frame[col] = frame[col].map(str, na_action="ignore")
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise CleansetError(f"cannot read {path}: {exc}") from None
    return table.replace_schema_metadata(None), warnings


def _excel_reader(files: list[Path], warnings: list[str]) -> pa.RecordBatchReader:
    """The first sheet of each workbook, rows in file order, columns united by name."""
    tables = []
    for f in files:
        table, notes = excel_sheet(f)
        tables.append(table)
        warnings.extend(notes)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 \
        else tables[0]
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(BATCH_ROWS))


def _file_state(files: list[Path]) -> list[tuple[int, int]]:
    return [(f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def read_snapshot(source: str, id_column: str | None, work: Path) -> Snapshot:
    """Read the source into a Parquet snapshot under work/snapshots, adding row_id if needed."""
    files = resolve_source(source)
    formats = {_format_of(f) for f in files}
    if len(formats) > 1:
        raise CleansetError(
            f"{source!r} mixes file formats ({', '.join(sorted(formats))}); point cleanset at "
            "files of one format"
        )
    fmt = formats.pop()
    for f in files:
        if f.stat().st_size == 0:
            raise CleansetError(f"input file {f} is empty: it has no header and no rows")
    before = _file_state(files)
    digest = source_sha256(files)
    warnings: list[str] = []
    read_files, delimiter, rewrites = files, ",", []
    if fmt == "csv":
        infos = [inspect_text_file(f, work) for f in files]
        delimiters = {i.delimiter for i in infos}
        if len(delimiters) > 1:
            raise CleansetError(f"the files of {source!r} use different delimiters "
                                f"({', '.join(map(repr, sorted(delimiters)))}); use one")
        delimiter = delimiters.pop()
        read_files = [Path(i.read_path) for i in infos]
        rewrites = [Path(i.read_path) for f, i in zip(files, infos, strict=True)
                    if i.read_path != str(f)]
        for f, i in zip(files, infos, strict=True):
            if not i.ends_with_newline:
                warnings.append(f"{f} does not end with a line break: if it was cut short, its "
                                "last row may be incomplete")
            if i.latin1_lines:
                warnings.append(f"{f}: {i.latin1_lines} line(s) are not valid UTF-8; read them "
                                "as latin-1 (check accented text)")
    con = duckdb.connect()
    try:
        try:
            if fmt == "excel":
                rel = _excel_reader(files, warnings)
            else:
                sql, params = _reader_sql(read_files, fmt, delimiter)
                rel = con.sql(sql, params=params).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as exc:
            raise CleansetError(
                f"cannot read {source} as {fmt.upper()}: {_clean_duckdb_error(exc)}"
            ) from None
        schema = rel.schema
        columns = list(schema.names)
        if id_column is None and ROW_ID in columns:
            id_column = ROW_ID
        add_row_id = id_column is None
        out_schema = (
            pa.schema([pa.field(ROW_ID, pa.int64())] + list(schema)) if add_row_id else schema
        )

        def batches():
            start = 0
            try:
                for batch in rel:
                    if add_row_id:
                        ids = pa.array(range(start, start + batch.num_rows), type=pa.int64())
                        batch = pa.RecordBatch.from_arrays(
                            [ids, *batch.columns], schema=out_schema
                        )
                    start += batch.num_rows
                    yield batch
            except duckdb.Error as exc:
                raise CleansetError(
                    f"cannot read {source} as {fmt.upper()}: {_clean_duckdb_error(exc)}"
                ) from None

        table = write_batches(batches(), out_schema, work, "snapshots")
    finally:
        con.close()
        for r in rewrites:
            r.unlink(missing_ok=True)
    if _file_state(files) != before or source_sha256(files) != digest:
        raise CleansetError(
            f"{source} changed while it was being read; nothing was published. Run again once "
            "the file is completely written (write to a temporary name, then rename it)")
    if table.n_rows == 0:
        raise CleansetError(f"{source} has a header but no data rows")
    return Snapshot(
        table=table,
        source_sha256=digest,
        files=tuple(str(f) for f in files),
        id_column=id_column or ROW_ID,
        columns=tuple(out_schema.names),
        row_id_added=add_row_id,
        warnings=tuple(warnings),
    )


def _source_content_key(context, parameters) -> str:  # noqa: ANN001
    """Cache key part: the bytes of the input files, so editing a file invalidates the cache."""
    try:
        return source_sha256(resolve_source(parameters["source"]))
    except CleansetError:
        return "unreadable"  # the task body raises the readable error


@stage("ingest", cache_policy=STAGE_CACHE + CacheKeyFnPolicy(cache_key_fn=_source_content_key))
def ingest(source: str, id_column: str | None, work_dir: str) -> Snapshot:
    """Snapshot the input as Parquet; cached on the input files' content."""
    snap = read_snapshot(source, id_column, Path(work_dir))
    logger = get_run_logger()
    for w in snap.warnings:
        logger.warning(w)
    logger.info(
        "ingested %d rows x %d columns from %d file(s), sha256 %s",
        snap.table.n_rows, len(snap.columns), len(snap.files), snap.source_sha256[:12],
    )
    return snap
