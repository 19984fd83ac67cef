"""Trust: which rows a reviewer can skip, which are ambiguous rather than wrong, and which slices
of the data carry worse labels than the rest.

Pure functions over out-of-fold probabilities and the label-issue flags; no I/O.

- **Well-labeled** rows: the model passed its check, the row is not a label issue (so the
  model's most likely class is the given label), no other finding rules it out (an outlier: the
  model's confidence there is an extrapolation; a conflicting label: an identical row carries
  another label), the model gives the label at least `WELL_LABELED_MIN_SCORE`, and at least
  `WELL_LABELED_MIN_AGREEMENT` of the row's nearest neighbours carry it too (a second opinion from
  another model family; skipped when no kNN graph was built). The score is the out-of-fold
  probability of the given label. Both thresholds were chosen on the DESIGN half of
  bench/do_no_harm.py's datasets (bench/trust.py prints the grid): the pair certifying the most
  rows while the certified rows' precision is at least 0.99 on the cases with planted noise,
  pooled (with 95% confidence) and for each of the symmetric, class-conditional and
  feature-dependent shapes (design: 0.995 pooled, 3.7% of those rows certified). Measured
  there and not adopted (bench/trust.py lists them): a per-dataset threshold at which the
  model's own estimate of the certified rows' error (the mean of 1 - p) reaches 0.2-1% (no
  better than one threshold for all), and the probability corrected for cleanlab's estimated
  noise matrix (confident joint), which certified more rows under symmetric noise but far more
  wrong ones under feature-dependent noise (precision 0.95-0.96). Why no
  threshold is safe everywhere: noise that follows the features (annotators erring exactly
  where a row looks like another class) leaves rows the model agrees with, confidently, and
  nothing in the data tells them apart (moons, feature-dependent noise: certified rows with
  p >= 0.999 were 3.6% wrong).
- **Ambiguous** rows: the model spreads its probability over several labels, the given one among
  them, instead of confidently putting it on another label. The score is one minus the margin
  between the two most likely classes (1: a tie). Plausible labels are the classes the model
  gives at least `PLAUSIBLE_MIN` each.
- **Slices**: for each value of a slice column, its label-issue rate with a Wilson interval, mean
  label quality and out-of-fold accuracy, tested against the rest of the data (Fisher's exact
  test) with Benjamini-Hochberg false-discovery control over every value of every slice column
  tested (scipy). A slice is flagged when its issue rate is higher than the rest's, its
  q-value is below `alpha` and the rate is at least `min_ratio` times the rest's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WELL_LABELED_MIN_SCORE = 0.998
WELL_LABELED_MIN_AGREEMENT = 1.0
AMBIGUOUS_MAX_MARGIN = 0.2
PLAUSIBLE_MIN = 0.2
SLICE_ALPHA = 0.05
SLICE_MIN_RATIO = 1.5
SLICE_MIN_ROWS = 20


def well_labeled(given: np.ndarray, pred_probs: np.ndarray, is_label_issue: np.ndarray,
                 trusted: bool, agreement: np.ndarray | None = None,
                 excluded: np.ndarray | None = None,
                 min_score: float = WELL_LABELED_MIN_SCORE,
                 min_agreement: float = WELL_LABELED_MIN_AGREEMENT,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(is_well_labeled, well_labeled_score) for rows with integer labels `given` (0..K-1).
    `agreement`: per row, the share of its neighbours carrying the given label (None: no graph,
    no such condition). `excluded`: rows another finding rules out (outlier, conflicting
    label)."""
    given = np.asarray(given, dtype=np.int64)
    score = pred_probs[np.arange(len(given)), given].astype("float64")
    agrees = pred_probs.argmax(axis=1) == given
    flag = agrees & (score >= min_score) & ~np.asarray(is_label_issue, dtype=bool)
    if excluded is not None:
        flag &= ~np.asarray(excluded, dtype=bool)
    if agreement is not None:
        flag &= np.nan_to_num(np.asarray(agreement, dtype="float64"), nan=0.0) >= min_agreement
    return (flag & bool(trusted)), score


def ambiguity(given: np.ndarray, pred_probs: np.ndarray, classes: tuple[str, ...] | np.ndarray,
              max_margin: float = AMBIGUOUS_MAX_MARGIN, plausible_min: float = PLAUSIBLE_MIN,
              ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """(is_ambiguous, ambiguous_score, plausible labels as 'a|b') per row.

    Ambiguous: the two most likely classes are within `max_margin` of each other and the given
    label is itself plausible (probability at least `plausible_min`)."""
    given = np.asarray(given, dtype=np.int64)
    n, k = pred_probs.shape
    if k < 2:
        return np.zeros(n, dtype=bool), np.zeros(n), [None] * n
    top2 = np.sort(pred_probs, axis=1)[:, -2:]
    score = 1.0 - (top2[:, 1] - top2[:, 0])
    given_p = pred_probs[np.arange(n), given]
    plausible_mask = pred_probs >= plausible_min
    flag = (score >= 1.0 - max_margin) & (given_p >= plausible_min) & (
        plausible_mask.sum(axis=1) >= 2)
    names = np.asarray(classes, dtype=object)
    order = np.argsort(-pred_probs, axis=1)
    plausible: list[str | None] = []
    for i in range(n):
        if not flag[i]:
            plausible.append(None)
            continue
        picks = [j for j in order[i] if plausible_mask[i, j]]
        plausible.append("|".join(str(names[j]) for j in picks))
    return flag, score.astype("float64"), plausible


def _wilson(k: np.ndarray, n: np.ndarray, z: float = 1.959963984540054
            ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n (vectorised form of scipy's binomtest ci)."""
    from scipy.stats import binomtest

    lows, highs = [], []
    for ki, ni in zip(k.tolist(), n.tolist(), strict=True):
        ci = binomtest(int(ki), int(ni)).proportion_ci(method="wilson")
        lows.append(ci.low)
        highs.append(ci.high)
    return np.array(lows), np.array(highs)


def slice_summary(slices: pd.DataFrame, is_label_issue: np.ndarray, label_score: np.ndarray,
                  correct: np.ndarray | None = None, alpha: float = SLICE_ALPHA,
                  min_ratio: float = SLICE_MIN_RATIO, min_rows: int = SLICE_MIN_ROWS,
                  ) -> pd.DataFrame:
    """One row per (slice column, value): rows, label issues, issue rate and its 95% Wilson
    interval, the rest's rate, mean label quality, out-of-fold accuracy (when `correct` is
    given), Fisher's exact p-value against the rest, the Benjamini-Hochberg q-value over every
    value tested, and `is_flagged`. Values with fewer than `min_rows` rows are listed, not tested.
    An empty slice value is its own value, named '(missing)'."""
    from scipy.stats import false_discovery_control, fisher_exact

    issue = np.asarray(is_label_issue, dtype=bool)
    score = np.asarray(label_score, dtype="float64")
    total_n, total_k = len(issue), int(issue.sum())
    parts = []
    for column in slices.columns:
        values = slices[column].astype(object).where(slices[column].notna(), "(missing)")
        values = values.map(str)
        frame = pd.DataFrame({"value": values.to_numpy(), "issue": issue, "score": score})
        if correct is not None:
            frame["correct"] = np.asarray(correct, dtype=bool)
        grouped = frame.groupby("value", sort=True)
        part = pd.DataFrame({
            "slice_column": column,
            "slice_value": grouped.size().index.astype(str),
            "rows": grouped.size().to_numpy(),
            "label_issues": grouped["issue"].sum().to_numpy().astype(int),
            "mean_label_score": grouped["score"].mean().to_numpy(),
            "accuracy": (grouped["correct"].mean().to_numpy() if correct is not None
                         else np.full(grouped.ngroups, np.nan)),
        })
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=SLICE_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    n, k = out["rows"].to_numpy(), out["label_issues"].to_numpy()
    out["issue_rate"] = k / n
    out["issue_rate_low"], out["issue_rate_high"] = _wilson(k, n)
    rest_n, rest_k = total_n - n, total_k - k
    with np.errstate(invalid="ignore", divide="ignore"):
        out["rest_issue_rate"] = np.where(rest_n > 0, rest_k / np.maximum(rest_n, 1), np.nan)
    p = np.full(len(out), np.nan)
    tested = (n >= min_rows) & (rest_n >= min_rows)
    for i in np.flatnonzero(tested):
        table = [[k[i], n[i] - k[i]], [rest_k[i], rest_n[i] - rest_k[i]]]
        p[i] = fisher_exact(table, alternative="two-sided").pvalue
    out["p_value"] = p
    q = np.full(len(out), np.nan)
    if tested.any():
        q[tested] = false_discovery_control(p[tested], method="bh")
    out["q_value"] = q
    worse = out["issue_rate"] > np.maximum(out["rest_issue_rate"] * min_ratio,
                                           out["rest_issue_rate"])
    out["is_flagged"] = tested & (np.nan_to_num(q, nan=1.0) < alpha) & worse.to_numpy()
    return out[SLICE_COLUMNS]


SLICE_COLUMNS = ["slice_column", "slice_value", "rows", "label_issues", "issue_rate",
                 "issue_rate_low", "issue_rate_high", "rest_issue_rate", "mean_label_score",
                 "accuracy", "p_value", "q_value", "is_flagged"]
