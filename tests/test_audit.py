"""The batch audit (tasks/audit.py): each planted change is caught by the check named for it, a
batch from the same distribution passes, schema breaks quarantine, settings are obeyed, and the
`batch_audit` rows match the warehouse's declaration."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from tasks.audit import CHECKS, AuditSettings, audit_batch
from tasks.errors import CleansetError
from tasks.featurize import infer_roles
from tasks.publish import TABLES, audit_frame, ensure_schema
from tasks.spec import build_spec

WORDS = np.array([f"w{i}" for i in range(80)])
OTHER = np.array([f"v{i}" for i in range(80)])
FAST = AuditSettings(classifier_rows=400)
# the slower checks (classifiers, nearest neighbours) off where a test is about something else
QUICK = FAST.model_copy(update={"severity": {"text_drift": "off", "row_drift": "off",
                                             "near_copies": "off"}})


def draw(n: int, seed: int, priors=(0.5, 0.3, 0.2), words=WORDS) -> pd.DataFrame:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=priors)
    zipf = 1.0 / np.arange(1, len(words) + 1)
    text = rng.choice(words, size=(n, 6), p=zipf / zipf.sum())
    return pd.DataFrame({
        "x0": rng.normal(0.8 * y, 1.0),
        "x1": rng.gamma(2.0, 1.0, n),
        "c": np.array(["p", "q", "r", "s"])[rng.choice(4, size=n, p=[.4, .3, .2, .1])],
        "note": [" ".join(t) for t in text],
        "label": np.array(["a", "b", "c"])[y],
    })


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return draw(3000, 0)


@pytest.fixture(scope="module")
def plan(reference):  # noqa: ANN001, ANN201
    return infer_roles(reference, "label", [], ["note"], None)


def fired(result) -> set[str]:  # noqa: ANN001
    return {c.check for c in result.checks if c.outcome != "pass"}


def test_a_batch_from_the_same_distribution_passes(reference, plan):
    result = audit_batch(reference, draw(600, 1), plan, "label", FAST)
    assert result.decision == "accept", result.reason
    assert fired(result) == set()
    checks = {c.check for c in result.checks}
    assert {"missing_values", "numeric_drift", "categorical_drift", "new_category",
            "text_drift", "row_drift", "label_shift", "new_label", "exact_copies",
            "conflicting_copies", "near_copies"} <= checks
    assert result.reference_sampled == result.reference_rows == 3000


def _copies(batch: pd.DataFrame, reference: pd.DataFrame, share: float, seed: int,
            conflicting: bool = False, jitter: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    k = int(share * len(batch))
    rows = rng.choice(len(batch), size=k, replace=False)
    copies = reference.iloc[rng.choice(len(reference), size=k, replace=False)].copy()
    if conflicting:
        copies["label"] = copies["label"].map({"a": "b", "b": "c", "c": "a"})
    for c in ("x0", "x1"):
        copies[c] += rng.normal(0, jitter * reference[c].std(), k) if jitter else 0.0
    batch = batch.copy()
    batch.iloc[rows] = copies.to_numpy()
    return batch.astype({"x0": "float64", "x1": "float64"})


def _plant(change: str, reference: pd.DataFrame) -> pd.DataFrame:
    batch = draw(600, 2)
    if change == "numeric_drift":
        batch["x0"] += 0.5 * reference["x0"].std()
    elif change == "label_shift":
        batch = draw(600, 2, priors=(0.35, 0.45, 0.2))
    elif change == "new_category":
        batch.loc[:11, "c"] = "t"
    elif change == "new_label":
        batch.loc[:5, "label"] = "d"
    elif change == "text_drift":
        batch = draw(600, 2, words=np.r_[WORDS[:40], OTHER[:40]])
    elif change == "exact_copies":
        batch = _copies(batch, reference, 0.05, 3)
    elif change == "conflicting_copies":
        batch = _copies(batch, reference, 0.02, 3, conflicting=True)
    elif change == "near_copies":
        batch = _copies(batch, reference, 0.05, 3, jitter=0.01)
    return batch


@pytest.mark.parametrize("change", ["numeric_drift", "label_shift", "new_category", "new_label",
                                    "text_drift", "exact_copies", "conflicting_copies",
                                    "near_copies"])
def test_each_planted_change_is_caught_by_its_check(reference, plan, change):
    result = audit_batch(reference, _plant(change, reference), plan, "label", FAST)
    assert change in fired(result), [c.message for c in result.checks if c.check == change]
    assert result.decision == "accept-with-warnings"


def test_messages_name_what_changed(reference, plan):
    new_label = audit_batch(reference, _plant("new_label", reference), plan, "label", QUICK)
    (row,) = [c for c in new_label.checks if c.check == "new_label"]
    assert "'d'" in row.message and "6 rows" in row.message
    shifted = audit_batch(reference, _plant("numeric_drift", reference), plan, "label", QUICK)
    (x0,) = [c for c in shifted.checks if c.check == "numeric_drift" and c.column == "x0"]
    assert x0.outcome == "warn" and 0.4 < x0.effect_size < 0.6 and x0.value < 0.01
    assert "x0" in shifted.reason


@pytest.mark.parametrize("broken", ["missing", "retyped", "label_missing"])
def test_a_missing_or_retyped_feature_column_quarantines_the_batch(reference, plan, broken):
    batch = draw(300, 4)
    if broken == "missing":
        batch = batch.drop(columns="x1")
    elif broken == "label_missing":
        batch = batch.drop(columns="label")
    else:
        batch["x1"] = "n/a"
    result = audit_batch(reference, batch, plan, "label", QUICK)
    assert result.decision == "quarantine"
    check = "column_retyped" if broken == "retyped" else "column_missing"
    (row,) = result.failed("fail")
    assert (row.check, row.severity) == (check, "critical")
    assert row.column == ("label" if broken == "label_missing" else "x1")
    assert "severity" in result.reason  # how to accept it anyway


def test_an_added_column_is_a_warning(reference, plan):
    batch = draw(300, 5).assign(extra=1)
    result = audit_batch(reference, batch, plan, "label", QUICK)
    assert result.decision == "accept-with-warnings"
    assert [(c.check, c.column) for c in result.failed()] == [("column_added", "extra")]


def test_thresholds_and_severities_from_settings_are_obeyed(reference, plan):
    batch = _plant("numeric_drift", reference)
    lenient = QUICK.model_copy(update={"numeric_drift": 0.8})
    assert audit_batch(reference, batch, plan, "label", lenient).decision == "accept"
    strict = QUICK.model_copy(update={"severity": {**QUICK.severity,
                                                   "numeric_drift": "critical"}})
    result = audit_batch(reference, batch, plan, "label", strict)
    assert result.decision == "quarantine"
    assert {c.check for c in result.failed("fail")} == {"numeric_drift"}
    off = QUICK.model_copy(update={"severity": {**QUICK.severity, "numeric_drift": "off",
                                                "row_drift": "info"}})
    result = audit_batch(reference, batch, plan, "label", off)
    assert "numeric_drift" not in {c.check for c in result.checks}
    assert result.decision == "accept"  # row_drift fired, but info is only recorded


def test_the_spec_carries_the_audit_block(tmp_path):
    cfg = tmp_path / "cleanset.yaml"
    cfg.write_text("source: a.csv\nlabel: y\naudit:\n  numeric_drift: 0.3\n  severity:\n"
                   "    column_added: info\n")
    spec = build_spec(cfg)
    assert spec.audit.numeric_drift == 0.3
    assert spec.audit.severity_of("column_added") == "info"
    assert spec.audit.severity_of("column_missing") == "critical"
    with pytest.raises(CleansetError, match="unknown audit check"):
        build_spec(source="a.csv", label="y", audit={"severity": {"drift": "off"}})


def test_label_issue_rate_against_the_dataset(reference, plan):
    rng = np.random.default_rng(0)
    batch = draw(600, 6)
    ref_flags = rng.random(len(reference)) < 0.05
    settings = QUICK
    same = audit_batch(reference, batch, plan, "label", settings, reference_issues=ref_flags,
                       batch_issues=rng.random(len(batch)) < 0.05)
    noisy = audit_batch(reference, batch, plan, "label", settings, reference_issues=ref_flags,
                        batch_issues=rng.random(len(batch)) < 0.2)
    assert "label_issue_rate" not in fired(same)
    assert "label_issue_rate" in fired(noisy)


def test_a_big_reference_is_sampled_and_the_result_says_so(reference, plan):
    settings = QUICK.model_copy(update={"sample_rows": 1000})
    result = audit_batch(reference, draw(300, 7), plan, "label", settings)
    assert (result.reference_rows, result.reference_sampled) == (3000, 1000)
    assert any("sample of 1,000" in n for n in result.notes)


def test_the_batch_audit_frame_matches_the_table_declaration(reference, plan):
    result = audit_batch(reference, draw(300, 8).drop(columns="x1"), plan, "label", QUICK)
    frame = audit_frame(result, "toy", "run1", "batch-2")
    assert list(frame.columns) == [c for c, _ in TABLES["batch_audit"]]
    assert len(frame) == len(result.checks)
    assert set(frame["check_name"]) <= set(CHECKS)
    con = duckdb.connect()
    ensure_schema(con)
    con.execute("INSERT INTO batch_audit SELECT * FROM frame")
    rows = con.execute("SELECT check_name, column_name, outcome, severity FROM batch_audit WHERE "
                       "outcome = 'fail'").fetchall()
    assert rows == [("column_missing", "x1", "fail", "critical")]
    nulls = con.execute("SELECT count(*) FROM batch_audit WHERE column_name IS NULL").fetchall()
    assert nulls[0][0] == sum(c.column is None for c in result.checks) > 0


def test_an_emptied_column_and_an_empty_batch(reference, plan):
    emptied = audit_batch(reference, draw(300, 9).assign(x0=np.nan), plan, "label", QUICK)
    (row,) = [c for c in emptied.failed() if c.check == "missing_values"]
    assert row.column == "x0" and "100.0%" in row.message
    empty = audit_batch(reference, draw(10, 9).iloc[:0], plan, "label", QUICK)
    assert empty.decision == "accept" and empty.batch_rows == 0
    assert "no rows" in empty.notes[0]
