"""audit: a new batch of a dataset against the data accepted before it, before it is accepted.

One row per check: the schema (columns missing, retyped, added), drift of each feature (numeric:
Wasserstein distance in reference standard deviations, with the KS test's p-value; categorical:
Jensen-Shannon distance, with the chi-squared test's p-value; text: the out-of-fold AUC of a
classifier that tries to tell the batch from the reference), the same classifier test on whole
encoded rows, the label mix (total variation distance), new labels and categories, batch rows
that copy earlier rows (exact copies, conflicting copies: same features, other label, and near
copies by nearest-neighbour distance), and the batch's label-issue rate against the dataset's.

A change is decided by its effect size against a threshold (at 10,000 rows every p-value is
tiny), and, for the estimated statistics, only when it is also unlikely by chance (p below
`p_value`), so a small batch's sampling noise is not read as drift. Severities work like the
validation suites': a `critical` finding quarantines the batch, a `warning` accepts it and flags
it, `info` is only recorded. Thresholds were chosen by bench/batch_audit.py (design seeds) and
reported on held-out seeds and real data (bench/results/batch_audit.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy.spatial.distance import jensenshannon
from scipy.stats import binomtest, chi2_contingency, ks_2samp, mannwhitneyu, wasserstein_distance
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from tasks.detect import row_keys
from tasks.featurize import MISSING, FeaturePlan, _label_text, build_transformer, prepare_frame
from tasks.knn import dense_embedding
from tasks.spec import CHECKS, AuditSettings  # noqa: F401 - the checks and settings live with the spec

Severity = Literal["info", "warning", "critical"]
Outcome = Literal["pass", "warn", "fail"]
Decision = Literal["accept", "accept-with-warnings", "quarantine"]

NEAR_QUANTILE = 0.01  # a near copy is closer to its nearest earlier row than this quantile


class AuditCheck(BaseModel):
    """One check's finding: a row of the `batch_audit` table."""

    model_config = ConfigDict(frozen=True)
    check: str
    column: str | None
    statistic: str
    value: float | None
    effect_size: float | None
    threshold: float | None
    severity: Severity
    outcome: Outcome
    message: str


class AuditResult(BaseModel):
    """Every check of one batch and what follows: accept, accept with warnings, quarantine."""

    model_config = ConfigDict(frozen=True)
    checks: tuple[AuditCheck, ...]
    decision: Decision
    reason: str
    batch_rows: int
    reference_rows: int
    reference_sampled: int  # rows of the reference the drift checks compared (<= reference_rows)
    notes: tuple[str, ...] = ()

    def failed(self, outcome: Outcome = "warn") -> list[AuditCheck]:
        """The checks with this outcome (warn or fail)."""
        return [c for c in self.checks if c.outcome == outcome]


class _Audit:
    """Collects findings, judging each against its threshold and severity."""

    def __init__(self, settings: AuditSettings) -> None:
        self.settings = settings
        self.checks: list[AuditCheck] = []

    def on(self, check: str) -> bool:
        return self.settings.severity_of(check) != "off"

    def add(self, check: str, column: str | None, statistic: str, value: float | None,
            effect: float | None, threshold: float | None, message: str,
            significant: bool = True) -> None:
        severity = self.settings.severity_of(check)
        if severity == "off":
            return
        hit = effect is not None and threshold is not None and effect > threshold and significant
        outcome = {"critical": "fail", "warning": "warn"}.get(severity, "pass") if hit else "pass"
        if hit and severity == "info":
            message += " (severity info: recorded only)"
        self.checks.append(AuditCheck(
            check=check, column=column, statistic=statistic, value=_num(value),
            effect_size=_num(effect), threshold=threshold, severity=severity, outcome=outcome,
            message=message))


def _num(x: float | None) -> float | None:
    return None if x is None else float(x)


def _label_counts(s: pd.Series) -> pd.Series:
    """Rows per label, the labels as text the way featurize names classes (1.0 -> '1'); counted
    before naming (a million labels named one by one took 1.6 s)."""
    counts = s.value_counts(dropna=True)
    return counts.groupby(np.array([_label_text(v) for v in counts.index], dtype=object)).sum()


# ---- schema ------------------------------------------------------------------------------------

def _unparsable(values: pd.Series, role: str) -> pd.Series:
    """The non-null values that do not parse as the role's type (numbers or dates)."""
    v = values.dropna()
    if role == "numeric":
        if pd.api.types.is_numeric_dtype(v) or pd.api.types.is_bool_dtype(v):
            return v.iloc[:0]
        parsed = pd.to_numeric(v.astype(str), errors="coerce")
    else:
        if pd.api.types.is_datetime64_any_dtype(v):
            return v.iloc[:0]
        parsed = pd.to_datetime(v.astype(str), errors="coerce", format="mixed")
    return v[parsed.isna().to_numpy()]


def _schema(audit: _Audit, reference: pd.DataFrame, batch: pd.DataFrame, plan: FeaturePlan,
            label: str, id_column: str | None) -> FeaturePlan:
    """Missing, retyped and added columns; returns the plan restricted to the usable columns."""
    required = [*plan.used, label, *([id_column] if id_column else [])]
    usable = {c for c in plan.used if c in reference.columns and c in batch.columns}
    for col in reference.columns:
        if col in batch.columns:
            continue
        needed = col in required
        audit.add("column_missing", col, "missing", 1.0, 1.0, 0.0,
                  f"column {col!r} of the dataset is missing from the batch"
                  + ("" if needed else " (not a feature: recorded only)"),
                  significant=needed)
    for role in ("numeric", "datetime"):
        for col in getattr(plan, role):
            if col not in usable:
                continue
            bad = _unparsable(batch[col], role)
            n = int(batch[col].notna().sum())
            share = len(bad) / n if n else 0.0
            examples = ", ".join(map(repr, pd.unique(bad.astype(str))[:3]))
            audit.add("column_retyped", col, "unparsable_share", share, share, 0.5,
                      f"column {col!r} ({role}): {len(bad):,} of {n:,} values do not parse"
                      + (f", e.g. {examples}" if len(bad) else ""))
            if share > 0.5:
                usable.discard(col)
    for col in batch.columns:
        if col not in reference.columns:
            audit.add("column_added", col, "added", 1.0, 1.0, 0.0,
                      f"column {col!r} is new: the dataset does not have it (not used as a "
                      "feature until the dataset's settings name it)")
    return plan.model_copy(update={
        r: tuple(c for c in getattr(plan, r) if c in usable)
        for r in ("numeric", "categorical", "text", "datetime", "high_cardinality")})


# ---- per-feature drift ----------------------------------------------------------------------

def _missing_values(audit: _Audit, ref: pd.Series, bat: pd.Series, col: str) -> None:
    base, k = float(ref.isna().mean()), int(bat.isna().sum())
    share = k / len(bat)
    p = _binomial_p(k, len(bat), base)
    audit.add("missing_values", col, "binomial_pvalue", p, share - base,
              audit.settings.missing_values,
              f"{col}: {share:.1%} of the batch's values are missing against {base:.1%} of the "
              f"dataset's (binomial p={p:.2g})", significant=p < audit.settings.p_value)


def _numeric_drift(audit: _Audit, ref: pd.Series, bat: pd.Series, col: str,
                   check: str = "numeric_drift", what: str = "") -> None:
    """A numeric column's distribution against the reference's: Wasserstein distance in the
    reference's standard deviations (KS p-value), by the numeric_drift threshold. `check` /
    `what`: another check's name and the column's description (a regression target)."""
    r, b = ref.dropna().to_numpy(), bat.dropna().to_numpy()
    if len(r) < 2 or len(b) < 2:
        audit.add(check, col, "ks_pvalue", None, None, audit.settings.numeric_drift,
                  f"{col}: too few values to compare ({len(r)} reference, {len(b)} batch)")
        return
    distance = wasserstein_distance(r, b)
    std = float(np.std(r))
    effect = distance / std if std > 0 else (0.0 if distance == 0 else float("inf"))
    p = float(ks_2samp(r, b).pvalue)
    shift = float(np.mean(b) - np.mean(r)) / std if std > 0 else 0.0
    audit.add(check, col, "ks_pvalue", p, effect, audit.settings.numeric_drift,
              f"{col}{what}: distribution moved by {effect:.2f} reference standard deviations "
              f"(Wasserstein; mean shift {shift:+.2f} sd; KS p={p:.2g})",
              significant=p < audit.settings.p_value)


def _categorical_drift(audit: _Audit, ref: pd.Series, bat: pd.Series, col: str) -> None:
    counts = pd.DataFrame({"ref": ref.value_counts(), "bat": bat.value_counts()}).fillna(0)
    if audit.on("categorical_drift") and len(counts) > 1:
        distance = float(jensenshannon(counts["ref"], counts["bat"], base=2))
        table = counts.T.to_numpy()
        p = float(chi2_contingency(table[:, table.sum(axis=0) > 0]).pvalue)
        audit.add("categorical_drift", col, "chi2_pvalue", p, distance,
                  audit.settings.categorical_drift,
                  f"{col}: category shares moved by a Jensen-Shannon distance of {distance:.3f} "
                  f"(chi-squared p={p:.2g})", significant=p < audit.settings.p_value)
    new = counts[(counts["ref"] == 0) & (counts.index != MISSING)]["bat"]
    share = float(new.sum() / len(bat)) if len(bat) else 0.0
    names = ", ".join(f"{k!r} ({int(v):,} rows)" for k, v in new.sort_values(
        ascending=False).head(5).items())
    audit.add("new_category", col, "new_rows", float(new.sum()), share,
              audit.settings.new_category,
              f"{col}: new categor{'y' if len(new) == 1 else 'ies'} {names}" if len(new)
              else f"{col}: no new categories")


def _domain_auc(ref: pd.DataFrame | pd.Series, bat: pd.DataFrame | pd.Series, model,  # noqa: ANN001
                rows: int, seed: int) -> tuple[float, float, int]:
    """Out-of-fold AUC (and its Mann-Whitney p-value) of a classifier telling batch rows from
    reference rows, on equal samples of each side; 0.5 = indistinguishable."""
    n = min(len(ref), len(bat), rows)
    r = ref.sample(n=n, random_state=seed) if len(ref) > n else ref
    b = bat.sample(n=n, random_state=seed) if len(bat) > n else bat
    X = pd.concat([r, b], ignore_index=True)
    y = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, X, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, scores))
    p = float(mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater").pvalue)
    return auc, p, n


def _classifier_check(audit: _Audit, check: str, column: str | None, ref, bat, model,  # noqa: ANN001
                      what: str, seed: int) -> None:
    threshold = getattr(audit.settings, check)
    if min(len(ref), len(bat)) < 10:
        audit.add(check, column, "auc_pvalue", None, None, threshold,
                  f"{what}: too few rows for the classifier test")
        return
    auc, p, n = _domain_auc(ref, bat, model, audit.settings.classifier_rows, seed)
    audit.add(check, column, "auc_pvalue", p, auc, threshold,
              f"{what}: a classifier tells batch from reference with out-of-fold AUC {auc:.3f} "
              f"(0.5 = no drift; {n:,} rows a side; p={p:.2g})",
              significant=p < audit.settings.p_value)


def _text_model():  # noqa: ANN202
    return make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=50_000),
                         LogisticRegression(max_iter=1000))


# ---- labels ----------------------------------------------------------------------------------

def _label_checks(audit: _Audit, ref: pd.Series, bat: pd.Series, label: str) -> None:
    counts = pd.DataFrame({"ref": _label_counts(ref), "bat": _label_counts(bat)}).fillna(0)
    n_bat = int(counts["bat"].sum())
    new = counts[counts["ref"] == 0]["bat"]
    new_share = float(new.sum() / n_bat) if n_bat else 0.0
    names = ", ".join(f"{k!r} ({int(v):,} rows)" for k, v in new.items())
    audit.add("new_label", label, "new_rows", float(new.sum()), new_share,
              audit.settings.new_label,
              f"new label{'s' if len(new) > 1 else ''} {names}: the dataset's model has never "
              "seen it; the next run re-estimates in full" if len(new) else "no new labels")
    if n_bat and len(counts) > 1:
        shares = counts / counts.sum()
        tvd = float(0.5 * np.abs(shares["ref"] - shares["bat"]).sum())
        p = float(chi2_contingency(counts.T.to_numpy()).pvalue)
        moved = (shares["bat"] - shares["ref"]).sort_values()
        biggest = ", ".join(f"{k!r} {v:+.1%}" for k, v in moved.iloc[[0, -1]].items())
        audit.add("label_shift", label, "chi2_pvalue", p, tvd, audit.settings.label_shift,
                  f"label mix moved by a total variation distance of {tvd:.3f} ({biggest}; "
                  f"chi-squared p={p:.2g})", significant=p < audit.settings.p_value)


def _tags(values: pd.Series, delimiter: str) -> pd.Series:
    """Every tag of every row, one entry each (a row's tag set split as the run splits it)."""
    from tasks.tags import parse_tags

    return pd.Series([t for tags in parse_tags(values, delimiter) for t in sorted(tags)],
                     dtype=object)


def _target_checks(audit: _Audit, ref: pd.Series, bat: pd.Series, label: str) -> None:
    """A regression target: every value is new, so the label checks are the numeric ones: the
    target's distribution against the dataset's (`label_shift`, as numeric_drift measures a
    feature), and values outside the dataset's range (`new_label`: a share, recorded)."""
    r = pd.to_numeric(ref, errors="coerce").dropna()
    b = pd.to_numeric(bat, errors="coerce").dropna()
    if len(r) and len(b):
        lo, hi = float(r.min()), float(r.max())
        outside = int(((b < lo) | (b > hi)).sum())
        audit.add("new_label", label, "outside_rows", float(outside), outside / len(b), None,
                  f"{label}: {outside:,} batch values outside the dataset's range "
                  f"[{lo:.6g}, {hi:.6g}] (a regression target: recorded, not judged)")
    _numeric_drift(audit, r, b, label, check="label_shift", what=" (the regression target)")


def _label_issue_rate(audit: _Audit, ref_flags: np.ndarray, bat_flags: np.ndarray) -> None:
    ref_flags, bat_flags = np.asarray(ref_flags, bool), np.asarray(bat_flags, bool)
    if not len(ref_flags) or not len(bat_flags):
        return
    r, b = ref_flags.mean(), bat_flags.mean()
    table = np.array([[ref_flags.sum(), (~ref_flags).sum()], [bat_flags.sum(), (~bat_flags).sum()]])
    p = float(chi2_contingency(table).pvalue) if (table.sum(axis=0) > 0).all() else 1.0
    audit.add("label_issue_rate", None, "chi2_pvalue", p, b - r, audit.settings.label_issue_rate,
              f"label issues: {b:.1%} of the batch's rows against {r:.1%} of the dataset's "
              f"(chi-squared p={p:.2g})", significant=p < audit.settings.p_value)


# ---- copies of earlier rows -------------------------------------------------------------------

def _binomial_p(k: int, n: int, base: float) -> float:
    """P(at least k of n rows) when each row is one with probability `base` (scipy's binomtest)."""
    if not n or base >= 1.0:
        return 1.0
    if base <= 0.0:
        return 0.0 if k else 1.0
    return float(binomtest(k, n, base, alternative="greater").pvalue)


def _copies(audit: _Audit, ref: pd.DataFrame, ref_y: pd.Series, bat: pd.DataFrame,
            bat_y: pd.Series, conflicts: bool = True) -> None:
    """Batch rows with an earlier row's features and label (exact copies) or its features and
    another label (conflicting copies), against the reference's own rate of such rows."""
    rk, rck = row_keys(ref, ref_y)
    bk, bck = row_keys(bat, bat_y)
    exact = pd.Series(bck).isin(pd.Index(rck)).to_numpy()  # hash-table look-ups: 1M rows in
    conflict = pd.Series(bk).isin(pd.Index(rk)).to_numpy() & ~exact  # well under a second
    # the reference's own rates (each row against the others): what a batch from the same
    # source is expected to show
    base_exact = float(pd.Series(rck).duplicated(keep=False).mean())
    # rows whose features recur with another label: feature sets holding several copy sets
    same, _ = pd.factorize(rk)
    copies, _ = pd.factorize(rck)
    _, first_at = np.unique(copies, return_index=True)
    base_conflict = float((np.bincount(same[first_at])[same] > 1).mean()) if len(rk) else 0.0
    for check, hits, base, what in (
            ("exact_copies", exact, base_exact, "copy an earlier row (features and label)"),
            ("conflicting_copies", conflict, base_conflict,
             "have an earlier row's features with another label")):
        if check == "conflicting_copies" and not conflicts:
            continue
        k, n = int(hits.sum()), len(hits)
        share = k / n if n else 0.0
        p = _binomial_p(k, n, base)
        audit.add(check, None, "share", share, share - base, getattr(audit.settings, check),
                  f"{k:,} batch rows ({share:.1%}) {what}; the dataset's own rate is {base:.1%}",
                  significant=p < audit.settings.p_value)


def _near_copies(audit: _Audit, ref: pd.DataFrame, bat: pd.DataFrame, plan: FeaturePlan,
                 seed: int) -> None:
    """Batch rows closer to an earlier row than 99% of earlier rows are to their nearest other
    row (Euclidean, on the encoded features' dense embedding), against the reference's rate."""
    if len(ref) < 20 or not len(bat):
        return
    import faiss  # exact search, as tasks/knn.py does for the dataset's own graph

    X = build_transformer(plan).fit(ref).transform(pd.concat([ref, bat], ignore_index=True))
    emb = np.ascontiguousarray(dense_embedding(X, seed), dtype=np.float32)
    er, eb = emb[: len(ref)], emb[len(ref):]
    index = faiss.IndexFlatL2(emb.shape[1])
    index.add(er)
    rng = np.random.default_rng(seed)
    probe = rng.choice(len(er), size=min(len(er), 5000), replace=False)
    ref_d = np.sqrt(np.maximum(index.search(er[probe], 2)[0][:, 1], 0))  # the first is itself
    radius = float(np.quantile(ref_d, NEAR_QUANTILE))
    bat_d = np.sqrt(np.maximum(index.search(eb, 1)[0][:, 0], 0))
    hits = bat_d <= radius
    base = float((ref_d <= radius).mean())
    k, n = int(hits.sum()), len(hits)
    p = _binomial_p(k, n, base)
    audit.add("near_copies", None, "share", k / n, k / n - base, audit.settings.near_copies,
              f"{k:,} batch rows ({k / n:.1%}) lie within {radius:.3g} of an earlier row "
              f"(closer than 99% of earlier rows to their nearest; the dataset's own rate "
              f"{base:.1%})", significant=p < audit.settings.p_value)


# ---- the audit -------------------------------------------------------------------------------

def audit_batch(
    reference: pd.DataFrame, batch: pd.DataFrame, plan: FeaturePlan, label: str,
    settings: AuditSettings | None = None, id_column: str | None = None,
    reference_issues: np.ndarray | None = None, batch_issues: np.ndarray | None = None,
    seed: int = 0, regression: bool = False, tag_delimiter: str | None = None,
) -> AuditResult:
    """Audit `batch` against `reference` (the dataset's accepted rows, raw columns) with the
    dataset's feature plan (tasks/featurize.infer_roles). `reference_issues` / `batch_issues`:
    optional is-label-issue flags, one per row, for the label-issue-rate check. `regression`:
    the label is a numeric target (its checks are numeric; no conflicting copies, where
    identical features with another value are expected). `tag_delimiter`: the label holds tag
    sets (text joined by it, or lists): new_label and label_shift count tags, not sets (a new
    combination of known tags is not a new label)."""
    settings = settings or AuditSettings()
    audit = _Audit(settings)
    notes: list[str] = []
    checked = _schema(audit, reference, batch, plan, label, id_column)
    sample = reference
    if len(reference) > settings.sample_rows:
        sample = reference.sample(n=settings.sample_rows, random_state=seed)
        notes.append(f"drift, classifier and near-copy checks compare a seeded sample of "
                     f"{settings.sample_rows:,} of the dataset's {len(reference):,} rows; exact "
                     "and conflicting copies are looked up in all of them")
    if not len(batch):
        notes.append("the batch has no rows: only its columns were checked")
        return _decide(audit.checks, 0, len(reference), len(sample), notes)
    if audit.on("missing_values"):
        for col in checked.used:
            _missing_values(audit, sample[col], batch[col], col)
    ref_frame, bat_frame = prepare_frame(sample, checked), prepare_frame(batch, checked)
    if audit.on("numeric_drift"):
        for col in (*checked.numeric, *checked.datetime):
            _numeric_drift(audit, ref_frame[col], bat_frame[col], col)
    if audit.on("categorical_drift") or audit.on("new_category"):
        for col in checked.categorical:
            _categorical_drift(audit, ref_frame[col], bat_frame[col], col)
    if checked.high_cardinality:
        notes.append(f"high-cardinality columns ({', '.join(checked.high_cardinality)}) are "
                     "covered by the whole-row test only")
    if audit.on("text_drift"):
        for col in checked.text:
            _classifier_check(audit, "text_drift", col, ref_frame[col], bat_frame[col],
                              _text_model(), col, seed)
    if audit.on("row_drift") and checked.used:
        model = make_pipeline(build_transformer(checked), LogisticRegression(max_iter=1000))
        _classifier_check(audit, "row_drift", None, ref_frame, bat_frame, model,
                          "whole rows", seed)
    if label in batch.columns and label in reference.columns:
        if regression:
            _target_checks(audit, reference[label], batch[label], label)
        elif tag_delimiter is not None:
            _label_checks(audit, _tags(reference[label], tag_delimiter),
                          _tags(batch[label], tag_delimiter), label)
        else:
            _label_checks(audit, reference[label], batch[label], label)
        if checked.used and (audit.on("exact_copies") or audit.on("conflicting_copies")):
            _copies(audit, prepare_frame(reference, checked), reference[label], bat_frame,
                    batch[label].reset_index(drop=True).set_axis(bat_frame.index),
                    conflicts=not regression)
    if audit.on("near_copies") and checked.used:
        _near_copies(audit, ref_frame, bat_frame, checked, seed)
    if reference_issues is not None and batch_issues is not None and audit.on("label_issue_rate"):
        _label_issue_rate(audit, reference_issues, batch_issues)
    return _decide(audit.checks, len(batch), len(reference), len(sample), notes)


def _decide(checks: list[AuditCheck], batch_rows: int, reference_rows: int, sampled: int,
            notes: list[str]) -> AuditResult:
    def listed(cs: list[AuditCheck]) -> str:
        return "; ".join(f"{c.check}" + (f" ({c.column})" if c.column else "") for c in cs)

    failed = [c for c in checks if c.outcome == "fail"]
    warned = [c for c in checks if c.outcome == "warn"]
    if failed:
        decision: Decision = "quarantine"
        names = sorted({c.check for c in failed})
        reason = (f"critical: {listed(failed)}. Nothing of the batch is published. To accept it "
                  f"anyway, lower the check's severity in the dataset's cleanset.yaml, e.g. "
                  f"`audit: {{severity: {{{names[0]}: warning}}}}`, or fix the file")
    elif warned:
        decision, reason = "accept-with-warnings", f"warnings: {listed(warned)}"
    else:
        decision, reason = "accept", "every check passed"
    return AuditResult(checks=tuple(checks), decision=decision, reason=reason,
                       batch_rows=batch_rows, reference_rows=reference_rows,
                       reference_sampled=sampled, notes=tuple(notes))
