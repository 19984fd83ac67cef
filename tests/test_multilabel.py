"""Multi-label tag sets (issue 16): the tag-sets stage, per-tag out-of-fold probabilities,
cleanlab's multi-label label issues with the suggested set, review with tag sets, the warehouse
shared with classification and regression runs, end to end."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from tasks.decide import apply_decisions, apply_policy
from tasks.detect import (
    MIN_CALIBRATION_ROWS,
    calibrate_tags,
    multilabel_issues_frame,
    multilabel_label_issues,
    tag_summary,
)
from tasks.errors import CleansetError
from tasks.estimate import check_multilabel, micro_f1
from tasks.review import check_decisions
from tasks.spec import DatasetSpec, Policy, build_spec
from tasks.tags import (
    NO_TAGS,
    as_lists,
    decide_tags,
    from_columns,
    parse_tags,
    summarize_tags,
    tag_matrix,
    tags_text,
)

TAGS = ("blue", "gold", "green", "red")


def tagged_frame(n: int = 300, seed: int = 0, flips: int = 0, sep: str = ";"
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """Four tags, each carried when its own feature (plus a little noise) is high; `flips`
    rows get one tag dropped or added. Returns the frame (column `tags`) and the planted rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    Y = (x[:, :4] + 0.25 * rng.normal(size=(n, 4))) > 0.4
    planted = np.zeros(n, dtype=bool)
    if flips:
        rows = rng.choice(n, flips, replace=False)
        for i in rows:
            k = rng.integers(4)
            Y[i, k] = ~Y[i, k]
        planted[rows] = True
    frame = pd.DataFrame(x.round(4), columns=[f"x{i}" for i in range(6)])
    frame["tags"] = [sep.join(t for t, on in zip(TAGS, row, strict=True) if on) for row in Y]
    return frame, planted


# ---- the tag-sets stage (pure) ------------------------------------------------------------------

def test_delimited_text_lists_and_the_empty_set():
    assert parse_tags(pd.Series(["a; b", "b", "", None]), ";") == [
        frozenset({"a", "b"}), frozenset({"b"}), frozenset(), frozenset()]
    lists = pd.Series([["a", "b"], [], np.array(["c"]), None], name="tags")
    assert parse_tags(lists, None) == [frozenset({"a", "b"}), frozenset(), frozenset({"c"}),
                                       frozenset()]
    assert tags_text(frozenset({"b", "a"}), "|") == "a|b" and tags_text(frozenset(), ";") == ""
    assert tag_matrix([frozenset({"b"}), frozenset()], ("a", "b")).tolist() == [[0, 1], [0, 0]]


def test_a_column_mixing_lists_and_text_is_refused_naming_both():
    mixed = pd.Series([["a", "b"], "a;b", ["c"]], name="tags")
    with pytest.raises(CleansetError, match=r"mixes lists .* and other values .*'a;b'"):
        as_lists(mixed)


def test_auto_guesses_the_delimiter_with_evidence_and_leaves_classes_alone():
    frame, _ = tagged_frame(200)
    sets, delimiter, reason = decide_tags(frame, "tags", "auto")
    assert delimiter == ";" and "hold ';'" in reason and "distinct tags" in reason
    assert len(sets) == 200
    piped, _ = tagged_frame(200, sep="|")
    assert decide_tags(piped, "tags", "auto")[1] == "|"
    assert decide_tags(pd.DataFrame({"y": ["cat", "dog"] * 50}), "y", "auto") is None
    assert decide_tags(frame, "tags", "classification") is None
    forced = decide_tags(pd.DataFrame({"y": ["a", "b", "a b"] * 20}), "y", "multilabel")
    assert forced is not None and "set label_delimiter" in forced[2]


def test_a_tag_seen_once_is_warned_about_and_not_scored():
    sets = [frozenset({"a"}), frozenset({"a", "typo"}), frozenset(), frozenset({"a", "b"}),
            frozenset({"b"}), frozenset({"b"})]
    tags, n_empty, warnings = summarize_tags(sets)
    assert dict(tags) == {"a": 3, "b": 3, "typo": 1} and n_empty == 1
    assert any("one row only" in w and "'typo'" in w for w in warnings)


def test_label_columns_make_tag_sets_and_bad_values_are_named():
    df = pd.DataFrame({"sport": [1, 0, 1], "art": [0, 0, 1], "x": [1.0, 2.0, 3.0]})
    assert from_columns(df, ("sport", "art")) == [frozenset({"sport"}), frozenset(),
                                                  frozenset({"sport", "art"})]
    with pytest.raises(CleansetError, match="'art'.*0/1.*'yes'"):
        from_columns(df.assign(art=["yes", 0, 1]), ("sport", "art"))
    spec = build_spec(source="x.csv", label_columns="sport,art".split(","))
    assert spec.label == "tags" and spec.label_columns == ("sport", "art")
    with pytest.raises(CleansetError, match="label_columns make a multi-label"):
        build_spec(source="x.csv", label_columns=["sport"], task="regression")


# ---- issues, policy, review (pure) -------------------------------------------------------------

def test_flipped_tags_are_found_with_the_suggested_set_and_what_it_changes():
    rng = np.random.default_rng(1)
    n = 400
    truth = rng.random((n, 3)) < 0.4
    probs = np.clip(np.where(truth, 0.92, 0.08) + rng.normal(0, 0.03, (n, 3)), 0.01, 0.99)
    given = truth.copy()
    given[:10, 0] = ~given[:10, 0]  # ten rows with the first tag flipped
    found = multilabel_label_issues(given.astype(np.int8), probs.astype(np.float32))
    flagged = found["is_label_issue"].to_numpy()
    assert flagged[:10].sum() >= 9 and flagged[10:].mean() < 0.05
    assert (found["label_score"][:10].max() < found["label_score"][10:].median())
    names = ("a", "b", "c")
    text = pd.Series([tags_text({t for t, on in zip(names, r, strict=True) if on}, ";")
                      for r in given])
    frame = multilabel_issues_frame(pd.Series(range(n)), text, np.arange(n),
                                    given.astype(np.int8), names, probs, np.array([], int), ";")
    row = frame.iloc[0]
    expected = {t for t, on in zip(names, truth[0], strict=True) if on}
    assert set(row["suggested_tags"]) == expected and row["suggested_label"] == ";".join(
        sorted(expected))
    assert (list(row["tags_likely_missing"]) == ["a"]) == bool(truth[0, 0])
    assert (list(row["tags_likely_wrong"]) == ["a"]) == (not truth[0, 0])
    summary = tag_summary(given.astype(np.int8), names, np.stack(found["flags"]))
    assert summary.loc[0, "n_label_issues"] >= 9 and summary.loc[1, "n_label_issues"] <= 5
    decided = apply_policy(frame, Policy(), trusted=True, task="multilabel")
    assert set(decided.loc[decided["is_label_issue"].fillna(False), "action"]) == {"review"}
    relabelled = apply_policy(frame, Policy(label_multilabel="relabel"), True, "multilabel")
    assert (relabelled.loc[0, "final_label"] == row["suggested_label"])


def squeezed(probs: np.ndarray, base: np.ndarray, keep: float) -> np.ndarray:
    """An under-confident model: each tag's probabilities pulled towards its frequency."""
    return base + keep * (probs - base)


def test_an_under_confident_model_still_finds_flipped_tags_after_recalibration():
    rng = np.random.default_rng(3)
    n = 600
    truth = rng.random((n, 3)) < 0.4
    sharp = np.clip(np.where(truth, 0.95, 0.05) + rng.normal(0, 0.02, (n, 3)), 0.01, 0.99)
    given = truth.copy()
    given[:20, 1] = ~given[:20, 1]  # twenty rows with the second tag flipped
    shy = squeezed(sharp, truth.mean(axis=0), 0.35)  # all between about 0.25 and 0.62
    as_given = multilabel_label_issues(given.astype(np.int8), shy, calibrate=False)
    assert not as_given["is_label_issue"].any()  # no tag passes the 0.8 margin as it is
    found = multilabel_label_issues(given.astype(np.int8), shy)
    flagged = found["is_label_issue"].to_numpy()
    assert flagged[:20].sum() >= 18 and flagged[20:].mean() < 0.02
    assert all(np.flatnonzero(f).tolist() == [1] for f in found["flags"][:20] if f.any())
    # recalibration keeps each tag's order and brings the squeezed model back to sure
    calibrated = calibrate_tags(given.astype(np.int8), shy)
    for k in range(3):
        assert (np.diff(calibrated[np.argsort(shy[:, k]), k]) >= -1e-12).all()
    assert calibrated[~given[:, 0], 0].mean() < 0.1 < 0.9 < calibrated[given[:, 0], 0].mean()


def test_a_tag_too_rare_to_recalibrate_keeps_its_probabilities():
    rng = np.random.default_rng(4)
    n = 200
    Y = np.zeros((n, 2), dtype=np.int8)
    Y[: MIN_CALIBRATION_ROWS - 1, 0] = 1  # a rare tag
    Y[rng.random(n) < 0.5, 1] = 1
    probs = np.column_stack([np.where(Y[:, 0] == 1, 0.6, 0.1), np.where(Y[:, 1] == 1, 0.6, 0.4)])
    calibrated = calibrate_tags(Y, probs)
    assert np.allclose(calibrated[:, 0], probs[:, 0])
    assert not np.allclose(calibrated[:, 1], probs[:, 1])


def test_the_label_score_is_the_least_likely_given_tag_state():
    rng = np.random.default_rng(5)
    n = 300
    Y = (rng.random((n, 3)) < 0.5).astype(np.int8)
    probs = np.clip(np.where(Y == 1, 0.8, 0.2) + rng.normal(0, 0.1, (n, 3)), 0.02, 0.98)
    found = multilabel_label_issues(Y, probs)
    calibrated = calibrate_tags(Y, probs)
    least = np.where(Y == 1, calibrated, 1 - calibrated).min(axis=1)
    assert np.allclose(found["label_score"].to_numpy(), least, atol=1e-6)


def test_model_check_speaks_of_micro_f1_not_accuracy():
    Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 25, dtype=np.int8)
    good = check_multilabel(Y, np.where(Y == 1, 0.9, 0.1).astype(np.float32))
    assert good.trusted and good.micro_f1 == 1.0 and np.isnan(good.accuracy)
    weak = check_multilabel(Y, np.full(Y.shape, 0.5, dtype=np.float32))
    assert not weak.trusted and "accuracy" not in weak.warning
    assert micro_f1(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    from tasks.summary import model_check_text
    text = model_check_text({"model_micro_f1": 0.8, "model_log_loss": 0.2,
                             "chance_log_loss": 0.6})
    assert "micro-F1 0.800" in text and "accuracy" not in text


def test_review_takes_tag_sets_of_known_tags_in_canonical_form():
    frame = pd.DataFrame({"row_id": ["1", "2", "3"], "decision": ["relabel"] * 3,
                          "new_label": ["red ; blue", NO_TAGS, "gold"]})
    checked = check_decisions(frame, "d", {"1", "2", "3"}, set(TAGS), task="multilabel")
    assert checked["new_label"].tolist() == ["blue;red", NO_TAGS, "gold"]
    bad = frame.assign(new_label=["red;purple", "-", "gold"])
    with pytest.raises(CleansetError, match="tag the data does not have.*purple"):
        check_decisions(bad, "d", {"1", "2", "3"}, set(TAGS), task="multilabel")
    issues = pd.DataFrame({"row_id": ["1", "2"], "given_label": ["red", "gold"],
                           "is_label_issue": [True, True], "action": ["review", "review"],
                           "final_label": ["red", "gold"], "decided_by": "policy",
                           "review_note": None})
    decisions = pd.DataFrame({"row_id": ["1", "2"], "decision": ["relabel", "relabel"],
                              "new_label": ["blue;red", NO_TAGS], "note": [None, None]})
    out, _ = apply_decisions(issues, decisions, "multilabel")
    assert out["final_label"].tolist() == ["blue;red", ""]


# ---- end to end ---------------------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_a_multilabel_dataset_end_to_end(workdir):
    """auto takes ';' tag sets as multilabel (reason in runs), the flipped tags are flagged
    with the suggested set and what it adds/removes, nothing changes by default, per-tag
    health lands in class_summary, a reviewer's tag set is applied in the next run, and the
    report shows the per-tag noise."""
    from flows.clean import clean_dataset
    from tasks.report import load_report_data, render_html
    from tasks.review import apply_review_file, review_queue

    frame, planted = tagged_frame(300, flips=15)
    frame.loc[0, "tags"] += ";once"  # a tag seen once: warned, not scored, kept
    frame.to_csv(workdir / "docs.csv", index=False)
    db = workdir / "w.duckdb"
    spec = DatasetSpec(source=str(workdir / "docs.csv"), label="tags", db=str(db),
                       eval_holdout=0.2)
    summary = clean_dataset(spec)
    assert summary.task == "multilabel" and "separated by ';'" in summary.task_reason
    with duckdb.connect(str(db), read_only=True) as con:
        task, delimiter, f1 = con.execute(
            "SELECT task, tag_delimiter, model_micro_f1 FROM runs").fetchall()[0]
        rows = con.execute(
            "SELECT CAST(row_id AS INT), is_label_issue, given_label, suggested_label, "
            "suggested_tags, tags_likely_missing, tags_likely_wrong, action FROM issues "
            "ORDER BY 1").fetchall()
        tags = con.execute("SELECT class_name, n_rows, n_tags_likely_wrong, "
                           "n_tags_likely_missing FROM class_summary ORDER BY 1").fetchall()
        clean = con.execute("SELECT count(*) FROM docs_clean").fetchall()[0][0]
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'issues'").fetchall())
        evaluation = con.execute("SELECT trained_on, micro_f1, macro_f1, jaccard, accuracy "
                                 "FROM evaluations ORDER BY trained_on").fetchall()
    assert task == "multilabel" and delimiter == ";" and f1 > 0.7
    assert types["suggested_tags"] == "VARCHAR[]" and types["given_label"] == "VARCHAR"
    flagged = np.array([bool(r[1]) for r in rows])
    assert flagged[planted].sum() >= 8 and flagged[~planted].mean() < 0.1
    assert rows[0][2].endswith(";once") and "once" in rows[0][4]  # kept as given, unscored
    for _, flag, given, suggested, sugg_tags, missing, wrong, _ in rows:
        assert ";".join(sorted(sugg_tags)) == suggested
        assert set(sugg_tags) == (set(given.split(";")) - {""} | set(missing)) - set(wrong)
        assert bool(flag) == bool(missing or wrong)
    assert {r[7] for r in rows if r[1]} == {"review"} and clean == 300
    assert [t[0] for t in tags] == list(TAGS)  # 'once' is not scored
    assert [e[0] for e in evaluation] == ["cleaned", "given"]
    assert all(0.5 < e[1] <= 1 and e[2] > 0 and e[3] > 0 and e[4] is None for e in evaluation)
    page = render_html(load_report_data(db, "docs", summary.run_id))
    assert "Noise per tag" in page and "micro-F1" in page

    dataset, queue = review_queue(db)
    assert {"tags_likely_missing", "tags_likely_wrong"} <= set(queue.columns)
    first = queue["row_id"].iloc[0]
    queue["decision"] = ""
    queue.loc[0, ["decision", "new_label"]] = ["relabel", "gold;red"]
    queue.loc[1, ["decision", "new_label"]] = ["relabel", NO_TAGS]
    second = queue["row_id"].iloc[1]
    queue.to_csv(workdir / "review.csv", index=False)
    assert apply_review_file(db, workdir / "review.csv")[1] == 2
    again = clean_dataset(spec)
    assert again.run_id != summary.run_id and again.n_reviewed == 2
    with duckdb.connect(str(db), read_only=True) as con:
        values = dict(con.execute(
            "SELECT CAST(row_id AS VARCHAR), tags FROM docs_clean WHERE CAST(row_id AS VARCHAR) "
            "IN (?, ?)", [first, second]).fetchall())
    assert values[first] == "gold;red" and values[second] == ""


@pytest.mark.usefixtures("prefect_server")
def test_one_warehouse_takes_classes_values_and_tag_sets_in_turn(workdir):
    """A classification, a regression and a multilabel dataset (from 0/1 columns, given as
    label_columns) published in sequence into one warehouse: each run's rows keep their own
    columns, the others' are NULL, and the classification dataset runs again afterwards."""
    from flows.clean import clean_dataset
    from tests.test_regression import linear_frame

    db = workdir / "shared.duckdb"
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "kind": np.where(x[:, 0] > 0, "hi", "lo")}
                 ).to_csv(workdir / "kinds.csv", index=False)
    linear_frame(200)[0].to_csv(workdir / "prices.csv", index=False)
    frame, _ = tagged_frame(200, seed=4)
    for t in TAGS:
        frame[t] = frame["tags"].str.split(";").map(lambda s, t=t: int(t in s))
    frame.drop(columns="tags").to_csv(workdir / "flags.csv", index=False)
    specs = [DatasetSpec(source=str(workdir / "kinds.csv"), label="kind", db=str(db)),
             DatasetSpec(source=str(workdir / "prices.csv"), label="price", db=str(db)),
             DatasetSpec(source=str(workdir / "flags.csv"), label_columns=TAGS, db=str(db))]
    tasks = [clean_dataset(s).task for s in specs]
    assert tasks == ["classification", "regression", "multilabel"]
    assert clean_dataset(specs[0]).task == "classification"
    with duckdb.connect(str(db), read_only=True) as con:
        by_task = dict(con.execute(
            "SELECT r.task, count(i.suggested_tags) FILTER (WHERE i.suggested_tags IS NOT NULL) "
            "+ 1000 * count(i.given_value) FROM issues i JOIN runs r USING (run_id) "
            "GROUP BY 1").fetchall())
        reason = con.execute("SELECT task_reason FROM runs WHERE dataset = 'flags'"
                             ).fetchall()[0][0]
        features = [r[0] for r in con.execute(
            "SELECT column_name FROM column_roles WHERE dataset = 'flags' AND role <> 'ignore'"
        ).fetchall()]
        clean_columns = [r[0] for r in con.execute("DESCRIBE flags_clean").fetchall()]
    assert by_task == {"classification": 0, "regression": 200_000, "multilabel": 200}
    assert "label_columns" in reason and not set(TAGS) & set(features)
    assert "tags" in clean_columns and set(TAGS) <= set(clean_columns)
