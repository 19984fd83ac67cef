"""One small planted case per issue type, asserting exactly which rows are flagged.

Runs the detect stage's pure function with real cleanlab Datalab on a real faiss kNN graph.
Three tight, well separated clusters in 3 dimensions (so the euclidean metric applies)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.detect import detect_all, enabled_types
from tasks.errors import CleansetError
from tasks.knn import graph_clusters, knn_graph

CENTERS = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], float)


def flagged(frame: pd.DataFrame, issue_type: str) -> list[int]:
    return np.flatnonzero(frame[f"is_{issue_type}_issue"].fillna(False).to_numpy(bool)).tolist()


def detect(X: np.ndarray, labels: np.ndarray, probs: np.ndarray, settings=None, raw=None,
           rare=(), clustered: bool = False):
    """detect_all on a fresh exact graph; `clustered`: with the graph's clusters computed
    beforehand (the knn stage's, knn.graph_clusters) instead of by Datalab."""
    n = len(X)
    classes = tuple(sorted(set(labels) - set(rare)))
    scored = np.array([i for i in range(n) if labels[i] not in rare])
    idx = np.array([classes.index(labels[i]) for i in scored])
    raw = pd.DataFrame(X, columns=["x", "y", "z"]) if raw is None else raw
    emb = raw.fillna(raw.median()).to_numpy(np.float32)[scored]
    emb = (emb - emb.mean(0)) / emb.std(0)
    graph, metric, exact = knn_graph(emb, 10)
    assert metric == "euclidean" and exact
    return detect_all(pd.Series(range(n)), pd.Series(labels, dtype=object), raw, scored, idx,
                      classes, probs[scored][:, :len(classes)], np.array([], dtype=int),
                      np.setdiff1d(np.arange(n), scored), emb, graph,
                      enabled_types(settings or {}),
                      clusters=graph_clusters(graph) if clustered else None)


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    n = 300
    y = np.arange(n) % 3
    X = CENTERS[y] + rng.normal(0, 1, (n, 3))
    X[0] = [60, 60, 60]                    # a far outlier
    X[6], y[6] = X[3], y[3]                # an exact duplicate of row 3, same label
    X[8] = X[7]                            # a conflicting pair: same features ...
    y[8] = (y[7] + 1) % 3                  # ... different labels
    X[9] = X[10] + 1e-6                    # a near duplicate with tiny noise
    labels = np.array(["a", "b", "c"])[y].astype(object)
    labels[12] = "b" if labels[12] != "b" else "c"   # a label error
    probs = np.full((n, 3), 0.02)
    probs[np.arange(n), np.arange(n) % 3] = 0.96     # the model knows the true classes
    probs[6], probs[8] = probs[3], probs[7]
    raw = pd.DataFrame(X, columns=["x", "y", "z"])
    raw.loc[11] = np.nan                   # an all-null row
    frame = detect(X, labels, probs, {"outlier": {"threshold": 0.1}, "data_valuation": True},
                   raw)
    return frame, labels


def test_far_outlier(planted):
    frame, _ = planted
    assert flagged(frame, "outlier") == [0]
    assert frame["outlier_score"].idxmin() == 0


def test_exact_duplicate_flags_the_copy_only(planted):
    frame, _ = planted
    assert flagged(frame, "exact_duplicate") == [6]  # 8 repeats 7's features, not its label
    assert frame.loc[[3, 6], "exact_duplicate_set"].tolist() == ["3", "3"]


def test_conflicting_labels(planted):
    frame, _ = planted
    assert flagged(frame, "conflicting_label") == [7, 8]
    assert frame.loc[[7, 8], "conflicting_label_score"].tolist() == [0.5, 0.5]


def test_near_duplicates_and_their_sets(planted):
    frame, _ = planted
    assert flagged(frame, "near_duplicate") == [3, 6, 7, 8, 9, 10]
    assert frame.loc[[3, 6, 7, 8, 9, 10], "near_duplicate_set"].tolist() == [
        "3", "3", "7", "7", "9", "9"]


def test_null_row(planted):
    frame, _ = planted
    assert flagged(frame, "null") == [11]
    assert frame.loc[11, "null_score"] == 0.0


def test_label_error_and_conflict_are_label_issues(planted):
    frame, labels = planted
    assert flagged(frame, "label") == [8, 12]
    assert frame.loc[12, "suggested_label"] == ["a", "b", "c"][12 % 3]


def test_data_valuation_is_opt_in_and_scores_the_label_error_low(planted):
    frame, _ = planted
    assert 12 in frame["data_valuation_score"].nsmallest(5).index
    assert "is_data_valuation_issue" not in detect(
        np.eye(3).repeat(20, axis=0) + np.random.default_rng(1).normal(0, .1, (60, 3)),
        np.array(["a", "b", "c"] * 20, dtype=object)[np.repeat([0, 1, 2], 20)],
        np.eye(3).repeat(20, axis=0) * 0.9 + 0.033)


def test_every_score_is_in_unit_interval_lower_is_worse(planted):
    frame, _ = planted
    for col in [c for c in frame if c.endswith("_score")]:
        values = frame[col].dropna()
        assert values.between(0, 1).all(), col


def test_rare_class_is_class_imbalance(planted):
    rng = np.random.default_rng(2)
    y = np.r_[np.arange(60) % 2, [2, 2]]
    X = CENTERS[y] + rng.normal(0, 1, (62, 3))
    labels = np.array(["a", "b", "rare"], dtype=object)[y]
    probs = np.full((62, 3), 0.05)
    probs[np.arange(62), y] = 0.9
    frame = detect(X, labels, probs, rare=("rare",))
    assert flagged(frame, "class_imbalance") == [60, 61]


def test_non_iid_flags_ordered_data_only():
    rng = np.random.default_rng(3)
    y = np.arange(300) % 3
    probs = np.full((300, 3), 0.02)
    probs[np.arange(300), y] = 0.96
    labels = np.array(["a", "b", "c"], dtype=object)
    shuffled = detect(CENTERS[y] + rng.normal(0, 1, (300, 3)), labels[y], probs)
    assert flagged(shuffled, "non_iid") == []
    order = np.sort(y)
    drifting = detect(CENTERS[order] + rng.normal(0, 1, (300, 3)), labels[order], probs[
        np.argsort(y, kind="stable")])
    assert len(flagged(drifting, "non_iid")) == 1


def test_types_can_be_switched_off_and_unknown_ones_are_named():
    types = enabled_types({"outlier": False, "near_duplicate": {"threshold": 0.05}})
    assert "outlier" not in types and types["near_duplicate"] == {"threshold": 0.05}
    assert "data_valuation" not in types
    with pytest.raises(CleansetError, match="unknown issue type"):
        enabled_types({"outliers": True})


def test_non_iid_on_large_data_tests_an_evenly_spaced_sample(monkeypatch):
    import tasks.detect as detect_module

    monkeypatch.setattr(detect_module, "NON_IID_MAX_ROWS", 100)
    rng = np.random.default_rng(4)
    y = np.sort(np.arange(300) % 3)  # ordered: the drift survives taking every 3rd row
    probs = np.full((300, 3), 0.02)
    probs[np.arange(300), y] = 0.96
    frame = detect(CENTERS[y] + rng.normal(0, 1, (300, 3)),
                   np.array(["a", "b", "c"], dtype=object)[y], probs)
    scored = np.flatnonzero(frame["non_iid_score"].notna().to_numpy())
    assert scored.tolist() == list(range(0, 300, 3))
    assert len(flagged(frame, "non_iid")) == 1 and flagged(frame, "non_iid")[0] % 3 == 0


@pytest.mark.parametrize("clustered", [False, True], ids=["by-datalab", "by-the-knn-stage"])
def test_underperforming_group_is_the_cluster_the_model_fails_on(clustered):
    rng = np.random.default_rng(5)
    y = np.r_[np.arange(300) % 3, np.zeros(40, dtype=int)]
    centers = np.r_[CENTERS, [[0, 0, 10.0]]]
    X = centers[np.r_[np.arange(300) % 3, np.full(40, 3)]] + rng.normal(0, 1, (340, 3))
    probs = np.full((340, 3), 0.02)
    probs[np.arange(340), y] = 0.96
    probs[300:] = [0.01, 0.98, 0.01]  # a separate cluster whose labels the model gets wrong
    frame = detect(X, np.array(["a", "b", "c"], dtype=object)[y], probs, clustered=clustered)
    assert flagged(frame, "underperforming_group") == list(range(300, 340))
    if clustered:  # the same scores as Datalab's own clustering
        by_datalab = detect(X, np.array(["a", "b", "c"], dtype=object)[y], probs)
        assert np.allclose(frame["underperforming_group_score"],
                           by_datalab["underperforming_group_score"])


def test_a_check_datalab_cannot_run_is_a_log_line_not_console_noise(capsys, caplog):
    """Even, tight clusters give Datalab's underperforming_group no cluster to judge: it printed
    "Error in underperforming_group: No meaningful clusters ..." in the middle of a good run."""
    import logging

    from tasks.detect import datalab_issues

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    X = (CENTERS[y] + rng.normal(0, 1, (60, 3))).astype(np.float32)
    probs = np.full((60, 3), 0.02)
    probs[np.arange(60), y] = 0.96
    graph, _, _ = knn_graph(X, 10)
    with caplog.at_level(logging.INFO, logger="tasks.detect"):
        found = datalab_issues(y, probs, X, graph, {"underperforming_group": {}, "outlier": {}})
    assert capsys.readouterr().out == ""
    assert "is_outlier_issue" in found and "is_underperforming_group_issue" not in found
    assert any("did not check underperforming_group" in r.getMessage()
               and "No meaningful clusters" in r.getMessage() for r in caplog.records)


def test_new_datalab_reads_the_labels_as_given():
    """Datalab's constructor reads the label column back through numpy; the fast read
    (tasks.detect.new_datalab) must give it the same labels, in order, for each task."""
    import numpy as np

    from tasks.detect import new_datalab

    y = np.random.default_rng(0).integers(0, 4, 5_000)
    assert np.array_equal(new_datalab(y).labels, y)
    values = np.linspace(-1.0, 1.0, 300)
    assert np.allclose(new_datalab(values, "regression").labels, values)
    tags = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 0]])
    assert [list(r) for r in new_datalab(tags, "multilabel").labels] == [[0, 2], [2], [1]]
