import pandas as pd
import pytest

from tasks.errors import CleansetError
from tasks.ingest import read_snapshot, source_sha256
from tasks.store import file_sha256


@pytest.fixture()
def frame():
    return pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": ["x", "y", "z"], "label": ["p", "q", "p"]})


@pytest.mark.parametrize("name, write", [
    ("d.csv", lambda df, p: df.to_csv(p, index=False)),
    ("d.tsv", lambda df, p: df.to_csv(p, index=False, sep="\t")),
    ("d.parquet", lambda df, p: df.to_parquet(p, index=False)),
    ("d.jsonl", lambda df, p: df.to_json(p, orient="records", lines=True)),
])
def test_formats_snapshot_with_row_id(tmp_path, frame, name, write):
    path = tmp_path / name
    write(frame, path)
    snap = read_snapshot(str(path), None, tmp_path / "work")
    got = snap.table.read()
    assert list(got.columns) == ["row_id", "a", "b", "label"]
    assert got["row_id"].tolist() == [0, 1, 2]
    assert got["b"].tolist() == ["x", "y", "z"]
    assert snap.source_sha256 == file_sha256(path)
    assert snap.id_column == "row_id"


def test_id_column_kept_and_no_row_id_added(tmp_path, frame):
    frame["key"] = ["k1", "k2", "k3"]
    frame.to_csv(tmp_path / "d.csv", index=False)
    snap = read_snapshot(str(tmp_path / "d.csv"), "key", tmp_path / "work")
    assert snap.id_column == "key" and "row_id" not in snap.columns


def test_folder_and_glob_concatenate_in_name_order(tmp_path, frame):
    (tmp_path / "in").mkdir()
    frame.iloc[:2].to_csv(tmp_path / "in" / "1.csv", index=False)
    frame.iloc[2:].to_csv(tmp_path / "in" / "2.csv", index=False)
    for source in [str(tmp_path / "in"), str(tmp_path / "in" / "*.csv")]:
        got = read_snapshot(source, None, tmp_path / "work").table.read()
        assert got["a"].tolist() == [1.5, 2.5, 3.5] and got["row_id"].tolist() == [0, 1, 2]


def test_latin1_file_is_read_with_a_warning(tmp_path):
    (tmp_path / "l.csv").write_bytes("name,label\ncaf\xe9,a\nna\xefve,b\n".encode("latin-1"))
    snap = read_snapshot(str(tmp_path / "l.csv"), None, tmp_path / "work")
    assert snap.table.read()["name"].tolist() == ["café", "naïve"]
    assert any("latin-1" in w for w in snap.warnings)


def test_same_bytes_same_snapshot_file(tmp_path, frame):
    frame.to_csv(tmp_path / "d.csv", index=False)
    a = read_snapshot(str(tmp_path / "d.csv"), None, tmp_path / "work")
    b = read_snapshot(str(tmp_path / "d.csv"), None, tmp_path / "work")
    assert a.table == b.table


@pytest.mark.parametrize("setup, needle", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text(""), "empty"),
    (lambda p: p.write_text("a,label\n"), "no data rows"),
])
def test_bad_files(tmp_path, setup, needle):
    path = tmp_path / "bad.csv"
    setup(path)
    with pytest.raises(CleansetError, match=needle):
        read_snapshot(str(path), None, tmp_path / "work")


def test_unreadable_parquet_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(CleansetError, match="broken.parquet"):
        read_snapshot(str(path), None, tmp_path / "work")


def test_unknown_extension_and_empty_folder(tmp_path):
    (tmp_path / "x.docx").write_text("nope")
    with pytest.raises(CleansetError, match="cannot tell the format"):
        read_snapshot(str(tmp_path / "x.docx"), None, tmp_path / "work")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CleansetError, match="holds no"):
        read_snapshot(str(tmp_path / "empty"), None, tmp_path / "work")


def test_source_hash_changes_with_one_byte(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,label\n1,x\n")
    before = source_sha256([p])
    p.write_text("a,label\n2,x\n")
    assert source_sha256([p]) != before


def _workbook(path, sheets: dict[str, pd.DataFrame]) -> None:
    with pd.ExcelWriter(path, engine="openpyxl") as book:
        for name, frame in sheets.items():
            frame.to_excel(book, sheet_name=name, index=False)


def test_excel_first_sheet_is_read_with_its_types(tmp_path):
    import datetime as dt

    labels = pd.DataFrame({
        "x": [1.5, 2.0, None], "n": [1, 2, 3], "score": [1, "n/a", 3.5],
        "when": [dt.datetime(2026, 1, 1), None, dt.datetime(2026, 1, 3)],
        "flag": [True, False, None], "label": ["cat", "NA", None]})
    _workbook(tmp_path / "b.xlsx", {"Labels": labels, "Notes": labels.head(1)})
    snap = read_snapshot(str(tmp_path / "b.xlsx"), None, tmp_path / "work")
    table = snap.table.read()
    assert snap.columns == ("row_id", "x", "n", "score", "when", "flag", "label")
    assert table["x"].tolist()[:2] == [1.5, 2.0] and pd.isna(table["x"].iloc[2])
    assert table["n"].tolist() == [1, 2, 3]
    assert table["score"].tolist()[:2] == ["1", "n/a"]  # numbers and text in a column: text
    assert str(table["when"].dtype).startswith("datetime64")
    assert table["label"].tolist()[:2] == ["cat", "NA"] and pd.isna(table["label"].iloc[2])
    assert any("first sheet, 'Labels'" in w and "'Notes'" in w for w in snap.warnings)
    assert snap.source_sha256 == source_sha256([tmp_path / "b.xlsx"])


def test_excel_folder_skips_excels_lock_file_and_unites_columns(tmp_path, frame):
    _workbook(tmp_path / "a.xlsx", {"s": frame.head(2)})
    _workbook(tmp_path / "b.xlsx", {"s": frame.tail(1).assign(extra=1)})
    (tmp_path / "~$a.xlsx").write_bytes(b"\x05owner")  # Excel's lock file while a.xlsx is open
    got = read_snapshot(str(tmp_path), None, tmp_path / "work").table.read()
    assert len(got) == 3 and "extra" in got and got["row_id"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("content, needle", [
    (bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 504, "password-protected workbook or an old"),
    (b"just text", "not an Excel .xlsx workbook"),
    (b"PK\x03\x04truncated", "cannot read .*bad.xlsx as an Excel workbook"),
])
def test_unreadable_workbooks_are_named_with_what_to_do(tmp_path, content, needle):
    (tmp_path / "bad.xlsx").write_bytes(content)
    with pytest.raises(CleansetError, match=needle):
        read_snapshot(str(tmp_path / "bad.xlsx"), None, tmp_path / "work")


def test_an_empty_first_sheet_is_a_message(tmp_path):
    _workbook(tmp_path / "e.xlsx", {"blank": pd.DataFrame()})
    with pytest.raises(CleansetError, match="first sheet of .*e.xlsx, 'blank', is empty"):
        read_snapshot(str(tmp_path / "e.xlsx"), None, tmp_path / "work")
