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


# ---- the pipeline's pure side: vote, consensus, settings -------------------------------------

def test_majority_vote_is_deterministic_and_breaks_ties_by_overall_frequency():
    from tasks.annotators import majority_vote

    codes = np.array([[0, 1, np.nan], [1, 1, 0], [np.nan] * 3, [2, 0, np.nan], [2, 2, 1]])
    # class 1 is labeled 4 times, 0 and 2 three times each: the tie 0-vs-1 goes to 1 (more
    # frequent), 2-vs-0 to 0 (equally frequent: the lower index); nobody labeled row 2: -1
    assert majority_vote(codes).tolist() == [1, 1, -1, 0, 2]
    shuffled = codes[:, ::-1]
    assert majority_vote(shuffled).tolist() == majority_vote(codes).tolist()


def test_vote_table_appends_the_vote_in_the_annotators_type_and_names_missing_columns():
    import pyarrow as pa

    from tasks.annotators import vote_table

    table = pa.table({"x": [1.0, 2.0, 3.0], "a": [1, 2, None], "b": [2, 2, None],
                      "c": [None, 1, None]})
    out, counts = vote_table(table, ["a", "b", "c"], "y")
    assert out.column("y").to_pylist() == [2, 2, None]  # tie 1-vs-2: 2 is labeled more often
    assert out.schema.field("y").type == pa.int64()
    assert counts == {"rows": 3, "labeled_twice": 2, "unlabeled": 1, "disagree": 2}
    mixed = pa.table({"x": [1.0, 2.0], "a": ["cat", "dog"], "b": [1, 1]})
    assert vote_table(mixed, ["a", "b"], "y")[0].schema.field("y").type == pa.string()
    with pytest.raises(CleansetError, match="annotator column.*'d'.*available columns: x, a"):
        vote_table(table, ["a", "d"], "y")
    with pytest.raises(CleansetError, match="already has a column 'x'"):
        vote_table(table, ["a", "b"], "x")


def test_consensus_labels_rank_a_random_annotator_last_and_beat_the_vote():
    from tasks.annotators import annotation_codes, annotation_texts, consensus_labels
    from tasks.annotators import majority_vote as vote

    truth, wide, probs = simulate(seed=1)
    texts = annotation_texts(wide)
    codes, classes = annotation_codes(texts)
    voted = vote(codes)
    found = consensus_labels(texts, list(wide.columns), voted, probs, classes)
    chosen, rows, annotators = found
    assert (chosen == truth).mean() >= (voted == truth).mean() + 0.05
    assert annotators["annotator"].iloc[-1] == "rand"
    assert list(annotators.columns) == ["annotator", "annotator_quality",
                                        "agreement_with_consensus", "worst_class",
                                        "rows_labeled"]
    assert rows["consensus_quality"].between(0, 1).all() and len(rows) == len(truth)
    # one annotator, or nobody labeling a row twice: the vote stands, with the reason
    one = consensus_labels(texts[:, :1], ["ann"], voted, probs, classes)
    assert one == "fewer than two annotators labeled the scored rows"
    apart = np.where(np.arange(len(truth))[:, None] % 2 == np.arange(2), texts[:, :2], None)
    assert consensus_labels(apart, ["ann", "bob"], voted, probs, classes) == (
        "no row is labeled by two annotators")


def test_annotator_settings(tmp_path):
    from tasks.featurize import ANNOTATOR, infer_roles
    from tasks.spec import CONSENSUS_LABEL, build_spec, load_dataset_spec

    spec = build_spec(source="x.csv", annotators="a,b".split(","))
    assert spec.label == CONSENSUS_LABEL and spec.annotators == ("a", "b")
    assert spec.feature_roles == {"a": "annotator", "b": "annotator"}
    assert build_spec(source="x.csv", label="y", annotators=["a"]).label == "y"
    with pytest.raises(CleansetError, match="label 'a' is one of the annotators"):
        build_spec(source="x.csv", label="a", annotators=["a", "b"])
    with pytest.raises(CleansetError, match="cannot be a feature"):
        build_spec(source="x.csv", annotators=["a", "b"], features=["a", "x"])
    with pytest.raises(CleansetError, match="classification only"):
        build_spec(source="x.csv", annotators=["a", "b"], task="regression")
    with pytest.raises(CleansetError, match="cannot be combined"):
        build_spec(source="x.csv", annotators=["a", "b"], label_columns=["t1", "t2"])
    with pytest.raises(CleansetError, match="classification only"):
        build_spec(source="x.csv", annotators=["a", "b"], task="multilabel")
    with pytest.raises(CleansetError, match="named more than once"):
        build_spec(source="x.csv", annotators=["a", "a"])
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "a": ["u", "v", "u"], "b": ["u", "u", "v"],
                          "y": ["u", "v", "v"]})
    plan = infer_roles(frame, "y", [], [], None, spec.feature_roles)
    assert plan.used == ["x"] and ("a", ANNOTATOR) in plan.dropped
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "cleanset.yaml").write_text("annotators: [a, b]\n")
    with pytest.raises(CleansetError, match="not supported in a dataset folder"):
        load_dataset_spec(folder)


def test_precheck_names_a_missing_annotator_column_and_needs_no_label_column(tmp_path):
    from tasks.sources import precheck
    from tasks.spec import build_spec

    path = tmp_path / "d.csv"
    pd.DataFrame({"x": [1, 2], "ann": ["a", "b"], "bob": ["a", "a"]}).to_csv(path, index=False)
    precheck(build_spec(source=str(path), annotators=["ann", "bob"]))
    with pytest.raises(CleansetError, match="--annotators column 'bbo'.*did you mean 'bob'"):
        precheck(build_spec(source=str(path), annotators=["ann", "bbo"]))
    with pytest.raises(CleansetError, match="already has a column 'x'.*default consensus_label"):
        precheck(build_spec(source=str(path), annotators=["ann", "bob"], label="x"))
