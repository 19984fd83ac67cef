import json

import numpy as np
import pandas as pd
import pytest

from tasks.errors import CleansetError
from tasks.validate import check, load_suite_file


def frame(**cols):
    base = {"row_id": [0, 1, 2, 3], "x": [1.0, 2.0, 3.0, 4.0], "label": ["a", "b", "a", "b"]}
    base.update(cols)
    return pd.DataFrame(base)


def test_clean_frame_passes_and_records_every_expectation():
    outcomes, bad = check(frame(), "label", "row_id", [], None)
    assert all(o.success for o in outcomes)
    kinds = {o.expectation for o in outcomes}
    assert {"expect_column_to_exist", "expect_column_values_to_be_unique",
            "expect_column_unique_value_count_to_be_between"} <= kinds
    assert len(bad) == 0


def test_null_labels_are_recorded_not_quarantined():
    """A row with no label is not quarantined (it gets a suggested label: issue type
    `unlabeled`); the expectation still records how many there are."""
    outcomes, bad = check(frame(label=["a", None, "b", "a"]), "label", "row_id", [], None)
    assert bad.tolist() == []
    failed = [o for o in outcomes if not o.success]
    assert [(o.expectation, o.severity, o.unexpected_count) for o in failed] == [
        ("expect_column_values_to_not_be_null", "info", 1)]


@pytest.mark.parametrize("df, label, needle", [
    (frame(), "target", "expect_column_to_exist"),
    (frame(label=[None] * 4), "label", "expect_column_unique_value_count_to_be_between"),
    (frame(label=["a"] * 4), "label", "observed 1"),
    (frame(row_id=[0, 1, 1, 3]), "label", "expect_column_values_to_be_unique"),
])
def test_critical_failures_stop_with_the_expectation_named(df, label, needle):
    with pytest.raises(CleansetError, match="nothing was published") as info:
        check(df, label, "row_id", [], None)
    assert needle in str(info.value)


def test_missing_label_lists_available_columns():
    with pytest.raises(CleansetError, match="available columns: row_id, x, label"):
        check(frame(), "target", "row_id", [], None)


def test_dataset_suite_warning_quarantines_and_critical_stops(tmp_path):
    suite = {"name": "mine", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0,
         "max_value": 3}, "severity": "warning"}]}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(suite))
    outcomes, bad = check(frame(), "label", "row_id", [], load_suite_file(path))
    assert np.array_equal(bad, [3])
    assert any(o.suite == "mine" and not o.success for o in outcomes)
    suite["expectations"][0]["severity"] = "critical"
    with pytest.raises(CleansetError, match=r"\[mine\] expect_column_values_to_be_between"):
        check(frame(), "label", "row_id", [], suite)


def test_bad_suite_files(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(CleansetError, match="not valid JSON"):
        load_suite_file(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"name": "b"}')
    with pytest.raises(CleansetError, match="expectations"):
        load_suite_file(tmp_path / "b.json")
    with pytest.raises(CleansetError, match="does not exist"):
        load_suite_file(tmp_path / "c.json")
