"""The whole flow against a real temporary Prefect server, real DuckDB, real GX and cleanlab."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.clean import clean_dataset
from tasks.sample import load_builtin, plant_noise, precision_recall
from tasks.spec import DatasetSpec
from tasks.trust import WELL_LABELED_MIN_AGREEMENT, WELL_LABELED_MIN_SCORE
from tests.conftest import blobs

pytestmark = pytest.mark.usefixtures("prefect_server")


def task_states(flow_run_id) -> dict[str, str]:
    """task name -> state name for every task run of a flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r.state.name for r in runs}


def run(spec: DatasetSpec):
    state = clean_dataset(spec, return_state=True)
    return state.result(), state.state_details.flow_run_id


@pytest.fixture()
def noisy_wine(workdir):
    frame = load_builtin("wine")
    noisy, mask = plant_noise(frame["label"].to_numpy(), 0.1, seed=0)
    frame["label"] = noisy
    frame.to_csv(workdir / "wine.csv", index=False)
    return workdir / "wine.csv", mask


def test_flow_publishes_and_finds_planted_errors(noisy_wine, workdir):
    path, mask = noisy_wine
    # the dataset's own suite sees the user's 14 columns (no added row_id); a warning-level
    # row expectation quarantines the two rows with alcohol above 14.5
    (workdir / "expectations").mkdir()
    suite = {"name": "wine", "expectations": [
        {"type": "expect_table_column_count_to_equal", "kwargs": {"value": 14}},
        {"type": "expect_column_values_to_be_between", "severity": "warning",
         "kwargs": {"column": "alcohol", "min_value": 11, "max_value": 14.5}}]}
    (workdir / "expectations" / "wine.json").write_text(json.dumps(suite))
    spec = DatasetSpec(source=str(path), label="label", db=str(workdir / "w.duckdb"))
    summary, _ = run(spec)
    high_alcohol = np.flatnonzero(pd.read_csv(path)["alcohol"] > 14.5).tolist()
    with duckdb.connect(spec.db, read_only=True) as con:
        issues = con.execute("SELECT CAST(row_id AS INT), is_label_issue, given_label, "
                             "suggested_label, suggested_label_confidence, label_score, action, "
                             "suggested_label_agreement, label_evidence FROM issues ORDER BY 1"
                             ).fetchall()
        check = con.execute("SELECT model_accuracy, chance_accuracy, model_log_loss, "
                            "chance_log_loss, model_trusted FROM runs").fetchall()[0]
        screened = con.execute("SELECT model, chosen FROM model_screening").fetchall()
        roles = dict(con.execute("SELECT column_name, role FROM column_roles").fetchall())
        runs = con.execute("SELECT run_id, dataset, n_rows, n_clean_rows, n_label_issues, "
                           "source_sha256, status, health_score FROM runs").fetchall()
        n_clean = con.execute("SELECT count(*) FROM wine_clean").fetchall()[0][0]
        changed = con.execute("SELECT CAST(row_id AS INT), label FROM wine_clean "
                              "WHERE label <> label_original").fetchall()
        relabelled = con.execute("SELECT count(*) FROM wine_clean c JOIN issues i ON "
                                 "CAST(c.row_id AS VARCHAR) = i.row_id WHERE i.action = "
                                 "'relabel' AND CAST(c.label AS VARCHAR) = i.suggested_label "
                                 "AND c.label <> c.label_original").fetchall()[0][0]
        n_relabel = con.execute("SELECT count(*) FROM issues WHERE action = 'relabel'"
                                ).fetchall()[0][0]
        types = con.execute("SELECT issue_type FROM issue_summary ORDER BY 1").fetchall()
        val = con.execute("SELECT suite, expectation, success FROM validations "
                          "WHERE suite = 'wine' ORDER BY expectation").fetchall()
        invalid = con.execute("SELECT CAST(row_id AS INT) FROM issues WHERE is_invalid_issue "
                              "ORDER BY 1").fetchall()
        clean_ids = {r[0] for r in con.execute("SELECT row_id FROM wine_clean").fetchall()}
    assert len(issues) == 178
    flagged = np.array([bool(row[1]) for row in issues])
    p, r, _ = precision_recall(flagged, mask)
    assert r >= 0.7 and p >= 0.5
    assert all(0 <= row[5] <= 1 for row in issues if row[5] is not None)
    assert [r[0] for r in invalid] == high_alcohol and len(high_alcohol) == 2
    assert not clean_ids & set(high_alcohol)
    assert all(row[6] == "drop" for row in issues if row[0] in high_alcohol)
    # the model is checked against chance, and trusted on this easy data
    assert check[0] > check[1] + 0.3 and check[2] < check[3] / 2 and check[4] is True
    assert {m for m, _ in screened} >= {"logreg", "hgb", "knn"} and any(c for _, c in screened)
    assert roles["alcohol"] == "numeric" and len(roles) == 13
    # measured default: a trusted model's confident label issues are left out of the clean table
    # (and wait in the review queue) only below the label score where dropping is estimated to
    # raise label accuracy (tasks/decide.py drop_threshold), else they stay, for review; rows
    # the model only disagrees with stay, for review; no label is rewritten without a person
    confident_ids = {row[0] for row in issues if row[1] and row[8] == "confident"}
    assert confident_ids and all(row[6] in ("drop", "review") for row in issues
                                 if row[0] in confident_ids and row[0] not in high_alcohol)
    dropped_labels = [row[0] for row in issues if row[1] and row[6] == "drop"
                      and row[0] not in high_alcohol]
    assert all(mask[i] for i in dropped_labels)  # every label drop is a planted error
    assert all(row[6] == "review" for row in issues if row[8] == "disagreement"
               and row[0] not in high_alcohol)
    assert all((row[8] is not None) == bool(row[1]) for row in issues if row[1] is not None)
    assert not clean_ids & set(dropped_labels)
    assert confident_ids - set(dropped_labels) - set(high_alcohol) <= clean_ids  # for review
    assert n_relabel == 0 and relabelled == 0 and changed == []
    assert runs == [(summary.run_id, "wine", 178, n_clean, int(flagged.sum()),
                     runs[0][5], "completed", runs[0][7])]
    assert n_clean == 178 - sum(row[6] == "drop" for row in issues)
    assert [t for (t,) in types] == sorted(
        ["label", "outlier", "near_duplicate", "exact_duplicate", "conflicting_label", "null",
         "class_imbalance", "non_iid", "underperforming_group", "invalid", "unlabeled"])
    assert val == [("wine", "expect_column_values_to_be_between", False),
                   ("wine", "expect_table_column_count_to_equal", True)]


def test_second_run_is_served_from_cache_and_publishes_once(noisy_wine, workdir):
    path, _ = noisy_wine
    spec = DatasetSpec(source=str(path), label="label", db=str(workdir / "w.duckdb"))
    first, first_id = run(spec)
    second, second_id = run(spec)
    states = task_states(second_id)
    # these use the warehouse, so they are never served from the cache
    for never_cached in ("publish", "load-decisions", "run-artifacts", "retain", "report",
                        "record-stages"):
        assert states.pop(next(n for n in states if n.startswith(never_cached))) == "Completed"
    assert set(states.values()) == {"Cached"}, states
    stages = {n.rsplit("-", 1)[0] for n in states if not n.startswith("estimate-")}
    assert stages == {"ingest", "tag-sets", "validate", "featurize", "knn", "choose-model",
                      "pred-probs",
                      "check-model", "detect", "decide"}, stages
    fitted = [m for m in first.model.split(" (")[0].replace("+", " ").split()
              if m.split("*")[-1] != "knn"]
    assert sum(n.startswith("estimate-") for n in states) == 5 * len(fitted)
    assert second.run_id == first.run_id
    with duckdb.connect(spec.db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
        assert con.execute("SELECT count(*) FROM issues").fetchall() == [(178,)]
        flow_run = con.execute("SELECT flow_run_id FROM runs").fetchall()[0][0]
    assert flow_run == str(second_id)

    text = path.read_text().splitlines()
    text[1] = text[1].replace(text[1].split(",")[0], str(float(text[1].split(",")[0]) + 1), 1)
    path.write_text("\n".join(text) + "\n")
    third, third_id = run(spec)
    states = task_states(third_id)
    # everything that reads the changed feature recomputes; choose-model only sees the labels
    # and the feature plan, which did not change, so it may stay cached
    recomputed = {n: v for n, v in states.items() if not n.startswith("choose-model")}
    assert set(recomputed.values()) == {"Completed"}, states
    assert third.run_id != first.run_id
    with duckdb.connect(spec.db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(2,)]


def test_rare_class_rows_are_flagged_for_review_not_fatal(workdir):
    frame = load_builtin("iris")
    frame["label"] = frame["label"].astype(str)
    frame.loc[[0, 1, 2], "label"] = "rare"
    frame.to_csv(workdir / "iris.csv", index=False)
    spec = DatasetSpec(source=str(workdir / "iris.csv"), label="label",
                       db=str(workdir / "w.duckdb"))
    summary, _ = run(spec)
    with duckdb.connect(spec.db, read_only=True) as con:
        rows = con.execute("SELECT CAST(row_id AS INT), action, is_label_issue FROM issues "
                           "WHERE is_class_imbalance_issue ORDER BY 1").fetchall()
        model = con.execute("SELECT model FROM runs").fetchall()[0][0]
    assert rows == [(0, "review", None), (1, "review", None), (2, "review", None)]
    assert "lowest log loss" in model


def test_dry_run_publishes_findings_and_changes_nothing(noisy_wine, workdir):
    path, mask = noisy_wine
    spec = DatasetSpec(source=str(path), label="label", db=str(workdir / "w.duckdb"),
                       policy={"auto_fix": False, "exact_duplicate": "drop"})
    summary, _ = run(spec)
    given = pd.read_csv(path)
    with duckdb.connect(spec.db, read_only=True) as con:
        clean = con.execute("SELECT * EXCLUDE (label_original) FROM wine_clean ORDER BY row_id"
                            ).df()
        actions = dict(con.execute("SELECT action, count(*) FROM issues GROUP BY ALL"
                                   ).fetchall())
        auto_fix = con.execute("SELECT auto_fix FROM runs").fetchall()[0][0]
    assert summary.n_label_issues > 0 and auto_fix is False
    assert set(actions) <= {"keep", "review"} and actions["review"] >= summary.n_label_issues
    assert clean.drop(columns="row_id").reset_index(drop=True).equals(given)


def _planted_blobs(workdir, n=240):
    frame = blobs(n)
    truth = frame["label"].to_numpy()
    noisy, mask = plant_noise(truth, 0.1, seed=2)
    return frame.assign(label=noisy), truth, mask


def test_supplied_pred_probs_skip_training(workdir):
    frame, truth, mask = _planted_blobs(workdir)
    classes = sorted(set(truth))
    probs = np.full((len(frame), 3), 0.025)
    probs[np.arange(len(frame)), [classes.index(t) for t in truth]] = 0.95
    np.save(workdir / "probs.npy", probs)
    frame.to_csv(workdir / "b.csv", index=False)
    spec = DatasetSpec(source=str(workdir / "b.csv"), label="label", db=str(workdir / "w.duckdb"),
                       pred_probs=str(workdir / "probs.npy"))
    _, flow_run_id = run(spec)
    assert not any(n.startswith("estimate") for n in task_states(flow_run_id))
    with duckdb.connect(spec.db, read_only=True) as con:
        flagged = con.execute("SELECT is_label_issue FROM issues ORDER BY CAST(row_id AS INT)"
                              ).fetchall()
        model = con.execute("SELECT model FROM runs").fetchall()[0][0]
    assert np.array_equal([f for (f,) in flagged], mask) and model == "supplied pred_probs"


def test_embeddings_replace_the_columns(workdir):
    frame, truth, mask = _planted_blobs(workdir)
    np.save(workdir / "emb.npy", frame[["x0", "x1", "x2", "x3"]].to_numpy())
    frame[["label"]].assign(note="same").to_csv(workdir / "b.csv", index=False)  # no features
    spec = DatasetSpec(source=str(workdir / "b.csv"), label="label", db=str(workdir / "w.duckdb"),
                       embeddings=str(workdir / "emb.npy"), model="logreg")
    run(spec)
    with duckdb.connect(spec.db, read_only=True) as con:
        flagged = con.execute("SELECT is_label_issue FROM issues ORDER BY CAST(row_id AS INT)"
                              ).fetchall()
    p, r, _ = precision_recall(np.array([f for (f,) in flagged]), mask)
    assert r >= 0.9 and p >= 0.8


def test_a_failed_run_is_recorded_and_shown(workdir):
    """Issue 12, item 4: the flow ends Failed in Prefect, the warehouse gets a `runs` row with
    status failed, the stage and the message (nothing else), `cleanset query` shows it and the
    report of the next good run lists it."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.errors import CleansetError
    from tasks.report import load_report_data, render_html

    blobs(60).to_csv(workdir / "d.csv", index=False)
    db = workdir / "w.duckdb"
    bad = DatasetSpec(source=str(workdir / "d.csv"), label="target", db=str(db), dataset="d")
    state = clean_dataset(bad, return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(state.state_details.flow_run_id).state.is_failed()
    with pytest.raises(CleansetError):
        state.result()
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        rows = con.execute("SELECT run_id, status, stage, message, flow_run_id FROM runs"
                           ).fetchall()
        assert con.execute("SELECT count(*) FROM issues").fetchall() == [(0,)]
    assert "d_clean" not in tables
    (failed_id, status, stage, message, flow_run_id), = rows
    assert (status, stage) == ("failed", "validate") and "target" in message
    assert flow_run_id == str(state.state_details.flow_run_id)
    query = CliRunner().invoke(app, ["query", "SELECT status, stage FROM runs", "--db", str(db)])
    assert query.exit_code == 0 and "failed" in query.output and "validate" in query.output
    summary, _ = run(bad.model_copy(update={"label": "label"}))
    data = load_report_data(db, "d", summary.run_id)
    assert [r["run_id"] for r in data.failed_runs] == [failed_id]
    assert [r["run_id"] for r in data.history] == [summary.run_id]
    page = render_html(data)
    assert f"failed run {failed_id[:8]}" in page and "stage <code>validate</code>" in page


def test_a_library_upgrade_recomputes_every_cached_stage(workdir, monkeypatch):
    from tasks import caching

    frame, truth, _ = _planted_blobs(workdir, n=120)
    frame.to_csv(workdir / "b.csv", index=False)
    classes = sorted(set(truth))
    probs = np.full((len(frame), 3), 0.025)
    probs[np.arange(len(frame)), [classes.index(t) for t in truth]] = 0.95
    np.save(workdir / "probs.npy", probs)  # skips training: the test is about the keys
    spec = DatasetSpec(source=str(workdir / "b.csv"), label="label", db=str(workdir / "w.duckdb"),
                       pred_probs=str(workdir / "probs.npy"))
    never_cached = ("publish", "load-decisions", "run-artifacts", "retain", "report",
                    "record-stages")
    run(spec)
    _, second_id = run(spec)
    cached = {n: s for n, s in task_states(second_id).items() if not n.startswith(never_cached)}
    assert cached and set(cached.values()) == {"Cached"}, cached
    versions = caching.library_versions()
    monkeypatch.setattr(caching, "library_versions",
                        lambda: {**versions, "scikit-learn": versions["scikit-learn"] + ".post1"})
    _, third_id = run(spec)
    states = {n: s for n, s in task_states(third_id).items() if not n.startswith(never_cached)}
    assert set(states.values()) == {"Completed"}, states
    assert {n.rsplit("-", 1)[0] for n in states} == {n.rsplit("-", 1)[0] for n in cached}


def test_trust_columns_and_a_noisy_slice_reach_the_warehouse(workdir):
    """Every scored row carries the trust columns; a source with three times the label noise of
    the others is flagged in slice_summary; the slice column is not a model feature."""
    frame = blobs(n=1200, k=3, d=4, seed=3)
    rng = np.random.default_rng(3)
    frame["source"] = rng.choice(["web", "app", "partner"], size=len(frame))
    rate = np.where(frame["source"] == "partner", 0.3, 0.05)
    flip = rng.random(len(frame)) < rate
    labels = frame["label"].to_numpy(dtype=object)
    others = {"ant": "bee", "bee": "cat", "cat": "ant"}
    labels[flip] = [others[v] for v in labels[flip]]
    frame["label"] = labels
    frame.to_csv(workdir / "sliced.csv", index=False)
    spec = DatasetSpec(source=str(workdir / "sliced.csv"), label="label", slices=("source",),
                       db=str(workdir / "w.duckdb"))
    run(spec)
    with duckdb.connect(spec.db, read_only=True) as con:
        flagged = con.execute("SELECT slice_value FROM slice_summary WHERE is_flagged").fetchall()
        trust = con.execute(
            "SELECT row_id, is_well_labeled, well_labeled_score, is_label_issue, "
            "suggested_label_agreement, is_outlier_issue, n_well_labeled FROM issues JOIN runs "
            "USING (run_id) ORDER BY row_id::INT").df()
        roles = dict(con.execute("SELECT column_name, role FROM column_roles").fetchall())
    assert flagged == [("partner",)]
    assert roles["source"] == "ignore"
    # every row is scored; the certificate is tasks/trust.py's rule on the published columns
    assert trust["well_labeled_score"].notna().all()
    rule = ((trust["well_labeled_score"] >= WELL_LABELED_MIN_SCORE)
            & ~trust["is_label_issue"].astype(bool) & ~trust["is_outlier_issue"].astype(bool)
            & (trust["suggested_label_agreement"] >= WELL_LABELED_MIN_AGREEMENT))
    assert (trust["is_well_labeled"].astype(bool) == rule).all()
    assert trust["n_well_labeled"].iloc[0] == int(rule.sum())
    # 13% random flips cap the model's probability of any label near 0.9: little or nothing is
    # certified (bench/trust.py: symmetric noise), and what is, is right
    certified = trust.loc[trust["is_well_labeled"].astype(bool), "row_id"].astype(int)
    assert not flip[certified.to_numpy()].any()


def test_unlabeled_rows_get_a_suggestion_and_every_row_a_priority(workdir):
    """Rows with an empty label are not quarantined: the fold models suggest their (true)
    label, they go to review and stay out of the clean table; every row gets an ActiveLab
    score, and `--order priority` puts the lowest first."""
    from tasks.review import review_queue

    frame = blobs(n=600, k=3, d=4, seed=4)
    truth = frame["label"].to_numpy(dtype=object).copy()
    hidden = np.arange(0, 600, 20)  # 30 rows with no label
    labels = truth.copy()
    labels[hidden] = None
    frame["label"] = labels
    frame.to_csv(workdir / "partly.csv", index=False)
    spec = DatasetSpec(source=str(workdir / "partly.csv"), label="label",
                       db=str(workdir / "w.duckdb"))
    summary, _ = run(spec)
    with duckdb.connect(spec.db, read_only=True) as con:
        rows = con.execute(
            "SELECT row_id, suggested_label, suggested_label_confidence, action, "
            "is_invalid_issue, unlabeled_score FROM issues WHERE is_unlabeled_issue "
            "ORDER BY row_id::INT").fetchall()
        no_priority = con.execute("SELECT count(*) FROM issues WHERE active_learning_score IS "
                                  "NULL").fetchall()[0][0]
        clean = con.execute("SELECT count(*) FROM partly_clean").fetchall()[0][0]
    assert [int(r[0]) for r in rows] == hidden.tolist()
    assert np.mean([r[1] == truth[int(r[0])] for r in rows]) >= 0.9
    assert all(r[3] == "review" and not r[4] and r[2] == r[5] > 0 for r in rows)
    assert no_priority == 0
    assert clean == summary.n_clean_rows <= 600 - len(hidden)
    html = (spec.db_path.parent / "reports" / "partly" / f"{summary.run_id}.html").read_text()
    assert "30</b> rows have <b>no label" in html
    _, queue = review_queue(spec.db_path, order="priority")
    scores = queue["active_learning_score"].to_numpy()
    assert len(queue) >= len(hidden) and (np.diff(scores) >= 0).all()
