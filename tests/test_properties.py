"""Property-based tests (hypothesis) of the pure detection and decision functions on random
shapes: n, number of classes, classes missing from a training fold, ties in probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.decide import SEVERITY, actions
from tasks.detect import exact_duplicates, health, label_issues, summarize
from tasks.estimate import assemble, combine, fit_predict_fold
from tasks.featurize import FeaturePlan
from tasks.spec import ISSUE_TYPES, Policy

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def labelled_probs(draw):  # noqa: ANN001, ANN201
    """labels covering all K classes, and pred_probs with ties, zeros (a class absent from a
    training fold gets probability 0) and exact one-hots."""
    k = draw(st.integers(2, 6))
    n = draw(st.integers(k * 2, 80))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(k), rng.integers(0, k, size=n - k)])
    rng.shuffle(labels)
    kind = draw(st.sampled_from(["dirichlet", "ties", "zeros", "onehot", "uniform"]))
    if kind == "dirichlet":
        p = rng.dirichlet(np.ones(k), size=n)
    elif kind == "ties":
        p = np.round(rng.dirichlet(np.ones(k), size=n) * 2) + 1.0  # many equal entries
    elif kind == "zeros":
        p = rng.dirichlet(np.ones(k), size=n)
        p[:, rng.integers(0, k)] = 0.0
    elif kind == "onehot":
        p = np.eye(k)[rng.integers(0, k, size=n)] + 1e-6
    else:
        p = np.ones((n, k))
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    return labels, p


@FAST
@given(labelled_probs())
def test_label_issues_shapes_ranges_and_suggestions(data):
    labels, probs = data
    found = label_issues(labels, probs)
    assert len(found) == len(labels)
    assert found["is_label_issue"].dtype == bool
    assert ((found["label_score"] >= 0) & (found["label_score"] <= 1 + 1e-6)).all()
    assert ((found["suggested"] >= 0) & (found["suggested"] < probs.shape[1])).all()
    np.testing.assert_allclose(found["suggested_label_confidence"], probs.max(axis=1), rtol=1e-6)
    # the suggestion is a most probable class (ties allowed)
    chosen = probs[np.arange(len(labels)), found["suggested"].to_numpy()]
    np.testing.assert_allclose(chosen, probs.max(axis=1))


@st.composite
def issues_frames(draw):  # noqa: ANN001, ANN201
    n = draw(st.integers(1, 60))
    types = draw(st.lists(st.sampled_from(ISSUE_TYPES), min_size=0, max_size=6, unique=True))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(index=range(n))
    for t in types:
        flags = pd.array(rng.random(n) < 0.3, dtype="boolean")
        if draw(st.booleans()):
            flags[rng.random(n) < 0.2] = pd.NA  # rows a check did not score
        frame[f"is_{t}_issue"] = flags
        score = rng.random(n)
        score[rng.random(n) < 0.1] = np.nan
        frame[f"{t}_score"] = score
    return frame, types


@FAST
@given(issues_frames())
def test_summary_and_health_agree_with_the_flags(data):
    frame, types = data
    summary = {t: (n, s) for t, n, s in summarize(frame)}
    assert set(summary) == set(types)
    for t in types:
        n, score = summary[t]
        assert n == int(frame[f"is_{t}_issue"].fillna(False).sum())
        assert 0.0 <= score <= 1.0
    h = health(frame)
    assert 0.0 <= h <= 1.0
    if types:
        any_flag = np.logical_or.reduce([frame[f"is_{t}_issue"].fillna(False).to_numpy(bool)
                                         for t in types])
        assert abs(h - (1 - any_flag.mean())) < 1e-12
    else:
        assert h == 1.0


@FAST
@given(issues_frames(), st.fixed_dictionaries(
    {t: st.sampled_from(["keep", "drop", "review", *(["relabel"] if t == "label" else [])])
     for t in ISSUE_TYPES}), st.floats(0.0, 1.0), st.sampled_from(["keep", "drop", "review"]),
    st.integers(0, 2**16))
def test_action_is_the_most_severe_policy_among_a_rows_flags(data, policy_values, threshold,
                                                             fallback, seed):
    frame, types = data
    rng = np.random.default_rng(seed)
    frame = frame.assign(  # suggestions of random confidence, some rows without one
        suggested_label=np.where(rng.random(len(frame)) < 0.2, None, "a"),
        suggested_label_confidence=rng.random(len(frame)).round(2),
        suggested_label_agreement=rng.random(len(frame)).round(1))
    policy = Policy(**policy_values, relabel_threshold=threshold, relabel_fallback=fallback,
                    max_duplicate_share=1.0,  # the copies rule has its own test
                    drop_check=False)  # and so has the estimate that gates label drops
    got = actions(frame, policy)
    for i in range(len(frame)):
        flagged = [t for t in types if frame[f"is_{t}_issue"].fillna(False).iloc[i]]
        wanted = [getattr(policy, t) for t in flagged]
        if "label" in flagged and policy.label == "relabel":
            confident = (pd.notna(frame["suggested_label"].iloc[i])
                         and frame["suggested_label_confidence"].iloc[i] >= threshold
                         and frame["suggested_label_agreement"].iloc[i]
                         >= policy.relabel_agreement)
            wanted[flagged.index("label")] = "relabel" if confident else fallback
        assert got.iloc[i] == max(wanted, key=SEVERITY.get, default="keep")


@FAST
@given(st.integers(1, 60), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**16))
def test_exact_duplicates_keep_one_per_set_and_conflicts_need_two_labels(n, n_values, n_labels,
                                                                         seed):
    rng = np.random.default_rng(seed)
    features = pd.DataFrame({"a": rng.integers(0, n_values, n).astype(float),
                             "b": rng.choice(["x", "y"], n)})
    features.loc[rng.random(n) < 0.2, "a"] = np.nan
    labels = pd.Series(rng.integers(0, n_labels, n)).astype(str)
    out = exact_duplicates(features, labels)
    keys = (features["a"].fillna(-999).astype(str) + "|" + features["b"]).to_numpy()
    copies = pd.Series(range(n)).groupby(keys + "|" + labels.to_numpy())
    assert int(out["is_exact_duplicate_issue"].sum()) == n - copies.ngroups
    for _, members in copies:  # a copy repeats the features and the label
        rows = members.to_numpy()
        assert (~out["is_exact_duplicate_issue"].to_numpy()[rows]).sum() == 1  # one copy kept
    for _, members in pd.Series(range(n)).groupby(keys):
        rows = members.to_numpy()
        conflicting = labels.iloc[rows].nunique() > 1
        assert (out["is_conflicting_label_issue"].to_numpy()[rows] == conflicting).all()
    assert ((out["conflicting_label_score"] > 0) & (out["conflicting_label_score"] <= 1)).all()


@FAST
@given(st.integers(2, 5), st.integers(2, 6), st.integers(0, 2**16))
def test_assemble_puts_every_fold_back_and_combine_normalises(n_folds, k, seed):
    rng = np.random.default_rng(seed)
    n = n_folds * 3 + int(rng.integers(0, 10))
    folds = np.concatenate([np.arange(n_folds), rng.integers(0, n_folds, n - n_folds)])
    parts = [rng.random((int((folds == f).sum()), k)).astype(np.float32)
             for f in range(n_folds)]
    pred = assemble(folds, parts, k)
    assert pred.shape == (n, k)
    for f in range(n_folds):
        np.testing.assert_array_equal(pred[folds == f], parts[f])
    mixed = combine([pred, rng.random((n, k)).astype(np.float32)])
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-5)
    assert (mixed >= 0).all() and (mixed <= 1 + 1e-6).all()


@FAST
@given(st.integers(3, 5), st.integers(0, 2**16))
def test_a_class_missing_from_the_training_folds_gets_probability_zero(k, seed):
    """A class whose only rows sit in the predicted fold: the model never saw it, its column
    stays 0 and the other columns still sum to 1."""
    rng = np.random.default_rng(seed)
    n = 40
    y = rng.integers(0, k - 1, n)
    folds = rng.integers(0, 2, n)
    y[folds == 0] = np.where(rng.random(int((folds == 0).sum())) < 0.3, k - 1, y[folds == 0])
    X = rng.normal(size=(n, 3)) + y[:, None]
    if len(np.unique(y[folds == 1])) < 2:
        y[np.flatnonzero(folds == 1)[:2]] = [0, 1]
    plan = FeaturePlan(numeric=("a", "b", "c"))
    proba = fit_predict_fold(X, y, folds, 0, k, "logreg", plan, seed=0)
    assert proba.shape == (int((folds == 0).sum()), k)
    assert (proba[:, k - 1] == 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
