"""tasks/sources.py: the cheap checks `cleanset run` makes before anything heavy starts."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from tasks.errors import CleansetError
from tasks.sources import check_columns, header_columns


def test_header_columns_reads_csv_tsv_gzip_and_parquet_headers(tmp_path):
    frame = pd.DataFrame({"a b": [1, 2], "label": ["x", "y"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.tsv", index=False, sep="\t")
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(b"\xef\xbb\xbfa b;label\n1;x\n"))
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.tsv", "d.csv.gz", "d.parquet"):
        assert header_columns(tmp_path / name) == ["a b", "label"], name
    (tmp_path / "latin1.csv").write_bytes("café,label\n1,x\n".encode("latin-1"))
    assert header_columns(tmp_path / "latin1.csv") == ["café", "label"]  # as ingest decodes it


def test_header_columns_is_none_where_the_names_are_not_known_exactly(tmp_path):
    (tmp_path / "blank.csv").write_text("a,,label\n1,2,x\n")
    (tmp_path / "twice.csv").write_text("a,a,label\n1,2,x\n")
    (tmp_path / "d.jsonl").write_text('{"a": 1, "label": "x"}\n')
    (tmp_path / "bad.parquet").write_bytes(b"PAR1garbage")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    for name in ("blank.csv", "twice.csv", "d.jsonl", "bad.parquet", "binary.csv"):
        assert header_columns(tmp_path / name) is None, name


def test_check_columns_names_the_setting_the_column_and_the_closest_names(tmp_path):
    (tmp_path / "a.csv").write_text("x1,label\n1,a\n")
    (tmp_path / "b.csv").write_text("x2,label\n2,b\n")
    files = [tmp_path / "a.csv", tmp_path / "b.csv"]
    check_columns(files, {"--label": ["label"], "--feature": ["x1", "x2"]})  # union of headers
    with pytest.raises(CleansetError, match=r"--group column 'lable' is not in .*a\.csv and 1 "
                                            r"more; did you mean 'label'\?\navailable columns: "
                                            r"x1, label, x2"):
        check_columns(files, {"--group": ["lable"]})
    (tmp_path / "c.jsonl").write_text('{"label": "a"}\n')
    check_columns([*files, tmp_path / "c.jsonl"], {"--label": ["anything"]})  # left to validate
