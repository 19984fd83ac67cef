import numpy as np
import pandas as pd
import pytest

from tasks.decide import actions
from tasks.detect import issues_frame, label_issues, summarize
from tasks.errors import CleansetError
from tasks.estimate import (
    assemble,
    combine,
    first_pass_flags,
    fit_predict_fold,
    model_inputs,
    supplied_probabilities,
)
from tasks.featurize import (
    encode_labels,
    infer_roles,
    load_user_array,
    plan_folds,
    prepare_frame,
)
from tasks.sample import load_builtin, plant_noise, precision_recall
from tasks.spec import Policy
from tests.conftest import blobs


def oof(frame, n_folds=5, model="logreg", exclude=None):
    plan = infer_roles(frame, "label", [], [], None)
    y, classes = encode_labels(frame["label"])
    folds = plan_folds(y, n_folds, 0)
    X = model_inputs(prepare_frame(frame, plan), plan, (model,))[model]
    parts = [fit_predict_fold(X, y, folds, k, len(classes), model, plan, 0, exclude)
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
    assert actions(issues, Policy(label="drop", drop_check=False)).tolist() == [
        "drop", "keep", "drop", "drop"]
    # relabel without a (confident) suggestion falls back (default fallback: review)
    assert actions(issues, Policy(label="relabel", invalid="keep")).tolist() == [
        "review", "keep", "review", "keep"]
    assert actions(issues, Policy(label="relabel", invalid="keep", relabel_fallback="drop",
                                  drop_check=False)
                   ).tolist() == ["drop", "keep", "drop", "keep"]
    assert actions(issues, Policy(label="review", invalid="keep")).tolist() == [
        "review", "keep", "review", "keep"]


def test_plant_noise_kinds_flip_exactly_the_rate():
    labels = np.repeat([0, 1, 2], 100)
    for kind in ("symmetric", "class_conditional"):
        noisy, mask = plant_noise(labels, 0.2, seed=3, kind=kind)
        assert mask.sum() == 60 and (noisy[mask] != labels[mask]).all()
    noisy, mask = plant_noise(labels, 0.2, seed=3, kind="class_conditional")
    assert ((labels[mask] + 1) % 3 == noisy[mask]).all()


def test_hgb_handles_categoricals_and_missing_values():
    frame = blobs(200)
    frame["colour"] = np.where(frame["x0"] > 0, "warm", "cold")
    frame.loc[::7, "colour"] = None
    frame.loc[::5, "x1"] = np.nan
    y, classes, probs = oof(frame, model="hgb")
    assert probs.shape == (200, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(axis=1) == y).mean() > 0.9


def test_pruned_training_excludes_rows_but_keeps_every_class():
    frame = blobs(60)
    y, classes = encode_labels(frame["label"])
    plan = infer_roles(frame, "label", [], [], None)
    X = model_inputs(prepare_frame(frame, plan), plan, ("logreg",))["logreg"]
    folds = plan_folds(y, 3, 0)
    all_of_class_0 = y == 0
    # excluding a whole class would make it unlearnable: the fold falls back to all rows
    out = fit_predict_fold(X, y, folds, 0, 3, "logreg", plan, 0, all_of_class_0)
    assert out[:, 0].max() > 0.5


def test_second_pass_finds_at_least_as_many_planted_errors_on_small_tabular():
    frame = load_builtin("wine")
    noisy, mask = plant_noise(frame["label"].to_numpy(), 0.2, seed=0)
    frame["label"] = noisy
    y, classes, first = oof(frame)
    flags = first_pass_flags(y, first)
    _, _, second = oof(frame, exclude=flags)
    f1_first = precision_recall(label_issues(y, first)["is_label_issue"], mask)[2]
    f1_second = precision_recall(label_issues(y, second)["is_label_issue"], mask)[2]
    assert f1_second >= f1_first


def test_combine_averages_and_normalises():
    a = np.array([[0.8, 0.2]], dtype=np.float32)
    b = np.array([[0.4, 0.6]], dtype=np.float32)
    assert np.allclose(combine([a, b]), [[0.6, 0.4]])


def test_supplied_probabilities_are_checked_and_mapped_to_scored_classes(tmp_path):
    given = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    out = supplied_probabilities(given, ("a", "b", "rare"), ("a", "b"), np.array([0, 1]))
    assert np.allclose(out, [[0.7 / 0.9, 0.2 / 0.9], [0.5, 0.5]])
    with pytest.raises(CleansetError, match="2 columns but the label has 3 classes"):
        supplied_probabilities(given[:, :2], ("a", "b", "c"), ("a", "b"), np.array([0]))
    np.save(tmp_path / "short.npy", given)
    with pytest.raises(CleansetError, match=r"one row per input row \(5\)"):
        load_user_array(str(tmp_path / "short.npy"), 5, "pred_probs")
    (tmp_path / "junk.npy").write_text("junk")
    with pytest.raises(CleansetError, match="not a readable .npy"):
        load_user_array(str(tmp_path / "junk.npy"), 2, "embeddings")
