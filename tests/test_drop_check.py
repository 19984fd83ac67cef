"""tasks/decide.py drop_threshold: a label issue is dropped only where dropping is estimated to
raise the share of right labels; the rest go to review. Truth known, real models and cleanlab."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.decide import actions, drop_threshold
from tasks.spec import Policy
from tests.conftest import flip_labels


def _issues(shape: str, spread: float, seed: int = 0, n: int = 1500):
    """(issues frame as detect writes it, truth) for 3 blob classes of `spread` with 10% planted
    noise: `symmetric` (random rows, any other class) or `feature_dependent` (the rows a
    reference model finds hardest, flipped to their runner-up class)."""
    from sklearn.datasets import make_blobs

    from tasks.detect import label_issues

    X, y = make_blobs(n_samples=n, centers=[[0, 0], [4, 0], [2, 3.5]], cluster_std=spread,
                      random_state=seed)
    rng = np.random.default_rng(seed)
    noisy, probs = flip_labels(X, y, shape, rng)
    found = label_issues(noisy, probs)
    names = np.array(["a", "b", "c"], dtype=object)
    issues = pd.DataFrame({
        "given_label": names[noisy], "suggested_label": names[found["suggested"].to_numpy()],
        "suggested_label_confidence": found["suggested_label_confidence"],
        "is_label_issue": pd.array(found["is_label_issue"].to_numpy(), dtype="boolean"),
        "label_score": found["label_score"], "label_evidence": found["label_evidence"]})
    return issues, names[y]


def _accuracy(issues: pd.DataFrame, truth: np.ndarray, kept: np.ndarray) -> float:
    return float((issues["given_label"].to_numpy()[kept] == truth[kept]).mean())


def test_flags_on_the_models_hardest_rows_go_to_review_where_dropping_would_lower_accuracy():
    """Overlapping classes, the hardest rows flipped to their runner-up class: the confident
    flags are mostly rare but right labels. Dropping them all would lower label accuracy; the
    default sends them to review and label accuracy does not fall."""
    issues, truth = _issues("feature_dependent", spread=2.5)
    everything = np.ones(len(issues), dtype=bool)
    before = _accuracy(issues, truth, everything)
    unchecked = actions(issues, Policy(drop_check=False)).to_numpy() != "drop"
    assert (~unchecked).sum() > 50  # the rule before drop_check drops these rows
    assert _accuracy(issues, truth, unchecked) < before  # and lowers label accuracy
    assert drop_threshold(issues) == 0.0
    got = actions(issues, Policy())
    assert (got != "drop").all()
    assert (got[~unchecked] == "review").all()  # found, listed for a person, not dropped


def test_clear_errors_are_still_dropped_and_label_accuracy_rises():
    """Well-separated classes with random flips: the flipped rows score far below anything the
    model expects of a right label, so they are dropped; label accuracy rises."""
    issues, truth = _issues("symmetric", spread=0.8)
    before = _accuracy(issues, truth, np.ones(len(issues), dtype=bool))
    assert drop_threshold(issues) > 0.0
    dropped = actions(issues, Policy()).to_numpy() == "drop"
    wrong = issues["given_label"].to_numpy() != truth
    assert dropped.sum() >= 0.3 * wrong.sum()  # the clearest of the planted errors
    assert (wrong[dropped]).mean() > 0.95
    assert _accuracy(issues, truth, ~dropped) > before + 0.03


def test_error_free_overlapping_classes_drop_nothing():
    issues, truth = _issues("none", spread=2.0)
    assert (issues["given_label"].to_numpy() == truth).all()
    assert issues["is_label_issue"].sum() > 20  # flags: rare but right labels
    assert (actions(issues, Policy()) != "drop").all()


def test_the_check_can_be_turned_off_and_never_touches_other_issue_types():
    issues, _ = _issues("feature_dependent", spread=2.5)
    issues["is_invalid_issue"] = False
    issues.loc[:4, "is_invalid_issue"] = True
    got = actions(issues, Policy())
    assert (got[:5] == "drop").all()  # invalid rows: their own action, not gated
    flagged = issues["is_label_issue"].to_numpy(dtype=bool)
    confident = flagged & (issues["label_evidence"].to_numpy(dtype=object) == "confident")
    off = actions(issues, Policy(drop_check=False))
    assert (off[confident] == "drop").all()
