import pytest

from tasks.errors import CleansetError
from tasks.spec import ISSUE_TYPES, DatasetSpec, Policy, build_spec


def test_dataset_name_defaults_to_file_stem():
    spec = DatasetSpec(source="some/dir/My-Data.v2.csv", label="y")
    assert spec.dataset_name == "My_Data"
    assert spec.work_path.as_posix() == "data/work"


def test_yaml_config_and_flag_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("source: a.csv\nlabel: y\nfolds: 3\npolicy:\n  label: review\n")
    spec = build_spec(cfg, folds=4, dataset=None)
    assert (spec.folds, spec.policy.label, spec.source) == (4, "review", "a.csv")


@pytest.mark.parametrize("overrides, needle", [
    ({"source": "a.csv"}, "label"),
    ({"source": "a.csv", "label": "y", "folds": 1}, "folds"),
    ({"source": "a.csv", "label": "y", "dataset": "x; DROP TABLE runs"}, "not usable"),
    ({"source": "a.csv", "label": "y", "colour": "red"}, "colour"),
    ({"source": "a.csv", "label": "y", "issue_types": {"outliers": False}}, "unknown issue type"),
])
def test_bad_settings_give_readable_errors(overrides, needle):
    with pytest.raises(CleansetError, match=needle):
        build_spec(**overrides)


def test_fingerprint_ignores_output_locations_but_not_settings():
    a = DatasetSpec(source="a.csv", label="y", db="one.duckdb")
    b = DatasetSpec(source="a.csv", label="y", db="two.duckdb")
    c = DatasetSpec(source="a.csv", label="y", folds=3)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_policy_has_an_action_for_every_issue_type():
    settings = {"auto_fix", "relabel_threshold", "relabel_agreement", "relabel_fallback",
                "max_duplicate_share", "ambiguous", "label_with_text", "well_labeled",
                "drop_check", "drop_margin", "drop_calibration"}
    per_task = {"label_regression", "label_multilabel"}  # defaults that differ by task
    assert set(Policy.model_fields) - settings - per_task == set(ISSUE_TYPES)


def test_a_setting_that_does_not_exist_names_the_one_meant(tmp_path):
    """A misspelt or guessed setting is refused with the closest real name, nested ones too."""
    config = tmp_path / "cleanset.yaml"
    config.write_text("id_column: house_id\nlable: price\npolicy:\n  relabel_treshold: 0.9\n"
                      "colour: blue\n")
    with pytest.raises(CleansetError) as err:
        build_spec(config, source="data.csv")
    message = str(err.value)
    assert "id_column: Extra inputs are not permitted; did you mean `id`?" in message
    assert "lable: Extra inputs are not permitted; did you mean `label`?" in message
    assert "policy.relabel_treshold: Extra inputs are not permitted; did you mean " \
           "`relabel_threshold`?" in message
    assert "colour: Extra inputs are not permitted\n" in message + "\n"
    assert "colour: Extra inputs are not permitted;" not in message
