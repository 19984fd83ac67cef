"""Datasets that grow: a dataset folder's batches accumulate (tasks/batches.py, flows/folders.py),
files outside a dataset folder start no run, retention and gc (tasks/retention.py). Flow tests run
against the session's real Prefect server and real DuckDB files."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.batches import (
    FIRST_BATCH,
    Accumulated,
    Batch,
    accumulate_snapshots,
    audit_new_batch,
    audit_plan_args,
    degradation,
    plan_batches,
)
from tasks.errors import CleansetError
from tasks.ingest import Snapshot, read_snapshot
from tasks.landing import LandingWatcher, dataset_folder_of, unregistered_files
from tasks.publish import ensure_schema, transaction, write_batch_rows
from tasks.report.read import run_batch_audits
from tasks.retention import apply_gc, plan_gc, write_manifest
from tasks.spec import load_dataset_spec
from tasks.store import write_table
from tasks.summary import batch_audit_markdown
from tests.conftest import blobs
from tests.warehouse import checksums, kill_at_planted_hang

ROOT = Path(__file__).resolve().parents[1]


def _folder(root: Path, name: str, settings: str) -> Path:
    folder = root / "data" / "landing" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cleanset.yaml").write_text(settings)
    return folder


def _write(path: Path, frame: pd.DataFrame, mtime: float | None = None) -> Path:
    frame.to_csv(path, index=False)
    if mtime is not None:  # arrival order is the files' modification time
        os.utime(path, (mtime, mtime))
    return path


# ---- pure parts ----------------------------------------------------------------------------------

def test_a_later_batch_replaces_rows_with_the_same_id(tmp_path):
    one = pd.DataFrame({"key": [1, 2, 3], "x": [0.1, 0.2, 0.3], "y": ["a", "b", "a"]})
    two = pd.DataFrame({"key": [3, 4], "x": [9.9, 0.4], "y": ["b", "b"]})
    snaps = [read_snapshot(str(_write(tmp_path / f"{n}.csv", f)), "key", tmp_path / "work")
             for n, f in (("one", one), ("two", two))]
    acc = accumulate_snapshots([("b1", snaps[0].table, False), ("b2", snaps[1].table, False)],
                               "key", tmp_path / "work")
    data = acc.snapshot.table.read()
    assert data["key"].tolist() == [1, 2, 3, 4] or sorted(data["key"]) == [1, 2, 3, 4]
    assert data.set_index("key").loc[3, "x"] == 9.9 and acc.n_replaced == 1
    prov = acc.provenance.read()
    assert dict(zip(prov["row_id"], prov["batch_id"], strict=True)) == {
        "1": "b1", "2": "b1", "3": "b2", "4": "b2"}
    assert acc.snapshot.id_column == "key" and not acc.snapshot.row_id_added


def test_without_an_id_a_row_is_its_batch_and_row_number(tmp_path):
    snaps = [read_snapshot(str(_write(tmp_path / f"{n}.csv", blobs(k, seed=k))), None,
                           tmp_path / "work") for n, k in (("a", 4), ("b", 3))]
    acc = accumulate_snapshots([("aaa", snaps[0].table, True), ("bbb", snaps[1].table, True)],
                               None, tmp_path / "work")
    data = acc.snapshot.table.read()
    assert data["row_id"].tolist() == ["aaa-0", "aaa-1", "aaa-2", "aaa-3", "bbb-0", "bbb-1",
                                       "bbb-2"]
    assert list(data.columns) == ["row_id", "x0", "x1", "x2", "x3", "label"]
    assert acc.snapshot.row_id_added and acc.n_replaced == 0


def test_the_same_file_twice_is_one_batch(tmp_path):
    folder = _folder(tmp_path, "animals", "label: label\n")
    _write(folder / "monday.csv", blobs(20, seed=1), mtime=1_000)
    _write(folder / "monday_copy.csv", blobs(20, seed=1), mtime=2_000)
    _write(folder / "tuesday.csv", blobs(20, seed=2), mtime=3_000)
    (folder / "wednesday.csv.part").write_text("x,label\n1,a\n")  # still being written
    plan = plan_batches(tmp_path / "none.duckdb", "animals", folder)
    assert [Path(b.file).name for b in plan.new] == ["monday.csv", "tuesday.csv"]
    assert [Path(f).name for f, _ in plan.repeats] == ["monday_copy.csv"]
    assert "same content as monday.csv" in plan.repeats[0][1]


def test_dataset_settings_come_from_the_folder(tmp_path):
    folder = _folder(tmp_path, "tickets-2026", "label: topic\nid: ticket\nfolds: 3\n")
    spec = load_dataset_spec(folder, db=str(tmp_path / "wh.duckdb"))
    assert (spec.label, spec.id, spec.folds, spec.dataset_name) == ("topic", "ticket", 3,
                                                                    "tickets_2026")
    assert spec.source == str(folder) and spec.db == str(tmp_path / "wh.duckdb")
    (folder / "cleanset.yaml").write_text("label: topic\nsource: x.csv\n")
    with pytest.raises(CleansetError, match="remove `source:`"):
        load_dataset_spec(folder)
    with pytest.raises(CleansetError, match="no cleanset.yaml"):
        load_dataset_spec(tmp_path)


def test_files_outside_a_dataset_folder_are_unregistered(tmp_path):
    landing = tmp_path / "data" / "landing"
    folder = _folder(tmp_path, "animals", "label: label\n")
    (landing / "loose").mkdir()
    for seed, path in enumerate((folder / "a.csv", landing / "root.csv",
                                 landing / "loose" / "b.csv")):
        _write(path, blobs(5, seed=seed), mtime=1_000)
    assert dataset_folder_of(folder / "a.csv", landing) == folder.absolute()
    stray = {p.name: why for p, why in unregistered_files(landing)}
    assert set(stray) == {"root.csv", "b.csv"}
    assert "landing root" in stray["root.csv"] and "cleanset init" in stray["b.csv"]
    watcher = LandingWatcher(landing, db=tmp_path / "wh.duckdb")
    assert watcher.poll() == []  # first sight: not settled yet
    arrivals = {Path(a.path).name: a for a in watcher.poll()}
    assert arrivals["a.csv"].folder == str(folder.absolute())
    assert arrivals["root.csv"].folder is None and arrivals["b.csv"].folder is None
    watcher.mark_seen(arrivals["a.csv"])  # announced; the other two were only reported
    assert watcher.poll() == []  # reported once, not at every poll
    (landing / "loose" / "cleanset.yaml").write_text("label: label\n")  # registered later
    again = watcher.poll()  # judged again, now with its dataset folder
    assert [(Path(a.path).name, a.folder) for a in again] == [
        ("b.csv", str((landing / "loose").absolute()))]


def test_degradation_says_why():
    assert degradation(0.95, 0.93, 0.05, []) is None
    assert degradation(None, 0.5, 0.05, []) is None  # a first run has nothing to fall from
    fell = degradation(0.95, 0.85, 0.05, [])
    assert fell["health_drop"] == pytest.approx(0.10) and "fell from 0.950 to 0.850" in \
        fell["reason"]
    assert "1 batch(es) quarantined: abc" in degradation(0.9, 0.9, 0.05, ["abc"])["reason"]


def _batch(work: Path, frame: pd.DataFrame, name: str, day: int) -> Batch:
    ref = write_table(frame, work, "snapshots")
    return Batch(batch_id=ref.sha256[:12], file=str(work / f"{name}.csv"), sha256=ref.sha256,
                 arrived_at=datetime(2026, 1, day, tzinfo=UTC), snapshot=ref)


def test_each_new_batch_is_audited_against_the_accepted_rows(tmp_path):
    data = blobs(240, seed=1)
    spec = load_dataset_spec(_folder(tmp_path, "animals", "label: label\n"))
    args = audit_plan_args(spec)
    monday = _batch(tmp_path, data.iloc[:120], "monday", 1)
    first = audit_new_batch([], monday, **args)
    assert (first.status, first.reason, first.audit) == ("accepted", FIRST_BATCH, None)

    drifted = data.iloc[120:180].copy()
    drifted["x0"] += data["x0"].std()  # one standard deviation: numeric drift, a warning
    tuesday = audit_new_batch([monday.snapshot], _batch(tmp_path, drifted, "tuesday", 2), **args)
    assert tuesday.status == "accepted" and tuesday.audit["decision"] == "accept-with-warnings"
    warned = {(c["check"], c["column"]) for c in tuesday.audit["checks"]
              if c["outcome"] == "warn"}
    assert ("numeric_drift", "x0") in warned and ("numeric_drift", "x1") not in warned

    wednesday = audit_new_batch([monday.snapshot, tuesday.snapshot], _batch(
        tmp_path, data.iloc[180:].drop(columns=["x3"]), "wednesday", 3), **args)
    assert wednesday.status == "quarantined"
    assert "column_missing (x3)" in wednesday.reason and "To accept it anyway" in wednesday.reason

    # its rows go into the run's transaction; publishing the run again does not double them
    acc = Accumulated(snapshot=Snapshot(table=monday.snapshot, source_sha256="s", files=(),
                                        id_column="row_id", columns=()),
                      provenance=monday.snapshot, batches=(tuesday, wednesday))
    db = tmp_path / "warehouse.duckdb"
    for _ in range(2):
        with transaction(db) as con:
            write_batch_rows(con, "animals", "run1", acc)
    with duckdb.connect(str(db), read_only=True) as con:
        counts = dict(con.execute("SELECT batch_id, count(*) FROM batch_audit GROUP BY ALL"
                                  ).fetchall())
        audits = run_batch_audits(con, "run1", "animals")
    assert counts == {tuesday.batch_id: len(tuesday.audit["checks"]),
                      wednesday.batch_id: len(wednesday.audit["checks"])}
    assert [(a["batch_id"], a["status"]) for a in audits] == [
        (tuesday.batch_id, "accepted"), (wednesday.batch_id, "quarantined")]
    assert ("numeric_drift", "x0") in {(c["check_name"], c["column_name"])
                                       for c in audits[0]["drift"]}
    text = batch_audit_markdown(audits, "animals", "run1")
    assert "accepted with warnings" in text and "quarantined" in text


def test_a_regression_targets_batches_are_audited_as_numbers(tmp_path):
    """Found as a stranger: a price dataset's second batch warned 'new labels' for every price
    (each value a class) and said the next run must re-estimate in full. A regression target
    (auto-detected from the accepted rows) is audited by its distribution and its range."""
    rng = np.random.default_rng(3)
    n = 600
    data = pd.DataFrame({"sqft": rng.normal(1500, 400, n).round(), "rooms": rng.integers(1, 6, n),
                         "area": rng.choice(["north", "south"], n)})
    data["price"] = (data["sqft"] * 150 + data["rooms"] * 5000
                     + rng.normal(0, 15000, n)).round(-2)
    spec = load_dataset_spec(_folder(tmp_path, "houses", "label: price\n"))
    args = audit_plan_args(spec)
    monday = _batch(tmp_path, data.iloc[:400], "monday", 1)
    same = audit_new_batch([monday.snapshot], _batch(tmp_path, data.iloc[400:], "tuesday", 2),
                           **args)
    assert same.audit["decision"] == "accept", same.reason
    checks = {c["check"]: c for c in same.audit["checks"]}
    assert "conflicting_copies" not in checks  # another price for the same features is expected
    assert checks["new_label"]["statistic"] == "outside_rows"
    assert "outside the dataset's range" in checks["new_label"]["message"]
    assert checks["label_shift"]["statistic"] == "ks_pvalue"

    dearer = data.iloc[400:].assign(price=lambda d: d["price"] + data["price"].std())
    moved = audit_new_batch([monday.snapshot], _batch(tmp_path, dearer, "wednesday", 3), **args)
    warned = {c["check"] for c in moved.audit["checks"] if c["outcome"] == "warn"}
    assert "label_shift" in warned and "new_label" not in warned

    classes = audit_new_batch([monday.snapshot], _batch(tmp_path, data.iloc[400:], "thursday", 4),
                              **{**args, "task": "classification"})  # the old reading
    assert any(c["check"] == "new_label" and c["outcome"] == "warn"
               for c in classes.audit["checks"])


def test_tag_sets_are_audited_by_tag_not_by_combination(tmp_path):
    """A batch whose rows combine known tags in a new way brings no new label; a tag never
    seen before does, and the warning names the tag, not the whole set."""
    rng = np.random.default_rng(4)
    n = 400
    tags = np.array(["sports", "politics", "tech"])
    x = rng.normal(size=(n, 3))
    has = x > 0.2
    data = pd.DataFrame(x, columns=["f0", "f1", "f2"]).assign(
        topics=[";".join(tags[row]) for row in has])
    seen = set(data["topics"][:300])
    data.loc[300:, "topics"] = "sports;politics;tech"  # every tag known
    spec = load_dataset_spec(_folder(tmp_path, "news", "label: topics\n"))
    args = audit_plan_args(spec)
    reference = data.iloc[:300][data["topics"][:300] != "sports;politics;tech"]
    assert "sports;politics;tech" not in set(reference["topics"]) and len(seen) > 3
    monday = _batch(tmp_path, reference, "monday", 1)
    combined = audit_new_batch([monday.snapshot], _batch(tmp_path, data.iloc[300:], "tuesday", 2),
                               **args)
    new_label = next(c for c in combined.audit["checks"] if c["check"] == "new_label")
    assert new_label["outcome"] == "pass" and new_label["message"] == "no new labels"

    fresh = data.iloc[300:].assign(topics="sports;art")
    wednesday = audit_new_batch([monday.snapshot], _batch(tmp_path, fresh, "wednesday", 3),
                                **args)
    new_label = next(c for c in wednesday.audit["checks"] if c["check"] == "new_label")
    assert new_label["outcome"] == "warn" and "'art'" in new_label["message"]
    assert "sports;art" not in new_label["message"]


def test_a_misspelt_column_in_a_folders_settings_is_named_before_anything_starts(tmp_path):
    """`label: Price` in a folder's cleanset.yaml once took a Prefect start-up and a failed flow
    run (40 s under load) to report; a one-off file said it at once. Now the folder does too,
    naming its settings file and the setting as written there."""
    folder = _folder(tmp_path, "houses", "label: Price\nid: house_id\n")
    _write(folder / "monday.csv", pd.DataFrame({"house_id": [1, 2], "sqft": [900, 1200],
                                                 "price": [1e5, 2e5]}))
    result = CliRunner().invoke(app, ["run", str(folder), "--db", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 2, result.output
    assert f"{folder / 'cleanset.yaml'}: label column 'Price' is not in" in result.output
    assert "did you mean 'price'?" in result.output
    assert not (tmp_path / "w.duckdb").exists()  # nothing ran


def _fake_run(db: Path, work: Path, run_id: str, dataset: str, files: list[Path],
              finished: str) -> None:
    with transaction(db) as con:
        con.execute("INSERT INTO runs (run_id, dataset, status, finished_at, spec) VALUES "
                    "(?, ?, 'completed', ?, '{}')", [run_id, dataset, finished])
        con.execute("INSERT INTO issues (run_id, dataset, row_id) VALUES (?, ?, '0')",
                    [run_id, dataset])
        con.execute(f"CREATE TABLE IF NOT EXISTS {dataset}_clean_history (run_id VARCHAR, "
                    "x INT)")
        con.execute(f"INSERT INTO {dataset}_clean_history VALUES (?, 1), (?, 2)",
                    [run_id, run_id])
    write_manifest(work, run_id, dataset, {str(f) for f in files})


def test_gc_dry_run_lists_and_gc_deletes_only_what_retention_allows(tmp_path):
    db, work = tmp_path / "wh.duckdb", tmp_path / "work"
    with transaction(db) as con:
        ensure_schema(con)
    files = {}
    for i, name in enumerate(("old", "shared", "new", "batch", "other", "orphan")):
        files[name] = work / "snapshots" / f"{i:064x}.parquet"
        files[name].parent.mkdir(parents=True, exist_ok=True)
        files[name].write_bytes(b"x" * (100 * (i + 1)))
    old_time = time.time() - 7200
    os.utime(files["orphan"], (old_time, old_time))
    _fake_run(db, work, "r1", "animals", [files["old"], files["shared"], files["batch"]],
              "2026-01-01")
    _fake_run(db, work, "r2", "animals", [files["shared"], files["new"], files["batch"]],
              "2026-01-02")
    _fake_run(db, work, "o1", "other", [files["other"]], "2026-01-01")
    with transaction(db) as con:  # a batch's snapshot is the dataset's data: always kept
        con.execute("INSERT INTO batches (dataset, batch_id, snapshot_path, status) VALUES "
                    "('animals', 'b', ?, 'accepted')", [str(files["batch"])])
    (tmp_path / "reports" / "animals").mkdir(parents=True)
    (tmp_path / "reports" / "animals" / "r1.html").write_text("<html/>")
    record = work / "results" / "cachekey"
    record.parent.mkdir()
    record.write_text('{"metadata": {}, "result": "' + files["old"].name + '"}')

    plan = plan_gc(db, work, keep=1, orphan_grace_hours=1)
    assert plan.pruned == {"animals": ["r1"]}  # `other` has one run: nothing to prune
    assert sorted(p.name for p, _, _ in plan.files) == sorted(
        [files["old"].name, files["orphan"].name])
    assert [p for p, _ in plan.records] == [record]
    assert plan.bytes == 100 + 600 + record.stat().st_size + 7
    assert {(t, r, n) for _, t, r, n in plan.rows} == {("animals_clean_history", "r1", 2),
                                                        ("issues", "r1", 1)}
    # the dry run (plan only) deleted nothing; applying it deletes exactly the plan
    assert all(f.exists() for f in files.values())
    result = CliRunner().invoke(app, ["gc", "--db", str(db), "--keep", "1", "--grace", "1",
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would delete 2 work file(s), 1 cache record(s), 1 report(s)" in result.output
    assert all(f.exists() for f in files.values())
    apply_gc(db, plan)
    assert {n for n, f in files.items() if f.exists()} == {"shared", "new", "batch", "other"}
    assert not record.exists() and not (work / "runs" / "r1.json").exists()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT DISTINCT run_id FROM animals_clean_history").fetchall() == [
            ("r2",)]
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(3,)]  # runs stay
    assert plan_gc(db, work, keep=1, orphan_grace_hours=1).pruned == {}  # nothing left


def _wait_for_event(name: str, resource: str, run_id: str, timeout: float = 30) -> dict:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            found = client.request("POST", "/events/filter", json={
                "filter": {"event": {"name": [name]}, "resource": {"id": [resource]}},
                "limit": 20}).json()
            hits = [e for e in found["events"] if e["payload"].get("run_id") == run_id]
            if hits:
                return hits[0]
            time.sleep(1)
    raise AssertionError(f"no {name} event for {resource} run {run_id} within {timeout} s")


def test_init_writes_the_folder_settings_and_run_keeps_them_there(tmp_path):
    folder = tmp_path / "landing" / "churn"
    result = CliRunner().invoke(app, ["init", str(folder), "--label", "churned", "--id",
                                      "customer", "--keep-runs", "3"])
    assert result.exit_code == 0, result.output
    spec = load_dataset_spec(folder)
    assert (spec.label, spec.id, spec.retention.keep_runs, spec.dataset_name) == (
        "churned", "customer", 3, "churn")
    again = CliRunner().invoke(app, ["init", str(folder), "--label", "x"])
    assert again.exit_code == 2 and "exists already" in again.output
    flags = CliRunner().invoke(app, ["run", f"{folder}/", "--label", "x"])
    assert flags.exit_code == 2 and "its settings live in its cleanset.yaml" in flags.output


# ---- flows ---------------------------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_batches_accumulate_and_decisions_stay_with_their_rows(workdir):
    from flows.folders import clean_folder, nightly
    from tasks.batches import overview
    from tasks.review import record_decisions

    db = str(workdir / "data" / "warehouse.duckdb")
    folder = _folder(workdir, "animals", "label: label\nmodel: logreg\nfolds: 3\n")
    _write(folder / "monday.csv", blobs(90, seed=1), mtime=1_000)
    first = clean_folder(str(folder), db=db)
    assert first.n_rows == 90 and first.n_batches == 1 and len(first.new_batches) == 1
    (b1,) = first.new_batches
    decided = pd.DataFrame({"row_id": [f"{b1}-5"], "decision": ["drop"], "new_label": [""],
                            "reviewer": ["ann"], "note": [""], "given_label": [""]})
    record_decisions(Path(db), "animals", decided, "ann", "test")

    tuesday = blobs(60, seed=2)  # with 24 wrong labels: label health falls, an event says so
    tuesday.loc[:23, "label"] = tuesday.loc[:23, "label"].map(
        {"ant": "bee", "bee": "cat", "cat": "ant"})
    _write(folder / "tuesday.csv", tuesday, mtime=2_000)
    shutil.copy(folder / "monday.csv", folder / "monday_again.csv")  # same bytes: no new batch
    second = clean_folder(str(folder), db=db)
    assert second.n_rows == 150 and second.n_batches == 2 and len(second.new_batches) == 1
    assert second.mode == "full"
    assert "label health fell from" in second.degraded
    _wait_for_event("cleanset.dataset.degraded", "cleanset.dataset.animals", second.run_id)
    with duckdb.connect(db, read_only=True) as con:
        batches = con.execute("SELECT batch_id, file, rows, run_id, status FROM batches ORDER BY "
                              "arrived_at").fetchall()
        assert [(b[0], Path(b[1]).name, b[2], b[3], b[4]) for b in batches] == [
            (b1, "monday.csv", 90, first.run_id, "accepted"),
            (second.new_batches[0], "tuesday.csv", 60, second.run_id, "accepted")]
        ids = {r[0] for r in con.execute("SELECT row_id FROM animals_clean").fetchall()}
        assert f"{b1}-0" in ids and f"{second.new_batches[0]}-59" in ids
        assert f"{b1}-5" not in ids  # the reviewer's drop on a batch-1 row holds after batch 2
        assert con.execute("SELECT action, decided_by, batch_id FROM issues WHERE run_id = ? "
                           "AND row_id = ?", [second.run_id, f"{b1}-5"]).fetchall() == [
            ("drop", "review", b1)]
        assert con.execute("SELECT mode, n_batches, n_new_batches FROM runs WHERE run_id = ?",
                           [second.run_id]).fetchall() == [("full", 2, 1)]

    # a second dataset, another label column, the same warehouse, after the first
    other = _folder(workdir, "pets", "label: kind\nid: pet\nmodel: logreg\nfolds: 3\n")
    frame = blobs(60, seed=3).rename(columns={"label": "kind"})
    frame.insert(0, "pet", [f"p{i}" for i in range(60)])
    _write(other / "p1.csv", frame, mtime=1_000)
    changed = frame.iloc[:10].copy()
    changed["x0"] = changed["x0"] + 0.5
    _write(other / "p2.csv", changed, mtime=2_000)  # ids p0..p9 again: they replace p1's rows
    outcomes = nightly(landing=str(workdir / "data" / "landing"), db=db, gc=False)
    assert set(outcomes) == {"animals", "pets"} and "completed" in outcomes["pets"]
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM pets_clean").fetchall()[0][0] <= 60
        assert con.execute("SELECT n_rows FROM runs WHERE dataset = 'pets'").fetchall() == [
            (60,)]
        x0 = dict(con.execute("SELECT pet, x0 FROM pets_clean").fetchall())
        assert x0.get("p3", changed.loc[3, "x0"]) == pytest.approx(changed.loc[3, "x0"])
    listed = {r["dataset"]: r for r in overview(workdir / "data" / "landing", Path(db))}
    assert (listed["animals"]["accepted"], listed["animals"]["rows"]) == (2, 150)
    assert (listed["pets"]["accepted"], listed["pets"]["rows"]) == (2, 60)
    assert listed["pets"]["disk"] > 0


@pytest.mark.usefixtures("prefect_server")
def test_a_drifted_batch_is_flagged_and_a_batch_missing_a_feature_is_quarantined(workdir):
    from flows.folders import clean_folder
    from tasks.report import report_path

    db = str(workdir / "data" / "warehouse.duckdb")
    folder = _folder(workdir, "audited", "label: label\nmodel: logreg\nfolds: 3\n")
    data = blobs(240, seed=1)
    _write(folder / "monday.csv", data.iloc[:120], mtime=1_000)
    first = clean_folder(str(folder), db=db)
    assert [(a["status"], a["reason"]) for a in first.batch_audits] == [("accepted", FIRST_BATCH)]

    drifted = data.iloc[120:180].copy()
    drifted["x0"] += data["x0"].std()
    _write(folder / "tuesday.csv", drifted, mtime=2_000)
    second = clean_folder(str(folder), db=db)
    (tuesday,) = second.batch_audits
    assert tuesday["status"] == "accepted" and second.n_rows == 180
    assert ("numeric_drift", "x0", "warn") in {
        (c["check_name"], c["column_name"], c["outcome"]) for c in tuesday["flagged"]}
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT run_id, outcome, severity FROM batch_audit WHERE batch_id = ? "
                           "AND check_name = 'numeric_drift' AND column_name = 'x0'",
                           [tuesday["batch_id"]]).fetchall() == [
            (second.run_id, "warn", "warning")]
        before = sorted(con.execute("SELECT * FROM audited_clean").fetchall())

    _write(folder / "wednesday.csv", data.iloc[180:].drop(columns=["x3"]), mtime=3_000)
    third = clean_folder(str(folder), db=db)
    (wednesday,) = third.batch_audits
    assert third.quarantined_batches == (wednesday["batch_id"],) and third.n_rows == 180
    assert "column_missing (x3)" in wednesday["reason"]
    assert "To accept it anyway" in wednesday["reason"] and "quarantined" in third.degraded
    with duckdb.connect(db, read_only=True) as con:
        assert sorted(con.execute("SELECT * FROM audited_clean").fetchall()) == before
        assert con.execute("SELECT status, reason FROM batches WHERE batch_id = ?",
                           [wednesday["batch_id"]]).fetchall() == [
            ("quarantined", wednesday["reason"])]
        assert con.execute("SELECT count(*) FROM issues WHERE batch_id = ?",
                           [wednesday["batch_id"]]).fetchall() == [(0,)]
        assert con.execute("SELECT outcome FROM batch_audit WHERE batch_id = ? AND check_name = "
                           "'column_missing'", [wednesday["batch_id"]]).fetchall() == [("fail",)]
    page = report_path(Path(db), "audited", third.run_id).read_text()
    assert "This batch against the dataset" in page and wednesday["batch_id"] in page

    # as its reason says: with the check's severity lowered, the batch is audited again, joins
    (folder / "cleanset.yaml").write_text("label: label\nmodel: logreg\nfolds: 3\n"
                                          "audit: {severity: {column_missing: warning}}\n")
    fourth = clean_folder(str(folder), db=db)
    assert fourth.n_rows == 240 and fourth.new_batches == (wednesday["batch_id"],)
    assert not fourth.quarantined_batches
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT status, run_id FROM batches WHERE batch_id = ?",
                           [wednesday["batch_id"]]).fetchall() == [("accepted", fourth.run_id)]
        assert con.execute("SELECT outcome FROM batch_audit WHERE batch_id = ? AND check_name = "
                           "'column_missing'", [wednesday["batch_id"]]).fetchall() == [("warn",)]


@pytest.mark.usefixtures("prefect_server")
def test_a_run_killed_during_publish_leaves_the_warehouse_and_its_batches_as_before(workdir):
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
           "PYTHONPATH": str(ROOT)}
    folder = _folder(workdir, "animals", "label: label\nmodel: logreg\nfolds: 3\n")
    _write(folder / "monday.csv", blobs(60, seed=1), mtime=1_000)
    cli = ["run", "data/landing/animals/", "--db", "wh.duckdb", "--quiet"]
    assert CliRunner().invoke(app, cli).exit_code == 0
    before = checksums(workdir / "wh.duckdb")
    tuesday = blobs(60, seed=2)  # with 24 wrong labels: label health falls, an event says so
    tuesday.loc[:23, "label"] = tuesday.loc[:23, "label"].map(
        {"ant": "bee", "bee": "cat", "cat": "ant"})
    _write(folder / "tuesday.csv", tuesday, mtime=2_000)
    kill_at_planted_hang(cli, workdir, env, "publish")
    assert checksums(workdir / "wh.duckdb") == before  # no batch, no row of the killed run
    result = CliRunner().invoke(app, cli)
    assert result.exit_code == 0, result.output
    assert "2 accepted (1 new" in result.output
    with duckdb.connect(str(workdir / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM batches").fetchall() == [(2,)]
        assert con.execute("SELECT n_rows FROM runs ORDER BY finished_at").fetchall() == [
            (60,), (120,)]
