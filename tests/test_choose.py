"""Model choice by measurement, the model check, safe automatic fixes and column roles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_circles

from tasks.choose import choose_model, stratified_sample
from tasks.decide import actions, apply_policy
from tasks.errors import CleansetError
from tasks.estimate import check_model, knn_probs, model_inputs
from tasks.featurize import encode_labels, infer_roles, prepare_frame
from tasks.knn import dense_embedding, knn_graph
from tasks.spec import Policy, build_spec


def inputs_for(frame: pd.DataFrame, label: str = "label"):
    plan = infer_roles(frame, label, [], [], None)
    y, classes = encode_labels(frame[label])
    prepared = prepare_frame(frame, plan)
    inputs = model_inputs(prepared, plan, ("logreg", "logreg-c0.1", "logreg-c10", "hgb"))
    inputs["knn"] = dense_embedding(inputs["logreg"])
    return inputs, y, len(classes), plan


def test_a_non_linear_boundary_is_not_given_to_logistic_regression():
    X, y = make_circles(n_samples=1200, noise=0.08, factor=0.5, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b"]).assign(label=y)
    inputs, y, k, plan = inputs_for(frame)
    choice = choose_model(inputs, y, k, plan, n_folds=5)
    by_model = {s.model: s for s in choice.screening}
    assert choice.models[0].split("-")[0] in ("hgb", "knn")
    assert by_model["logreg"].log_loss > 0.6  # a line cannot separate circles: near chance
    assert min(s.log_loss for s in choice.screening if s.chosen) < 0.3
    assert sum(s.chosen for s in choice.screening) == len(choice.models)


def test_linear_data_with_many_noise_columns_goes_to_logistic_regression():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 60))
    y = (X[:, :8] @ rng.normal(size=8) + 0.3 * rng.normal(size=600) > 0).astype(int)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(60)]).assign(label=y)
    inputs, y, k, plan = inputs_for(frame)
    choice = choose_model(inputs, y, k, plan, n_folds=5)
    assert choice.models[0].startswith("logreg")
    best = min(choice.screening, key=lambda s: s.log_loss)
    assert best.model.startswith("logreg")


def test_the_budget_keeps_a_slow_family_out():
    X, y = make_circles(n_samples=1200, noise=0.08, factor=0.5, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b"]).assign(label=y)
    inputs, y, k, plan = inputs_for(frame)
    del inputs["knn"]
    # an explicit budget: the default one follows measured seconds, which a busy machine skews
    free = choose_model(inputs, y, k, plan, n_folds=5, budget=1e6)
    assert free.models[0] == "hgb"
    tight = choose_model(inputs, y, k, plan, n_folds=5, budget=1e-6)
    assert "hgb" not in tight.models and len(tight.models) == 1
    hgb = next(s for s in tight.screening if s.model == "hgb")
    assert not hgb.within_budget and hgb.seconds == 0.0  # not even screened: the probe said so
    assert tight.budget_seconds == 0.0


def test_forcing_a_family_and_refusing_impossible_ones():
    frame = pd.DataFrame({"review": ["good film"] * 30 + ["bad plot"] * 30,
                          "label": ["pos"] * 30 + ["neg"] * 30})
    plan = infer_roles(frame, "label", [], ["review"], None)
    y, _ = encode_labels(frame["label"])
    inputs = model_inputs(prepare_frame(frame, plan), plan, ("logreg", "nb"))
    with pytest.raises(CleansetError, match="does not take text"):
        choose_model(inputs, y, 2, plan, 5, model="hgb")
    forced = choose_model(inputs, y, 2, plan, 5, model="nb")
    assert forced.models == ("nb",) and forced.reason.startswith("set in config")


def test_stratified_sample_keeps_every_class():
    y = np.array([0] * 5000 + [1] * 30 + [2] * 4)
    picked = stratified_sample(y, 500, 0)
    assert set(y[picked]) == {0, 1, 2} and 490 <= len(picked) <= 520


def test_random_labels_make_a_model_too_weak_to_act():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300).astype(np.float32)
    check = check_model(y, probs, 3)
    assert not check.trusted and "too weak" in check.warning
    good = np.eye(3, dtype=np.float32)[y] * 0.9 + 0.1 / 3
    assert check_model(y, good, 3).trusted


def label_issue_rows(confidence, agreement):
    n = len(confidence)
    return pd.DataFrame({
        "row_id": [str(i) for i in range(n)], "given_label": ["a"] * n,
        "suggested_label": ["b"] * n, "suggested_label_confidence": confidence,
        "suggested_label_agreement": agreement,
        "is_label_issue": pd.array([True] * n, dtype="boolean"),
        "is_invalid_issue": [False] * n})


def test_label_issues_are_dropped_only_when_the_model_is_trusted():
    issues = label_issue_rows([0.99, 0.6], [1.0, 0.3])
    # two rows, both flagged: no estimate of the error rate lets a drop clear it (drop_check)
    assert actions(issues, Policy()).tolist() == ["review", "review"]
    assert actions(issues, Policy(drop_check=False)).tolist() == ["drop", "drop"]
    assert actions(issues, Policy(), trusted=False).tolist() == ["review", "review"]
    out = apply_policy(issues, Policy())
    assert out["final_label"].tolist() == ["a", "a"]  # no label is rewritten by default


def test_relabel_needs_confidence_agreement_and_a_trusted_model():
    issues = label_issue_rows([0.99, 0.99, 0.80, 0.99], [1.0, 0.3, 1.0, np.nan])
    policy = Policy(label="relabel")
    assert actions(issues, policy).tolist() == ["relabel", "review", "review", "review"]
    assert actions(issues, policy, trusted=False).tolist() == ["review"] * 4
    # a weak model drops nothing either, even when the policy says drop
    assert actions(issues, Policy(label="drop"), trusted=False).tolist() == ["review"] * 4
    out = apply_policy(issues, policy)
    assert out["final_label"].tolist() == ["b", "a", "a", "a"]


def test_rows_the_model_only_disagrees_with_are_flagged_for_review_not_dropped():
    from tasks.detect import label_issues

    labels = np.array([0] * 50 + [1] * 50)
    probs = np.where(labels[:, None] == np.arange(2), 0.9, 0.1)
    probs[0] = [0.4, 0.6]  # a hard row: the model leans the other way, not confidently
    probs[1] = [0.02, 0.98]  # a confident contradiction
    found = label_issues(labels, probs)
    assert found["is_label_issue"].tolist() == [True, True] + [False] * 98
    assert found["label_evidence"].tolist()[:3] == ["disagreement", "confident", None]
    issues = label_issue_rows([0.55, 0.98], [1.0, 1.0])
    issues["label_evidence"] = ["disagreement", "confident"]
    assert actions(issues, Policy(drop_check=False)).tolist() == ["review", "drop"]
    assert actions(issues, Policy(label="relabel")).tolist() == ["review", "relabel"]


def test_label_issues_on_text_go_to_review_unless_set():
    issues = label_issue_rows([0.99, 0.6], [1.0, 0.3])
    issues["is_invalid_issue"] = [False, True]  # other types keep their action on text
    assert actions(issues, Policy(), text=True).tolist() == ["review", "drop"]
    assert actions(issues, Policy(label_with_text="drop", drop_check=False), text=True
                   ).tolist() == ["drop", "drop"]
    relabel = Policy(label="relabel")  # a relabel the user asked for, where it is safe, stays
    assert actions(issues, relabel, text=True).tolist() == ["relabel", "drop"]


def test_dry_run_changes_and_drops_nothing():
    issues = label_issue_rows([0.99, 0.99], [1.0, 1.0])
    issues["is_invalid_issue"] = [True, False]
    dry = build_spec(source="x.csv", label="y", dry_run=True).policy
    assert dry.auto_fix is False
    assert actions(issues, dry).tolist() == ["review", "review"]
    assert actions(issues, Policy(label="relabel")).tolist() == ["drop", "relabel"]


def test_common_exact_copies_are_kept_rare_ones_dropped():
    n = 200
    rows = pd.DataFrame({"is_exact_duplicate_issue": [False] * n})
    rows.loc[:1, "is_exact_duplicate_issue"] = True  # 1% of rows: accidental copies
    assert (actions(rows, Policy()) == "drop").sum() == 2
    rows.loc[:9, "is_exact_duplicate_issue"] = True  # 5%: a property of the data
    assert (actions(rows, Policy()) == "drop").sum() == 0
    assert (actions(rows, Policy(max_duplicate_share=0.1)) == "drop").sum() == 10


def test_forced_roles_and_named_identifiers_are_used():
    n = 400
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "zip": [f"z{v}" for v in rng.integers(0, 150, n)],  # 150 values in 400 rows
        "code": [f"c{i}" for i in range(n)],  # unique per row: identifier-like
        "note": ["short"] * (n - 1) + ["other"],
        "x": rng.normal(size=n), "label": rng.integers(0, 2, n)})
    plan = infer_roles(frame, "label", [], [], None)
    assert plan.high_cardinality == ("zip",) and "code" in dict(plan.dropped)
    assert "name it with --feature" in dict(plan.dropped)["code"]
    forced = infer_roles(frame, "label", [], [], None,
                         roles={"code": "high_cardinality", "note": "text", "x": "ignore"})
    assert forced.high_cardinality == ("zip", "code") and forced.text == ("note",)
    assert "x" not in forced.used and dict(forced.dropped)["x"] == "role set to ignore"
    named = infer_roles(frame, "label", [], [], ["code", "x"])
    assert named.high_cardinality == ("code",)
    with pytest.raises(CleansetError, match="unknown role"):
        infer_roles(frame, "label", [], [], None, roles={"x": "numbers"})
    with pytest.raises(CleansetError, match="not in the data"):
        infer_roles(frame, "label", [], [], None, roles={"nope": "numeric"})


def test_a_high_cardinality_column_carrying_the_signal_is_learnt():
    rng = np.random.default_rng(1)
    n = 3000
    zips = rng.integers(0, 400, n)
    label = (zips % 2).astype(int)  # the zip decides the class
    frame = pd.DataFrame({"zip": [f"z{z:04d}" for z in zips], "noise": rng.normal(size=n),
                          "label": label})
    inputs, y, k, plan = inputs_for(frame)
    assert plan.high_cardinality == ("zip",)
    choice = choose_model(inputs, y, k, plan, n_folds=5)
    best = min(choice.screening, key=lambda s: s.log_loss)
    assert best.accuracy > 0.9


def test_knn_probabilities_come_from_the_neighbours_and_never_the_row_itself():
    X = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 1, 1])
    graph, _, _ = knn_graph(X, k=2, exact=True)
    probs = knn_probs(graph, y, 2)
    assert probs.shape == (6, 2) and np.allclose(probs.sum(axis=1), 1)
    assert probs[4].argmax() == 1
    assert probs[2, 1] < 0.5  # row 2's own label (1) is not among its neighbours' votes
