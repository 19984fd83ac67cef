"""Which rows the out-of-fold model only disagrees with are label issues (tasks/detect.py
`label_issues`, issue 13): real scikit-learn models and real cleanlab on small data."""

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from tasks.detect import DISAGREEMENT_MIN_SKILL, label_issues, label_skill


def oof(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return cross_val_predict(LogisticRegression(max_iter=1000), X, y, cv=5,
                             method="predict_proba")


def test_a_weak_many_class_model_on_right_labels_adds_no_disagreement_flags():
    X, y = make_classification(n_samples=1500, n_features=10, n_informative=4, n_redundant=0,
                               n_classes=15, n_clusters_per_class=1, class_sep=0.6,
                               random_state=0)
    probs = oof(X, y)  # every label is right; the model gets most rows wrong
    assert (probs.argmax(axis=1) == y).mean() < 0.5
    assert label_skill(y, probs) < DISAGREEMENT_MIN_SKILL
    found = label_issues(y, probs)
    evidence = found["label_evidence"].to_numpy(dtype=object)
    confident = evidence == "confident"
    before = (probs.argmax(axis=1) != y) & ~confident  # the rule before: any disagreement
    assert before.sum() > 200
    assert not (evidence == "disagreement").any()
    assert found["is_label_issue"].sum() == confident.sum() < (probs.argmax(axis=1) != y).sum()


def test_boundary_errors_of_a_strong_model_are_still_flagged_as_disagreement():
    rng = np.random.default_rng(0)
    n = 1000
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 2))
    X[:, 0] += np.where(y == 1, 2.0, -2.0)
    own = oof(X, y)[np.arange(n), y]
    hard = np.flatnonzero((own > 0.6) & (own < 0.9))  # right rows near the boundary
    flip = rng.choice(hard, size=40, replace=False)  # what an annotator gets wrong
    noisy = y.copy()
    noisy[flip] = 1 - noisy[flip]
    probs = oof(X, noisy)
    assert label_skill(noisy, probs) >= DISAGREEMENT_MIN_SKILL
    found = label_issues(noisy, probs)
    flagged = found["is_label_issue"].to_numpy(dtype=bool)
    evidence = found["label_evidence"].to_numpy(dtype=object)
    assert flagged[flip].mean() >= 0.8  # confident learning alone finds almost none of them
    assert (evidence[flip] == "disagreement").sum() > (evidence[flip] == "confident").sum()
    assert flagged.sum() <= 2 * len(flip)


def test_a_near_tie_is_not_a_disagreement():
    labels = np.array([0] * 50 + [1] * 50)
    probs = np.where(labels[:, None] == np.arange(2), 0.9, 0.1)
    probs[0] = [0.48, 0.52]  # the top class leads by less than the margin
    probs[1] = [0.40, 0.60]
    found = label_issues(labels, probs)
    assert found["label_evidence"].tolist()[:3] == [None, "disagreement", None]
    assert found["is_label_issue"].tolist()[:2] == [False, True]
    assert found["suggested"].tolist()[:2] == [1, 1]  # the suggestion is still given
