"""tasks/decide.py drop_plan with a calibration (policy `drop_calibration`): one temperature
fitted on the run's out-of-fold probabilities against the given labels, so that an
over-confident model's rare but right labels are not read as errors. Truth known; real
scikit-learn models and cleanlab."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from tasks.decide import actions, drop_plan, fit_temperature
from tasks.spec import Policy
from tests.conftest import flip_labels


def _frame(noisy: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """The issues frame as detect writes it (label columns only)."""
    from tasks.detect import label_issues

    found = label_issues(noisy, probs)
    names = np.array(["a", "b", "c"], dtype=object)
    return pd.DataFrame({
        "given_label": names[noisy], "suggested_label": names[found["suggested"].to_numpy()],
        "suggested_label_confidence": found["suggested_label_confidence"],
        "is_label_issue": pd.array(found["is_label_issue"].to_numpy(), dtype="boolean"),
        "label_score": found["label_score"], "label_evidence": found["label_evidence"]})


def _blobs(spread: float, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_blobs

    return make_blobs(n_samples=n, centers=[[0, 0], [4, 0], [2, 3.5]], cluster_std=spread,
                      random_state=0)


def test_temperature_recovers_an_over_confident_models_scale_and_the_noise_share():
    """Labels drawn from softmax(z); the model says softmax(2z) (over-confident): the fitted
    temperature is near 2. With 10% of the labels replaced at random, the plain fit is pushed
    toward under-confidence (a larger T); fitted beside a noise share it stays near 2 and the
    share near 10% (of which a third land on the right class by chance)."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 1.5, size=(20_000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(z, axis=1)])
    model = softmax(2.0 * z, axis=1)
    t, eps = fit_temperature(model, labels)
    assert t == pytest.approx(2.0, rel=0.1) and eps == 0.0
    noisy = labels.copy()
    rows = rng.choice(len(labels), len(labels) // 10, replace=False)
    noisy[rows] = rng.integers(0, 3, len(rows))
    t_plain, _ = fit_temperature(model, noisy)
    t_noise, eps = fit_temperature(model, noisy, noise=True)
    assert t_plain > 2.3  # biased by the noise
    assert t_noise == pytest.approx(2.0, rel=0.1)
    assert eps == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("calibration", ["temperature", "temperature_noise"])
def test_an_over_confident_model_at_0pct_noise_drops_nothing_once_calibrated(calibration):
    """Overlapping classes, no label errors, an over-confident model (naive Bayes on each
    feature repeated four times: it counts the same evidence four times, so its out-of-fold
    probabilities sit near 0 and 1): uncalibrated, the check reads its confident mistakes as
    label errors and drops right rows; calibrated, it drops none and they go to review."""
    from sklearn.model_selection import cross_val_predict
    from sklearn.naive_bayes import GaussianNB

    X, y = _blobs(1.5)
    probs = cross_val_predict(GaussianNB(), np.repeat(X, 4, axis=1), y, cv=5,
                              method="predict_proba")
    issues = _frame(y, probs)
    raw = drop_plan(issues, 2.0, probs, "none")
    assert raw.below.sum() > 100  # right labels the uncalibrated check would let go
    plan = drop_plan(issues, 2.0, probs, calibration)
    assert plan.temperature > 2.0  # softened
    assert not plan.below.any()
    got = actions(issues, Policy(drop_calibration=calibration), pred_probs=probs)
    assert (got != "drop").all()
    assert (got[issues["is_label_issue"].to_numpy(dtype=bool)] == "review").all()


@pytest.mark.parametrize("calibration", ["temperature", "temperature_noise"])
def test_random_flips_are_still_dropped_once_calibrated(calibration):
    """Separated classes, 10% random flips, logistic regression: calibrated, the flips are still
    dropped (most of the dropped rows are errors) and label accuracy rises."""
    X, y = _blobs(0.8)
    noisy, probs = flip_labels(X, y, "symmetric", np.random.default_rng(0))
    issues = _frame(noisy, probs)
    wrong = noisy != y
    dropped = actions(issues, Policy(drop_calibration=calibration),
                      pred_probs=probs).to_numpy() == "drop"
    assert dropped.sum() >= 0.3 * wrong.sum()
    assert wrong[dropped].mean() > 0.9
    assert (~wrong[~dropped]).mean() > (~wrong).mean() + 0.03
    # decide fits the plan once (to log it) and hands it over: the same actions
    policy = Policy(drop_calibration=calibration)
    plan = drop_plan(issues, policy.drop_margin, probs, calibration)
    given = actions(issues, policy, pred_probs=probs, plan=plan).to_numpy() == "drop"
    assert (given == dropped).all() and plan.below[dropped].all()


def test_without_matching_probabilities_nothing_is_calibrated():
    """The calibration needs the scored rows' probabilities; without them the check runs on the
    frame as before (temperature 1)."""
    X, y = _blobs(0.8, n=600)
    noisy, probs = flip_labels(X, y, "symmetric", np.random.default_rng(1))
    issues = _frame(noisy, probs)
    plan = drop_plan(issues, 2.0, None, "temperature")
    assert plan.temperature == 1.0
    assert plan.theta == drop_plan(issues, 2.0, None, "none").theta
    assert drop_plan(issues, 2.0, probs[:-1], "temperature").temperature == 1.0
