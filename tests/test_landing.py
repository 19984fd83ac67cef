"""The landing-folder logic: complete files only, once per content, across restarts."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tasks.landing import STATE_FILE, LandingWatcher, dataset_for, forget, is_candidate
from tasks.publish import record_failed_run, transaction
from tasks.store import file_sha256


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


def _announced(tmp_path: Path) -> tuple[Path, Path, LandingWatcher]:
    """A landing folder whose daily.csv a watcher (warehouse tmp_path/wh.duckdb) has announced."""
    landing = tmp_path / "landing"
    landing.mkdir()
    f = landing / "daily.csv"
    f.write_text("a,label\n1,x\n")
    w = LandingWatcher(landing, db=tmp_path / "wh.duckdb")
    w.poll()
    (arrival,) = w.poll()
    w.mark_seen(arrival)
    return landing, f, w


def test_a_seen_file_is_skipped_with_the_reason(tmp_path):
    landing, f, w = _announced(tmp_path)
    (landing / "copy.csv").write_text("a,label\n1,x\n")
    w.poll()
    assert w.poll() == []
    (path, why), = w.skipped
    assert path == str(landing / "copy.csv")
    assert f"same content as {f} announced" in why and "no run of it" in why


def test_a_file_whose_run_failed_is_retried_when_dropped_again_or_forgotten(tmp_path):
    landing, f, w = _announced(tmp_path)
    db = tmp_path / "wh.duckdb"
    record_failed_run(db, "daily", "validate", "label column 'label' has one class",
                      source=str(f), source_sha256=file_sha256(f))
    os.utime(f, (1, 1))  # the same file, not dropped again (an older mtime): skipped, and why
    w.poll()
    assert w.poll() == []
    (_, why), = w.skipped
    assert "last run failed at stage validate: label column 'label' has one class" in why
    assert f"cleanset watch --retry {f}" in why
    now = time.time() + 5  # dropped again after the fix (copied over: a newer mtime)
    os.utime(f, (now, now))
    w.poll()
    (again,) = w.poll()
    assert again.retry and again.path == str(f)
    w.mark_seen(again)
    # `cleanset watch --retry FILE` from another process: this watcher picks it up at its next
    # poll, without the file changing
    digest, record = forget(landing / STATE_FILE, f)
    assert digest == again.sha256 and record is not None
    (forgotten,) = w.poll()
    assert forgotten.sha256 == digest and not forgotten.retry
    assert forget(landing / STATE_FILE, f)[1] is None  # already forgotten


def test_a_file_whose_last_run_completed_is_not_retried(tmp_path):
    landing, f, w = _announced(tmp_path)
    with transaction(tmp_path / "wh.duckdb") as con:
        con.execute("INSERT INTO runs (run_id, dataset, source_sha256, status, finished_at) "
                    "VALUES ('r1', 'daily', ?, 'completed', now())", [file_sha256(f)])
    now = time.time() + 5
    os.utime(f, (now, now))
    w.poll()
    assert w.poll() == [] and "its last run completed" in w.skipped[0][1]


def test_watch_retry_forgets_the_file(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    landing, f, _ = _announced(tmp_path)
    result = CliRunner().invoke(app, ["watch", str(landing), "--retry", str(f)])
    assert result.exit_code == 0 and "announces it again at its next poll" in result.output
    w = LandingWatcher(landing)
    w.poll()
    assert [a.path for a in w.poll()] == [str(f)]
    missing = CliRunner().invoke(app, ["watch", str(landing), "--retry", str(landing / "x")])
    assert missing.exit_code == 2 and "no such file" in missing.output
