"""Issue 16: regression targets. Pure parts first (task decision, label issues, policy, review
checks, evaluation), then one dataset end to end through the real flow (warehouse, review apply
with a numeric value, the next run)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from tasks.choose import cannot_pay, choose_model
from tasks.decide import apply_decisions, apply_policy
from tasks.detect import enabled_types, regression_label_issues
from tasks.errors import CleansetError
from tasks.estimate import check_regression, model_inputs, out_of_fold_probs
from tasks.evaluate import train_and_score_regression
from tasks.featurize import (
    infer_roles,
    load_user_array,
    plan_folds,
    prepare_frame,
    reviewed_labels,
    target_strata,
)
from tasks.review import check_decisions
from tasks.spec import DatasetSpec, Policy, build_spec
from tasks.task_type import decide_task


def linear_frame(n: int = 300, seed: int = 0, errors: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """y = 3 x0 - 2 x1 + a category's offset + small noise; `errors` rows shifted by 10 SD."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    colour = rng.choice(["red", "green", "blue"], n)
    y = 3 * x[:, 0] - 2 * x[:, 1] + pd.Series(colour).map(
        {"red": 0.0, "green": 1.5, "blue": -1.5}).to_numpy() + rng.normal(0, 0.3, n)
    planted = np.zeros(n, dtype=bool)
    if errors:
        rows = rng.choice(n, errors, replace=False)
        y[rows] += 10 * y.std() * rng.choice([-1, 1], errors)
        planted[rows] = True
    frame = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "colour": colour,
                          "price": y.round(4)})
    return frame, planted


# ---- the task decision ------------------------------------------------------------------------

def test_auto_takes_many_distinct_numbers_as_regression_and_says_why():
    task, why = decide_task(pd.Series(np.random.default_rng(0).normal(size=200)), "y")
    assert task == "regression" and "200 distinct values in 200 rows" in why
    assert decide_task(pd.Series(np.arange(500) % 11), "grade")[0] == "classification"
    assert decide_task(pd.Series(["cat", "dog"] * 50), "pet")[0] == "classification"
    # numbers read as text (a CSV column) count as numbers
    assert decide_task(pd.Series([f"{v:.3f}" for v in range(100)]), "y")[0] == "regression"


def test_free_text_label_is_refused_with_what_was_seen():
    words = pd.Series([f"the customer wrote note number {i}" for i in range(200)])
    with pytest.raises(CleansetError, match=r"200 distinct text values in 200 rows.*free text"):
        decide_task(words, "comment")
    codes = pd.Series([f"class_{i:04d}" for i in range(200)])  # many classes, not free text
    assert decide_task(codes, "code")[0] == "classification"


def test_numbers_with_text_mixed_in_are_refused_naming_the_text():
    values = pd.Series([str(v) for v in np.arange(200) * 1.5] + ["n/a", "twelve"])
    with pytest.raises(CleansetError, match="'n/a', 'twelve'"):
        decide_task(values, "price")
    with pytest.raises(CleansetError, match="2 of its 202 values are not numbers"):
        decide_task(values, "price", "regression")
    assert decide_task(values, "price", "classification")[0] == "classification"


def test_tag_sets_are_classes_for_now_and_the_reason_says_so():
    tags = pd.Series(["sports;politics", "sports", "politics", "tech;sports"] * 30)
    task, why = decide_task(tags, "tags")
    assert task == "classification" and "tag sets separated by ';'" in why
    assert "tag sets" not in decide_task(pd.Series(["a", "b"] * 40), "y")[1]


def test_multilabel_is_a_task_setting():
    assert build_spec(source="x.csv", label="tags", task="multilabel").task == "multilabel"
    assert DatasetSpec(source="x.csv", label="y").task == "auto"


# ---- estimate and detect ------------------------------------------------------------------------

def test_regressors_are_chosen_by_out_of_fold_mse_and_find_shifted_values():
    frame, planted = linear_frame(300, errors=12)
    y = frame.pop("price").to_numpy()
    plan = infer_roles(frame, "price", [], [], None)
    X = prepare_frame(frame, plan)
    inputs = model_inputs(X, plan, ("ridge", "hgbr"))
    choice = choose_model(inputs, y, 0, plan, 5, regression=True)
    assert choice.models[0] in ("ridge", "hgbr") and "MSE" in choice.reason
    assert all(s.regression for s in choice.screening)
    folds = plan_folds(target_strata(y, 5), 5, 0)
    pred = out_of_fold_probs(inputs, y, folds, 1, plan, choice)
    assert pred.shape == (300, 1)
    assert check_regression(y[~planted], pred[~planted]).trusted
    found = regression_label_issues(y, pred)
    flagged = found["is_label_issue"].to_numpy()
    assert flagged[planted].all() and flagged[~planted].sum() <= 3
    assert (found["label_score"][planted].max() < found["label_score"][~planted].median())
    inside = ((found["suggested_value_low"] <= found["suggested_value"])
              & (found["suggested_value"] <= found["suggested_value_high"]))
    assert inside.all()


def test_trees_that_cannot_pay_stop_after_their_first_screening_fold():
    """A linear target: ridge leads, the boosted trees are stopped after one of three screening
    folds (no MSE, not chosen, the reason says why). A step-shaped target: the trees lead and
    are screened whole. Forcing the trees screens them whole too."""
    frame, _ = linear_frame(600)
    y = frame.pop("price").to_numpy()
    plan = infer_roles(frame, "price", [], [], None)
    inputs = model_inputs(prepare_frame(frame, plan), plan, ("ridge", "hgbr"))
    choice = choose_model(inputs, y, 0, plan, 5, regression=True)
    by_model = {s.model: s for s in choice.screening}
    assert choice.models == ("ridge",)
    trees = by_model["hgbr"]
    assert trees.stopped.startswith("stopped after its first fold: MSE")
    assert "ridge's" in trees.stopped
    assert np.isnan(trees.log_loss) and not trees.chosen and trees.within_budget
    assert by_model["ridge"].stopped == ""
    forced = choose_model(inputs, y, 0, plan, 5, model="hgb", regression=True)
    assert forced.models == ("hgbr",) and forced.screening[0].stopped == ""

    step = np.where(frame["x0"] > 0, 10.0, 0.0) * np.where(frame["x1"] > 0.5, 1.0, -1.0)
    choice = choose_model(inputs, step, 0, plan, 5, regression=True)
    assert "hgbr" in choice.models
    assert all(s.stopped == "" for s in choice.screening)


def test_regression_runs_only_the_checks_that_apply():
    types = enabled_types({}, "regression")
    assert {"label", "outlier", "near_duplicate", "non_iid", "null"} <= set(types)
    assert "class_imbalance" not in types and "underperforming_group" not in types
    assert "conflicting_label" not in types  # another value for the same features is noise
    assert "class_imbalance" in enabled_types({}, "classification")


# ---- policy and review --------------------------------------------------------------------------

def issues(given: list[float], suggested: list[float], flagged: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({"row_id": [str(i) for i in range(len(given))],
                         "given_label": [f"{v:g}" for v in given],
                         "suggested_label": [f"{v:g}" for v in suggested],
                         "suggested_label_confidence": np.nan,
                         "suggested_label_agreement": np.nan,
                         "is_label_issue": flagged, "label_score": 0.5})


def test_a_regression_label_issue_is_reviewed_unless_relabel_is_asked_for():
    frame = issues([1.0, 50.0], [1.1, 2.0], [False, True])
    default = apply_policy(frame, Policy(), trusted=True, task="regression")
    assert default["action"].tolist() == ["keep", "review"]
    assert default["final_label"].tolist() == ["1", "50"]  # nothing changed
    assert Policy().label == "drop"  # classification keeps its own default
    asked = apply_policy(frame, Policy(label_regression="relabel"), trusted=True,
                         task="regression")
    assert asked["action"].tolist() == ["keep", "relabel"]
    assert asked["final_label"].tolist() == ["1", "2"]
    weak = apply_policy(frame, Policy(label_regression="relabel"), trusted=False,
                        task="regression")
    assert weak["action"].tolist() == ["keep", "review"]


def test_review_takes_numeric_new_values_for_a_regression():
    filled = pd.DataFrame({"row_id": ["1", "2"], "decision": ["relabel", "relabel"],
                           "new_label": ["12.75", "about 3"]})
    with pytest.raises(CleansetError, match=r"not a number.*line 3 new_label 'about 3'"):
        check_decisions(filled, "d", {"1", "2"}, set(), task="regression")
    ok = check_decisions(filled.iloc[:1], "d", {"1", "2"}, set(), task="regression")
    assert ok["new_label"].tolist() == ["12.75"]
    decided, _ = apply_decisions(apply_policy(issues([1.0, 50.0], [1.1, 2.0], [False, True]),
                                              Policy(), task="regression"),
                                 ok.assign(row_id="1", note=""))
    assert decided.loc[1, "final_label"] == "12.75" and decided.loc[1, "action"] == "relabel"
    labels, _, n = reviewed_labels(pd.Series([1, 50, 3]), pd.Series(["0", "1", "2"]),
                                   ok.assign(row_id="1", note=""))
    assert n == 1 and labels.tolist() == [1.0, 12.75, 3.0]


def test_evaluation_reports_rmse_mae_r2():
    frame, _ = linear_frame(240)
    y = frame.pop("price").to_numpy()
    plan = infer_roles(frame, "price", [], [], None)
    X = prepare_frame(frame, plan)
    scores = train_and_score_regression(X.iloc[:200], y[:200], X.iloc[200:], y[200:], plan,
                                        ("ridge",))
    assert set(scores) == {"rmse", "mae", "r2"}
    assert scores["r2"] > 0.9 and 0 < scores["mae"] <= scores["rmse"] < 1.0


# ---- end to end ---------------------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_a_regression_dataset_end_to_end(workdir):
    """auto decides regression (reason in runs), the shifted values are flagged with suggested
    values and intervals, nothing changes by default, a reviewer's numeric value is applied in
    the next run, and the evaluation reports RMSE / MAE / R^2."""
    from flows.clean import clean_dataset
    from tasks.report import load_report_data, render_html
    from tasks.review import apply_review_file, review_queue

    frame, planted = linear_frame(300, errors=10)
    frame.to_csv(workdir / "prices.csv", index=False)
    db = workdir / "w.duckdb"
    spec = DatasetSpec(source=str(workdir / "prices.csv"), label="price", db=str(db),
                       eval_holdout=0.2)
    summary = clean_dataset(spec)
    assert summary.task == "regression" and "distinct values" in summary.task_reason
    with duckdb.connect(str(db), read_only=True) as con:
        task, reason = con.execute("SELECT task, task_reason FROM runs").fetchall()[0]
        rows = con.execute(
            "SELECT CAST(row_id AS INT), is_label_issue, given_value, suggested_value, "
            "suggested_value_low, suggested_value_high, suggested_label, action FROM issues "
            "ORDER BY 1").fetchall()
        evaluation = con.execute("SELECT trained_on, rmse, mae, r2, accuracy FROM evaluations "
                                 "ORDER BY trained_on").fetchall()
        clean = con.execute("SELECT count(*) FROM prices_clean").fetchall()[0][0]
        classes = con.execute("SELECT count(*) FROM class_summary").fetchall()[0][0]
    assert task == "regression" and "300 rows" in reason
    flagged = np.array([bool(r[1]) for r in rows])
    assert flagged[planted].sum() >= 8 and flagged[~planted].sum() <= 5
    assert all(r[4] <= r[3] <= r[5] for r in rows)
    assert all(float(r[6]) == pytest.approx(r[3], rel=1e-5) for r in rows)
    assert {r[7] for r in rows if r[1]} == {"review"} and clean == 300  # review only
    assert classes == 0
    assert [e[0] for e in evaluation] == ["cleaned", "given"]
    assert all(e[1] > 0 and e[2] > 0 and e[3] is not None and e[4] is None for e in evaluation)
    page = render_html(load_report_data(db, "prices", summary.run_id))
    assert "Predicted vs given values" in page and "RMSE" in page

    dataset, queue = review_queue(db)
    assert "suggested_interval" in queue and len(queue) >= flagged.sum()
    first = queue["row_id"].iloc[0]
    queue["decision"] = ""
    queue.loc[0, ["decision", "new_label"]] = ["relabel", "123.5"]
    queue.to_csv(workdir / "review.csv", index=False)
    assert apply_review_file(db, workdir / "review.csv")[1] == 1
    again = clean_dataset(spec)
    assert again.run_id != summary.run_id and again.n_reviewed == 1
    with duckdb.connect(str(db), read_only=True) as con:
        value = con.execute("SELECT price, price_original FROM prices_clean WHERE "
                            "CAST(row_id AS VARCHAR) = ?", [first]).fetchall()
    assert value[0][0] == 123.5


def test_own_predictions_are_one_value_per_row_and_a_wrong_shape_is_refused(tmp_path):
    """A regression's own out-of-fold predictions: a 1-D array (or n x 1), kept in float64;
    two columns or a row count that differs from the data's stop with what was expected."""
    values = np.array([1234567.89, 2.5, -3.25])
    np.save(tmp_path / "flat.npy", values)
    np.save(tmp_path / "column.npy", values.reshape(-1, 1))
    for name in ("flat.npy", "column.npy"):
        got = load_user_array(str(tmp_path / name), 3, "predictions", one_column=True)
        assert got.shape == (3, 1) and got.dtype == np.float64 and got[0, 0] == 1234567.89
    np.save(tmp_path / "two.npy", np.zeros((3, 2)))
    with pytest.raises(CleansetError, match=r"one predicted value per input row: a 1-D array "
                       r"of 3 values \(or 3 x 1\); it has shape \(3, 2\)"):
        load_user_array(str(tmp_path / "two.npy"), 3, "predictions", one_column=True)
    np.save(tmp_path / "short.npy", values[:2])
    with pytest.raises(CleansetError, match=r"it has shape \(2,\)"):
        load_user_array(str(tmp_path / "short.npy"), 3, "predictions", one_column=True)
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan, 2.0]))
    with pytest.raises(CleansetError, match="finite numbers"):
        load_user_array(str(tmp_path / "nan.npy"), 3, "predictions", one_column=True)


@pytest.mark.usefixtures("prefect_server")
def test_own_out_of_fold_predictions_end_to_end(workdir):
    """pred_probs for a regression: the user's own out-of-fold predictions (.npy, one value per
    row). No model is trained; the issues table holds those predictions as the model's
    (suggested_value), the shifted values are flagged against them, and runs says whose
    predictions they were."""
    from flows.clean import clean_dataset

    frame, planted = linear_frame(300, errors=10)
    offset = frame["colour"].map({"red": 0.0, "green": 1.5, "blue": -1.5}).to_numpy()
    own = 3 * frame["x0"].to_numpy() - 2 * frame["x1"].to_numpy() + offset + 1e-7 * np.arange(300)
    frame.to_csv(workdir / "prices.csv", index=False)
    np.save(workdir / "own.npy", own)  # 1-D: one predicted value per row
    db = workdir / "w.duckdb"
    summary = clean_dataset(DatasetSpec(source=str(workdir / "prices.csv"), label="price",
                                        db=str(db), pred_probs=str(workdir / "own.npy")))
    assert summary.task == "regression"
    with duckdb.connect(str(db), read_only=True) as con:
        model, task = con.execute("SELECT model, task FROM runs").fetchall()[0]
        rows = con.execute("SELECT CAST(row_id AS INT), is_label_issue, given_value, "
                           "suggested_value, action FROM issues ORDER BY 1").fetchall()
    assert model == "supplied pred_probs" and task == "regression"
    assert len(rows) == 300
    suggested = np.array([r[3] for r in rows])
    np.testing.assert_allclose(suggested, own, rtol=0, atol=1e-9)  # float64 kept, not float32
    np.testing.assert_allclose([r[2] for r in rows], frame["price"], atol=1e-9)
    flagged = np.array([bool(r[1]) for r in rows])
    assert flagged[planted].all() and flagged[~planted].sum() <= 3
    assert {r[4] for r in rows if r[1]} == {"review"}


@pytest.mark.usefixtures("prefect_server")
def test_a_free_text_label_is_refused_by_the_run(workdir):
    from flows.clean import clean_dataset

    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.normal(size=120), "note": [
        f"customer {i} says the parcel came {'late' if i % 2 else 'early'}" for i in range(120)]}
    ).to_csv(workdir / "notes.csv", index=False)
    state = clean_dataset(DatasetSpec(source=str(workdir / "notes.csv"), label="note",
                                      db=str(workdir / "w.duckdb")), return_state=True)
    assert state.is_failed()
    with pytest.raises(CleansetError, match="120 distinct text values in 120 rows"):
        state.result()


def test_a_candidate_behind_two_families_stops_even_when_a_mix_would_pay():
    """pick() pairs the best family with the second best. A candidate worse than the leader
    whose mix with the leader would pay still stops when a third family beats it on the same
    rows: it could be neither of the pair. Without that third family it goes on."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    noise = rng.normal(size=(2, 400))
    noise /= np.sqrt((noise ** 2).mean(axis=1, keepdims=True))  # MSE = scale ** 2 exactly
    leader = y + 0.50 * noise[0]
    candidate = y + 0.55 * noise[1]  # worse alone; errors nearly independent: a mix pays
    assert cannot_pay(y, candidate, leader, "ridge") == ""
    why = cannot_pay(y, candidate, leader, "ridge", {"knn": y + 0.52 * noise[1]})
    assert "knn's" in why and "neither the best family nor the second" in why
    assert cannot_pay(y, candidate, leader, "ridge", {"knn": y + 0.60 * noise[1]}) == ""
