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
    (tmp_path / "x.xlsx").write_text("nope")
    with pytest.raises(CleansetError, match="cannot tell the format"):
        read_snapshot(str(tmp_path / "x.xlsx"), None, tmp_path / "work")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CleansetError, match="holds no"):
        read_snapshot(str(tmp_path / "empty"), None, tmp_path / "work")


def test_source_hash_changes_with_one_byte(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,label\n1,x\n")
    before = source_sha256([p])
    p.write_text("a,label\n2,x\n")
    assert source_sha256([p]) != before
