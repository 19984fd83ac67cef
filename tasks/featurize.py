"""featurize: decide what each column is (numeric, categorical, text, datetime, or unused),
encode the labels and plan the cross-validation folds.

Column roles are inferred from the snapshot's types and values; `--text` and `--features` in the
DatasetSpec override the inference. The plan is small and goes into cache keys; the scikit-learn
ColumnTransformer is rebuilt from it inside each fold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from tasks.caching import STAGE_CACHE, file_content, stage
from tasks.errors import CleansetError
from tasks.ingest import Snapshot
from tasks.store import (
    ArrayRef,
    MatrixRef,
    ObjectRef,
    TableRef,
    write_array,
    write_matrix,
    write_object,
)
from tasks.task_type import decide_task
from tasks.validate import Validation
from tasks.values import exact_uniques, map_values

MISSING = "__missing__"
ROLES = ("numeric", "categorical", "text", "datetime", "high_cardinality", "ignore")
# A string column with more distinct values than this (and than 50) is high-cardinality: it is
# target-encoded inside the training folds instead of one-hot encoded. Above IDENTIFIER_SHARE
# distinct values per row it is taken for an identifier and left out (unless named by the user).
CATEGORICAL_SHARE = 0.05
IDENTIFIER_SHARE = 0.5

SLICE = "slice column: audited in slice_summary, not a feature"
ANNOTATOR = "annotator column: its labels make the consensus label, not a feature"
NOT_FEATURES = {"ignore": "role set to ignore", "slice": SLICE, "annotator": ANNOTATOR}


class FeaturePlan(BaseModel):
    """Which columns feed the model, by role, and which were left out and why."""

    model_config = ConfigDict(frozen=True)
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    datetime: tuple[str, ...] = ()
    high_cardinality: tuple[str, ...] = ()  # categoricals with many values: target-encoded
    dropped: tuple[tuple[str, str], ...] = ()  # (column, reason)
    reasons: tuple[tuple[str, str], ...] = ()  # (column, why it has its role)

    @property
    def used(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.text, *self.datetime,
                *self.high_cardinality]

    def role_of(self, column: str) -> str:
        for role in ROLES[:-1]:
            if column in getattr(self, role):
                return role
        return "ignore"


class Design(BaseModel):
    """The training set: which snapshot rows are scored, their encoded labels, and the folds."""

    model_config = ConfigDict(frozen=True)
    plan: FeaturePlan
    classes: tuple[str, ...]
    positions: ArrayRef  # snapshot row positions that are scored (not quarantined)
    labels: ArrayRef  # int label per scored row, index into classes
    folds: ArrayRef  # fold number per scored row
    n_folds: int
    rare: ArrayRef  # snapshot positions of rows whose class has fewer rows than folds
    rare_classes: tuple[str, ...] = ()
    embeddings: ArrayRef | None = None  # user-supplied features (n_snapshot_rows x d)
    matrix: MatrixRef | None = None  # encoded features of the scored rows (linear models' input)
    task: str = "classification"  # or regression: labels are then the float targets, no classes
    #                               or multilabel: labels an n x K 0/1 matrix over the scored tags
    task_reason: str = ""
    tag_delimiter: str | None = None  # multilabel: the text between tags in the label column
    # rows with no label (not quarantined): not trained on; every fold model predicts them
    unlabeled: ArrayRef | None = None  # their snapshot positions
    unlabeled_matrix: MatrixRef | None = None  # their encoded features (encoding fit on scored)
    encoder: ObjectRef | None = None  # the fitted encoding (kept for incremental runs)

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def width(self) -> int:
        """Columns of the out-of-fold estimate: one per class (multilabel: per tag, each its own
        probability), or one prediction (regression)."""
        return 1 if self.regression else len(self.classes)


def _looks_like_text(s: pd.Series) -> bool:
    sample = s.dropna().astype(str).head(2000)
    if sample.empty:
        return False
    tokens = sample.str.split().str.len().mean()
    long_and_varied = sample.str.len().mean() > 30 and sample.nunique() > 0.5 * len(sample)
    return bool(tokens >= 4 or long_and_varied)


def _is_nested(s: pd.Series) -> bool:
    """Struct, list or map values (nested Parquet/JSON types): not usable as features."""
    sample = s.dropna().head(100)
    return bool(len(sample)) and sample.map(
        lambda v: isinstance(v, (dict, list, tuple, np.ndarray))).any()


def _numeric_text(s: pd.Series) -> bool:
    """Text that is all numbers (e.g. `inf`, `-inf`, `1e3` that a CSV reader kept as text)."""
    values = s.dropna()

    def numbers(v: pd.Series) -> bool:
        return bool(pd.to_numeric(v.astype(str), errors="coerce").notna().all())

    return bool(len(values)) and numbers(values.head(1000)) and numbers(values)


def _constant(s: pd.Series) -> bool:
    """One value in every row (a column with missing values is not constant: missingness may
    carry signal). Compared with the first value, not by counting distinct values: infer_roles
    counted them for every column, 3.7 s of a million-row table's 3.9 s, where only text
    columns need the count."""
    if s.isna().any():
        return False
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s) or \
            pd.api.types.is_datetime64_any_dtype(s):
        return len(s) > 0 and s.min() == s.max()
    return len(s) > 0 and bool((s == s.iloc[0]).all())


def infer_roles(
    df: pd.DataFrame, label: str, exclude: list[str], text: list[str],
    features: list[str] | None, roles: dict[str, str] | None = None,
) -> FeaturePlan:
    """Assign each candidate column a role from its dtype and values; `roles` (the user's) and
    `text` win over inference. A column the user named (in `features` or `roles`) is never left
    out for looking like an identifier: it is target-encoded instead."""
    roles = dict(roles or {})
    found: dict[str, list[str]] = {r: [] for r in ROLES[:-1]}
    dropped: list[tuple[str, str]] = []
    reasons: list[tuple[str, str]] = []
    named = [*text, *(features or []), *roles]
    missing = [c for c in named if c not in df.columns]
    if missing:
        raise CleansetError(
            f"column(s) {', '.join(map(repr, missing))} named in --text/--feature/roles are not "
            f"in the data; available columns: {', '.join(map(str, df.columns))}"
        )
    bad = {c: r for c, r in roles.items() if r not in (*ROLES, *NOT_FEATURES)}
    if bad:
        raise CleansetError(f"unknown role(s) {bad}; a role is one of {', '.join(ROLES)}")
    candidates = features if features is not None else [c for c in df.columns]
    if features is not None:  # roles may name columns beyond --feature: they are used too
        candidates = [*candidates, *(c for c in roles if c not in candidates)]
    n = len(df)
    chosen_by_user = set(features or ()) | set(roles)

    def use(col: str, role: str, why: str) -> None:
        found[role].append(col)
        reasons.append((col, why))

    for col in candidates:
        if col == label or col in exclude:
            continue
        s = df[col]
        if col in roles:
            if roles[col] in NOT_FEATURES:
                dropped.append((col, NOT_FEATURES[roles[col]]))
            else:
                use(col, roles[col], "set by the user")
            continue
        if col in text:
            use(col, "text", "named with --text")
            continue
        if s.isna().all():
            dropped.append((col, "all values missing"))
            continue
        if s.dtype == object and _is_nested(s):
            dropped.append((col, "nested values (struct, list or map)"))
            continue
        if _constant(s):
            dropped.append((col, "constant"))
            continue
        if pd.api.types.is_bool_dtype(s):
            use(col, "categorical", "true/false values")
        elif pd.api.types.is_numeric_dtype(s):
            use(col, "numeric", "numbers")
        elif pd.api.types.is_datetime64_any_dtype(s):
            use(col, "datetime", "dates")
        elif _numeric_text(s):
            use(col, "numeric", "text holding numbers")
        elif _looks_like_text(s):
            use(col, "text", "long, varied strings")
        elif (distinct := s.nunique(dropna=True)) <= max(50, int(CATEGORICAL_SHARE * n)):
            use(col, "categorical", f"{distinct} distinct values")
        elif distinct <= IDENTIFIER_SHARE * n or col in chosen_by_user:
            use(col, "high_cardinality", f"{distinct:,} distinct values: target-encoded in folds")
        else:
            dropped.append((col, f"identifier-like ({distinct:,} distinct values in {n:,} rows;"
                                 " name it with --feature or roles to use it)"))
    plan = FeaturePlan(**{k: tuple(v) for k, v in found.items()}, dropped=tuple(dropped),
                       reasons=tuple(reasons))
    if not plan.used:
        raise CleansetError(
            "no usable feature columns: every column besides the label and id is constant, empty "
            "or an identifier; name feature columns with --feature, text columns with --text, or "
            "set roles"
        )
    return plan


def prepare_frame(df: pd.DataFrame, plan: FeaturePlan) -> pd.DataFrame:
    """Cast the used columns into the types the transformer expects (no NaN in text/categorical)."""
    out = {}
    for c in plan.numeric:
        values = df[c] if pd.api.types.is_numeric_dtype(df[c]) else df[c].astype(str)
        out[c] = pd.to_numeric(values, errors="coerce").astype("float64").replace(
            [np.inf, -np.inf], np.nan)
    for c in plan.datetime:
        out[c] = pd.to_datetime(df[c], errors="coerce").astype("int64").astype("float64") / 8.64e13
    for c in (*plan.categorical, *plan.high_cardinality):
        if isinstance(df[c].dtype, pd.StringDtype):  # already text: only the gaps filled
            out[c] = df[c].fillna(MISSING).astype(str)
        else:
            out[c] = df[c].astype(object).where(df[c].notna(), MISSING).astype(str)
    for c in plan.text:
        out[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return pd.DataFrame(out, index=df.index)


def build_transformer(plan: FeaturePlan) -> ColumnTransformer:
    """A ColumnTransformer for the plan: scaled numerics, one-hot categoricals, TF-IDF text."""
    parts = []
    dense_numeric = [*plan.numeric, *plan.datetime]
    if dense_numeric:
        parts.append(("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                                         keep_empty_features=True),
                                           StandardScaler()), dense_numeric))
    if plan.categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=3,
                                           sparse_output=True), list(plan.categorical)))
    for i, c in enumerate(plan.text):
        parts.append((f"text{i}", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2),
                                                  min_df=2, max_features=100_000), c))
    if not parts:  # only high-cardinality columns: their codes, for the kNN embedding alone
        parts.append(("high", make_pipeline(OrdinalEncoder(), StandardScaler()),
                      list(plan.high_cardinality)))
    return ColumnTransformer(parts, sparse_threshold=0.3)


def encode_labels(labels: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map label values to 0..K-1 in sorted order; class names are the values as text."""
    values = labels.to_numpy()
    uniques = pd.unique(labels.dropna())
    try:
        ordered = sorted(uniques)
    except TypeError:
        ordered = sorted(uniques, key=str)
    index = {v: i for i, v in enumerate(ordered)}
    if exact_uniques(labels) and not labels.isna().any():  # once per class, not per row
        codes, found = pd.factorize(labels)
        y = np.array([index[v] for v in found], dtype=np.int64)[codes]
    else:
        y = np.array([index[v] for v in values], dtype=np.int64)
    return y, tuple(_label_text(v) for v in ordered)


def _label_text(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def rare_classes(labels: pd.Series, n_folds: int) -> dict[str, int]:
    """Classes with fewer rows than folds (as label text -> row count)."""
    counts = map_values(labels.dropna(), _label_text).value_counts()
    return {str(k): int(v) for k, v in counts.items() if v < n_folds}


def plan_folds(
    y: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold number per row: stratified by label, and by group when groups are given (rows of
    one group share a fold, so near-copies of one entity cannot leak across folds)."""
    folds = np.empty(len(y), dtype=np.int64)
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y)
    else:
        n_groups = len(pd.unique(groups))
        if n_groups < n_folds:
            raise CleansetError(
                f"the group column has {n_groups} distinct groups, fewer than the {n_folds} "
                "folds: lower --folds or choose a column with more groups"
            )
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y, groups)
    for k, (_, test) in enumerate(splits):
        folds[test] = k
    return folds


def group_codes(values: pd.Series) -> np.ndarray:
    """Integer group per row; a row with no group value is a group of its own."""
    codes = pd.factorize(values.astype(object).where(values.notna(), None))[0].astype(np.int64)
    missing = codes < 0
    codes[missing] = codes.max(initial=-1) + 1 + np.arange(int(missing.sum()))
    return codes


def load_user_array(path: str, n_rows: int, what: str, one_column: bool = False) -> np.ndarray:
    """A user-supplied .npy with one row per input row, checked with readable errors.

    `one_column` (a regression's own predictions): one value per input row, as a 1-D array of
    n_rows values or an n_rows x 1 array; returned n_rows x 1 in float64 (float32 would round
    a price of 1,234,567.89 to 1,234,567.875)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CleansetError(f"{what} file {path} does not exist") from None
    except (ValueError, OSError) as exc:
        raise CleansetError(f"{what} file {path} is not a readable .npy array: {exc}") from None
    if one_column:
        shape = arr.shape
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape != (n_rows, 1):
            raise CleansetError(
                f"{what} in {path} must hold one predicted value per input row: a 1-D array of "
                f"{n_rows} values (or {n_rows} x 1); it has shape {shape}")
    elif arr.ndim != 2 or arr.shape[0] != n_rows:
        raise CleansetError(f"{what} in {path} must be a 2-D array with one row per input row "
                            f"({n_rows}); it has shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise CleansetError(f"{what} in {path} must be finite numbers")
    return arr.astype(np.float64 if one_column else np.float32)


def encode(frame: pd.DataFrame, plan: FeaturePlan):  # noqa: ANN201 - sparse or dense matrix
    """The encoded feature matrix of prepared rows: fitted once on all scored rows.

    Encoding is unsupervised (scaling, one-hot, TF-IDF vocabulary and idf: no labels), so fitting
    it once instead of inside every fold leaks no label information, and it is what a user's own
    script does; it saves refitting TF-IDF for every fold and pass.
    """
    return build_transformer(plan).fit_transform(frame)


def unlabeled_rows(labels: pd.Series, quarantined: np.ndarray) -> np.ndarray:
    """Snapshot positions of rows with an empty label that validation did not quarantine: they
    get a suggested label from the fold models instead of being dropped (issue type
    `unlabeled`)."""
    empty = labels.isna().to_numpy().copy()
    empty[quarantined] = False
    return np.flatnonzero(empty).astype(np.int64)


def embedding_plan(dim: int) -> FeaturePlan:
    """Supplied embeddings replace the data's columns as the model's numeric features."""
    return FeaturePlan(numeric=tuple(f"emb_{i}" for i in range(dim)))


def refuse_continuous_label(labels: pd.Series, label: str) -> None:
    """A numeric label with many distinct values is a regression target: taken as classes it would
    give one tiny class per value and say nothing useful. With task classification it is refused
    with what was seen (task auto takes it as regression: tasks/task_type.py)."""
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        return
    distinct = labels.nunique()
    if distinct > 30 and distinct > 0.2 * len(labels):
        raise CleansetError(
            f"label column {label!r} holds {distinct:,} distinct numbers in {len(labels):,} rows "
            f"(e.g. {', '.join(map(str, labels.head(3).tolist()))}): it looks like a regression "
            "target, not classes: run with --task regression (or auto), or choose the class "
            "column with --label")


def _plan_and_keep(
    df: pd.DataFrame, label: str, id_column: str, quarantined: np.ndarray, text: list[str],
    features: list[str] | None, group: str | None, also_exclude: tuple[str, ...],
    plan: FeaturePlan | None, roles: dict[str, str] | None,
) -> tuple[FeaturePlan, np.ndarray]:
    """The feature plan (inferred unless given) and the rows that can be scored: not
    quarantined, label present. Shared by the classification and regression designs."""
    if group is not None and group not in df.columns:
        raise CleansetError(f"group column {group!r} is not in the data; available columns: "
                            f"{', '.join(map(str, df.columns))}")
    exclude = [id_column] + ([group] if group else []) + list(also_exclude)
    plan = plan or infer_roles(df, label, exclude, text, features, roles)
    keep = np.ones(len(df), dtype=bool)
    keep[quarantined] = False
    keep &= df[label].notna().to_numpy()
    return plan, keep


def design(
    df: pd.DataFrame, label: str, id_column: str, quarantined: np.ndarray, text: list[str],
    features: list[str] | None, n_folds: int, seed: int, group: str | None = None,
    also_exclude: tuple[str, ...] = (), plan: FeaturePlan | None = None,
    roles: dict[str, str] | None = None,
) -> tuple[FeaturePlan, tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray,
           dict[str, int]]:
    """Plan features, encode labels of the scored rows, and assign folds.

    Scored rows: not quarantined, label present, and of a class with at least `n_folds` rows.
    Rule for rare classes: rows of a class smaller than the number of folds cannot get honest
    out-of-fold probabilities (the class would be missing from some training split), so they are
    not scored; they are returned as `rare` positions and flagged for review instead.
    """
    plan, keep = _plan_and_keep(df, label, id_column, quarantined, text, features, group,
                                also_exclude, plan, roles)
    refuse_continuous_label(df[label][keep], label)
    rare = rare_classes(df[label][keep], n_folds)
    is_rare = keep & map_values(df[label], lambda v: _label_text(v) in rare).fillna(
        False).to_numpy(dtype=bool)
    scored = keep & ~is_rare
    positions = np.flatnonzero(scored)
    y, classes = encode_labels(df[label].iloc[positions])
    if len(classes) < 2:
        shown = ", ".join(f"{k!r} ({v} rows)" for k, v in list(rare.items())[:10])
        raise CleansetError(
            f"fewer than two classes have at least {n_folds} rows (the number of folds), so no "
            f"label can be cross-checked; rare classes: {shown or 'none'}. Lower --folds or add "
            "examples"
        )
    groups = group_codes(df[group].iloc[positions]) if group else None
    folds = plan_folds(y, n_folds, seed, groups)
    return plan, classes, positions, y, folds, np.flatnonzero(is_rare), rare


REGRESSION_STRATA = 10


def target_strata(y: np.ndarray, n_folds: int) -> np.ndarray:
    """Quantile bins of a continuous target, so every fold spans the target's range (the
    regression counterpart of stratifying by class)."""
    bins = max(2, min(REGRESSION_STRATA, len(y) // max(n_folds, 1)))
    ranks = pd.Series(y).rank(method="first").to_numpy()
    return np.minimum((ranks - 1) * bins // max(len(y), 1), bins - 1).astype(np.int64)


def regression_design(
    df: pd.DataFrame, label: str, id_column: str, quarantined: np.ndarray, text: list[str],
    features: list[str] | None, n_folds: int, seed: int, group: str | None = None,
    also_exclude: tuple[str, ...] = (), plan: FeaturePlan | None = None,
    roles: dict[str, str] | None = None,
) -> tuple[FeaturePlan, np.ndarray, np.ndarray, np.ndarray]:
    """Plan features, take the targets of the scored rows (not quarantined, label present) as
    floats, and assign folds stratified by target quantile (and by group when given)."""
    plan, keep = _plan_and_keep(df, label, id_column, quarantined, text, features, group,
                                also_exclude, plan, roles)
    positions = np.flatnonzero(keep)
    values = df[label].iloc[positions]
    y = (values if pd.api.types.is_numeric_dtype(values) else pd.to_numeric(
        values.astype(str).str.strip(), errors="coerce")).to_numpy(dtype=np.float64)
    if len(y) < 2 * n_folds or np.unique(y).size < 2:
        raise CleansetError(f"label column {label!r} has {len(y)} usable values "
                            f"({np.unique(y).size} distinct): too few to cross-check a "
                            f"regression target with {n_folds} folds")
    groups = group_codes(df[group].iloc[positions]) if group else None
    folds = plan_folds(target_strata(y, n_folds), n_folds, seed, groups)
    return plan, positions, y, folds


def tag_strata(Y: np.ndarray, n_folds: int) -> np.ndarray:
    """A stratum per row for multi-label folds: its rarest tag (rows with no tags: their own
    stratum); strata with fewer rows than folds are pooled, so every fold sees every tag."""
    counts = Y.sum(axis=0)
    order = np.where(Y.astype(bool), counts[None, :], np.inf)
    strata = np.where(Y.any(axis=1), order.argmin(axis=1), Y.shape[1]).astype(np.int64)
    sizes = np.bincount(strata, minlength=Y.shape[1] + 1)
    return np.where(sizes[strata] < n_folds, -1, strata)


def multilabel_design(
    df: pd.DataFrame, label: str, id_column: str, quarantined: np.ndarray, text: list[str],
    features: list[str] | None, n_folds: int, seed: int, tags, group: str | None = None,  # noqa: ANN001
    also_exclude: tuple[str, ...] = (), plan: FeaturePlan | None = None,
    roles: dict[str, str] | None = None,
) -> tuple[FeaturePlan, np.ndarray, np.ndarray, np.ndarray]:
    """Plan features, take the tag sets of the scored rows (not quarantined; an empty set is a
    set) as a 0/1 matrix over the tags seen at least MIN_TAG_ROWS times (`tags`: a
    tags.TagSets), and assign folds stratified by each row's rarest tag."""
    from tasks.tags import split_text, tag_matrix

    plan, keep = _plan_and_keep(df, label, id_column, quarantined, text, features, group,
                                also_exclude, plan, roles)
    positions = np.flatnonzero(keep)
    sets = [split_text(v, tags.delimiter) for v in df[label].iloc[positions]]
    Y = tag_matrix(sets, tags.scored)
    if len(positions) < 2 * n_folds:
        raise CleansetError(f"label column {label!r} has {len(positions)} usable rows: too few "
                            f"to cross-check tag sets with {n_folds} folds")
    groups = group_codes(df[group].iloc[positions]) if group else None
    folds = plan_folds(tag_strata(Y, n_folds), n_folds, seed, groups)
    return plan, positions, Y, folds


def match_decisions(decisions: pd.DataFrame, row_ids: pd.Series
                    ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Each row's latest decision (a later decision supersedes an earlier one): the decisions
    of rows in the data, their positions, and the row ids no longer in the data."""
    latest = decisions.drop_duplicates("row_id", keep="last").set_index("row_id")
    pos = pd.Index(row_ids.astype(str)).get_indexer(latest.index.astype(str))
    found = pos >= 0
    return latest[found], pos[found], sorted(latest.index[~found].astype(str))


def reviewed_labels(labels: pd.Series, row_ids: pd.Series, decisions: pd.DataFrame | None,
                    tags=None) -> tuple[pd.Series, np.ndarray, int]:  # noqa: ANN001
    """Reviewers' decisions applied before training, so every later run's models learn from the
    corrected labels: `relabel` replaces the row's label (with a value of the column's own type),
    `drop` leaves the row out of training. Returns (labels, dropped positions, rows relabelled).
    The latest decision per row wins; decisions for rows not in the data are ignored here (decide
    reports them)."""
    if decisions is None or decisions.empty:
        return labels, np.array([], dtype=np.int64), 0
    latest, pos, _ = match_decisions(decisions, row_ids)
    kinds = latest["decision"].to_numpy()
    by_text = {_label_text(v): v for v in pd.unique(labels.dropna())}
    out = labels.copy()
    numeric = pd.api.types.is_numeric_dtype(out) and not pd.api.types.is_bool_dtype(out)
    relabelled = 0
    for p, kind, new in zip(pos, kinds, latest["new_label"].to_numpy(), strict=True):
        if kind != "relabel" or new is None or _label_text(out.iloc[p]) == new:
            continue
        if tags is not None:  # a reviewed tag set (canonical text; NO_TAGS: no tags)
            from tasks.tags import split_text, tags_text

            out.iloc[p] = tags_text(split_text(new, tags.delimiter), tags.delimiter)
        elif new in by_text:
            out.iloc[p] = by_text[new]
        elif numeric and pd.notna(value := pd.to_numeric(new, errors="coerce")):
            out = out.astype("float64")  # a reviewed regression value (a new number)
            out.iloc[p] = float(value)
        else:
            continue
        relabelled += 1
    return out, np.sort(pos[kinds == "drop"]).astype(np.int64), relabelled


@stage("featurize", cache_policy=STAGE_CACHE + file_content("embeddings"))
def featurize(
    snapshot: Snapshot, validation: Validation, label: str, text: list[str],
    features: list[str] | None, n_folds: int, seed: int, work_dir: str, group: str | None = None,
    embeddings: str | None = None, pred_prob_columns: tuple[str, ...] = (),
    decisions: TableRef | None = None, roles: dict[str, str] | None = None, task: str = "auto",
    keep_encoder: bool = False, tags=None,  # noqa: ANN001 - a tags.TagSets
    label_columns: tuple[str, ...] = (), with_matrix: bool = True,
) -> Design:
    """Decide the task (classification or regression), infer column roles, encode labels and
    plan folds for the rows that passed validation, with the reviewers' corrections applied (a
    reviewed drop is not trained on). `keep_encoder`: write the fitted encoding too (a dataset
    folder's run: an incremental run encodes new rows with it). `with_matrix` false: no encoded
    features yet (the `encode` stage adds them; a dataset folder's incremental run needs none)."""
    df = snapshot.table.read()
    work = Path(work_dir)
    quarantined = validation.quarantined.read()
    if decisions is not None:
        df[label], dropped, n_fixed = reviewed_labels(df[label], df[snapshot.id_column],
                                                      decisions.read(), tags)
        quarantined = np.union1d(quarantined, dropped).astype(np.int64)
        get_run_logger().info("training on reviewed labels: %d relabelled, %d dropped by "
                              "reviewers", n_fixed, len(dropped))
    emb_ref, given_plan = None, None
    if embeddings:
        emb = load_user_array(embeddings, len(df), "embeddings")
        given_plan, emb_ref = embedding_plan(emb.shape[1]), write_array(emb, work, "embeddings")
    if label not in df.columns:
        raise CleansetError(f"label column {label!r} is not in the data; available columns: "
                            f"{', '.join(map(str, df.columns))}")
    kept = np.ones(len(df), dtype=bool)
    kept[quarantined] = False
    if tags is not None:
        task, task_reason = "multilabel", tags.reason
    else:
        task, task_reason = decide_task(df[label][kept], label, task)
    logger = get_run_logger()
    (logger.warning if "tag sets" in task_reason and task != "multilabel" else logger.info)(
        "task: %s (%s)", task, task_reason)
    exclude = (*pred_prob_columns, *label_columns)
    if task == "multilabel":
        plan, positions, y, folds = multilabel_design(
            df, label, snapshot.id_column, quarantined, text, features, n_folds, seed, tags,
            group, exclude, given_plan, roles)
        classes, rare = tags.scored, np.array([], dtype=np.int64)
        rare_counts = {t: n for t, n in tags.tags if t in tags.rare}
    elif task == "regression":
        plan, positions, y, folds = regression_design(
            df, label, snapshot.id_column, quarantined, text, features, n_folds, seed, group,
            exclude, given_plan, roles)
        classes, rare, rare_counts = (), np.array([], dtype=np.int64), {}
    else:
        plan, classes, positions, y, folds, rare, rare_counts = design(
            df, label, snapshot.id_column, quarantined, text, features, n_folds,
            seed, group, exclude, given_plan, roles,
        )
    if rare_counts and task == "multilabel":
        logger.info("%d tag(s) seen in too few rows are not scored (kept as given): %s",
                    len(rare_counts), ", ".join(f"{k!r} ({v})" for k, v in
                                                list(rare_counts.items())[:10]))
    elif rare_counts:
        logger.warning(
            "%d class(es) have fewer rows than the %d folds and are not scored; their %d rows "
            "are flagged for review: %s", len(rare_counts), n_folds, len(rare),
            ", ".join(f"{k!r} ({v})" for k, v in list(rare_counts.items())[:10]))
    logger.info("features: %d numeric, %d categorical, %d high-cardinality, %d text, %d datetime; "
                "%s", len(plan.numeric), len(plan.categorical),
                len(plan.high_cardinality), len(plan.text), len(plan.datetime),
                {"regression": f"{len(y):,} targets", "multilabel": f"{len(classes)} scored tags"
                 }.get(task, f"{len(classes)} classes"))
    for col, why in plan.dropped:
        # a column that may carry signal is a warning; an empty or constant one carries none
        quiet = why in ("constant", "all values missing", *NOT_FEATURES.values())
        (logger.info if quiet else logger.warning)("column %r not used as a feature: %s", col,
                                                   why)
    unlabeled = unlabeled_rows(df[label], quarantined) if task == "classification" else None
    unlabeled_ref = None
    if unlabeled is not None and len(unlabeled):
        logger.info("%d row(s) have no label: the fold models suggest one", len(unlabeled))
        unlabeled_ref = write_array(unlabeled, work, "design")
    made = Design(plan=plan, classes=classes,
                  positions=write_array(positions, work, "design"),
                  labels=write_array(y, work, "design"), folds=write_array(folds, work, "design"),
                  n_folds=n_folds, rare=write_array(rare, work, "design"),
                  rare_classes=tuple(rare_counts), embeddings=emb_ref, task=task,
                  task_reason=task_reason, unlabeled=unlabeled_ref,
                  tag_delimiter=tags.delimiter if tags is not None else None)
    return encode_design(df, made, keep_encoder, work) if with_matrix else made


def encode_design(df: pd.DataFrame, design: Design, keep_encoder: bool, work: Path) -> Design:
    """The design with its encoded features: the scored rows' matrix (the linear families' and
    the kNN graph's input), the unlabeled rows' and, with `keep_encoder`, the fitted encoding.
    `df`: the snapshot (its used feature columns at least)."""
    plan, positions = design.plan, design.positions.read()
    emb = design.embeddings.read() if design.embeddings is not None else None
    if emb is not None:
        frame = pd.DataFrame(emb[positions], columns=list(plan.numeric))
    else:
        frame = prepare_frame(df.iloc[positions].reset_index(drop=True), plan)
    transformer = build_transformer(plan)
    matrix = write_matrix(transformer.fit_transform(frame), work, "matrix")
    unlabeled_matrix = None
    if design.unlabeled is not None:
        unlabeled_matrix = write_matrix(transformer.transform(unlabeled_frame(
            df, plan, design.unlabeled.read(), emb)), work, "matrix")
    return design.model_copy(update={
        "matrix": matrix, "unlabeled_matrix": unlabeled_matrix,
        "encoder": write_object(transformer, work, "models") if keep_encoder else None})


@stage("encode")
def encode_features(snapshot: Snapshot, design: Design, keep_encoder: bool, work_dir: str
                    ) -> Design:
    """A dataset folder's run encodes its features once it knows it needs them (a full
    estimation, or no graph to extend); an incremental run does not (featurize's
    `with_matrix`)."""
    df = None if design.embeddings is not None else snapshot.table.read(
        columns=list(design.plan.used))
    return encode_design(df, design, keep_encoder, Path(work_dir))


def unlabeled_frame(df: pd.DataFrame, plan: FeaturePlan, unlabeled: np.ndarray,
                    embeddings: np.ndarray | None = None) -> pd.DataFrame:
    """The unlabeled rows' model inputs, prepared like the scored rows' (featurize.design)."""
    if embeddings is not None:
        return pd.DataFrame(embeddings[unlabeled], columns=list(plan.numeric))
    return prepare_frame(df.iloc[unlabeled].reset_index(drop=True), plan)
