"""The issue-type registry's contract: every type has every part, and everything that lists
issue types (policy, detection, report, warehouse schema, README) agrees with the registry."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import get_args

import numpy as np

from tasks.issue_types import (
    ACTIONS,
    BY_NAME,
    DATALAB_TYPES,
    DECISIONS,
    ISSUE_TYPES,
    REGISTRY,
    SEVERITY,
    TO_REVIEW,
    TYPE_NOTES,
    Action,
    readme_table,
    task_policy_fields,
)
from tasks.publish import TABLES
from tasks.report import TYPE_NOTES as REPORT_NOTES
from tasks.spec import Policy
from tests.test_detect_types import CENTERS, detect

README = Path(__file__).parents[1] / "README.md"


def test_every_type_has_every_part():
    assert len(ISSUE_TYPES) == len(REGISTRY) == len(set(ISSUE_TYPES))
    declared = dict(TABLES["issues"])
    policy = Policy()
    for t in REGISTRY:
        module, _, function = t.finder.partition(".")
        assert callable(getattr(importlib.import_module(f"tasks.{module}"), function, None)), \
            f"{t.name}: finder {t.finder} does not exist"
        assert t.meaning and t.found_by and t.tasks, t.name
        assert t.default_action in get_args(Action), t.name
        assert getattr(policy, t.name) == t.default_action, f"{t.name}: Policy field"
        assert REPORT_NOTES[t.name] == TYPE_NOTES[t.name] == t.meaning, t.name
        for column, kind in t.columns:
            assert declared.get(column) == kind, f"{t.name}: issues column {column}"


def test_policy_is_the_registry_plus_its_settings():
    settings = {"auto_fix", "relabel_threshold", "relabel_agreement", "relabel_fallback",
                "max_duplicate_share", "ambiguous", "label_with_text", "well_labeled",
                "drop_check", "drop_margin", "drop_calibration"}
    per_task = {name for name, *_ in task_policy_fields()}  # e.g. label_regression
    assert per_task == {"label_regression", "label_multilabel"}
    assert set(Policy.model_fields) == settings | set(ISSUE_TYPES) | per_task
    assert Policy().label_regression == "review"
    assert Policy().label_multilabel == "review"


def test_readme_table_is_the_registry():
    assert readme_table() in README.read_text(), (
        "README's issue-type table differs from the registry; paste tasks.issue_types."
        "readme_table() under '### Issue types'")


def test_detection_finds_every_type_and_only_declared_columns():
    """One detect pass with every type on: each type's columns appear, and every column the
    finders produce is declared in the warehouse's issues table."""
    rng = np.random.default_rng(5)
    y = np.r_[np.arange(300) % 3, np.zeros(40, dtype=int)]
    centers = np.r_[CENTERS, [[0, 0, 10.0]]]
    X = centers[np.r_[np.arange(300) % 3, np.full(40, 3)]] + rng.normal(0, 1, (340, 3))
    X[6] = X[3]
    probs = np.full((340, 3), 0.02)
    probs[np.arange(340), y] = 0.96
    probs[300:] = [0.01, 0.98, 0.01]  # a cluster the model fails on: underperforming_group
    frame = detect(X, np.array(["a", "b", "c"], dtype=object)[y], probs,
                   {t: True for t in ISSUE_TYPES})
    for t in REGISTRY:
        for column, _ in t.columns:
            assert column in frame, f"{t.name}: detection made no {column}"
    declared = {c for c, _ in TABLES["issues"]}
    assert set(frame) <= declared, set(frame) - declared
    assert set(DATALAB_TYPES) == {t for t in ISSUE_TYPES if BY_NAME[t].datalab}


def test_the_action_words_are_defined_once():
    """ACTIONS (with meanings, mildest first) is the vocabulary: Policy's Action type, the
    severity order, what a reviewer may decide and what the review queue holds all agree."""
    assert set(ACTIONS) == set(get_args(Action)) and all(ACTIONS.values())
    assert list(SEVERITY) == list(ACTIONS) == ["keep", "review", "relabel", "drop"]
    assert set(DECISIONS) <= set(ACTIONS) and "review" not in DECISIONS
    assert set(TO_REVIEW) == set(ACTIONS) - {"keep"}
    from tasks import decide, review

    assert decide.SEVERITY is SEVERITY and review.DECISIONS is DECISIONS
