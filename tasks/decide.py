"""decide: an action per row (keep, drop, relabel, review) from the policy, then the reviewers'
decisions on top: a human decision always wins over the policy, in every later run."""

from __future__ import annotations

from dataclasses import dataclass
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
from tasks.store import ArrayRef, TableRef, write_table


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


DROP_THRESHOLDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # label scores tried, low first


def _expected_below(issues: pd.DataFrame, scored: np.ndarray, n_classes: int, theta: float,
                    pred_probs: np.ndarray | None = None) -> float:
    """How many scored rows the model itself expects to carry a label it gives less than
    `theta`, if its out-of-fold probabilities were the labels' own distribution (calibration):
    the sum over rows and classes of p_k for the p_k below theta. From `pred_probs` (one row per
    scored row, in order) when given; else from the frame, which carries each row's probability
    of the given label (`label_score`) and of the top class, the rest of the mass spread evenly
    over the other classes (exact for two classes)."""
    if pred_probs is not None:
        return float((pred_probs * (pred_probs < theta)).sum())
    p = issues["label_score"].to_numpy(dtype="float64")[scored]
    top = issues["suggested_label_confidence"].astype("float64").fillna(0.0).to_numpy()[scored]
    same = (issues["suggested_label"].astype(str).to_numpy()[scored]
            == issues["given_label"].astype(str).to_numpy()[scored])
    rest = np.clip(np.where(same, 1.0 - p, 1.0 - p - top), 0.0, None)
    others = np.where(same, n_classes - 1, n_classes - 2)
    each = np.divide(rest, others, out=np.zeros_like(rest), where=others > 0)
    return float((p * (p < theta)).sum() + (top * (~same & (top < theta))).sum()
                 + (rest * ((others > 0) & (each < theta))).sum())


def _matching_probs(issues: pd.DataFrame, scored: np.ndarray,
                    pred_probs: np.ndarray | None) -> np.ndarray | None:
    """The out-of-fold probabilities when they are the frame's scored rows in order (checked:
    one row each, the top probability is the row's suggested_label_confidence); else None."""
    if pred_probs is None or "suggested_label_confidence" not in issues:
        return None
    probs = np.asarray(pred_probs, dtype="float64")
    if probs.ndim != 2 or probs.shape[0] != int(scored.sum()) or probs.shape[1] < 2:
        return None
    top = issues["suggested_label_confidence"].astype("float64").to_numpy()[scored]
    return probs if np.allclose(probs.max(axis=1), top, atol=1e-4, equal_nan=False) else None


CALIBRATIONS = ("none", "temperature", "temperature_noise")
FIT_ROWS = 20_000  # rows the temperature is fitted on (a fixed-seed sample above this)


def _given_columns(probs: np.ndarray, score: np.ndarray) -> np.ndarray | None:
    """Each row's column of its given label: the one whose probability is its label score
    (cleanlab's self-confidence); None when some row has no such column."""
    col = np.abs(probs - score[:, None]).argmin(axis=1)
    ok = np.abs(probs[np.arange(len(col)), col] - score) <= 1e-4
    return col if ok.all() else None


def _tempered(logp: np.ndarray, t: float) -> np.ndarray:
    z = logp / t
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, given: np.ndarray, noise: bool = False,
                    seed: int = 0) -> tuple[float, float]:
    """(temperature T, noise share) fitted by maximum likelihood of the given labels under the
    out-of-fold probabilities softened (T > 1) or sharpened (T < 1) as p_k^(1/T), renormalised.
    The given labels carry the errors the run looks for, and a model judged on them is pushed
    toward under-confidence (each wrong label costs log p of a class the model rightly doubts);
    `noise` fits the labels as a mixture instead, (1 - eps) * calibrated + eps / K (a share eps
    of labels drawn at random), so random flips are charged to eps, not to T. Fitted on at most
    FIT_ROWS rows (fixed-seed sample). Noise share 0.0 when `noise` is false."""
    from scipy.optimize import minimize
    from scipy.special import expit

    probs = np.asarray(probs, dtype="float64")
    n, k = probs.shape
    if n > FIT_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(n, FIT_ROWS, replace=False))
        probs, given = probs[rows], given[rows]
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    idx = np.arange(len(given))

    def nll(params: np.ndarray) -> float:
        q = _tempered(logp, float(np.exp(params[0])))[idx, given]
        if noise:
            eps = float(expit(params[1]))
            q = (1.0 - eps) * q + eps / k
        return float(-np.log(np.clip(q, 1e-300, None)).mean())

    start = np.array([0.0, -2.0]) if noise else np.array([0.0])
    bounds = [(np.log(0.05), np.log(20.0))] + ([(-8.0, 0.0)] if noise else [])
    fit = minimize(nll, start, method="L-BFGS-B", bounds=bounds)
    return float(np.exp(fit.x[0])), float(expit(fit.x[1])) if noise else 0.0


@dataclass(frozen=True)
class DropPlan:
    """Where label issues may be dropped: below `theta` on `score` (the label score, after the
    calibration when one was fitted); `temperature`/`noise_share`: the fitted calibration (1.0
    and 0.0 when none)."""

    below: np.ndarray  # per issues row: its label may be dropped (score < theta)
    theta: float = 0.0
    temperature: float = 1.0
    noise_share: float = 0.0


def drop_plan(issues: pd.DataFrame, margin: float = 2.0, pred_probs: np.ndarray | None = None,
              calibration: str = "none") -> DropPlan:
    """`drop_threshold` with the rows it lets through. `calibration` (policy
    `drop_calibration`): "none" uses the out-of-fold probabilities as they are; "temperature"
    and "temperature_noise" first rescale them with one temperature fitted on the run's own
    out-of-fold probabilities against the given labels (`fit_temperature`; the latter with a
    share of random labels fitted beside it) and judge the calibrated label scores against the
    calibrated expectation E. Needs `pred_probs` lined up with the scored rows; else none.
    Default temperature_noise, chosen on the design half (results/design_v5.md,
    bench/tune_policy.py, margin 2): mean label-accuracy change +0.0037 (none) -> +0.0128,
    wrong rows dropped 577 -> 1,274, right rows 187 -> 761, no more cases where it fell."""
    nothing = np.zeros(len(issues), dtype=bool)
    if "label_score" not in issues or "is_label_issue" not in issues:
        return DropPlan(below=nothing)
    score = issues["label_score"].astype("float64").to_numpy().copy()
    scored = ~np.isnan(score) & issues["given_label"].notna().to_numpy()
    if not scored.any():
        return DropPlan(below=nothing)
    n_classes = int(issues.loc[scored, "given_label"].astype(str).nunique())
    if n_classes < 2:
        return DropPlan(below=nothing)
    probs = _matching_probs(issues, scored, pred_probs)
    t = eps = None
    if probs is not None and calibration != "none":
        given = _given_columns(probs, score[scored])
        if given is not None:
            t, eps = fit_temperature(probs, given, noise=calibration == "temperature_noise")
            probs = _tempered(np.log(np.clip(probs, 1e-12, 1.0)), t)
            score[scored] = probs[np.arange(len(given)), given]
    rate = float(issues["is_label_issue"].astype("boolean").fillna(False).to_numpy(
        dtype=bool)[scored].mean())
    best = 0.0
    for theta in DROP_THRESHOLDS:
        n = int((score[scored] < theta).sum())
        expected = _expected_below(issues, scored, n_classes, theta, probs)
        if n and n - expected - margin * np.sqrt(expected) > rate * n:
            best = theta
    below = scored & (np.nan_to_num(score, nan=1.0) < best)
    return DropPlan(theta=best, temperature=t or 1.0, noise_share=eps or 0.0, below=below)


def drop_threshold(issues: pd.DataFrame, margin: float = 2.0,
                   pred_probs: np.ndarray | None = None, calibration: str = "none") -> float:
    """The label score below which dropping a label issue is expected to raise label accuracy
    (0.0: nowhere; every label issue goes to review instead).

    Dropping a set of rows raises the share of right labels exactly when the set's share of
    wrong labels is above the data's error rate. Both are estimated from the out-of-fold
    probabilities: the error rate by the share of rows flagged as label issues (an
    over-estimate where classes overlap, so a higher bar); the wrong labels among the N rows
    whose given label scores below theta by N minus the number E the model expects there from
    its own uncertainty (`_expected_below`), less `margin` standard errors (sqrt E). A label
    that is rare but right (a hard row where classes overlap, or noise that flips the model's
    hardest rows to their runner-up class) is one the model expects and leaves no excess: those
    rows go to review. Labels far rarer than the model expects (random flips) leave a clear
    excess and are dropped. The largest theta of DROP_THRESHOLDS that passes is returned;
    measured in bench/tune_policy.py on the design half of bench/do_no_harm.py. With a
    `calibration` (see `drop_plan`) theta is on the calibrated label score."""
    return drop_plan(issues, margin, pred_probs, calibration).theta


def actions(issues: pd.DataFrame, policy: Policy, trusted: bool = True,
            task: str = "classification", text: bool = False,
            pred_probs: np.ndarray | None = None, plan: DropPlan | None = None) -> pd.Series:
    """The action per row by the policy: the most severe action among the row's issues.

    A label issue under `relabel` becomes `relabel` only where `safe_relabel` holds; otherwise it
    gets `policy.relabel_fallback`. A model too weak to judge labels (`trusted` false) changes
    and drops nothing for label issues: they go to review. Exact copies are kept (flagged) when
    they are more than `policy.max_duplicate_share` of the rows. A label issue on an ambiguous row
    (tasks/trust.py) gets `policy.ambiguous` instead of drop or relabel. When a feature is free
    text (`text`), a label issue that would be dropped gets `policy.label_with_text` instead (a
    relabel the user asked for and `safe_relabel` allows stays). A label issue found only because
    the model's top class differs (`label_evidence` "disagreement", tasks/detect.py) is never
    dropped: it goes to review. A well-labeled row gets at least `policy.well_labeled` (keep by
    default). `policy.auto_fix` false changes and drops nothing at all. `plan`: the drop check's
    result for these rows when the caller has it (decide logs it), else computed here."""
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
        if issue_type == "label" and "label_evidence" in issues:  # the model disagrees, no more
            weak = issues["label_evidence"].to_numpy(dtype=object) == "disagreement"
            this = np.where(weak & (this == SEVERITY["drop"]), SEVERITY["review"], this)
        if issue_type == "label" and text:
            this = np.where(this == SEVERITY["drop"], SEVERITY[policy.label_with_text], this)
        if (issue_type == "label" and task == "classification" and policy.drop_check
                and (this == SEVERITY["drop"]).any()):
            below = (plan or drop_plan(issues, policy.drop_margin, pred_probs,  # where safe
                                       policy.drop_calibration)).below
            this = np.where((this == SEVERITY["drop"]) & ~below, SEVERITY["review"], this)
        level = np.where(flagged, np.maximum(level, this), level)
    if policy.well_labeled != "keep" and "is_well_labeled" in issues:
        certified = issues["is_well_labeled"].astype("boolean").fillna(False).to_numpy(bool)
        level = np.where(certified, np.maximum(level, SEVERITY[policy.well_labeled]), level)
    if not policy.auto_fix:
        level = np.minimum(level, SEVERITY["review"])
    names = np.array(sorted(SEVERITY, key=SEVERITY.get), dtype=object)
    return pd.Series(names[level], index=issues.index, name="action")


def apply_policy(issues: pd.DataFrame, policy: Policy, trusted: bool = True,
                 task: str = "classification", text: bool = False,
                 pred_probs: np.ndarray | None = None,
                 plan: DropPlan | None = None) -> pd.DataFrame:
    """Add `action`, `final_label` (the label the clean table carries) and `decided_by`.
    `pred_probs`: the out-of-fold probabilities of the scored rows (see `drop_threshold`);
    `plan`: the drop check already computed on these rows (drop_plan), else it is computed."""
    out = issues.copy()
    out["action"] = actions(out, policy, trusted, task, text, pred_probs, plan)
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
           trusted: bool = True, task: str = "classification", text: bool = False,
           pred_probs: ArrayRef | None = None) -> Decided:
    """Add `action`, `final_label`, `decided_by` to the issues frame: policy, then decisions.
    `trusted`: whether the model passed its check (estimate.check_model); `text`: whether a
    feature is free text (see `actions`); `pred_probs`: the run's out-of-fold probabilities
    (the estimate that gates label drops, `drop_threshold`)."""
    logger = get_run_logger()
    probs = pred_probs.read() if pred_probs is not None and task == "classification" else None
    issues = detection.issues.read()
    plan = None
    if probs is not None and policy.drop_check and policy.drop_calibration != "none":
        # fitted once: logged here, used by the policy (actions) below
        plan = drop_plan(issues, policy.drop_margin, probs, policy.drop_calibration)
        logger.info("drop check (%s): temperature %.2f, noise share %.3f; label issues dropped "
                    "below calibrated label score %g", policy.drop_calibration, plan.temperature,
                    plan.noise_share, plan.theta)
    issues = apply_policy(issues, policy, trusted, task, text, probs, plan)
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
