"""decide: an action per row (keep, drop, relabel, review) from the policy, then the reviewers'
decisions on top: a human decision always wins over the policy, in every later run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.caching import stage
from tasks.detect import Detection
from tasks.featurize import match_decisions
from tasks.issue_types import ISSUE_TYPES, RELABEL_TYPES, SEVERITY
from tasks.review import read_decisions
from tasks.spec import Policy
from tasks.store import TableRef, write_table


class Decided(BaseModel):
    """The issues frame with actions, plus what the run must report about the decisions."""

    model_config = ConfigDict(frozen=True)
    table: TableRef
    decisions_sha256: str | None = None  # the decisions applied (part of the run id)
    orphan_decisions: tuple[str, ...] = ()  # decided row ids no longer in the data
    n_reviewed: int = 0


def policy_action(policy: Policy, issue_type: str, task: str = "classification") -> str:
    """The policy's action for a type in a run of `task` (its task field when it has one, e.g.
    `label_regression`)."""
    return getattr(policy, f"{issue_type}_{task}", None) or getattr(policy, issue_type)


def safe_relabel(issues: pd.DataFrame, policy: Policy, trusted: bool,
                 task: str = "classification") -> np.ndarray:
    """Rows whose suggested label may replace the given one without a person: the model passed
    its check, the suggestion is confident, and the row's neighbours (another model family)
    mostly carry the suggested label. Measured in bench/do_no_harm.py (design half). For a
    regression (only with `label_regression: relabel`): every flagged row with a suggested
    value, when the model passed its check; the same for a multilabel run's suggested tag set
    (`label_multilabel: relabel`)."""
    n = len(issues)
    if not (trusted and policy.auto_fix):
        return np.zeros(n, dtype=bool)
    if task in ("regression", "multilabel"):  # the suggested value / tag set
        suggested = issues.get("suggested_label", pd.Series(None, index=issues.index))
        return suggested.notna().to_numpy() & (
            suggested.astype(str).to_numpy() != issues["given_label"].astype(str).to_numpy())

    def column(name: str, default: float) -> np.ndarray:
        values = issues[name] if name in issues else pd.Series(default, index=issues.index)
        return values.astype("float64").fillna(default).to_numpy()

    suggested = issues.get("suggested_label", pd.Series(None, index=issues.index))
    given = issues.get("given_label", pd.Series(None, index=issues.index))
    ambiguous = issues["is_ambiguous"].astype("boolean").fillna(False).to_numpy(dtype=bool) \
        if "is_ambiguous" in issues else np.zeros(n, dtype=bool)
    return (~ambiguous & (column("suggested_label_confidence", 0.0) >= policy.relabel_threshold)
            & (column("suggested_label_agreement", 0.0) >= policy.relabel_agreement)
            & suggested.notna().to_numpy()
            & (suggested.astype(str).to_numpy() != given.astype(str).to_numpy()))


def actions(issues: pd.DataFrame, policy: Policy, trusted: bool = True,
            task: str = "classification", text: bool = False) -> pd.Series:
    """The action per row by the policy: the most severe action among the row's issues.

    A label issue under `relabel` becomes `relabel` only where `safe_relabel` holds; otherwise it
    gets `policy.relabel_fallback`. A model too weak to judge labels (`trusted` false) changes
    and drops nothing for label issues: they go to review. Exact copies are kept (flagged) when
    they are more than `policy.max_duplicate_share` of the rows. A label issue on an ambiguous row
    (tasks/trust.py) gets `policy.ambiguous` instead of drop or relabel. When a feature is free
    text (`text`), a label issue that would be dropped gets `policy.label_with_text` instead (a
    relabel the user asked for and `safe_relabel` allows stays). A well-labeled row gets at least
    `policy.well_labeled` (keep by default). `policy.auto_fix` false changes and drops nothing
    at all."""
    level = np.zeros(len(issues), dtype=np.int8)
    safe = safe_relabel(issues, policy, trusted, task)
    copies_common = "is_exact_duplicate_issue" in issues and (
        issues["is_exact_duplicate_issue"].fillna(False).to_numpy(dtype=bool).mean()
        > policy.max_duplicate_share)
    for issue_type in ISSUE_TYPES:
        column = f"is_{issue_type}_issue"
        if column not in issues:
            continue
        action = policy_action(policy, issue_type, task)
        flagged = issues[column].fillna(False).to_numpy(dtype=bool)
        if issue_type in RELABEL_TYPES and not trusted and action in ("relabel", "drop"):
            action = "review"
        if issue_type == "exact_duplicate" and copies_common and action == "drop":
            action = "keep"  # copies are a property of this data, not accidents
        if action == "relabel":
            fallback = policy.relabel_fallback if trusted else "review"
            this = np.where(safe, SEVERITY["relabel"], SEVERITY[fallback])
        else:
            this = np.full(len(issues), SEVERITY[action])
        if issue_type == "label" and "is_ambiguous" in issues and action in ("relabel", "drop"):
            ambiguous = issues["is_ambiguous"].astype("boolean").fillna(False).to_numpy(bool)
            this = np.where(ambiguous, SEVERITY[policy.ambiguous], this)
        if issue_type == "label" and text:
            this = np.where(this == SEVERITY["drop"], SEVERITY[policy.label_with_text], this)
        level = np.where(flagged, np.maximum(level, this), level)
    if policy.well_labeled != "keep" and "is_well_labeled" in issues:
        certified = issues["is_well_labeled"].astype("boolean").fillna(False).to_numpy(bool)
        level = np.where(certified, np.maximum(level, SEVERITY[policy.well_labeled]), level)
    if not policy.auto_fix:
        level = np.minimum(level, SEVERITY["review"])
    names = np.array(sorted(SEVERITY, key=SEVERITY.get), dtype=object)
    return pd.Series(names[level], index=issues.index, name="action")


def apply_policy(issues: pd.DataFrame, policy: Policy, trusted: bool = True,
                 task: str = "classification", text: bool = False) -> pd.DataFrame:
    """Add `action`, `final_label` (the label the clean table carries) and `decided_by`."""
    out = issues.copy()
    out["action"] = actions(out, policy, trusted, task, text)
    relabel = out["action"] == "relabel"
    out["final_label"] = out["given_label"].where(~relabel, out["suggested_label"]).astype("str")
    out["decided_by"] = pd.Series("policy", index=out.index, dtype="str")
    out["review_note"] = pd.Series(None, index=out.index, dtype="str")
    return out


def apply_decisions(decided: pd.DataFrame, decisions: pd.DataFrame | None,
                    task: str = "classification") -> tuple[pd.DataFrame, list[str]]:
    """Reviewers' decisions override the policy. Returns the frame and the row ids of decisions
    whose row is no longer in the data (reported by the caller, never silently dropped).

    keep: the row stays with its given label and its label is not flagged again;
    relabel: the row takes the reviewer's label (and is no longer a label issue);
    drop: the row is left out of the clean table.
    """
    if decisions is None or decisions.empty:
        return decided, []
    out = decided.copy()
    latest, pos, orphans = match_decisions(decisions, out["row_id"])
    kind, rows = latest["decision"].to_numpy(), out.index[pos]
    out.loc[rows, "action"] = kind
    out.loc[rows, "decided_by"] = "review"
    out.loc[rows, "review_note"] = latest["note"].to_numpy()
    new = latest["new_label"].to_numpy(dtype=object)
    if task == "multilabel":  # a reviewer's "no tags" (tags.NO_TAGS) is the empty set
        from tasks.task_type import NO_TAGS

        new = np.where(new == NO_TAGS, "", new)
    out.loc[rows, "final_label"] = np.where(kind == "relabel", new,
                                            out.loc[rows, "given_label"].to_numpy())
    resolved = rows[np.isin(kind, ("keep", "relabel"))]
    scored = resolved[out.loc[resolved, "is_label_issue"].notna().to_numpy()]
    out.loc[scored, "is_label_issue"] = False  # not flagged again (unscored rows stay NA)
    return out, orphans


@stage("decide")
def decide(detection: Detection, policy: Policy, decisions: TableRef | None, work_dir: str,
           trusted: bool = True, task: str = "classification", text: bool = False) -> Decided:
    """Add `action`, `final_label`, `decided_by` to the issues frame: policy, then decisions.
    `trusted`: whether the model passed its check (estimate.check_model); `text`: whether a
    feature is free text (see `actions`)."""
    logger = get_run_logger()
    issues = apply_policy(detection.issues.read(), policy, trusted, task, text)
    issues, orphans = apply_decisions(issues, decisions.read() if decisions else None, task)
    if orphans:
        shown = ", ".join(orphans[:10]) + (" ..." if len(orphans) > 10 else "")
        logger.warning("%d review decision(s) are for rows no longer in the data (kept in "
                       "review_decisions, not applied): %s", len(orphans), shown)
    counts = issues["action"].value_counts().to_dict()
    n_review = int((issues["decided_by"] == "review").sum())
    logger.info("actions: %s; %d row(s) decided by reviewers",
                ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), n_review)
    return Decided(table=write_table(issues, Path(work_dir), "decided"),
                   decisions_sha256=decisions.sha256 if decisions else None,
                   orphan_decisions=tuple(orphans), n_reviewed=n_review)


@stage("load-decisions", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 10])
def load_decisions(db: str, dataset: str, work_dir: str) -> TableRef | None:
    """The reviewers' decisions for the dataset, as a content-addressed table (so the decide
    stage's cache changes exactly when a decision does)."""
    frame = read_decisions(Path(db), dataset)
    if frame is None:
        return None
    get_run_logger().info("%d review decision(s) on record for %s", len(frame), dataset)
    return write_table(frame.astype(object).where(frame.notna(), None), Path(work_dir),
                       "decisions")
