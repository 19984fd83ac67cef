"""tasks/annotators.py: CROWDLAB consensus and annotator quality on simulated annotators whose
accuracies are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.annotators import (
    activelab_scores,
    crowdlab,
    encode_annotations,
    long_to_wide,
    majority_vote,
)
from tasks.errors import CleansetError

ACCURACY = {"ann": 0.95, "bob": 0.85, "cy": 0.7, "dee": 0.5, "rand": 1 / 3}


def simulate(n: int = 600, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Truth, one label column per annotator (each labels 60% of rows), and model
    probabilities that are right 85% of the time."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    names = np.array(["a", "b", "c"], dtype=object)
    wide = {}
    for who, acc in ACCURACY.items():
        right = rng.random(n) < acc
        label = np.where(right, truth, (truth + rng.integers(1, 3, n)) % 3)
        seen = rng.random(n) < 0.6
        wide[who] = pd.Series(names[label], dtype=object).where(seen, None)
    wide = pd.DataFrame(wide)
    empty = wide.isna().all(axis=1).to_numpy()
    wide.loc[empty, "ann"] = names[truth[empty]]
    guess = np.where(rng.random(n) < 0.85, truth, (truth + 1) % 3)
    probs = np.full((n, 3), 0.15)
    probs[np.arange(n), guess] = 0.7
    return truth, wide, probs


def test_crowdlab_beats_majority_vote_and_ranks_annotators():
    from scipy.stats import spearmanr

    truth, wide, probs = simulate()
    codes, classes = encode_annotations(wide)
    assert classes == ("a", "b", "c")
    vote = majority_vote(codes)
    consensus, annotators = crowdlab(codes, probs, list(wide.columns), classes)
    truth_text = np.array(classes, dtype=object)[truth]
    crowd_acc = (consensus["consensus_label"].to_numpy() == truth_text).mean()
    vote_acc = (vote == truth).mean()
    assert crowd_acc >= vote_acc + 0.05 and crowd_acc >= 0.8  # seed 0: 0.857 vs 0.773
    quality = annotators.set_index("annotator")["annotator_quality"]
    rho = spearmanr([quality[a] for a in ACCURACY], list(ACCURACY.values())).statistic
    assert rho >= 0.9 and annotators["annotator"].iloc[-1] == "rand"
    assert consensus["consensus_quality_score"].between(0, 1).all()


def test_long_form_and_rows_nobody_labeled():
    long = pd.DataFrame({"id": [1, 1, 2, 2, 2], "who": ["x", "y", "x", "y", "y"],
                         "label": ["a", "b", "a", "a", "b"]})
    wide = long_to_wide(long, "id", "who", "label")
    assert wide.loc[2, "y"] == "b" and wide.loc[1, "x"] == "a"
    with pytest.raises(CleansetError, match="1 row"):
        encode_annotations(pd.DataFrame({"x": ["a", None, "b"], "y": ["b", None, "a"]}))
    with pytest.raises(CleansetError, match="'rater'"):
        long_to_wide(long, "id", "rater", "label")


@pytest.mark.parametrize(("k", "with_unlabeled"), [(2, True), (3, False), (5, True)])
def test_activelab_scores_match_cleanlab(k, with_unlabeled):
    from cleanlab.multiannotator import get_active_learning_scores

    rng = np.random.default_rng(k)
    probs = rng.dirichlet(np.ones(k) * 0.5, size=300)
    probs[:5] = np.eye(k)[rng.integers(0, k, 5)]  # exact zeros: cleanlab clips them
    labels = rng.integers(0, k, 300)
    labels[:k] = np.arange(k)  # every class present
    unlabeled = rng.dirichlet(np.ones(k), size=40) if with_unlabeled else None
    if with_unlabeled:
        unlabeled[0] = np.eye(k)[0]
    ours, ours_unlabeled = activelab_scores(labels, probs, unlabeled)
    theirs, theirs_unlabeled = get_active_learning_scores(
        labels.astype(np.float64).reshape(-1, 1), probs, unlabeled)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert len(ours_unlabeled) == len(theirs_unlabeled)
    np.testing.assert_allclose(ours_unlabeled, theirs_unlabeled, rtol=0, atol=1e-12)
