import numpy as np
import pandas as pd

from tasks.decide import actions
from tasks.detect import issues_frame, label_issues, summarize
from tasks.estimate import assemble, fit_predict_fold
from tasks.featurize import encode_labels, infer_roles, plan_folds, prepare_frame
from tasks.sample import plant_noise, precision_recall
from tasks.spec import Policy
from tests.conftest import blobs


def oof(frame, n_folds=5):
    plan = infer_roles(frame, "label", [], [], None)
    y, classes = encode_labels(frame["label"])
    folds = plan_folds(y, classes, n_folds, 0)
    X = prepare_frame(frame, plan)
    parts = [fit_predict_fold(X, y, folds, k, len(classes), "logreg", plan, 0)
             for k in range(n_folds)]
    return y, classes, assemble(folds, parts, len(classes))


def test_out_of_fold_probabilities_are_valid_and_accurate():
    y, classes, probs = oof(blobs())
    assert probs.shape == (300, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(axis=1) == y).mean() > 0.95


def test_planted_flips_are_found_on_an_easy_case():
    frame = blobs()
    noisy, mask = plant_noise(frame["label"].to_numpy(), 0.1, seed=1)
    frame["label"] = noisy
    y, classes, probs = oof(frame)
    found = label_issues(y, probs)
    p, r, _ = precision_recall(found["is_label_issue"].to_numpy(), mask)
    assert r >= 0.9 and p >= 0.8
    names = np.array(classes)[found["suggested"]]
    truth = blobs()["label"].to_numpy()
    assert (names[mask] == truth[mask]).mean() > 0.9  # suggestions restore the true label


def test_issues_frame_covers_every_row_and_quarantine():
    frame = blobs(60)
    y, classes, probs = oof(frame.iloc[:57].reset_index(drop=True), n_folds=3)
    out = issues_frame(pd.Series(range(60)), frame["label"], np.arange(57), y, classes, probs,
                       np.array([57, 58, 59]))
    assert len(out) == 60 and out["row_id"].tolist()[:2] == ["0", "1"]
    assert out["is_invalid_issue"].tolist()[-3:] == [True] * 3
    assert out["is_label_issue"].isna().sum() == 3 and out["label_score"].between(0, 1).sum() == 57
    summary = dict((t, n) for t, n, _ in summarize(out))
    assert summary["invalid"] == 3


def test_actions_follow_policy_and_most_severe_wins():
    issues = pd.DataFrame({"is_label_issue": pd.array([True, False, True, None], dtype="boolean"),
                           "is_invalid_issue": [False, False, True, True]})
    assert actions(issues, Policy()).tolist() == ["drop", "keep", "drop", "drop"]
    assert actions(issues, Policy(label="review", invalid="keep")).tolist() == [
        "review", "keep", "review", "keep"]


def test_plant_noise_kinds_flip_exactly_the_rate():
    labels = np.repeat([0, 1, 2], 100)
    for kind in ("symmetric", "class_conditional"):
        noisy, mask = plant_noise(labels, 0.2, seed=3, kind=kind)
        assert mask.sum() == 60 and (noisy[mask] != labels[mask]).all()
    noisy, mask = plant_noise(labels, 0.2, seed=3, kind="class_conditional")
    assert ((labels[mask] + 1) % 3 == noisy[mask]).all()
