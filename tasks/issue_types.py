"""The one registry of issue types: pure data, no heavy imports.

Everything else derives from `REGISTRY`: `ISSUE_TYPES` (order of the issues table and the
report), the `Policy` fields and their defaults (tasks/spec.py), the detection switches
(tasks/detect.py `enabled_types`, `DATALAB_TYPES`), the report's notes (tasks/report/
`TYPE_NOTES`), the issues table's declared columns (tasks/schema.py) and the README's issue-type
table (`readme_table`; tests/test_issue_types.py checks the README holds it).

It also holds the action vocabulary (ACTIONS: keep, review, relabel, drop and their meanings;
SEVERITY; DECISIONS a reviewer may record), for the policy, decide, review and the report.

Adding an issue type = one `IssueType` entry here plus its finder (a function in the module named
by `finder`, producing the `columns`); tests/test_issue_types.py fails when a part is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["keep", "drop", "relabel", "review"]
# The action vocabulary, mildest first, and what each does to a row. A row with several issues
# gets the most severe of their actions (SEVERITY); a reviewer's decision overrides the policy.
ACTIONS: dict[str, str] = {
    "keep": "the row stays as given",
    "review": "the row stays as given and waits in the review queue (`cleanset review`)",
    "relabel": "the row stays with its suggested label",
    "drop": "the row is left out of <dataset>_clean",
}
SEVERITY: dict[str, int] = {action: level for level, action in enumerate(ACTIONS)}
# What a reviewer may decide (`review` is the policy's way of asking; skipping decides nothing).
DECISIONS: tuple[str, ...] = ("keep", "drop", "relabel")
# The actions the review queue holds by default: every one a person may want to overrule.
TO_REVIEW: tuple[str, ...] = ("review", "relabel", "drop")
Task = Literal["classification", "regression", "multilabel"]
TASKS: tuple[str, ...] = ("classification", "regression", "multilabel")
BOTH: tuple[Task, ...] = ("classification", "regression")
ALL: tuple[Task, ...] = ("classification", "regression", "multilabel")


@dataclass(frozen=True)
class IssueType:
    """One issue type and every part cleanset needs of it."""

    name: str
    meaning: str  # one line: the report's note and the README's "flagged rows"
    finder: str  # "module.function" that produces the type's columns
    found_by: str  # how, in words (README)
    default_action: Action
    action_help: str = ""  # the Policy field's description
    default_action_text: str = ""  # README's "default action" cell (default: default_action)
    readme_detail: str = ""  # README's "flagged rows" cell (default: meaning)
    enabled_by_default: bool = True
    datalab: bool = False  # checked by cleanlab's Datalab on the shared kNN graph
    relabel: bool = False  # comes with a suggested label, so `relabel` is a possible action
    tasks: tuple[Task, ...] = ("classification",)  # the task types the check applies to
    task_actions: tuple[tuple[Task, Action], ...] = ()  # default action per task, when it differs
    extra_columns: tuple[tuple[str, str], ...] = ()  # (column, DuckDB type) beyond flag/score

    @property
    def flag_column(self) -> str:
        return f"is_{self.name}_issue"

    @property
    def score_column(self) -> str:
        return f"{self.name}_score"

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """The type's columns in the issues table, with their DuckDB types."""
        return ((self.flag_column, "BOOLEAN"), (self.score_column, "DOUBLE"),
                *self.extra_columns)

    def default_for(self, task: str) -> Action:
        """The default action of this type's rows in a run of `task`."""
        return dict(self.task_actions).get(task, self.default_action)


REGISTRY: tuple[IssueType, ...] = (
    IssueType(
        "label", "probably mislabelled", "detect.label_issues",
        "confident learning on out-of-fold probabilities (regression: cleanlab's label quality "
        "score of out-of-fold predictions; multilabel: cleanlab's multi-label label issues of "
        "out-of-fold per-tag probabilities)", "drop",
        action_help="rows with a label issue (when the model passed its check; else review)",
        default_action_text="drop when the model passed its check, else review (regression, "
        "multilabel: review); never relabelled unless asked",
        readme_detail="probably mislabelled: `label_evidence` says why (`confident`: "
        "cleanlab's confident learning; `disagreement`: only the out-of-fold model's top class "
        "differs, by at least 0.1 in probability, from a model with log-loss skill at least 0.5; "
        "review only, never dropped); `suggested_label` + confidence + "
        "`suggested_label_agreement` (share of its neighbours with that label); regression: "
        "`suggested_value` and its interval; multilabel: `suggested_tags`, `tags_likely_missing`, "
        "`tags_likely_wrong`. Every scored classification row also gets "
        "`is_well_labeled` / `well_labeled_score` (safe to skip in review) and `is_ambiguous` / "
        "`ambiguous_score` / `plausible_labels` (tasks/trust.py)",
        relabel=True, tasks=ALL, task_actions=(("regression", "review"),
                                                  ("multilabel", "review")),
        extra_columns=(("label_evidence", "VARCHAR"),
                       ("is_well_labeled", "BOOLEAN"), ("well_labeled_score", "DOUBLE"),
                       ("is_ambiguous", "BOOLEAN"), ("ambiguous_score", "DOUBLE"),
                       ("plausible_labels", "VARCHAR"))),
    IssueType(
        "unlabeled", "no label given", "detect.unlabeled_columns",
        "the fold models' mean probabilities (classification); ActiveLab priority for every row",
        "review", action_help="rows with an empty label",
        readme_detail="no label given; `suggested_label` + confidence from the mean of the fold "
        "models (score: that confidence); not in `<dataset>_clean` until a reviewer labels it. "
        "Every classification row also gets `active_learning_score` (ActiveLab: lower = "
        "(re)label it first)",
        tasks=BOTH, extra_columns=(("active_learning_score", "DOUBLE"),)),
    IssueType(
        "outlier", "far from every other row", "detect.datalab_issues",
        "Datalab, on the shared kNN graph", "review", action_help="rows far from all others",
        datalab=True, tasks=ALL),
    IssueType(
        "near_duplicate", "near copies of another row", "detect.datalab_issues",
        "Datalab, on the shared kNN graph", "keep",
        readme_detail="all members of a near-copy set (`near_duplicate_set` = its first row)",
        datalab=True, extra_columns=(("near_duplicate_set", "VARCHAR"),), tasks=ALL),
    IssueType(
        "exact_duplicate", "copies of an earlier row", "detect.exact_duplicates",
        "hash of the raw feature values and the label", "drop",
        action_help="copies after the first",
        default_action_text="drop while copies are rare (≤ 1% of rows), else keep",
        readme_detail="every copy after the first (`exact_duplicate_set`)",
        extra_columns=(("exact_duplicate_set", "VARCHAR"),), tasks=ALL),
    IssueType(
        "conflicting_label", "same features, other label", "detect.exact_duplicates",
        "hash of the raw feature values", "review",
        action_help="same features, other labels",
        readme_detail="identical features, different labels (score: share agreeing)",
        # not for a regression target: identical features with another value is the noise any
        # target has (a price dataset flagged 8 of 600 houses for review), not a conflict; a
        # value far from its prediction is a label issue already
        tasks=("classification", "multilabel")),
    IssueType(
        "null", "every feature missing", "detect.null_rows", "raw feature values", "drop",
        action_help="rows with every feature missing",
        readme_detail="every feature missing (score: share present)", tasks=ALL),
    IssueType(
        "class_imbalance", "rows of a rare class", "detect.datalab_issues",
        "Datalab + the rare-class rule", "review", action_help="rows of a rare class",
        datalab=True),
    IssueType(
        "non_iid", "data order is not random", "detect.datalab_issues",
        "Datalab, on the shared kNN graph (above 20,000 rows: on an evenly spaced sample of at "
        "most 20,000 with its own approximate graph; the other rows get no score)", "keep",
        readme_detail="the dataset's order is not random (one row carries the flag)",
        datalab=True, tasks=ALL),
    IssueType(
        "underperforming_group", "a cluster the model fails on", "detect.datalab_issues",
        "Datalab, on the clusters of the shared kNN graph (DBSCAN, clustered by the knn stage; "
        "an incremental run puts new rows in their neighbours' cluster)", "keep",
        readme_detail="a cluster the model does much worse on", datalab=True),
    IssueType(
        "data_valuation", "rows that do not help the model", "detect.datalab_issues",
        "Datalab (KNN-Shapley), **opt-in**", "keep", enabled_by_default=False, datalab=True,
        tasks=ALL),
    IssueType(
        "invalid", "failed a row-level expectation", "validate.check",
        "validation (`warning` expectations)", "drop",
        action_help="rows failing a row-level expectation", tasks=ALL),
)

BY_NAME: dict[str, IssueType] = {t.name: t for t in REGISTRY}
ISSUE_TYPES: tuple[str, ...] = tuple(BY_NAME)
RELABEL_TYPES: tuple[str, ...] = tuple(t.name for t in REGISTRY if t.relabel)
DATALAB_TYPES: tuple[str, ...] = tuple(t.name for t in REGISTRY if t.datalab)
DEFAULT_OFF: tuple[str, ...] = tuple(t.name for t in REGISTRY if not t.enabled_by_default)
TYPE_NOTES: dict[str, str] = {t.name: t.meaning for t in REGISTRY}
SET_COLUMNS: dict[str, str] = {t.name: c for t in REGISTRY for c, _ in t.extra_columns
                               if c.endswith("_set")}


def task_policy_fields() -> list[tuple[str, IssueType, str, Action]]:
    """(Policy field, type, task, default) for each type whose default differs by task, e.g.
    `label_regression` (review) beside `label` (drop)."""
    return [(f"{t.name}_{task}", t, task, action) for t in REGISTRY
            for task, action in t.task_actions]


def types_for(task: str) -> tuple[str, ...]:
    """The issue types that apply to a run of `task`."""
    return tuple(t.name for t in REGISTRY if task in t.tasks)


def issue_columns() -> list[tuple[str, str]]:
    """Every type's columns in registry order, with their DuckDB types."""
    return [col for t in REGISTRY for col in t.columns]


def readme_table() -> str:
    """The README's issue-type table (markdown), as the registry says."""
    lines = ["| type | found by | flagged rows | default action | tasks |",
             "| --- | --- | --- | --- | --- |"]
    for t in REGISTRY:
        lines.append(f"| `{t.name}` | {t.found_by} | {t.readme_detail or t.meaning} | "
                     f"{t.default_action_text or t.default_action} | {', '.join(t.tasks)} |")
    return "\n".join(lines)

