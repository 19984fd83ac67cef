"""The landing-folder logic: complete files only, once per content, across restarts."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.landing import STATE_FILE, LandingWatcher, dataset_for, is_candidate


def test_a_file_is_reported_once_its_size_and_mtime_hold_still(tmp_path):
    w = LandingWatcher(tmp_path)
    f = tmp_path / "batch.csv"
    f.write_text("a,label\n1,x\n")
    assert w.poll() == []  # first sight: could still be growing
    with f.open("a") as out:  # the writer appends between polls
        out.write("2,y\n")
    assert w.poll() == []
    (arrival,) = w.poll()  # unchanged since the last poll: complete
    assert arrival.path == str(f) and arrival.size == f.stat().st_size
    assert arrival.dataset == "batch"
    w.mark_seen(arrival)
    assert w.poll() == [] and w.poll() == []


def test_temporary_hidden_and_empty_files_are_ignored(tmp_path):
    for name in ("x.csv.part", "x.csv.tmp", ".x.csv", "x.csv~", "notes.md"):
        (tmp_path / name).write_text("a,label\n1,x\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "in_hidden.csv").write_text("a,label\n1,x\n")
    w = LandingWatcher(tmp_path)
    assert w.poll() == [] and w.poll() == []
    assert not is_candidate(Path("a.parquet.crdownload")) and is_candidate(Path("a.jsonl"))


def test_same_content_is_reported_once_also_after_a_restart(tmp_path):
    (tmp_path / "a.csv").write_text("a,label\n1,x\n")
    (tmp_path / "copy.csv").write_text("a,label\n1,x\n")
    w = LandingWatcher(tmp_path)
    w.poll()
    arrivals = w.poll()
    assert len(arrivals) == 1  # two names, one content
    w.mark_seen(arrivals[0])
    assert (tmp_path / STATE_FILE).exists()
    restarted = LandingWatcher(tmp_path)
    restarted.poll()
    assert restarted.poll() == []
    (tmp_path / "later.csv").write_text("a,label\n2,y\n")
    os.utime(tmp_path / "later.csv", (1, 1))
    restarted.poll()
    assert [a.path for a in restarted.poll()] == [str(tmp_path / "later.csv")]


def test_a_rewritten_file_with_new_content_is_reported_again(tmp_path):
    f = tmp_path / "daily.csv"
    f.write_text("a,label\n1,x\n")
    w = LandingWatcher(tmp_path)
    w.poll()
    w.mark_seen(w.poll()[0])
    f.write_text("a,label\n1,x\n2,y\n")
    w.poll()
    assert len(w.poll()) == 1


def test_dataset_is_the_sub_folder_or_the_stem(tmp_path):
    assert dataset_for(tmp_path / "churn" / "2026-01-02.csv", tmp_path) == "churn"
    assert dataset_for(tmp_path / "my-data.v2.csv", tmp_path) == "my_data"
    assert dataset_for(tmp_path / "2026.csv", tmp_path) == "d_2026"
