"""Which files a source names, and their column names, read cheaply: the checks `cleanset run`
makes before anything heavy starts (no Prefect, pandas, DuckDB, scikit-learn or cleanlab
import), so a typo in a path or a column name is answered at once (issue 18: it took 8 s)."""

from __future__ import annotations

import csv
import difflib
import glob as globlib
import io
import os
from collections.abc import Iterable
from pathlib import Path

from tasks.errors import CleansetError

FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".csv.gz": "csv", ".tsv.gz": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "json", ".ndjson": "json", ".json": "json", ".jsonl.gz": "json",
    ".xlsx": "excel", ".xlsm": "excel", ".xls": "excel",
}
EXCEL_OWNER_PREFIX = "~$"  # the lock file Excel keeps beside an open workbook: not data


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.startswith(EXCEL_OWNER_PREFIX):
        return None
    for ext in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return FORMATS[ext]
    return None


def resolve_source(source: str) -> list[Path]:
    """The input files named by a path, a folder (its supported files) or a glob, sorted; each
    readable (a clear error otherwise)."""
    files = _named_files(source)
    unreadable = [str(f) for f in files if not os.access(f, os.R_OK)]
    if unreadable:
        raise CleansetError(f"cannot read {', '.join(unreadable[:5])}: permission denied")
    return files


def _named_files(source: str) -> list[Path]:
    path = Path(source)
    if any(ch in source for ch in "*?["):
        files = [Path(p) for p in sorted(globlib.glob(source, recursive=True))]
        files = [p for p in files if p.is_file() and _format_of(p)]
        if not files:
            raise CleansetError(f"no CSV/TSV/Parquet/JSON Lines/Excel files match {source!r}")
        return files
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _format_of(p))
        if not files:
            raise CleansetError(
                f"folder {path} holds no CSV/TSV/Parquet/JSON Lines/Excel files "
                f"(supported endings: {', '.join(sorted(FORMATS))})"
            )
        return files
    if not path.exists():
        raise CleansetError(f"input file {path} does not exist: check the path")
    if not path.is_file():
        raise CleansetError(f"input {path} is not a regular file")
    if _format_of(path) is None:
        raise CleansetError(
            f"cannot tell the format of {path} from its name: use one of "
            f"{', '.join(sorted(FORMATS))}"
        )
    return [path]


def _line_text(raw: bytes) -> str:
    """A line as ingest reads it (tasks/textfiles.py): UTF-8 where valid, latin-1 otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_columns(path: Path) -> list[str] | None:
    """The column names of a CSV/TSV (its header line) or Parquet file (its schema), or None
    when they cannot be known cheaply and exactly (JSON Lines, Excel, or a header DuckDB would
    rename: a blank or repeated name). Unreadable files give None: ingest reports them."""
    fmt = _format_of(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq  # the schema only, from the footer

            return list(pq.read_schema(path).names)
        if fmt != "csv":
            return None
        from tasks.textfiles import SNIFF_BYTES, _open_bytes, sniff_delimiter

        with _open_bytes(path) as f:
            head = f.read(SNIFF_BYTES).removeprefix(b"\xef\xbb\xbf")
    except Exception:  # noqa: BLE001 - a file we cannot read cheaply is ingest's to report
        return None
    text = "".join(_line_text(raw) for raw in head.splitlines(keepends=True))  # as ingest reads
    default = "\t" if ".tsv" in path.name.lower() else ","
    try:
        header = next((r for r in csv.reader(io.StringIO(text), delimiter=sniff_delimiter(
            text, default)) if r), None)
    except csv.Error:
        return None
    if not header or any(not c for c in header) or len(set(header)) < len(header):
        return None
    if any(ch < " " and ch != "\t" for c in header for ch in c):
        return None  # control characters: not a text header (ingest says what is wrong)
    return header


def check_columns(files: list[Path], named: dict[str, Iterable[str]]) -> None:
    """Raise CleansetError naming the setting and the column when a named column is in none
    of the files' headers (with the closest available names). `named`: setting -> columns."""
    columns: dict[str, None] = {}
    for f in files:
        header = header_columns(f)
        if header is None:
            return  # not known exactly: the validate stage checks it on the data
        columns.update(dict.fromkeys(header))
    for setting, wanted in named.items():
        for col in wanted:
            if col in columns:
                continue
            close = difflib.get_close_matches(col, list(columns), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            where = str(files[0]) if len(files) == 1 else f"{files[0]} and {len(files) - 1} more"
            raise CleansetError(
                f"{setting} column {col!r} is not in {where}{hint}\n"
                f"available columns: {', '.join(columns)}")


def precheck(spec, files: list[Path] | None = None,  # noqa: ANN001 - a DatasetSpec
             flags: bool = True) -> list[Path]:
    """The source's files (or `files`), after checking that every column the spec names is in
    them. `flags` false: the settings are named as in a cleanset.yaml (`label`, not `--label`)."""
    files = resolve_source(spec.source) if files is None else files
    label = [] if spec.annotators or spec.label_columns else [spec.label]  # made by a stage
    named = {"--label": label, "label_columns": spec.label_columns,
             "--annotators": spec.annotators, "--id": [spec.id] if spec.id else [],
             "--text": spec.text, "--feature": spec.features or (),
             "--group": [spec.group] if spec.group else [], "--slices": spec.slices,
             "--pred-prob-column": spec.pred_prob_columns, "--role": list(spec.roles)}
    if not flags:
        yaml_names = {"--feature": "features", "--pred-prob-column": "pred_prob_columns",
                      "--role": "roles"}
        named = {yaml_names.get(k, k.removeprefix("--")): v for k, v in named.items()}
    check_columns(files, named)
    if spec.annotators:  # the consensus goes to a new label column
        headers = [header_columns(f) for f in files]
        if all(h is not None for h in headers) and any(spec.label in h for h in headers):
            from tasks.spec import label_exists

            raise CleansetError(f"{files[0]}: " + label_exists(spec.label))
    if spec.test:
        resolve_source(spec.test)
    return files
