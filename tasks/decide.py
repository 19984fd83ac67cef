"""decide: turn flagged issues into an action per row (keep, drop, review) by the policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from tasks.caching import STAGE_CACHE
from tasks.detect import Detection
from tasks.spec import ISSUE_TYPES, Policy
from tasks.store import TableRef, write_table


def actions(issues: pd.DataFrame, policy: Policy) -> pd.Series:
    """The action per row: the most severe action among the row's issues (drop > review > keep)."""
    severity = {"keep": 0, "review": 1, "drop": 2}
    level = np.zeros(len(issues), dtype=np.int8)
    for issue_type in ISSUE_TYPES:
        column = f"is_{issue_type}_issue"
        if column not in issues:
            continue
        action = getattr(policy, issue_type)
        flagged = issues[column].fillna(False).to_numpy(dtype=bool)
        level = np.where(flagged, np.maximum(level, severity[action]), level)
    names = np.array(["keep", "review", "drop"], dtype=object)
    return pd.Series(names[level], index=issues.index, name="action")


@task(name="decide", cache_policy=STAGE_CACHE, retries=2, retry_delay_seconds=2)
def decide(detection: Detection, policy: Policy, work_dir: str) -> TableRef:
    """Add the `action` column to the issues frame."""
    issues = detection.issues.read()
    issues["action"] = actions(issues, policy)
    counts = issues["action"].value_counts().to_dict()
    get_run_logger().info("actions: %s", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return write_table(issues, Path(work_dir), "decided")
