"""Checks on delimited text files before DuckDB reads them.

DuckDB's CSV sniffer guesses the dialect from the data, and on a malformed file it can guess
wrong without an error: a ragged or truncated row made it read a whole file as one column, or
zero rows. So one streaming pass with Python's csv module comes first. It picks the delimiter,
checks that every record has as many fields as the header (naming the first line that does not)
and decodes each line as UTF-8, or as latin-1 when it is not valid UTF-8: a file of mixed
encodings is rewritten as UTF-8 (under the work folder) and read from there. DuckDB then reads
with the delimiter given, so its sniffer only infers the column types.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tasks.errors import CleansetError

DELIMITERS = (",", "\t", ";", "|")
SNIFF_BYTES = 1 << 16
MAX_FIELD = 64 << 20  # 64 MiB: a larger single field is rejected (DuckDB's max_line_size too)


class TextFile(BaseModel):
    """How to read one delimited text file."""

    model_config = ConfigDict(frozen=True)
    read_path: str  # the file itself, or its UTF-8 rewrite when some lines were latin-1
    delimiter: str
    latin1_lines: int = 0
    ends_with_newline: bool = True  # False: the last row may have been cut short


def _open_bytes(path: Path):  # noqa: ANN202 - a binary file object
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _decoded_lines(path: Path, counter: list[int]) -> Iterator[str]:
    """The file's lines as text: UTF-8 where valid, latin-1 otherwise (counted in counter[0]);
    counter[1] ends as 1 when the last line has no line break."""
    with _open_bytes(path) as f:
        first = True
        try:
            for chunk in f:  # split at \n; splitlines also splits old Mac files' bare \r
                if first:
                    chunk = chunk.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
                    first = False
                for raw in chunk.splitlines(keepends=True):
                    counter[1] = 0 if raw.endswith((b"\n", b"\r")) else 1
                    try:
                        yield raw.decode("utf-8")
                    except UnicodeDecodeError:
                        counter[0] += 1
                        yield raw.decode("latin-1")
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CleansetError(f"cannot read {path}: {exc} (is the file truncated or not "
                                "compressed as its name says?)") from None


def sniff_delimiter(sample: str, default: str = ",") -> str:
    """The candidate delimiter that splits the header into several fields and the most of the
    sample's records into as many fields as the header."""
    lines = sample.splitlines(keepends=True)
    if len(sample) >= SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line of a cut sample is partial
    text = "".join(lines)
    best, best_score = default, (0.0, 0)
    for delim in DELIMITERS:
        try:
            records = [r for r in csv.reader(io.StringIO(text), delimiter=delim) if r][:200]
        except csv.Error:
            continue
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        score = (sum(len(r) == width for r in records) / len(records), width)
        if score > best_score:
            best, best_score = delim, score
    return best


def inspect_text_file(path: Path, work: Path) -> TextFile:
    """Check a delimited file's shape and encoding in one streaming pass (see the module doc).

    Raises CleansetError naming the first record whose field count differs from the header's.
    """
    with _open_bytes(path) as f:
        try:
            head = f.read(SNIFF_BYTES)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CleansetError(f"cannot read {path}: {exc} (is the file truncated or not "
                                "compressed as its name says?)") from None
    default = "\t" if ".tsv" in path.name.lower() else ","
    delimiter = sniff_delimiter(head.removeprefix(b"\xef\xbb\xbf").decode("latin-1"), default)
    counter = [0, 0]
    csv.field_size_limit(MAX_FIELD)
    reader = csv.reader(_decoded_lines(path, counter), delimiter=delimiter, strict=True)
    width = None
    try:
        for record in reader:
            if not record:
                continue  # a blank line
            if width is None:
                width = len(record)
            elif len(record) != width:
                raise CleansetError(
                    f"{path} line {reader.line_num}: {len(record)} field(s) where the header "
                    f"has {width} (delimiter {delimiter!r}); fix or remove that row (a "
                    "truncated file or an unquoted delimiter inside a value does this)")
    except csv.Error as exc:
        raise CleansetError(f"{path} line {reader.line_num}: not valid CSV ({exc}); check "
                            "quoting, or whether the file was cut short") from None
    read_path = str(path)
    if counter[0]:
        read_path = str(_rewrite_utf8(path, work))
    return TextFile(read_path=read_path, delimiter=delimiter,
                    latin1_lines=counter[0], ends_with_newline=not counter[1])


def _rewrite_utf8(path: Path, work: Path) -> Path:
    """The file with every line in UTF-8 (latin-1 lines converted), under work/text/."""
    folder = work / "text"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, suffix=".csv")
    counter = [0, 0]
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        for line in _decoded_lines(path, counter):
            out.write(line)
    return Path(name)
