import numpy as np
import pandas as pd
import pytest

from tasks.errors import CleansetError
from tasks.featurize import (
    build_transformer,
    design,
    encode_labels,
    group_codes,
    infer_roles,
    plan_folds,
    prepare_frame,
)


def mixed(n=120):
    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "awful", "great", "meh", "superb", "poor"]
    return pd.DataFrame({
        "row_id": range(n),
        "num": rng.normal(size=n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "review": [" ".join(rng.choice(words, 6)) + f" {i}" for i in range(n)],
        "const": 7,
        "empty": [None] * n,
        "code": [f"SKU-{i:05d}" for i in range(n)],
        "when": pd.date_range("2024-01-01", periods=n, freq="D"),
        "flag": rng.random(n) > 0.5,
        "label": rng.choice(["a", "b"], n),
    })


def test_roles_are_inferred_and_reasons_given():
    plan = infer_roles(mixed(), "label", ["row_id"], [], None)
    assert plan.numeric == ("num",)
    assert set(plan.categorical) == {"colour", "flag"}
    assert plan.text == ("review",)
    assert plan.datetime == ("when",)
    dropped = dict(plan.dropped)
    assert dropped.pop("code").startswith("identifier-like (120 distinct values in 120 rows")
    assert dropped == {"const": "constant", "empty": "all values missing"}


def test_explicit_text_and_features_override_inference():
    plan = infer_roles(mixed(), "label", ["row_id"], ["code"], ["num", "code"])
    assert plan.text == ("code",) and plan.numeric == ("num",) and plan.categorical == ()


def test_unknown_feature_column_is_named():
    with pytest.raises(CleansetError, match="'nope'"):
        infer_roles(mixed(), "label", ["row_id"], ["nope"], None)


def test_no_usable_features():
    df = pd.DataFrame({"row_id": range(5), "label": list("ababa"), "c": 1})
    with pytest.raises(CleansetError, match="no usable feature columns"):
        infer_roles(df, "label", ["row_id"], [], None)


def test_transformer_handles_nans_and_all_roles():
    df = mixed()
    df.loc[3, "num"] = np.nan
    df.loc[4, "colour"] = None
    plan = infer_roles(df, "label", ["row_id"], [], None)
    X = build_transformer(plan).fit_transform(prepare_frame(df, plan))
    assert X.shape[0] == len(df)
    assert np.isfinite(X.toarray() if hasattr(X, "toarray") else X).all()


def test_encode_labels_sorts_numbers_numerically():
    y, classes = encode_labels(pd.Series([10, 9, 2, 10]))
    assert classes == ("2", "9", "10") and y.tolist() == [2, 1, 0, 2]


def test_folds_are_stratified_and_deterministic():
    y = np.array([0] * 10 + [1] * 5)
    a, b = plan_folds(y, 5, 0), plan_folds(y, 5, 0)
    assert np.array_equal(a, b)
    for k in range(5):
        assert (y[a == k] == 1).sum() == 1


def test_group_folds_keep_each_group_in_one_fold():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 5)
    y = rng.integers(0, 2, len(groups))
    folds = plan_folds(y, 5, 0, groups)
    for g in range(40):
        assert len(set(folds[groups == g])) == 1
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]


def test_too_few_groups_is_a_message():
    with pytest.raises(CleansetError, match="3 distinct groups, fewer than the 5 folds"):
        plan_folds(np.array([0, 1] * 6), 5, 0, np.array([0, 1, 2] * 4))


def test_missing_group_values_become_their_own_groups():
    codes = group_codes(pd.Series(["a", None, "a", None, "b"]))
    assert codes[0] == codes[2] and len(set(codes)) == 4


def test_rare_classes_are_not_scored_but_returned_for_review():
    df = pd.DataFrame({"row_id": range(23), "x": np.arange(23.0),
                       "label": ["a"] * 10 + ["b"] * 10 + ["rare"] * 3})
    plan, classes, positions, y, folds, rare, counts = design(
        df, "label", "row_id", np.array([], dtype=int), [], None, 5, 0)
    assert classes == ("a", "b") and counts == {"rare": 3}
    assert rare.tolist() == [20, 21, 22] and positions.tolist() == list(range(20))


def test_fewer_than_two_scorable_classes_is_a_message():
    df = pd.DataFrame({"row_id": range(13), "x": np.arange(13.0),
                       "label": ["a"] * 10 + ["rare"] * 3})
    with pytest.raises(CleansetError, match=r"fewer than two classes.*'rare' \(3 rows\)"):
        design(df, "label", "row_id", np.array([], dtype=int), [], None, 5, 0)


def test_a_regression_target_is_refused_with_what_was_seen():
    from tasks.featurize import refuse_continuous_label

    rng = np.random.default_rng(0)
    with pytest.raises(CleansetError, match=r"'target' holds 200 distinct numbers in 200 rows"):
        refuse_continuous_label(pd.Series(rng.normal(size=200)), "target")
    refuse_continuous_label(pd.Series(rng.integers(0, 11, 500)), "grade")  # ordinal: fine
    refuse_continuous_label(pd.Series([f"c{i}" for i in range(300)]), "name")  # text: not here
