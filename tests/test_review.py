"""The fix-and-review loop: policy actions, review export/apply/interactive, decisions honoured
by later runs, and before/after evaluation. Real Prefect server, DuckDB, cleanlab."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.clean import clean_dataset
from flows.cli import app
from tasks.decide import apply_decisions, apply_policy
from tasks.errors import CleansetError
from tasks.featurize import reviewed_labels
from tasks.review import check_decisions
from tasks.spec import DatasetSpec, Policy, build_spec
from tests.conftest import blobs


def issues_frame(**cols) -> pd.DataFrame:
    base = {"row_id": ["a", "b", "c", "d"], "given_label": ["x", "x", "y", "y"],
            "suggested_label": ["y", "y", "x", None],
            "suggested_label_confidence": [0.95, 0.5, 0.99, np.nan],
            "suggested_label_agreement": [0.9, 1.0, 1.0, np.nan],
            "is_label_issue": pd.array([True, True, False, pd.NA], dtype="boolean"),
            "label_score": [0.01, 0.2, 0.9, np.nan],
            "is_outlier_issue": pd.array([False, False, True, False], dtype="boolean"),
            "outlier_score": [0.9, 0.9, 0.05, 0.8]}
    base.update(cols)
    return pd.DataFrame(base)


def test_relabel_only_when_confident_else_fallback():
    out = apply_policy(issues_frame(), Policy(label="relabel", relabel_threshold=0.9,
                                              relabel_fallback="review"))
    assert out["action"].tolist() == ["relabel", "review", "review", "keep"]
    assert out["final_label"].tolist()[:3] == ["y", "x", "y"]  # only the confident one changes
    assert (out["decided_by"] == "policy").all()
    dropping = apply_policy(issues_frame(), Policy(label="relabel", relabel_fallback="drop",
                                                   outlier="drop", drop_check=False))
    assert dropping["action"].tolist() == ["relabel", "drop", "drop", "keep"]
    # drop beats relabel when a row has both issues
    both = apply_policy(issues_frame(is_outlier_issue=pd.array([True, False, True, False],
                                                               dtype="boolean")),
                        Policy(label="relabel", outlier="drop"))
    assert both["action"].iloc[0] == "drop"


def test_relabel_is_rejected_for_types_without_a_suggestion():
    with pytest.raises(CleansetError, match="relabel needs a suggested label"):
        build_spec(source="x.csv", label="y", policy={"outlier": "relabel"})


def test_decisions_override_policy_and_orphans_are_reported():
    decided = apply_policy(issues_frame(), Policy())
    decisions = pd.DataFrame({"row_id": ["a", "b", "c", "gone", "b"],
                              "decision": ["keep", "drop", "relabel", "drop", "relabel"],
                              "new_label": [None, None, "z", None, "y"],
                              "note": ["fine", None, None, None, "second thought"]})
    out, orphans = apply_decisions(decided, decisions)
    assert orphans == ["gone"]
    by_row = out.set_index("row_id")
    assert by_row.loc["a", "action"] == "keep" and by_row.loc["a", "final_label"] == "x"
    assert not by_row.loc["a", "is_label_issue"]  # a confirmed label is not flagged again
    assert by_row.loc["b", "action"] == "relabel"  # the latest decision for b wins
    assert by_row.loc["b", "final_label"] == "y" and by_row.loc["b", "review_note"] == (
        "second thought")
    assert by_row.loc["c", "final_label"] == "z"
    assert (by_row.loc[["a", "b", "c"], "decided_by"] == "review").all()
    assert by_row.loc["d", "decided_by"] == "policy"


def test_reviewed_labels_feed_training():
    labels = pd.Series([0, 1, 2, 1, 0])
    decisions = pd.DataFrame({"row_id": ["a", "b", "c", "zz", "a"],
                              "decision": ["relabel", "drop", "keep", "relabel", "relabel"],
                              "new_label": ["1", None, None, "2", "2"]})
    out, dropped, n = reviewed_labels(labels, pd.Series(list("abcde")), decisions)
    assert out.tolist() == [2, 1, 2, 1, 0]  # latest decision for a wins; the column's own type
    assert out.dtype == labels.dtype and dropped.tolist() == [1] and n == 1
    same, none, zero = reviewed_labels(labels, pd.Series(list("abcde")), None)
    assert same is labels and len(none) == 0 and zero == 0


def test_bad_review_files_are_rejected_with_every_problem_listed():
    good = pd.DataFrame({"row_id": ["a", "b", "c"], "decision": ["keep", "", "relabel"],
                         "new_label": ["", "", "y"]})
    checked = check_decisions(good, "d", {"a", "b", "c"}, {"x", "y"})
    assert checked["row_id"].tolist() == ["a", "c"]  # the blank decision is not reviewed yet
    with pytest.raises(CleansetError, match="lacks the column"):
        check_decisions(good.drop(columns="decision"), "d", {"a"}, {"x"})
    bad = pd.DataFrame({"row_id": ["a", "zz", "c", "c"],
                        "decision": ["maybe", "keep", "relabel", "keep"],
                        "new_label": ["", "", "nope", ""]})
    with pytest.raises(CleansetError) as info:
        check_decisions(bad, "d", {"a", "c"}, {"x", "y"})
    message = str(info.value)
    for expected in ("unknown decision", "row_id not in the latest run", "not a known class",
                     "more than once", "nothing was applied"):
        assert expected in message
    # each problem names the lines and the value at fault, not only the line number
    assert "row_id not in the latest run of the dataset (line 3 row_id 'zz')" in message
    assert "(line 2 decision 'maybe')" in message and "(line 4 new_label 'nope')" in message
    assert "(line 4 row_id 'c', line 5 row_id 'c')" in message


@pytest.fixture()
def noisy_blobs(workdir):
    frame = blobs(n=240, k=3, d=4, seed=1)
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    truth = frame["label"].copy()
    flipped = [5, 17, 40, 77, 101, 150, 199]
    frame.loc[flipped, "label"] = frame.loc[flipped, "label"].map(
        {"ant": "bee", "bee": "cat", "cat": "ant"})
    path = workdir / "blobs.csv"
    frame.to_csv(path, index=False)
    return path, frame, truth, flipped


def _table(db, sql, params=()):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, list(params)).df()


@pytest.mark.usefixtures("prefect_server")
def test_run_review_apply_run_again_honours_decisions(noisy_blobs, workdir):
    path, frame, truth, flipped = noisy_blobs
    db = workdir / "w.duckdb"
    spec = DatasetSpec(source=str(path), label="label", id="id", db=str(db), dataset="blobs",
                       policy=Policy(relabel_threshold=0.999, relabel_fallback="review"))
    first = clean_dataset(spec)
    runner = CliRunner()
    out = workdir / "review.csv"
    result = runner.invoke(app, ["review", "export", "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    queue = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert {"row_id", "decision", "new_label", "given_label", "suggested_label", "reason",
            "row.x0"} <= set(queue.columns)
    severity = queue["severity"].astype(float)
    assert severity.is_monotonic_increasing  # most severe (lowest score) first
    flagged = [r for r in queue["row_id"] if int(r[1:]) in flipped]
    assert len(flagged) >= 4
    keep_row, relabel_row, drop_row = flagged[:3]
    queue.loc[queue.row_id == keep_row, ["decision", "note"]] = ["keep", "checked by hand"]
    queue.loc[queue.row_id == relabel_row, ["decision", "new_label"]] = [
        "relabel", truth[int(relabel_row[1:])]]
    queue.loc[queue.row_id == drop_row, "decision"] = "drop"
    queue.to_csv(out, index=False)
    result = runner.invoke(app, ["review", "apply", str(out), "--db", str(db),
                                 "--reviewer", "ann"])
    assert result.exit_code == 0, result.output
    assert "recorded 3 decision(s)" in result.output
    recorded = _table(db, "SELECT row_id, decision, reviewer, note, source FROM review_decisions")
    assert set(recorded["row_id"]) == {keep_row, relabel_row, drop_row}
    assert (recorded["reviewer"] == "ann").all() and recorded["source"].str.endswith(
        "review.csv").all()

    second = clean_dataset(spec)
    assert second.run_id != first.run_id  # the decisions are part of the run
    assert second.n_reviewed == 3
    issues = _table(db, "SELECT * FROM issues WHERE run_id = ?", [second.run_id]).set_index(
        "row_id")
    assert issues.loc[keep_row, "action"] == "keep"
    assert not issues.loc[keep_row, "is_label_issue"]  # confirmed: not flagged again
    assert issues.loc[keep_row, "review_note"] == "checked by hand"
    assert issues.loc[relabel_row, "action"] == "relabel"
    # the models were retrained on the corrected label: the row now scores as well labelled
    assert issues.loc[relabel_row, "label_score"] > 0.5
    assert pd.isna(issues.loc[drop_row, "label_score"])  # a reviewed drop is not trained on
    assert issues.loc[drop_row, "action"] == "drop"
    clean = _table(db, "SELECT * FROM blobs_clean").set_index("id")
    assert drop_row not in clean.index  # a drop stays dropped
    assert clean.loc[relabel_row, "label"] == truth[int(relabel_row[1:])]  # correction applied
    assert clean.loc[relabel_row, "label_original"] == frame.loc[int(relabel_row[1:]), "label"]
    assert clean.loc[keep_row, "label"] == frame.loc[int(keep_row[1:]), "label"]
    # decided rows leave the review queue
    result = runner.invoke(app, ["review", "export", "--db", str(db), "-o", str(out)])
    assert not set(pd.read_csv(out, dtype=str)["row_id"]) & {keep_row, relabel_row, drop_row}

    # a decided row that disappears from the data is reported, and its decision is kept
    frame[frame["id"] != drop_row].to_csv(path, index=False)
    third = clean_dataset(spec)
    assert third.orphan_decisions == (drop_row,)
    runs = _table(db, "SELECT orphan_decisions FROM runs WHERE run_id = ?", [third.run_id])
    assert list(runs["orphan_decisions"][0]) == [drop_row]
    assert len(_table(db, "SELECT * FROM review_decisions")) == 3


@pytest.fixture()
def published(noisy_blobs, workdir, prefect_server):
    """The warehouse after one run of the noisy blobs (dataset `blobs`)."""
    path, *_ = noisy_blobs
    db = workdir / "w.duckdb"
    clean_dataset(DatasetSpec(source=str(path), label="label", id="id", db=str(db),
                              dataset="blobs"))
    return db


def test_bad_review_file_applies_nothing(published, workdir):
    db = published
    runner = CliRunner()
    bad = workdir / "bad.csv"
    pd.DataFrame({"dataset": ["blobs"] * 2, "row_id": ["r1", "no_such_row"],
                  "decision": ["keep", "drop"]}).to_csv(bad, index=False)
    result = runner.invoke(app, ["review", "apply", str(bad), "--db", str(db)])
    assert result.exit_code == 2
    assert "row_id not in the latest run" in result.output
    assert "line 3 row_id 'no_such_row'" in result.output
    pd.DataFrame({"dataset": ["blobs"], "row_id": ["r1"], "decision": ["relabel"],
                  "new_label": ["wasp"]}).to_csv(bad, index=False)
    result = runner.invoke(app, ["review", "apply", str(bad), "--db", str(db)])
    assert result.exit_code == 2 and "not a known class" in result.output
    pd.DataFrame({"id": ["r1"], "verdict": ["keep"]}).to_csv(bad, index=False)
    result = runner.invoke(app, ["review", "apply", str(bad), "--db", str(db), "-d", "blobs"])
    assert result.exit_code == 2 and "lacks the column(s) row_id, decision" in result.output
    assert "Traceback" not in result.output
    assert len(_table(db, "SELECT * FROM review_decisions")) == 0


def test_interactive_review_saves_each_decision(published, workdir):
    db = published
    queue_before = CliRunner().invoke(app, ["review", "export", "--db", str(db), "-o",
                                            str(workdir / "q.csv")])
    assert queue_before.exit_code == 0
    first_two = pd.read_csv(workdir / "q.csv", dtype=str)["row_id"].tolist()[:2]
    # keep the first row (no note), relabel the second to its suggestion with a note, then quit
    result = CliRunner().invoke(app, ["review", "--db", str(db), "--reviewer", "bo"],
                                input="k\n\nr\nlooks like the suggestion\nq\n")
    assert result.exit_code == 0, result.output
    assert "2 decision(s) saved" in result.output
    saved = _table(db, "SELECT row_id, decision, new_label, note, reviewer, source "
                       "FROM review_decisions ORDER BY decided_at")
    assert saved["row_id"].tolist() == first_two
    assert saved["decision"].tolist() == ["keep", "relabel"]
    assert saved["new_label"].iloc[1] and saved["note"].iloc[1] == "looks like the suggestion"
    assert (saved["source"] == "interactive").all() and (saved["reviewer"] == "bo").all()


@pytest.mark.usefixtures("prefect_server")
def test_evaluation_before_and_after(noisy_blobs, workdir):
    path, frame, truth, _ = noisy_blobs
    test = blobs(n=90, k=3, d=4, seed=1).sample(frac=1.0, random_state=3)
    test.insert(0, "id", [f"t{i}" for i in range(len(test))])
    test.to_csv(workdir / "test.csv", index=False)
    db = workdir / "w.duckdb"
    summary = clean_dataset(DatasetSpec(source=str(path), label="label", id="id", db=str(db),
                                        dataset="blobs", test=str(workdir / "test.csv")))
    ev = _table(db, "SELECT * FROM evaluations WHERE run_id = ? ORDER BY trained_on",
                [summary.run_id])
    assert ev["trained_on"].tolist() == ["cleaned", "given"]
    assert (ev["n_test"] == 90).all()
    assert ev.set_index("trained_on").loc["cleaned", "n_train"] <= 240
    assert ev["accuracy"].between(0.8, 1.0).all()  # separable blobs: both models do well
    assert set(summary.evaluation) == {"given", "cleaned"}
    holdout = clean_dataset(DatasetSpec(source=str(path), label="label", id="id", db=str(db),
                                        dataset="blobs", eval_holdout=0.25))
    ev = _table(db, "SELECT * FROM evaluations WHERE run_id = ?", [holdout.run_id])
    assert (ev["n_test"] == 60).all() and ev["test_set"].str.startswith("holdout 25%").all()
    given = ev.set_index("trained_on").loc["given", "n_train"]
    assert given == 180


def test_a_holdout_too_small_for_the_classes_is_a_message():
    from tasks.evaluate import evaluation_sets

    frame = pd.DataFrame({"x": range(20)})
    given = pd.Series(list("abc") * 6 + ["a", "b"])
    decided = pd.DataFrame({"action": ["keep"] * 20, "final_label": given})
    with pytest.raises(CleansetError, match="cannot hold out 5% of 20 labelled rows"):
        evaluation_sets(frame, given, decided, None, 0.05, 0)


def test_test_and_holdout_are_exclusive():
    with pytest.raises(CleansetError, match="either test"):
        build_spec(source="x.csv", label="y", test="t.csv", eval_holdout=0.2)
