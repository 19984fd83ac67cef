"""estimate: out-of-fold predicted probabilities, one cached and retryable task per fold.

Each fold fits the model (ColumnTransformer from the feature plan + classifier) on the other
folds' rows and predicts its own rows, so every row's probabilities come from a model that never
saw its label: what confident learning needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tasks.caching import STAGE_CACHE
from tasks.errors import CleansetError, is_retryable
from tasks.featurize import Design, FeaturePlan, build_transformer, prepare_frame
from tasks.ingest import Snapshot
from tasks.store import ArrayRef, write_array

MODELS = ("logreg",)


def resolve_model(model: str, plan: FeaturePlan) -> str:
    """The concrete model for `auto` (logistic regression on the encoded features for now)."""
    if model == "auto":
        return "logreg"
    if model not in MODELS:
        raise CleansetError(f"unknown model {model!r}; choose one of: auto, {', '.join(MODELS)}")
    return model


def make_model(model: str, plan: FeaturePlan, seed: int) -> Pipeline:
    """The scikit-learn pipeline for a concrete model name."""
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    return Pipeline([("features", build_transformer(plan)), ("clf", clf)])


def fit_predict_fold(
    X, y: np.ndarray, folds: np.ndarray, fold: int, n_classes: int,  # noqa: ANN001 - a DataFrame
    model: str, plan: FeaturePlan, seed: int,
) -> np.ndarray:
    """Fit on rows outside `fold`, return (rows in fold) x n_classes probabilities (float32)."""
    train, test = folds != fold, folds == fold
    pipe = make_model(model, plan, seed)
    pipe.fit(X[train], y[train])
    proba = pipe.predict_proba(X[test])
    out = np.zeros((int(test.sum()), n_classes), dtype=np.float32)
    out[:, pipe.classes_] = proba  # a class absent from the training folds keeps probability 0
    return out


def assemble(folds: np.ndarray, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """Put each fold's rows back in place: an n x K out-of-fold pred_probs matrix."""
    pred = np.zeros((len(folds), n_classes), dtype=np.float32)
    for k, part in enumerate(parts):
        pred[folds == k] = part
    return pred


@task(
    name="estimate-fold",
    task_run_name="estimate-fold-{fold}",
    cache_policy=STAGE_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=is_retryable,
)
def estimate_fold(
    snapshot: Snapshot, design: Design, fold: int, model: str, seed: int, work_dir: str
) -> ArrayRef:
    """Out-of-fold probabilities for one fold's rows."""
    concrete = resolve_model(model, design.plan)
    df = snapshot.table.read(columns=design.plan.used)
    X = prepare_frame(df.iloc[design.positions.read()].reset_index(drop=True), design.plan)
    proba = fit_predict_fold(X, design.labels.read(), design.folds.read(), fold,
                             len(design.classes), concrete, design.plan, seed)
    get_run_logger().info("fold %d/%d: %s predicted %d rows", fold + 1, design.n_folds, concrete,
                          len(proba))
    return write_array(proba, Path(work_dir), "folds")


@task(name="pred-probs", cache_policy=STAGE_CACHE, retries=2, retry_delay_seconds=2)
def pred_probs(design: Design, parts: list[ArrayRef], work_dir: str) -> ArrayRef:
    """Assemble the folds into one out-of-fold pred_probs matrix."""
    pred = assemble(design.folds.read(), [p.read() for p in parts], len(design.classes))
    return write_array(pred, Path(work_dir), "pred_probs")
