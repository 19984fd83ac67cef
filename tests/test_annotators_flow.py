"""Several annotators through the whole flow (real Prefect server, DuckDB, GX, cleanlab):
CROWDLAB's consensus is the label the run publishes, annotators are rated, datasets with and
without annotators share one warehouse, and a single annotator changes nothing."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from flows.clean import clean_dataset
from tasks.annotators import annotation_codes, annotation_texts, majority_vote
from tasks.report import report_path
from tasks.review import record_decisions, review_queue
from tasks.spec import DatasetSpec
from tasks.summary import summary_table

pytestmark = pytest.mark.usefixtures("prefect_server")
ACCURACY = {"ann": 0.95, "bob": 0.85, "cy": 0.7, "rand": 1 / 3}


def planted(n: int = 360, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Three well separated classes in four features; four annotators of known accuracy (one
    answering at random) each label 60% of the rows, one label column each."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    centres = rng.normal(0, 3, (3, 4))
    frame = pd.DataFrame(centres[truth] + rng.normal(0, 1, (n, 4)),
                         columns=[f"x{i}" for i in range(4)])
    names = np.array(["cat", "dog", "eel"], dtype=object)
    for who, acc in ACCURACY.items():
        label = np.where(rng.random(n) < acc, truth, (truth + rng.integers(1, 3, n)) % 3)
        frame[who] = pd.Series(names[label], dtype=object).where(rng.random(n) < 0.6, None)
    return frame, names[truth]


def run(spec: DatasetSpec):
    return clean_dataset(spec, return_state=True).result()


def issues_of(db: str, dataset: str) -> pd.DataFrame:
    with duckdb.connect(db, read_only=True) as con:
        return con.execute("SELECT * EXCLUDE (run_id, dataset) FROM issues WHERE dataset = ? "
                           "ORDER BY CAST(row_id AS INT)", [dataset]).df()


def test_consensus_is_the_label_annotators_are_rated_and_a_warehouse_is_shared(workdir):
    frame, truth = planted()
    frame.to_csv(workdir / "rated.csv", index=False)
    plain = frame.drop(columns=list(ACCURACY)).assign(label=frame["ann"].fillna("cat"))
    plain.to_csv(workdir / "plain.csv", index=False)
    db = str(workdir / "w.duckdb")
    # without annotators, then with, then without again: one warehouse
    first = run(DatasetSpec(source=str(workdir / "plain.csv"), label="label", db=db))
    summary = run(DatasetSpec(source=str(workdir / "rated.csv"), annotators=list(ACCURACY),
                              db=db))
    again = run(DatasetSpec(source=str(workdir / "plain.csv"), label="label", db=db,
                            dataset="plain_again"))
    assert not first.annotators and not again.annotators and first.consensus == ""
    assert summary.consensus == "CROWDLAB" and summary.n_consensus_changed > 0
    assert [a["annotator"] for a in summary.annotators][-1] == "rand"
    with duckdb.connect(db, read_only=True) as con:
        rated = con.execute("SELECT annotator, annotator_quality, rows_labeled FROM "
                            "annotator_summary ORDER BY annotator_quality DESC").fetchall()
        nulls = con.execute(
            "SELECT dataset, count(consensus_quality), count(annotator_agreement) FROM issues "
            "GROUP BY dataset ORDER BY dataset").fetchall()
        clean = con.execute("SELECT consensus_label, ann FROM rated_clean").df()
    assert [r[0] for r in rated] == ["ann", "bob", "cy", "rand"]  # in order of true accuracy
    assert all(0 < r[2] <= len(frame) for r in rated)
    labeled = frame[list(ACCURACY)].notna().any(axis=1).to_numpy()  # nobody labeled ~3%
    assert nulls == [("plain", 0, 0), ("plain_again", 0, 0), ("rated", labeled.sum(),
                                                               labeled.sum())]
    issues = issues_of(db, "rated")
    assert issues.loc[~labeled, "is_unlabeled_issue"].all()  # they get a suggested label
    codes, classes = annotation_codes(annotation_texts(frame[list(ACCURACY)]))
    vote = np.asarray(classes, dtype=object)[majority_vote(codes)[labeled]]
    consensus = issues["given_label"].to_numpy()[labeled]
    consensus_accuracy = (consensus == truth[labeled]).mean()
    assert consensus_accuracy >= (vote == truth[labeled]).mean() + 0.05, consensus_accuracy
    assert issues["consensus_quality"].dropna().between(0, 1).all()
    assert len(clean) and clean["ann"].notna().any()  # annotator columns stay in the clean table
    with duckdb.connect(db, read_only=True) as con:  # the run summary artifact's table
        table = {r["metric"]: r["this run"] for r in summary_table(con, summary.run_id, "rated")}
    assert table["annotators (CROWDLAB quality, weakest first)"].startswith("rand ")
    assert "well-labeled rows (a reviewer can skip them)" in table and "ambiguous rows" in table
    _, queue = review_queue(workdir / "w.duckdb", "rated", order="priority")
    assert {"consensus_quality", "annotator_agreement", "plausible_labels", "is_well_labeled",
            "row.ann", "row.rand"} <= set(queue.columns)
    page = report_path(workdir / "w.duckdb", "rated", summary.run_id).read_text()
    assert 'id="annotators"' in page and "CROWDLAB" in page

    # a reviewer's relabel wins over the consensus: the next run scores the reviewer's label
    sure = issues[(issues["given_label"] == truth) & (issues["consensus_quality"] > 0.7)]
    row = sure.iloc[0]
    other = next(c for c in ("cat", "dog", "eel") if c != row["given_label"])
    record_decisions(workdir / "w.duckdb", "rated", pd.DataFrame([{
        "row_id": row["row_id"], "decision": "relabel", "new_label": other, "note": "",
        "reviewer": "", "given_label": row["given_label"]}]), "me", "test")
    second = run(DatasetSpec(source=str(workdir / "rated.csv"), annotators=list(ACCURACY),
                             db=db))
    with duckdb.connect(db, read_only=True) as con:
        again = con.execute("SELECT * FROM issues WHERE run_id = ? AND row_id = ?",
                            [second.run_id, row["row_id"]]).df().iloc[0]
    assert second.run_id != summary.run_id and again["final_label"] == other
    assert again["given_label"] == row["given_label"]  # the consensus, as published
    assert again["label_score"] < 0.5 < row["label_score"]  # scored as the reviewer's label


def test_a_single_annotator_changes_nothing(workdir):
    frame, _ = planted(n=240, seed=3)
    one = frame.drop(columns=["bob", "cy", "rand"]).dropna(subset=["ann"])
    one.to_csv(workdir / "one.csv", index=False)
    db = str(workdir / "w.duckdb")
    as_label = run(DatasetSpec(source=str(workdir / "one.csv"), label="ann", db=db,
                               dataset="as_label"))
    as_annotator = run(DatasetSpec(source=str(workdir / "one.csv"), annotators=["ann"], db=db,
                                   dataset="as_annotator"))
    assert as_annotator.consensus.startswith("majority vote") and not as_annotator.annotators
    pd.testing.assert_frame_equal(issues_of(db, "as_label"), issues_of(db, "as_annotator"))
    assert (as_label.n_label_issues, as_label.n_clean_rows) == (
        as_annotator.n_label_issues, as_annotator.n_clean_rows)
