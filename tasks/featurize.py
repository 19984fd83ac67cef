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
from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tasks.caching import STAGE_CACHE
from tasks.errors import CleansetError, is_retryable
from tasks.ingest import Snapshot
from tasks.store import ArrayRef, write_array
from tasks.validate import Validation

MISSING = "__missing__"


class FeaturePlan(BaseModel):
    """Which columns feed the model, by role, and which were left out and why."""

    model_config = ConfigDict(frozen=True)
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    datetime: tuple[str, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()  # (column, reason)

    @property
    def used(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.text, *self.datetime]


class Design(BaseModel):
    """The training set: which snapshot rows are scored, their encoded labels, and the folds."""

    model_config = ConfigDict(frozen=True)
    plan: FeaturePlan
    classes: tuple[str, ...]
    positions: ArrayRef  # snapshot row positions that are scored (not quarantined)
    labels: ArrayRef  # int label per scored row, index into classes
    folds: ArrayRef  # fold number per scored row
    n_folds: int


def _looks_like_text(s: pd.Series) -> bool:
    sample = s.dropna().astype(str).head(2000)
    if sample.empty:
        return False
    tokens = sample.str.split().str.len().mean()
    long_and_varied = sample.str.len().mean() > 30 and sample.nunique() > 0.5 * len(sample)
    return bool(tokens >= 4 or long_and_varied)


def infer_roles(
    df: pd.DataFrame, label: str, exclude: list[str], text: list[str],
    features: list[str] | None,
) -> FeaturePlan:
    """Assign each candidate column a role from its dtype and values."""
    roles: dict[str, list[str]] = {"numeric": [], "categorical": [], "text": [], "datetime": []}
    dropped: list[tuple[str, str]] = []
    missing = [c for c in [*text, *(features or [])] if c not in df.columns]
    if missing:
        raise CleansetError(
            f"column(s) {', '.join(map(repr, missing))} named in --text/--features are not in the "
            f"data; available columns: {', '.join(map(str, df.columns))}"
        )
    candidates = features if features is not None else [c for c in df.columns]
    n = len(df)
    for col in candidates:
        if col == label or col in exclude:
            continue
        s = df[col]
        if col in text:
            roles["text"].append(col)
            continue
        if s.isna().all():
            dropped.append((col, "all values missing"))
        elif s.nunique(dropna=True) <= 1 and not s.isna().any():
            dropped.append((col, "constant"))
        elif pd.api.types.is_bool_dtype(s):
            roles["categorical"].append(col)
        elif pd.api.types.is_numeric_dtype(s):
            roles["numeric"].append(col)
        elif pd.api.types.is_datetime64_any_dtype(s):
            roles["datetime"].append(col)
        elif _looks_like_text(s):
            roles["text"].append(col)
        elif s.nunique(dropna=True) <= max(50, int(0.05 * n)):
            roles["categorical"].append(col)
        else:
            dropped.append((col, "high-cardinality identifier-like strings"))
    plan = FeaturePlan(**{k: tuple(v) for k, v in roles.items()}, dropped=tuple(dropped))
    if not plan.used:
        raise CleansetError(
            "no usable feature columns: every column besides the label and id is constant, empty "
            "or an identifier; name feature columns with --features or text columns with --text"
        )
    return plan


def prepare_frame(df: pd.DataFrame, plan: FeaturePlan) -> pd.DataFrame:
    """Cast the used columns into the types the transformer expects (no NaN in text/categorical)."""
    out = {}
    for c in plan.numeric:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64").replace(
            [np.inf, -np.inf], np.nan)
    for c in plan.datetime:
        out[c] = pd.to_datetime(df[c], errors="coerce").astype("int64").astype("float64") / 8.64e13
    for c in plan.categorical:
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
    y = np.array([index[v] for v in values], dtype=np.int64)
    return y, tuple(_label_text(v) for v in ordered)


def _label_text(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def plan_folds(y: np.ndarray, classes: tuple[str, ...], n_folds: int, seed: int) -> np.ndarray:
    """Stratified fold number per row; every class needs at least n_folds rows."""
    counts = np.bincount(y, minlength=len(classes))
    small = [(classes[k], int(c)) for k, c in enumerate(counts) if c < n_folds]
    if small:
        shown = ", ".join(f"{name!r} ({c} row{'s' if c != 1 else ''})" for name, c in small[:10])
        raise CleansetError(
            f"{len(small)} class(es) have fewer rows than the {n_folds} cross-validation folds: "
            f"{shown}. Out-of-fold probabilities need every class in every fold: lower --folds "
            f"(at least 2), drop or merge these classes, or add examples"
        )
    folds = np.empty(len(y), dtype=np.int64)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(skf.split(np.zeros(len(y)), y)):
        folds[test] = k
    return folds


def design(
    df: pd.DataFrame, label: str, id_column: str, quarantined: np.ndarray, text: list[str],
    features: list[str] | None, n_folds: int, seed: int,
) -> tuple[FeaturePlan, tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Plan features, encode labels of the non-quarantined rows, and assign folds."""
    plan = infer_roles(df, label, [id_column], text, features)
    keep = np.ones(len(df), dtype=bool)
    keep[quarantined] = False
    keep &= df[label].notna().to_numpy()
    positions = np.flatnonzero(keep)
    y, classes = encode_labels(df[label].iloc[positions])
    folds = plan_folds(y, classes, n_folds, seed)
    return plan, classes, positions, y, folds


@task(
    name="featurize",
    cache_policy=STAGE_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=is_retryable,
)
def featurize(
    snapshot: Snapshot, validation: Validation, label: str, text: list[str],
    features: list[str] | None, n_folds: int, seed: int, work_dir: str,
) -> Design:
    """Infer column roles, encode labels and plan folds for the rows that passed validation."""
    df = snapshot.table.read()
    plan, classes, positions, y, folds = design(
        df, label, snapshot.id_column, validation.quarantined.read(), text, features, n_folds, seed
    )
    logger = get_run_logger()
    logger.info("features: %d numeric, %d categorical, %d text, %d datetime; %d classes",
                len(plan.numeric), len(plan.categorical), len(plan.text), len(plan.datetime),
                len(classes))
    for col, why in plan.dropped:
        logger.info("column %r not used as a feature: %s", col, why)
    work = Path(work_dir)
    return Design(plan=plan, classes=classes, positions=write_array(positions, work, "design"),
                  labels=write_array(y, work, "design"), folds=write_array(folds, work, "design"),
                  n_folds=n_folds)
