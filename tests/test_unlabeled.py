"""Unlabeled rows and ActiveLab priority (issue 17 item 5), on planted data where the truth is
known: the fold models' probabilities for rows they never trained on, the issues frame's
`unlabeled` columns, and the review queue's priority order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.detect import unlabeled_columns
from tasks.errors import CleansetError
from tasks.estimate import assemble, fit_predict, fit_predict_fold, unlabeled_mean
from tasks.featurize import FeaturePlan, unlabeled_rows


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centers = np.array([[0, 0], [4, 0], [0, 4]], dtype=float)
    return centers[y] + rng.normal(0, 0.7, (n, 2)), y


PLAN = FeaturePlan(numeric=("a", "b"))


def test_unlabeled_rows_are_the_empty_labels_not_quarantined():
    labels = pd.Series(["a", None, "b", None, np.nan], dtype=object)
    assert unlabeled_rows(labels, np.array([3])).tolist() == [1, 4]


@pytest.mark.parametrize("model", ["logreg", "hgb"])
def test_extra_rows_are_predicted_by_the_same_fold_model(model):
    X, y = blobs(300, 0)
    X_new, y_new = blobs(30, 1)
    frame = pd.DataFrame(X, columns=["a", "b"])
    data = frame if model == "hgb" else X
    extra = (pd.DataFrame(X_new, columns=["a", "b"]) if model == "hgb" else X_new, None)
    folds = np.arange(300) % 5
    both = fit_predict_fold(data, y, folds, 2, 3, model, PLAN, 0, extra=extra)
    alone = fit_predict_fold(data, y, folds, 2, 3, model, PLAN, 0)
    n_fold = int((folds == 2).sum())
    assert both.shape == (n_fold + 30, 3)
    assert np.allclose(both[:n_fold], alone)  # the fold's own rows are unchanged
    assert (both[n_fold:].argmax(axis=1) == y_new).mean() >= 0.9
    # the same as fitting on the training rows and predicting the new rows as a test set
    stacked = np.vstack([X, X_new])
    train = np.flatnonzero(folds != 2)
    direct = fit_predict(pd.DataFrame(stacked, columns=["a", "b"]) if model == "hgb"
                         else stacked, np.r_[y, y_new], train, np.arange(300, 330), 3, model,
                         PLAN, 0)
    assert np.allclose(both[n_fold:], direct, atol=1e-6)


def test_assemble_and_unlabeled_mean_split_each_fold_part():
    folds = np.array([0, 1, 0, 1])
    tail = np.array([[0.2, 0.8]])
    parts = [np.array([[1.0, 0.0], [0.9, 0.1]] + [[0.4, 0.6]]),
             np.array([[0.0, 1.0], [0.1, 0.9]] + [[0.0, 1.0]])]
    assert np.allclose(assemble(folds, parts, 2), [[1, 0], [0, 1], [0.9, 0.1], [0.1, 0.9]])
    probs = unlabeled_mean(folds, {"logreg": parts, "knn": []}, {"logreg": 1.0, "knn": 1.0})
    assert np.allclose(probs, [[0.2, 0.8]]) and np.allclose(probs, tail)
    assert unlabeled_mean(folds, {}, {"knn": 1.0}) is None


def frame_of(given: list) -> pd.DataFrame:
    n = len(given)
    return pd.DataFrame({"row_id": [str(i) for i in range(n)], "given_label": given,
                         "suggested_label": pd.Series([None] * n, dtype=object),
                         "suggested_label_confidence": np.full(n, np.nan)})


def test_unlabeled_rows_get_suggestions_and_every_row_a_comparable_priority():
    given = ["a", "b", None, "a", None, "b"]
    positions = np.array([0, 1, 3, 5])
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.95, 0.05], [0.1, 0.9], [0.3, 0.7], [0.5, 0.5]])  # row 3 looks wrong
    unl_probs = np.array([[0.9, 0.1], [0.52, 0.48]])
    out = unlabeled_columns(frame_of(given), np.array([], dtype=int), positions, labels, probs,
                            ("a", "b"), np.array([2, 4]), unl_probs)
    assert out["is_unlabeled_issue"].tolist() == [False, False, True, False, True, False]
    assert out.loc[[2, 4], "suggested_label"].tolist() == ["a", "a"]
    assert np.allclose(out.loc[[2, 4], "unlabeled_score"], [0.9, 0.52])
    assert (out["unlabeled_score"][[0, 1, 3, 5]] == 1.0).all()
    score = out["active_learning_score"]
    assert score.notna().all() and score.between(0, 1).all()
    # the confident rows come last; the uncertain unlabeled row and the doubtful label first
    assert score[[4, 3]].max() < score[[0, 1, 2]].min()


def test_quarantined_and_regression_rows():
    out = unlabeled_columns(frame_of(["a", None, None]), np.array([2]), np.array([0]),
                            np.array([0]), np.array([[1.0]]), ("a",), regression=True)
    assert out["is_unlabeled_issue"].tolist() == [False, True, False]
    assert out["suggested_label"].isna().all() and out["active_learning_score"].isna().all()
    assert out["unlabeled_score"].tolist() == [1.0, 0.0, 1.0]


def test_an_unknown_review_order_is_a_user_error(tmp_path):
    from tasks.review import review_queue

    with pytest.raises(CleansetError, match="unknown order 'newest'"):
        review_queue(tmp_path / "w.duckdb", order="newest")
