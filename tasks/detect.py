"""detect: find label issues with cleanlab's confident learning, plus the quarantined rows.

Scores follow cleanlab's convention: in [0, 1], lower = more likely a problem. The output is the
wide, Datalab-style issues frame: one row per snapshot row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.dataset import overall_label_health_score
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict

from tasks.caching import STAGE_CACHE
from tasks.errors import is_retryable
from tasks.featurize import Design
from tasks.ingest import Snapshot
from tasks.store import ArrayRef, TableRef, write_table
from tasks.validate import Validation

ISSUE_TYPES = ("label", "invalid", "class_imbalance")


class Detection(BaseModel):
    """The issues frame on disk, plus the per-type summary and the run's health score."""

    model_config = ConfigDict(frozen=True)
    issues: TableRef
    summary: tuple[tuple[str, int, float], ...]  # (issue_type, num_issues, mean score)
    health_score: float
    n_scored: int


def label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> pd.DataFrame:
    """cleanlab's label issues and scores, with the suggested label and its probability."""
    is_issue = find_label_issues(labels, pred_probs, n_jobs=1)
    score = get_label_quality_scores(labels, pred_probs)
    suggested = pred_probs.argmax(axis=1)
    return pd.DataFrame({
        "is_label_issue": is_issue.astype(bool),
        "label_score": score.astype("float64"),
        "suggested": suggested,
        "suggested_label_confidence": pred_probs.max(axis=1).astype("float64"),
    })


def issues_frame(
    row_ids: pd.Series, given: pd.Series, positions: np.ndarray, labels: np.ndarray,
    classes: tuple[str, ...], pred_probs: np.ndarray, quarantined: np.ndarray,
    rare: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per snapshot row: label issue columns for scored rows, invalid for quarantined,
    class_imbalance for rows of classes too rare to score (score: the class's share of rows)."""
    n = len(row_ids)
    names = np.array(classes, dtype=object)
    found = label_issues(labels, pred_probs)
    out = pd.DataFrame({
        "row_id": row_ids.astype(str).to_numpy(),
        "given_label": given.astype(object).where(given.notna(), None).map(
            lambda v: None if v is None else (str(int(v)) if isinstance(v, float)
                                              and v.is_integer() else str(v))),
        "suggested_label": pd.Series([None] * n, dtype=object),
        "suggested_label_confidence": np.full(n, np.nan),
        "is_label_issue": pd.array([pd.NA] * n, dtype="boolean"),
        "label_score": np.full(n, np.nan),
        "is_invalid_issue": np.zeros(n, dtype=bool),
        "invalid_score": np.ones(n),
    })
    out.loc[positions, "suggested_label"] = names[found["suggested"].to_numpy()]
    for col in ("suggested_label_confidence", "is_label_issue", "label_score"):
        out.loc[positions, col] = found[col].to_numpy()
    out.loc[quarantined, "is_invalid_issue"] = True
    out.loc[quarantined, "invalid_score"] = 0.0
    labelled = out["given_label"].notna()
    share = out.loc[labelled, "given_label"].map(
        out.loc[labelled, "given_label"].value_counts(normalize=True))
    out["class_imbalance_score"] = share.reindex(out.index).astype("float64")
    out["is_class_imbalance_issue"] = False
    if rare is not None and len(rare):
        out.loc[rare, "is_class_imbalance_issue"] = True
    return out


def summarize(issues: pd.DataFrame) -> list[tuple[str, int, float]]:
    """(issue_type, number flagged, mean score) per issue type present in the frame."""
    rows = []
    for t in ISSUE_TYPES:
        flag, score = issues[f"is_{t}_issue"], issues[f"{t}_score"]
        rows.append((t, int(flag.fillna(False).sum()), float(np.nanmean(score)) if
                     score.notna().any() else 1.0))
    return rows


@task(
    name="detect",
    cache_policy=STAGE_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=is_retryable,
)
def detect(
    snapshot: Snapshot, validation: Validation, design: Design, pred_probs: ArrayRef,
    label: str, work_dir: str,
) -> Detection:
    """Flag label issues (confident learning) and quarantined rows; write the issues frame."""
    df = snapshot.table.read(columns=[snapshot.id_column, label])
    labels, probs = design.labels.read(), pred_probs.read()
    frame = issues_frame(df[snapshot.id_column], df[label], design.positions.read(), labels,
                         design.classes, probs, validation.quarantined.read(), design.rare.read())
    health = float(overall_label_health_score(labels, probs, verbose=False))
    summary = summarize(frame)
    get_run_logger().info("issues: %s; label health %.3f",
                          ", ".join(f"{t}={k}" for t, k, _ in summary), health)
    return Detection(issues=write_table(frame, Path(work_dir), "issues"), summary=tuple(summary),
                     health_score=health, n_scored=len(labels))
