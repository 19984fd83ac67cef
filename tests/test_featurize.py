import numpy as np
import pandas as pd
import pytest

from tasks.errors import CleansetError
from tasks.featurize import (
    build_transformer,
    encode_labels,
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
    assert dict(plan.dropped) == {"const": "constant", "empty": "all values missing",
                                  "code": "high-cardinality identifier-like strings"}


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
    a, b = plan_folds(y, ("a", "b"), 5, 0), plan_folds(y, ("a", "b"), 5, 0)
    assert np.array_equal(a, b)
    for k in range(5):
        assert (y[a == k] == 1).sum() == 1


def test_class_smaller_than_folds_is_rejected_with_advice():
    y = np.array([0] * 10 + [1] * 3)
    with pytest.raises(CleansetError, match=r"'rare' \(3 rows\).*lower --folds"):
        plan_folds(y, ("common", "rare"), 5, 0)
