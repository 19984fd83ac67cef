"""detect: every issue type, one wide Datalab-style frame with a row per input row.

- label: cleanlab's confident learning on the out-of-fold probabilities (+ suggested label).
- outlier, near_duplicate, non_iid, class_imbalance, underperforming_group, data_valuation
  (opt-in): cleanlab's Datalab, given our kNN graph (tasks/knn.py) so it never builds its own.
- exact_duplicate, conflicting_label, null: computed on the raw feature values (Datalab has no
  exact-duplicate or conflict check, and its null check would only see the imputed embedding).
- invalid: rows quarantined by validation. class_imbalance also flags classes too rare to score.

Scores follow cleanlab's convention: in [0, 1], lower = more likely a problem.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.dataset import overall_label_health_score
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict

from tasks.caching import stage
from tasks.errors import CleansetError
from tasks.estimate import log_loss
from tasks.featurize import Design
from tasks.ingest import Snapshot
from tasks.issue_types import DATALAB_TYPES, DEFAULT_OFF, ISSUE_TYPES, types_for
from tasks.knn import Neighbours, graph_neighbours, neighbour_agreement
from tasks.store import ArrayRef, TableRef, write_table
from tasks.trust import ambiguity, slice_summary, well_labeled
from tasks.validate import Validation
from tasks.values import all_missing_flags, map_values

# DATALAB_TYPES (Datalab's checks) and DEFAULT_OFF (data_valuation: slow on large data, opt in
# with issue_types) come from the registry, tasks/issue_types.py.
NON_IID_MAX_ROWS = 20_000  # above: non_iid tests an evenly spaced sample (time, memory: below)


def enabled_types(settings: dict[str, bool | dict], task: str = "classification"
                  ) -> dict[str, dict]:
    """Issue type -> its Datalab keyword arguments, for the enabled types that apply to `task`
    (the registry's `tasks`: class_imbalance and underperforming_group are classification's).

    `settings` maps a type to False (off), True (on, defaults) or a dict of settings such as
    {"threshold": 0.2}; types not named keep their default (all on but data_valuation).
    """
    unknown = sorted(set(settings) - set(ISSUE_TYPES))
    if unknown:
        raise CleansetError(f"unknown issue type(s) {', '.join(unknown)}; known: "
                            f"{', '.join(ISSUE_TYPES)}")
    out = {}
    for t in types_for(task):
        value = settings.get(t, t not in DEFAULT_OFF)
        if value is False:
            continue
        out[t] = dict(value) if isinstance(value, dict) else {}
    return out


class Detection(BaseModel):
    """The issues frame on disk, plus the per-type summary, health and per-class quality."""

    model_config = ConfigDict(frozen=True)
    issues: TableRef
    summary: tuple[tuple[str, int, float], ...]  # (issue_type, num_issues, mean score)
    health_score: float  # share of rows with no issue of any enabled type
    label_health_score: float  # cleanlab's overall label health
    classes: TableRef | None = None  # per-class label quality (class_summary)
    slices: TableRef | None = None  # per slice value label quality (slice_summary)


# Which rows the model only disagrees with are label issues (issue 13): its top class must lead
# the given label's probability by DISAGREEMENT_MARGIN, and the model's out-of-fold log loss must
# be at least DISAGREEMENT_MIN_SKILL below the class-frequency baseline (`label_skill`). Chosen
# on the design half of bench/do_no_harm.py (bench/flag_rules.py --rows design_v6); see
# label_issues.
DISAGREEMENT_MARGIN = 0.1
DISAGREEMENT_MIN_SKILL = 0.5


def label_skill(labels: np.ndarray, pred_probs: np.ndarray) -> float:
    """1 - the out-of-fold log loss of the given labels / the log loss of guessing the class
    frequencies (0: no better than the baseline, 1: perfect): tasks/estimate.check_model's
    `skill`."""
    labels = np.asarray(labels)
    if not len(labels):
        return 0.0
    prior = np.bincount(labels, minlength=pred_probs.shape[1]) / len(labels)
    prior = prior[prior > 0]
    chance = float(-(prior * np.log(prior)).sum())
    return 1.0 - log_loss(labels, pred_probs) / chance if chance > 0 else 0.0


def label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> pd.DataFrame:
    """Label issues and scores, with the suggested label and its probability.

    A row is a label issue when cleanlab's confident learning flags it (`label_evidence`
    "confident") or, failing that, when the out-of-fold model's most likely class is not the
    given one ("disagreement"), provided that (a) the suggested class's probability exceeds the
    given label's by at least DISAGREEMENT_MARGIN (0.1; a near tie is no evidence either way)
    and (b) the model's out-of-fold log loss is at least DISAGREEMENT_MIN_SKILL (0.5) below the
    class-frequency baseline (`label_skill`; a soft model's top class differs from many right
    labels on hard rows, and its disagreements cannot tell them from errors: only confident
    learning's flags count then). Why disagreement at all: confident learning counts a row only
    once the model's probability of another class passes that class's average self-confidence,
    so with smooth, well-calibrated probabilities it misses the errors annotators make, on hard
    rows near a class boundary. Rows with only "disagreement" go to review and are never dropped
    or relabelled by the policy (tasks/decide.py), so the rule decides what is listed, not what
    is changed.

    Chosen on the design half of bench/do_no_harm.py (results/design_v6.md, per-row data
    replayed by `bench/flag_rules.py --rows design_v6`; 27 noisy cases of the four original
    shapes, 9 of `feature_dependent_rf`, 9 at 0% noise). Mean F1 against the planted errors,
    its difference from the obvious cleanlab script's, worst case, flags on error-free data:
    confident learning alone 0.512, +0.009, -0.257 (wine/feature_dependent), 3,111 flags;
    confident or any disagreement (the rule before) 0.545, +0.043, -0.105, 5,184; margin 0.1
    alone 0.555, +0.052, -0.090, 4,133; this rule 0.557, +0.054, -0.090 (penguins/
    feature_dependent, where confident learning alone is -0.105 too), 3,532 (the script:
    3,522); hard rows of a third model (`feature_dependent_rf`): +0.112 against the script
    (before +0.120, confident alone -0.067). Rejected there: capping disagreement at cleanlab's
    estimated number of issues (+0.019 to +0.021: the estimate misses boundary errors too),
    lowered per-class thresholds (+0.042), cleanlab's low_self_confidence / low_normalized_margin
    filters (+0.019 / +0.015). Held out (results/flag_rules_heldout_v6.md, replayed once on
    heldout_v6's probabilities): mean ΔF1 +0.025 -> +0.034, worst -0.131 -> -0.086, flags at
    0% 4,800 -> 3,689 (script 3,492); but hard rows of a third model +0.094 -> +0.043: a
    rare-positive table's log-loss skill is low against its low-entropy baseline, so its
    boundary errors (lending_club) are no longer flagged."""
    labels = np.asarray(labels)
    confident = np.asarray(find_label_issues(labels, pred_probs, n_jobs=1), dtype=bool)
    score = get_label_quality_scores(labels, pred_probs)
    suggested = pred_probs.argmax(axis=1)
    rows = np.arange(len(labels))
    lead = pred_probs[rows, suggested] - pred_probs[rows, labels]
    disagrees = (suggested != labels) & (lead >= DISAGREEMENT_MARGIN - 1e-12)
    if len(labels) and label_skill(labels, pred_probs) < DISAGREEMENT_MIN_SKILL:
        disagrees[:] = False
    evidence = np.where(confident, "confident", np.where(disagrees, "disagreement", None))
    return pd.DataFrame({
        "is_label_issue": confident | disagrees,
        "label_score": score.astype("float64"),
        "suggested": suggested,
        "suggested_label_confidence": pred_probs.max(axis=1).astype("float64"),
        "label_evidence": pd.Series(evidence, dtype=object),
    })


# Regression label issues. A residual is measured against the residual spread expected for the
# row: half the dataset's (1.4826 x MAD of the out-of-fold residuals) and half its neighbours'
# in the shared kNN graph (their MAD), since errors of a price grow with the price. Flagged:
# more than REGRESSION_Z such deviations from the median residual. Score: CleanLearning's
# (cleanlab.regression.learn) exp(-z / median z) with that spread as its `uncertainty`. Both
# chosen on the design half of bench/regression.py: with the dataset's spread alone and OUTRE
# as the score (the script at commit 4524d6a) mean F1 0.645 and AUROC 0.893; as now 0.689 and
# 0.901 (results/regression_design.md; its sweep: z = 2.5 scored +0.006 F1 on average but
# flags more rows of error-free data, so 3). OUTRE also takes half the rows as neighbours
# (O(n^2) memory). The suggested value is the
# out-of-fold prediction, with an INTERVAL interval from the residuals' quantiles.
REGRESSION_Z = 3.0
LOCAL_SHARE = 0.5
INTERVAL = 0.9


def label_value_text(v: object) -> str:
    """A given label as the issues table's text (a whole float without its .0)."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def given_texts(given: pd.Series) -> pd.Series:
    """The given labels as text, None where missing (once per distinct value)."""
    return map_values(given, label_value_text)


def value_text(v: float) -> str | None:
    """A suggested value as the issues table's text (6 significant digits)."""
    return None if v is None or not np.isfinite(v) else f"{v:.6g}"


def residual_z(labels: np.ndarray, predictions: np.ndarray,
               neighbours: np.ndarray | None = None) -> np.ndarray:
    """Each row's distance from the median out-of-fold residual, in robust standard deviations
    of the residuals: the dataset's, mixed with its neighbours' (`neighbours`: n x k rows of
    the kNN graph) when given."""
    residual = np.asarray(labels, dtype=np.float64) - np.ravel(predictions).astype(np.float64)
    spread = np.abs(residual - np.median(residual))
    overall = 1.4826 * float(np.median(spread))
    if not overall > 0:
        overall = float(np.std(residual)) or 1.0
    scale = np.full(len(residual), overall)
    if neighbours is not None and len(neighbours) == len(residual) and neighbours.shape[1]:
        local = 1.4826 * np.median(spread[neighbours], axis=1)
        scale = np.sqrt((1 - LOCAL_SHARE) * overall ** 2 + LOCAL_SHARE * local ** 2)
    return spread / np.maximum(scale, 1e-12 * overall)


def regression_label_issues(labels: np.ndarray, predictions: np.ndarray,
                            z: float = REGRESSION_Z, neighbours: np.ndarray | None = None
                            ) -> pd.DataFrame:
    """Label issues of a regression target from out-of-fold predictions: flag, score, the
    suggested value (the prediction) and its interval."""
    y, pred = np.asarray(labels, dtype=np.float64), np.ravel(predictions).astype(np.float64)
    robust_z = residual_z(y, pred, neighbours)
    score = np.exp(-robust_z / max(float(np.median(robust_z)), 1e-12))
    lo, hi = np.quantile(y - pred, [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2])
    return pd.DataFrame({
        "is_label_issue": robust_z > z,
        "label_score": score.astype("float64"),
        "suggested_value": pred,
        "suggested_value_low": pred + lo,
        "suggested_value_high": pred + hi,
    })


def regression_issues_frame(
    row_ids: pd.Series, given: pd.Series, positions: np.ndarray, labels: np.ndarray,
    predictions: np.ndarray, quarantined: np.ndarray, neighbours: np.ndarray | None = None,
) -> pd.DataFrame:
    """The regression counterpart of issues_frame: one row per snapshot row, the label columns
    for scored rows (suggested_label = the suggested value as text), invalid for quarantined."""
    n = len(row_ids)
    found = regression_label_issues(labels, predictions, neighbours=neighbours)
    out = pd.DataFrame({
        "row_id": row_ids.astype(str).to_numpy(),
        "given_label": given_texts(given),
        "given_value": np.full(n, np.nan),
        "suggested_label": pd.Series([None] * n, dtype=object),
        "suggested_label_confidence": np.full(n, np.nan),
        "suggested_value": np.full(n, np.nan),
        "suggested_value_low": np.full(n, np.nan),
        "suggested_value_high": np.full(n, np.nan),
        "is_label_issue": all_missing_flags(n),
        "label_score": np.full(n, np.nan),
        "is_invalid_issue": np.zeros(n, dtype=bool),
        "invalid_score": np.ones(n),
    })
    out.loc[positions, "given_value"] = labels
    out.loc[positions, "suggested_label"] = [value_text(v) for v in found["suggested_value"]]
    for col in ("suggested_value", "suggested_value_low", "suggested_value_high",
                "is_label_issue", "label_score"):
        out.loc[positions, col] = found[col].to_numpy()
    out.loc[quarantined, "is_invalid_issue"] = True
    out.loc[quarantined, "invalid_score"] = 0.0
    return out


# Multi-label flags: cleanlab's one-vs-rest confident learning flags a tag of a row; cleanset
# keeps the flag only when the model is at least MULTILABEL_MARGIN sure of the other state.
# Why: per tag, confident learning counts a row as mislabelled once the model's probability of
# the other state passes that state's average self-confidence, which for a modest model is
# about 0.5-0.6; over six tags a row is flagged when any tag is, so on generated data with no
# planted flip 38-45% of the rows were flagged (the peer's: 44-45%). Chosen on the design half
# of bench/multilabel.py with generated data (results/multilabel_design_sweep.md as of commit
# 911f3a4; mean F1 of the 4 noisy cases, and the share flagged with no planted flip): 0.5
# (cleanlab's flags as they are) 0.358, 38-45%; 0.6 0.388, 27-34%; 0.7 0.408, 17-26%; 0.8
# 0.397, 8-17%; 0.9 0.340, 1-7%.
# Also tried there: the threshold relative to confident learning's (the other state's mean
# self-confidence moved a share of the way to 1): best mean F1 0.391 at 0.25
# (results/multilabel_design_sweep_relative.md), below the absolute margin's.
#
# An absolute margin only means something when the probabilities are calibrated, and how sure
# a model is depends on its regularisation: with logistic regression at C=1 chosen instead of
# C=10, the generated text set's held-out half kept 43 flags for 150 planted flips (F1 0.155 vs
# the peer's 0.291, bench/results/multilabel.md of 2026-12-02). So the margin reads each tag's
# probabilities recalibrated against the given tags (Platt scaling: a logistic regression on
# the logit of the out-of-fold probability, one per tag, two parameters, on all scored rows);
# confident learning's own flags stay computed on the model's probabilities. On the design
# halves of bench/multilabel.py (two real datasets and the two generated ones, 8 noisy cases:
# `--sweep`, results/multilabel_design_sweep.md), mean F1 at margin 0.8 without -> with the
# recalibration: the chosen model 0.417 -> 0.420, logistic regression alone at C=0.1 0.349 ->
# 0.385, C=1 0.394 -> 0.418, C=10 0.413 -> 0.412, the peer's probabilities 0.390 -> 0.423: the
# flag no longer hinges on which strength the screening picked. The margin stays 0.8 (chosen
# model, recalibrated, at 0.7 / 0.75 / 0.8 / 0.85 / 0.9: 0.392 / 0.409 / 0.420 / 0.416 /
# 0.374). A tag with fewer than MIN_CALIBRATION_ROWS rows in either state keeps its
# probabilities.
#
# The label score is cleanlab's multi-label label quality score (per-tag self-confidence) on
# the recalibrated probabilities, aggregated by the minimum over tags (cleanlab's default: an
# exponential moving average, alpha 0.8): the row's least likely given tag state, the
# multi-label counterpart of a class's self-confidence. Mean AUROC over the same 8 cases: 0.752
# (cleanlab's default score) -> 0.769.
MULTILABEL_MARGIN = 0.8
MIN_CALIBRATION_ROWS = 10


def calibrate_tags(Y: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Each tag's probabilities recalibrated against the given tags (n x K, float64): Platt
    scaling, a one-feature logistic regression on the logit of the out-of-fold probability per
    tag. A tag with fewer than MIN_CALIBRATION_ROWS rows carrying it, or lacking it, keeps its
    probabilities (clipped to [1e-6, 1 - 1e-6])."""
    from sklearn.linear_model import LogisticRegression

    probs = np.clip(np.asarray(pred_probs, dtype=np.float64), 1e-6, 1 - 1e-6)
    out = probs.copy()
    for k in range(Y.shape[1]):
        carried = int(Y[:, k].sum())
        if min(carried, len(Y) - carried) < MIN_CALIBRATION_ROWS:
            continue
        logit = np.log(probs[:, k] / (1 - probs[:, k]))[:, None]
        platt = LogisticRegression().fit(logit, Y[:, k].astype(np.int64))
        out[:, k] = platt.predict_proba(logit)[:, 1]
    return np.clip(out, 1e-6, 1 - 1e-6)


def multilabel_label_issues(Y: np.ndarray, pred_probs: np.ndarray,
                            margin: float = MULTILABEL_MARGIN,
                            calibrate: bool = True) -> pd.DataFrame:
    """cleanlab's multi-label label issues (one-vs-rest confident learning per tag on the
    out-of-fold per-tag probabilities, a row flagged when any of its tags is), kept where the
    probabilities recalibrated per tag (calibrate_tags; `calibrate=False`: as they are) give
    the other state at least `margin`; the label quality score (minimum over tags) and the
    suggested set's confidence read the recalibrated probabilities too. Also each tag's flag:
    `flags` (n x K: the tag's given state is likely wrong).
    A tag every row (or no row) carries is not checked. n_jobs=1: cleanlab's process pool was
    seen to deadlock inside a worker process."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores as ml_scores

    n, k = Y.shape
    varied = np.flatnonzero(Y.min(axis=0) != Y.max(axis=0))
    flags = np.zeros((n, k), dtype=bool)
    score = np.ones(n, dtype=np.float64)
    raw = np.clip(np.asarray(pred_probs, dtype=np.float64), 1e-6, 1 - 1e-6)
    pred_probs = calibrate_tags(Y, raw) if calibrate else raw
    if len(varied):
        sub = Y[:, varied]
        labels = [np.flatnonzero(r).tolist() for r in sub]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flags[:, varied] = np.asarray(find_multilabel_issues_per_class(
                labels, raw[:, varied], n_jobs=1), dtype=bool).reshape(n, len(varied))
            score = ml_scores(labels, pred_probs[:, varied], aggregator_kwargs={
                "method": "exponential_moving_average", "alpha": 1.0}).astype(np.float64)
    given = Y.astype(bool)
    flags &= np.where(given, 1.0 - pred_probs, pred_probs) >= margin  # sure of the other state
    suggested = given ^ flags
    sure = np.where(suggested, pred_probs, 1.0 - pred_probs).min(axis=1) if k else np.ones(n)
    return pd.DataFrame({"is_label_issue": flags.any(axis=1), "label_score": score,
                         "suggested_label_confidence": sure.astype("float64"),
                         "flags": list(flags)})


def tag_flags(scored: pd.DataFrame, tags: tuple[str, ...]) -> np.ndarray:
    """The scored rows' per-tag flags (n x K) back from tags_likely_missing / _wrong."""
    index = {t: k for k, t in enumerate(tags)}
    flags = np.zeros((len(scored), len(tags)), dtype=bool)
    for i, (miss, wrong) in enumerate(zip(scored["tags_likely_missing"],
                                          scored["tags_likely_wrong"], strict=True)):
        for t in [*(miss if miss is not None else []), *(wrong if wrong is not None else [])]:
            flags[i, index[t]] = True
    return flags


def multilabel_issues_frame(
    row_ids: pd.Series, given: pd.Series, positions: np.ndarray, Y: np.ndarray,
    tags: tuple[str, ...], pred_probs: np.ndarray, quarantined: np.ndarray, delimiter: str,
) -> pd.DataFrame:
    """The multilabel counterpart of issues_frame: one row per snapshot row; for scored rows
    the suggested tag set (the given one with the tags likely wrong removed and the tags likely
    missing added) as `suggested_tags` and as text in `suggested_label`, `tags_likely_missing`,
    `tags_likely_wrong`; invalid for quarantined rows. Tags not scored (too rare) stay in the
    given and suggested sets."""
    from tasks.tags import split_text, tags_text

    n = len(row_ids)
    found = multilabel_label_issues(Y, pred_probs)
    names = np.array(tags, dtype=object)
    given_text = given.astype(object).where(given.notna(), "").astype(str)
    out = pd.DataFrame({
        "row_id": row_ids.astype(str).to_numpy(),
        "given_label": given_text.to_numpy(dtype=object),
        "suggested_label": pd.Series([None] * n, dtype=object),
        "suggested_label_confidence": np.full(n, np.nan),
        "suggested_tags": pd.Series([None] * n, dtype=object),
        "tags_likely_missing": pd.Series([None] * n, dtype=object),
        "tags_likely_wrong": pd.Series([None] * n, dtype=object),
        "is_label_issue": all_missing_flags(n),
        "label_score": np.full(n, np.nan),
        "is_invalid_issue": np.zeros(n, dtype=bool),
        "invalid_score": np.ones(n),
    })
    scored_tags = set(tags)
    suggested_sets, missing, wrong = [], [], []
    for text, row, flags in zip(given_text.iloc[positions], Y.astype(bool), found["flags"],
                                strict=True):
        rest = split_text(text, delimiter) - scored_tags  # unscored tags: kept as given
        now = set(names[row ^ flags]) | rest
        suggested_sets.append(now)
        missing.append(sorted(names[flags & ~row]))
        wrong.append(sorted(names[flags & row]))
    out.loc[positions, "suggested_label"] = [tags_text(s, delimiter) for s in suggested_sets]
    for col, values in (("suggested_tags", [sorted(s) for s in suggested_sets]),
                        ("tags_likely_missing", missing), ("tags_likely_wrong", wrong)):
        out[col] = pd.Series([None] * n, dtype=object)
        out.loc[positions, col] = pd.Series([list(v) for v in values], index=positions,
                                            dtype=object)
    for col in ("suggested_label_confidence", "is_label_issue", "label_score"):
        out.loc[positions, col] = found[col].to_numpy()
    out.loc[quarantined, "is_invalid_issue"] = True
    out.loc[quarantined, "invalid_score"] = 0.0
    return out


def issues_frame(
    row_ids: pd.Series, given: pd.Series, positions: np.ndarray, labels: np.ndarray,
    classes: tuple[str, ...], pred_probs: np.ndarray, quarantined: np.ndarray,
    rare: np.ndarray | None = None, trusted: bool = True,
) -> pd.DataFrame:
    """One row per snapshot row: label issue columns for scored rows (with the trust columns of
    tasks/trust.py: well-labeled, ambiguous), invalid for quarantined, class_imbalance for rows
    of classes too rare to score (score: the class's share of rows). `trusted`: whether the model
    passed its check (no row is certified well-labeled otherwise)."""
    n = len(row_ids)
    names = np.array(classes, dtype=object)
    found = label_issues(labels, pred_probs)
    # the scored rows' values put in place with numpy (a .loc assignment per column cost
    # seconds at a million rows)
    suggested = np.full(n, None, dtype=object)
    suggested[positions] = names[found["suggested"].to_numpy()]
    confidence, score = np.full(n, np.nan), np.full(n, np.nan)
    confidence[positions] = found["suggested_label_confidence"].to_numpy(dtype="float64")
    score[positions] = found["label_score"].to_numpy(dtype="float64")
    flags = all_missing_flags(n)
    flags[positions] = found["is_label_issue"].to_numpy(dtype=bool)
    evidence = np.full(n, None, dtype=object)
    evidence[positions] = found["label_evidence"].to_numpy(dtype=object)
    out = pd.DataFrame({
        "row_id": row_ids.astype(str).to_numpy(),
        "given_label": given_texts(given).to_numpy(dtype=object),
        "suggested_label": pd.Series(suggested, dtype=object),
        "suggested_label_confidence": confidence,
        "is_label_issue": flags,
        "label_score": score,
        "label_evidence": pd.Series(evidence, dtype=object),
        "is_invalid_issue": np.zeros(n, dtype=bool),
        "invalid_score": np.ones(n),
    })
    out = out.join(trust_columns(n, positions, labels, pred_probs, classes,
                                 found["is_label_issue"].to_numpy(), trusted))
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


def trust_columns(n: int, positions: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray,
                  classes: tuple[str, ...], is_label_issue: np.ndarray, trusted: bool,
                  ) -> pd.DataFrame:
    """`is_well_labeled`, `well_labeled_score`, `is_ambiguous`, `ambiguous_score`,
    `plausible_labels` for every row (unscored rows: not certified, not ambiguous, no score)."""
    well, well_score = well_labeled(labels, pred_probs, is_label_issue, trusted)
    amb, amb_score, plausible = ambiguity(labels, pred_probs, classes)
    columns = {"is_well_labeled": np.zeros(n, dtype=bool),
               "well_labeled_score": np.full(n, np.nan),
               "is_ambiguous": np.zeros(n, dtype=bool), "ambiguous_score": np.full(n, np.nan),
               "plausible_labels": np.full(n, None, dtype=object)}
    for col, values in (("is_well_labeled", well), ("well_labeled_score", well_score),
                        ("is_ambiguous", amb), ("ambiguous_score", amb_score),
                        ("plausible_labels", plausible)):
        target = columns[col]
        if target.dtype == object:
            values = np.array(list(values) + [None], dtype=object)[:-1]  # strings stay whole
        target[positions] = values
    return pd.DataFrame({c: pd.Series(v, dtype=object) if v.dtype == object else v
                         for c, v in columns.items()})


def unlabeled_columns(
    frame: pd.DataFrame, quarantined: np.ndarray, positions: np.ndarray, labels: np.ndarray,
    pred_probs: np.ndarray, classes: tuple[str, ...], unlabeled: np.ndarray | None = None,
    unlabeled_probs: np.ndarray | None = None, regression: bool = False,
) -> pd.DataFrame:
    """The `unlabeled` type's columns on the issues frame: rows with an empty label (not
    quarantined) are flagged and get the suggested label and its confidence from
    `unlabeled_probs` (their rows in `unlabeled` order; score: that confidence, 0 without one);
    every classification row with probabilities gets its ActiveLab `active_learning_score`
    (cleanlab.multiannotator.get_active_learning_scores, vectorised: annotators.activelab_scores;
    lower = (re)label it first; labeled and unlabeled scores are comparable)."""
    from tasks.annotators import activelab_scores

    out = frame.copy()
    n = len(out)
    if unlabeled is None:
        empty = out["given_label"].isna().to_numpy().copy()
        empty[quarantined] = False
        unlabeled = np.flatnonzero(empty)
    out["is_unlabeled_issue"] = np.zeros(n, dtype=bool)
    out["unlabeled_score"] = np.ones(n)
    out["active_learning_score"] = np.full(n, np.nan)
    out.loc[unlabeled, "is_unlabeled_issue"] = True
    out.loc[unlabeled, "unlabeled_score"] = 0.0
    if regression or len(positions) == 0:
        return out
    have = unlabeled_probs is not None and len(unlabeled) and len(unlabeled_probs) == len(
        unlabeled)
    scores, scores_unlabeled = activelab_scores(labels, pred_probs,
                                                unlabeled_probs if have else None)
    out.loc[positions, "active_learning_score"] = scores
    if have:
        out.loc[unlabeled, "active_learning_score"] = scores_unlabeled
        confidence = unlabeled_probs.max(axis=1).astype("float64")
        out.loc[unlabeled, "suggested_label"] = np.asarray(classes, dtype=object)[
            unlabeled_probs.argmax(axis=1)]
        out.loc[unlabeled, "suggested_label_confidence"] = confidence
        out.loc[unlabeled, "unlabeled_score"] = confidence
    return out


def needs_knn(settings: dict[str, bool | dict], task: str = "classification") -> bool:
    """Whether any enabled type is one of Datalab's neighbour-based checks."""
    return any(t in DATALAB_TYPES for t in enabled_types(settings, task))


def summarize(issues: pd.DataFrame) -> list[tuple[str, int, float]]:
    """(issue_type, number flagged, mean score) per issue type present in the frame."""
    rows = []
    for t in ISSUE_TYPES:
        if f"is_{t}_issue" not in issues:
            continue
        flag, score = issues[f"is_{t}_issue"], issues[f"{t}_score"]
        rows.append((t, int(flag.fillna(False).sum()), float(np.nanmean(score)) if
                     score.notna().any() else 1.0))
    return rows


def health(issues: pd.DataFrame) -> float:
    """Share of rows with no issue of any type (1.0 = nothing found)."""
    flags = [issues[c].fillna(False).to_numpy(dtype=bool) for c in issues
             if c.startswith("is_") and c.endswith("_issue")]
    return float(1.0 - np.logical_or.reduce(flags).mean()) if flags else 1.0


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside a Prefect task, else this module's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _find_issues(lab, **kwargs) -> None:  # noqa: ANN001, ANN003
    """Datalab's find_issues, its prints turned into log lines.

    A check that cannot run (typically underperforming_group on small or even data: "No
    meaningful clusters were generated") is printed by Datalab as "Error in <type>: ..." and
    leaves that type's columns out; the run is fine, so it becomes an info line, not console
    noise."""
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        # we pass both on purpose: features for the feature-only checks
        warnings.filterwarnings("ignore", message="Both `features` and `knn_graph`")
        warnings.filterwarnings("ignore", message="`cluster_ids` have been provided")
        lab.find_issues(**kwargs)
    for line in printed.getvalue().splitlines():
        failed = re.match(r"Error in (\w+): (.*)", line)
        if failed:
            _logger().info("Datalab did not check %s (its columns stay empty): %s",
                           *failed.groups())
        elif line.strip() and not line.startswith("Failed to check for these issue types"):
            _logger().info("Datalab: %s", line)


def _column_array(column, dtype=None, copy=None) -> np.ndarray:  # noqa: ANN001
    return np.asarray(column[:], dtype=dtype)


def new_datalab(labels: np.ndarray, task: str = "classification"):  # noqa: ANN201
    """cleanlab's Datalab over the labels alone (a multilabel tag matrix as its lists of tag
    indices). Its constructor reads the label column back with `np.asarray(dataset[name])`;
    datasets >= 4 returns a lazy `Column` there, which numpy converted one element at a time:
    7 s of every run at 200,000 rows. A Column gets numpy's `__array__` (one slice read, the
    same values) when it has none."""
    from cleanlab import Datalab
    from datasets.arrow_dataset import Column

    if not hasattr(Column, "__array__"):
        Column.__array__ = _column_array
    data = [np.flatnonzero(r).tolist() for r in labels] if task == "multilabel" else labels
    return Datalab({"label": data}, label_name="label", verbosity=0,
                   **({} if task == "classification" else {"task": task}))


def datalab_issues(
    labels: np.ndarray, pred_probs: np.ndarray, features: np.ndarray, graph,  # noqa: ANN001
    types: dict[str, dict], task: str = "classification", clusters: np.ndarray | None = None,
) -> pd.DataFrame:
    """Datalab's checks for the requested types on the scored rows, with our kNN graph (for a
    regression, Datalab's task="regression" checks, without pred_probs). `clusters`: the graph's
    DBSCAN clusters (knn.graph_clusters), given to underperforming_group as its `cluster_ids`
    unless the settings ask for other clustering (`clustering_kwargs`).

    Returns Datalab's issue columns plus `near_duplicate_set` (a set id per flagged row: the
    smallest position in its connected group of near duplicates)."""
    wanted = {t: kw for t, kw in types.items() if t in DATALAB_TYPES}
    n = len(labels)
    if not wanted:
        return pd.DataFrame(index=range(n))
    sampled_non_iid = "non_iid" in wanted and n > NON_IID_MAX_ROWS
    main = {t: kw for t, kw in wanted.items() if not (sampled_non_iid and t == "non_iid")}
    group = main.get("underperforming_group")
    if clusters is not None and group is not None and not group.get("clustering_kwargs"):
        main["underperforming_group"] = {**group, "cluster_ids": clusters}
    if task == "regression":
        lab = new_datalab(labels, task)
        _find_issues(lab, features=features, knn_graph=graph, issue_types=main)
    elif task == "multilabel":  # labels: the tag matrix, as Datalab's lists of tag indices
        lab = new_datalab(labels, task)
        _find_issues(lab, pred_probs=pred_probs, features=features, knn_graph=graph,
                     issue_types=main)
    else:
        lab = new_datalab(labels, task)
        _find_issues(lab, pred_probs=pred_probs, features=features, knn_graph=graph,
                     issue_types=main)
    found = lab.get_issues()
    cols = [c for t in main for c in (f"is_{t}_issue", f"{t}_score") if c in found]
    out = found[cols].reset_index(drop=True)
    if sampled_non_iid:
        out = out.join(_non_iid_on_sample(labels, pred_probs, features, wanted["non_iid"],
                                          task))
    if "near_duplicate" in wanted and "is_near_duplicate_issue" in out:
        out["near_duplicate_set"] = _set_ids(lab.get_issues("near_duplicate")
                                             ["near_duplicate_sets"].to_numpy(),
                                             out["is_near_duplicate_issue"].to_numpy(bool))
    return out


def _non_iid_on_sample(labels: np.ndarray, pred_probs: np.ndarray, features: np.ndarray,
                       settings: dict, task: str = "classification") -> pd.DataFrame:
    """Datalab's non_iid test on evenly spaced rows (order kept) with their own kNN graph.

    Its permutation test holds permutations x rows x k integers (about 5 GiB at 1M rows) and
    took 7 s at 200,000 rows, so above NON_IID_MAX_ROWS the test runs on every m-th row (at
    most NON_IID_MAX_ROWS of them, their graph searched approximately: an exact search of 44,000
    rows took 8 s); rows outside the sample get no score. On 220,000 rows a weakly sorted order
    was flagged, and a random one not, with the whole data's test and with a 50,000-row sample
    alike. On the 310,000-row embedding of bench/incremental_1m.py's table (one random order,
    three orders sorted by a feature plus noise of 3, 10 and 30 of its standard deviations) a
    20,000-row sample flagged the same orders as a 50,000-row one (noise 3 and 10) in 3 s
    instead of 8.5 s; 10,000 rows missed noise 10."""
    from tasks.knn import knn_graph

    n = len(labels)
    step = int(np.ceil(n / NON_IID_MAX_ROWS))
    sample = np.arange(0, n, step)
    graph, _, _ = knn_graph(np.ascontiguousarray(features[sample]), 10, exact=False)
    lab = new_datalab(labels[sample], task)
    _find_issues(lab, **({} if task == "regression" else {"pred_probs": pred_probs[sample]}),
                 features=features[sample], knn_graph=graph, issue_types={"non_iid": settings})
    found = lab.get_issues()
    flags = all_missing_flags(n)
    flags[sample] = found["is_non_iid_issue"].to_numpy(bool)
    scores = np.full(n, np.nan)
    scores[sample] = found["non_iid_score"].to_numpy()
    return pd.DataFrame({"is_non_iid_issue": flags, "non_iid_score": scores})


def _set_ids(neighbour_sets: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """Connected components of the near-duplicate relation, named by their smallest member."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = len(neighbour_sets)
    sizes = np.fromiter(map(len, neighbour_sets), dtype=np.int64, count=n)
    rows = np.repeat(np.arange(n), sizes)
    have = np.flatnonzero(sizes)  # most rows have none: one concatenation of the others
    cols = np.concatenate([neighbour_sets[i] for i in have]).astype(np.int64) if len(have) \
        else np.zeros(0, dtype=np.int64)
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = pd.Series(np.arange(n)).groupby(comp).transform("min").to_numpy()
    return np.where(flagged, smallest, -1)


def feature_keys(features: pd.DataFrame) -> np.ndarray:
    """A hash of each row's feature values (uint64; NaN hashes equal to NaN, so rows missing
    the same values compare equal)."""
    return pd.util.hash_pandas_object(features, index=False).to_numpy() if features.shape[1] \
        else np.arange(len(features), dtype=np.uint64)


def row_keys(features: pd.DataFrame, labels: pd.Series, key: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """A hash of each row's feature values (feature_keys; `key`: already computed), and of its
    feature values with its label: equal hashes are copies. Also used by the batch audit
    (tasks/audit.py) to find a batch's copies of earlier rows."""
    key = feature_keys(features) if key is None else key
    text = pd.Series(map_values(labels, str).to_numpy(), dtype=object).fillna("None")
    copy_key = pd.util.hash_pandas_object(
        pd.DataFrame({"f": key, "y": text.to_numpy()}), index=False).to_numpy()
    return key, copy_key


def hex_keys(key: np.ndarray) -> np.ndarray:
    """feature_keys as 16 hex digits each (`issues.data_hash`)."""
    hexed = np.asarray(key, dtype=np.uint64).astype(">u8").tobytes().hex().encode()
    return np.frombuffer(hexed, dtype="S16").astype(str).astype(object)


def data_hashes(features: pd.DataFrame) -> np.ndarray:
    """A hash of each row's feature values as 16 hex digits (`issues.data_hash`): whether a
    row's data changed between runs (tasks/incremental.py)."""
    return hex_keys(feature_keys(features))


def exact_duplicates(features: pd.DataFrame, labels: pd.Series, key: np.ndarray | None = None
                     ) -> pd.DataFrame:
    """Exact copies: rows whose feature values and label are identical to an earlier row's
    (every copy after the first is flagged, so dropping them keeps one), and conflicting labels:
    identical features, different labels (every row of such a set is flagged, none is a copy;
    score = share of the set that agrees with the row's label)."""
    n = len(features)
    key, copy_key = row_keys(features, labels, key)
    copies, _ = pd.factorize(copy_key)  # codes in order of first appearance
    _, first_at = np.unique(copies, return_index=True)
    set_id = first_at[copies]  # the set's first (smallest) position
    first = set_id == np.arange(n)
    size = np.bincount(copies)[copies] if n else np.zeros(0, dtype=np.int64)
    same, _ = pd.factorize(key)
    same_features = np.bincount(same)[same] if n else np.zeros(0, dtype=np.int64)
    # distinct labels among rows with the same features: the copy sets (feature values and
    # label) each feature set holds
    distinct = np.bincount(same[first_at])[same] if n else np.zeros(0, dtype=np.int64)
    return pd.DataFrame({
        "is_exact_duplicate_issue": (size > 1) & ~first,
        "exact_duplicate_score": np.where((size > 1) & ~first, 0.0, 1.0),
        "exact_duplicate_set": np.where(size > 1, set_id, -1),
        "is_conflicting_label_issue": distinct > 1,
        "conflicting_label_score": size / same_features,
    })


def null_rows(features: pd.DataFrame) -> pd.DataFrame:
    """Datalab's null check on the raw values: flagged when every feature value is missing;
    score = share of feature values present."""
    present = features.notna().mean(axis=1).to_numpy() if features.shape[1] else np.ones(
        len(features))
    return pd.DataFrame({"is_null_issue": present == 0, "null_score": present})


def class_summary(labels: np.ndarray, pred_probs: np.ndarray, classes: tuple[str, ...]
                  ) -> pd.DataFrame:
    """Per-class label quality (cleanlab's health summary): noise rates and the class each one
    is most confused with."""
    from cleanlab.count import estimate_joint
    from cleanlab.dataset import find_overlapping_classes, rank_classes_by_label_quality

    joint = estimate_joint(labels, pred_probs)  # what both would estimate, estimated once
    ranked = rank_classes_by_label_quality(labels, pred_probs, joint=joint)
    overlap = find_overlapping_classes(labels, pred_probs, joint=joint)
    rows = []
    for _, r in ranked.iterrows():
        k = int(r["Class Index"])
        pairs = overlap[(overlap["Class Index A"] == k) | (overlap["Class Index B"] == k)]
        top = pairs.iloc[0] if len(pairs) else None
        other = None if top is None else int(top["Class Index B"] if top["Class Index A"] == k
                                              else top["Class Index A"])
        rows.append({
            "class_name": classes[k], "n_rows": int((labels == k).sum()),
            "n_label_issues": int(r["Label Issues"]), "label_noise": float(r["Label Noise"]),
            "inverse_label_noise": float(r["Inverse Label Noise"]),
            "label_quality": float(r["Label Quality Score"]),
            "most_overlapping_class": None if other is None else classes[other],
            "overlap_joint_probability": None if top is None else float(top["Joint Probability"]),
        })
    return pd.DataFrame(rows)


def tag_summary(Y: np.ndarray, tags: tuple[str, ...], flags: np.ndarray) -> pd.DataFrame:
    """Per-tag label quality (class_summary of a multilabel run) from the per-tag flags of
    cleanlab's one-vs-rest confident learning (`flags`: n x K, the tag's given state is likely
    wrong): `n_tags_likely_wrong` (tagged, likely not) and `n_tags_likely_missing` (untagged,
    likely should be); label noise = the first over the tag's rows, inverse label noise = the
    second over the other rows, label quality = 1 - label noise. (cleanlab's
    rank_classes_by_multilabel_quality counts the same flags but over all rows, and starts a
    process pool that deadlocks inside a worker; so computed here.)"""
    given = Y.astype(bool)
    rows = []
    for k, tag in enumerate(tags):
        n_tag = int(given[:, k].sum())
        wrong = int((flags[:, k] & given[:, k]).sum())
        missing = int((flags[:, k] & ~given[:, k]).sum())
        noise = wrong / n_tag if n_tag else 0.0
        rows.append({
            "class_name": tag, "n_rows": n_tag, "n_label_issues": wrong + missing,
            "label_noise": noise,
            "inverse_label_noise": missing / (len(Y) - n_tag) if len(Y) > n_tag else 0.0,
            "label_quality": 1.0 - noise, "most_overlapping_class": None,
            "overlap_joint_probability": float("nan"), "n_tags_likely_wrong": wrong,
            "n_tags_likely_missing": missing})
    out = pd.DataFrame(rows)
    return out.astype({"most_overlapping_class": object}) if len(out) else out


def detect_all(
    row_ids: pd.Series, given: pd.Series, features: pd.DataFrame, positions: np.ndarray,
    labels: np.ndarray, classes: tuple[str, ...], pred_probs: np.ndarray,
    quarantined: np.ndarray, rare: np.ndarray, embedding: np.ndarray | None, graph,  # noqa: ANN001
    types: dict[str, dict], task: str = "classification", trusted: bool = True,
    unlabeled: np.ndarray | None = None, unlabeled_probs: np.ndarray | None = None,
    delimiter: str | None = None, clusters: np.ndarray | None = None,
    feature_key: np.ndarray | None = None,
) -> pd.DataFrame:
    """The whole detect stage as one pure function: every enabled issue type, one row per input
    row (`features`: the raw feature values of all rows; `embedding`/`graph`: the scored rows').
    For a regression `labels` are the float targets and `pred_probs` the predictions (n x 1).
    `unlabeled`/`unlabeled_probs`: the rows with no label and the fold models' mean
    probabilities for them (see unlabeled_columns). For multilabel `labels` is the n x K tag
    matrix over `classes` (the scored tags) and `pred_probs` each tag's probability.
    `feature_key`: feature_keys(features), when the caller has it."""
    regression, multilabel = task == "regression", task == "multilabel"
    if regression:
        frame = regression_issues_frame(row_ids, given, positions, labels, pred_probs,
                                        quarantined, None if graph is None
                                        else graph_neighbours(graph))
    elif multilabel:
        frame = multilabel_issues_frame(row_ids, given, positions, labels, classes, pred_probs,
                                        quarantined, delimiter or ";")
    else:
        frame = issues_frame(row_ids, given, positions, labels, classes, pred_probs,
                             quarantined, rare, trusted)
    agreement = np.full(len(frame), np.nan)
    if graph is not None and multilabel:  # a second opinion: neighbours with the suggested set
        suggested = frame["suggested_label"].to_numpy(dtype=object)[positions]
        neighbours = graph_neighbours(graph)
        agreement[positions] = (suggested[neighbours] == suggested[:, None]).mean(axis=1)
    elif graph is not None and not regression:  # a second opinion: the neighbours' given labels
        agreement[positions] = neighbour_agreement(graph, labels, pred_probs.argmax(axis=1))
    frame.insert(frame.columns.get_loc("suggested_label_confidence") + 1,
                 "suggested_label_agreement", agreement)
    if embedding is not None and graph is not None:
        found = datalab_issues(labels, pred_probs, embedding, graph, types, task, clusters)
        for col in found:
            values = found[col].to_numpy()
            if col == "near_duplicate_set":
                ids = row_ids.astype(str).to_numpy()[positions]
                full = pd.Series([None] * len(frame), dtype=object)
                full.iloc[positions] = np.where(values >= 0, ids[np.clip(values, 0, None)], None)
            elif col.startswith("is_"):
                full = all_missing_flags(len(frame))
                full[positions] = pd.array(found[col], dtype="boolean")  # may hold NA
            else:
                full = np.full(len(frame), np.nan)
                full[positions] = values
            if col == "is_class_imbalance_issue":  # keep the rare-class flags as well
                full = pd.array(full, dtype="boolean").fillna(False) | frame[col].to_numpy(bool)
            if col == "class_imbalance_score":  # rows not scored keep their class share
                full = np.where(np.isnan(full), frame[col].to_numpy(), full)
            frame[col] = full
    if "class_imbalance" not in types:
        frame = frame.drop(columns=["is_class_imbalance_issue", "class_imbalance_score"],
                           errors="ignore")
    if "exact_duplicate" in types or "conflicting_label" in types:
        dup = exact_duplicates(features, frame["given_label"] if multilabel else given,
                               feature_key)
        sets = dup["exact_duplicate_set"].to_numpy()
        ids = row_ids.astype(str).to_numpy(dtype=object)
        dup["exact_duplicate_set"] = pd.Series(np.where(sets >= 0, ids[np.clip(sets, 0, None)],
                                                        None), dtype=object)
        for t, cols in (("exact_duplicate", ["is_exact_duplicate_issue", "exact_duplicate_score",
                                             "exact_duplicate_set"]),
                        ("conflicting_label", ["is_conflicting_label_issue",
                                               "conflicting_label_score"])):
            if t in types:
                for c in cols:
                    frame[c] = dup[c].to_numpy()
    if "null" in types:
        nulls = null_rows(features)
        frame["is_null_issue"], frame["null_score"] = nulls["is_null_issue"], nulls["null_score"]
    if task == "classification":  # well-labeled, now that every other finding is known
        frame["is_well_labeled"] = certified(frame, positions, labels, pred_probs, trusted,
                                             None if graph is None else agreement[positions])
    if "unlabeled" in types:
        frame = unlabeled_columns(frame, quarantined, positions, labels, pred_probs, classes,
                                  unlabeled, unlabeled_probs, regression)
    return frame


def certified(frame: pd.DataFrame, positions: np.ndarray, labels: np.ndarray,
              pred_probs: np.ndarray, trusted: bool, agreement: np.ndarray | None) -> np.ndarray:
    """`is_well_labeled` for every row of the issues frame (tasks/trust.well_labeled): scored
    rows only, with the neighbours' agreement (None: no kNN graph) and without rows flagged as
    outliers or conflicting labels."""
    scored = frame.iloc[positions]
    excluded = np.zeros(len(positions), dtype=bool)
    for col in ("is_outlier_issue", "is_conflicting_label_issue"):
        if col in scored:
            excluded |= scored[col].astype("boolean").fillna(False).to_numpy(dtype=bool)
    well, _ = well_labeled(labels, pred_probs, scored["is_label_issue"].to_numpy(bool), trusted,
                           agreement=agreement, excluded=excluded)
    out = np.zeros(len(frame), dtype=bool)
    out[positions] = well
    return out


@stage("detect")
def detect(
    snapshot: Snapshot, validation: Validation, design: Design, pred_probs: ArrayRef,
    neighbours: Neighbours | None, label: str, issue_types: dict, work_dir: str,
    trusted: bool = True, slices: list[str] | None = None,
    unlabeled_probs: ArrayRef | None = None, consensus_rows: TableRef | None = None,
) -> Detection:
    """Run every enabled issue check and write the issues frame, the class summary and, for
    the `slices` columns named, the slice summary. `trusted`: the model passed its check.
    `consensus_rows`: with several annotators, each row's `consensus_quality` and
    `annotator_agreement` (tasks/annotators.py), added beside the suggested label."""
    import time

    started = time.perf_counter()
    types = enabled_types(issue_types, design.task)
    df = snapshot.table.read(columns=[snapshot.id_column, label, *(slices or [])])
    if design.embeddings is not None:
        features = pd.DataFrame(design.embeddings.read())
    else:
        features = snapshot.table.read(columns=list(design.plan.used))
    labels, probs = design.labels.read(), pred_probs.read()
    key = feature_keys(features)  # exact duplicates and data_hash: hashed once
    frame = detect_all(
        df[snapshot.id_column], df[label], features, design.positions.read(), labels,
        design.classes, probs, validation.quarantined.read(), design.rare.read(),
        neighbours.embedding.read() if neighbours else None,
        neighbours.graph.read() if neighbours else None, types, design.task, trusted,
        design.unlabeled.read() if design.unlabeled is not None else None,
        unlabeled_probs.read() if unlabeled_probs is not None else None,
        design.tag_delimiter,
        neighbours.clusters.read() if neighbours and neighbours.clusters else None, key)
    frame["data_hash"] = hex_keys(key)
    if consensus_rows is not None:
        at = frame.columns.get_loc("suggested_label_agreement") + 1
        for offset, (col, values) in enumerate(consensus_rows.read().items()):
            frame.insert(at + offset, col, values.to_numpy(dtype="float64"))
    sliced = None
    if slices:
        positions = design.positions.read()
        scored = frame.iloc[positions]
        confident = scored["is_label_issue"].fillna(False).to_numpy(dtype=bool)
        if "label_evidence" in scored:  # slices compare confident-learning flags (their bench)
            confident &= scored["label_evidence"].to_numpy(dtype=object) != "disagreement"
        sliced = slice_summary(df[list(slices)].iloc[positions].reset_index(drop=True),
                               confident,
                               scored["label_score"].to_numpy(dtype="float64"),
                               correct=None if design.task != "classification"
                               else probs.argmax(axis=1) == labels)
        worst = sliced[sliced["is_flagged"]]
        if len(worst):
            get_run_logger().warning(
                "slices with more label issues than the rest: %s", "; ".join(
                    f"{r.slice_column}={r.slice_value} ({r.issue_rate:.1%} vs "
                    f"{r.rest_issue_rate:.1%})" for r in worst.itertuples()))
    if design.task != "classification":  # cleanlab's: 1 - the share of rows with a label issue
        label_health = 1.0 - float(frame["is_label_issue"].astype("float64").mean())
    else:
        label_health = float(overall_label_health_score(labels, probs, verbose=False))
    summary = summarize(frame)
    work = Path(work_dir)
    get_run_logger().info("issues: %s; health %.3f, label health %.3f (%.1f s)",
                          ", ".join(f"{t}={k}" for t, k, _ in summary), health(frame),
                          label_health, time.perf_counter() - started)
    return Detection(issues=write_table(frame, work, "issues"), summary=tuple(summary),
                     health_score=health(frame), label_health_score=label_health,
                     classes=None if design.regression else write_table(
                         tag_summary(labels, design.classes, tag_flags(
                             frame.iloc[design.positions.read()], design.classes))
                         if design.multilabel else
                         class_summary(labels, probs, design.classes), work, "classes"),
                     slices=write_table(sliced, work, "slices") if sliced is not None else None)
