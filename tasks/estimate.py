"""estimate: out-of-fold predicted probabilities, one cached and retryable task per fold and model.

Each fold fits a model on the other folds' rows and predicts its own rows, so every row's
probabilities come from a model that never saw its label: what confident learning needs.

The default (`auto`) is chosen by the data, from measurements on planted noise
(bench/label_quality.py):

| data | models | prune-and-retrain |
| --- | --- | --- |
| text (other columns categorical) | logreg + multinomial naive Bayes, mean | average |
| text with numeric columns | logistic regression | average |
| tabular, fewer than 10,000 rows | logistic regression | replace |
| tabular, 10,000 rows or more | HistGradientBoosting (50 rounds, rate 0.2) | off |

(On UCI Adult the logreg + HistGradientBoosting mean found no more errors than
HistGradientBoosting alone at twice the cost, so `ensemble` is an option, not the default.)

Prune-and-retrain: a second cross-validation pass trains each fold without the rows the first
pass flagged, so label errors no longer pull the model towards themselves; `replace` uses the
second pass's probabilities, `average` the mean of both passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from tasks.caching import STAGE_CACHE, file_content
from tasks.errors import CleansetError, is_retryable
from tasks.featurize import Design, FeaturePlan, encode, prepare_frame
from tasks.ingest import Snapshot
from tasks.store import ArrayRef, write_array

MODELS = ("logreg", "hgb", "nb")
MODEL_CHOICES = ("auto", "logreg", "hgb", "nb", "ensemble")
PRUNE_CHOICES = ("auto", "off", "replace", "average")
LARGE_TABULAR = 10_000

Prune = Literal["off", "replace", "average"]


class ModelChoice(BaseModel):
    """Which models estimate the probabilities, whether to prune and retrain, and why."""

    model_config = ConfigDict(frozen=True)
    models: tuple[str, ...]
    prune: Prune
    reason: str

    @property
    def label(self) -> str:
        return "+".join(self.models) + ("" if self.prune == "off" else f", prune={self.prune}")


def choose_model(plan: FeaturePlan, n_rows: int, model: str = "auto", prune: str = "auto"
                 ) -> ModelChoice:
    """Resolve `auto` settings into concrete models and a prune mode, by the rule above."""
    if model not in MODEL_CHOICES:
        raise CleansetError(f"unknown model {model!r}; choose one of {', '.join(MODEL_CHOICES)}")
    if prune not in PRUNE_CHOICES:
        raise CleansetError(f"unknown prune mode {prune!r}; choose one of "
                            f"{', '.join(PRUNE_CHOICES)}")
    if plan.text and not (plan.numeric or plan.datetime):
        auto_models, auto_prune, why = ("logreg", "nb"), "average", "text columns"
    elif plan.text:
        auto_models, auto_prune, why = ("logreg",), "average", "text and numeric columns"
    elif n_rows < LARGE_TABULAR:
        auto_models, auto_prune, why = ("logreg",), "replace", f"tabular, {n_rows:,} rows"
    else:
        auto_models, auto_prune, why = ("hgb",), "off", f"tabular, {n_rows:,} rows"
    models = {"auto": auto_models, "logreg": ("logreg",), "hgb": ("hgb",), "nb": ("nb",),
              "ensemble": ("logreg", "hgb")}[model]
    if "nb" in models and (plan.numeric or plan.datetime):
        raise CleansetError("model 'nb' needs non-negative features (TF-IDF, one-hot) and the "
                            "data has numeric columns; use 'logreg' or 'auto'")
    if "hgb" in models and plan.text:
        raise CleansetError("model 'hgb' does not take text columns; use 'logreg' (TF-IDF) or "
                            "'auto' for data with --text columns")
    chosen = auto_prune if prune == "auto" else prune
    reason = why if model == "auto" and prune == "auto" else f"set in config ({why})"
    return ModelChoice(models=models, prune=chosen, reason=reason)


def make_model(model: str, plan: FeaturePlan, seed: int):  # noqa: ANN201 - an sklearn estimator
    """The estimator for a concrete model name. `logreg` takes the encoded matrix
    (featurize.encode); `hgb` takes the prepared frame and encodes categoricals itself."""
    if model == "logreg":
        return LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    if model == "nb":
        return MultinomialNB(alpha=0.5)
    if model == "hgb":
        cats = list(plan.categorical)
        encoder = ColumnTransformer(
            [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                    encoded_missing_value=np.nan, max_categories=250), cats)],
            remainder="passthrough", verbose_feature_names_out=False,
        ).set_output(transform="pandas")
        clf = HistGradientBoostingClassifier(categorical_features=cats or None, max_iter=50,
                                             learning_rate=0.2, random_state=seed)
        return Pipeline([("features", encoder), ("clf", clf)])
    raise CleansetError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def model_inputs(frame: pd.DataFrame, plan: FeaturePlan, models: tuple[str, ...]) -> dict:
    """What each model trains on: the encoded matrix (logreg) or the prepared frame (hgb)."""
    encoded = encode(frame, plan) if {"logreg", "nb"} & set(models) else None
    return {m: encoded if m in ("logreg", "nb") else frame for m in models}


def fit_predict_fold(
    X, y: np.ndarray, folds: np.ndarray, fold: int, n_classes: int,  # noqa: ANN001
    model: str, plan: FeaturePlan, seed: int, exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Fit on rows outside `fold` (minus `exclude`d rows), return the fold's probabilities.
    X is the model's input (see model_inputs), one row per scored row."""
    train, test = folds != fold, folds == fold
    if exclude is not None:
        pruned = train & ~exclude
        # keep every class trainable: fall back to the full fold if pruning would empty one
        if len(np.unique(y[pruned])) == len(np.unique(y[train])):
            train = pruned
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


def combine(per_model: list[np.ndarray]) -> np.ndarray:
    """Mean of several models' probabilities, renormalised per row."""
    pred = np.mean(per_model, axis=0)
    return (pred / pred.sum(axis=1, keepdims=True).clip(min=1e-12)).astype(np.float32)


def first_pass_flags(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Rows confident learning flags in the first pass: left out of training in the second."""
    return find_label_issues(labels, pred_probs, n_jobs=1)


def out_of_fold_probs(
    inputs: dict, y: np.ndarray, folds: np.ndarray, n_classes: int, plan: FeaturePlan,
    choice: ModelChoice, seed: int = 0,
) -> np.ndarray:
    """The whole estimate stage in one process (what the flow runs as separate fold tasks):
    every model on every fold, averaged, with the prune-and-retrain pass when chosen."""

    def one_pass(exclude: np.ndarray | None) -> np.ndarray:
        per_model = [assemble(folds, [fit_predict_fold(inputs[m], y, folds, k, n_classes, m, plan,
                                                       seed, exclude)
                                      for k in range(int(folds.max()) + 1)], n_classes)
                     for m in choice.models]
        return combine(per_model)

    first = one_pass(None)
    if choice.prune == "off":
        return first
    second = one_pass(first_pass_flags(y, first))
    return second if choice.prune == "replace" else combine([second, first])


def design_matrix(snapshot: Snapshot, design: Design) -> pd.DataFrame:
    """The scored rows' model inputs: the data's used columns, or the supplied embeddings."""
    positions = design.positions.read()
    if design.embeddings is not None:
        return pd.DataFrame(design.embeddings.read()[positions], columns=list(design.plan.numeric))
    df = snapshot.table.read(columns=design.plan.used)
    return prepare_frame(df.iloc[positions].reset_index(drop=True), design.plan)


def supplied_probabilities(
    given: np.ndarray, all_classes: tuple[str, ...], classes: tuple[str, ...],
    positions: np.ndarray,
) -> np.ndarray:
    """The scored rows' columns of user-supplied pred_probs (columns = all classes, sorted)."""
    if given.shape[1] != len(all_classes):
        raise CleansetError(
            f"supplied pred_probs have {given.shape[1]} columns but the label has "
            f"{len(all_classes)} classes ({', '.join(all_classes[:10])}); give one column per "
            "class, in sorted class order")
    if (given < 0).any() or (given > 1).any():
        raise CleansetError("supplied pred_probs must be probabilities in [0, 1]")
    index = {c: i for i, c in enumerate(all_classes)}
    return combine([given[np.ix_(positions, [index[c] for c in classes])]])


@task(name="supplied-pred-probs", cache_policy=STAGE_CACHE + file_content("path"), retries=2,
      retry_delay_seconds=2, retry_condition_fn=is_retryable)
def supplied_pred_probs(snapshot: Snapshot, design: Design, label: str, path: str | None,
                        columns: list[str], work_dir: str) -> ArrayRef:
    """Use the user's own out-of-fold probabilities (a .npy file or columns of the data)."""
    from tasks.featurize import encode_labels, load_user_array

    df = snapshot.table.read(columns=[label, *columns])
    _, all_classes = encode_labels(df[label])
    if path:
        given = load_user_array(path, len(df), "pred_probs")
    else:
        given = df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
        if not np.isfinite(given).all():
            raise CleansetError(f"pred_probs columns {', '.join(columns)} hold missing or "
                                "non-numeric values")
    probs = supplied_probabilities(given, all_classes, design.classes, design.positions.read())
    get_run_logger().info("using supplied pred_probs (%s) for %d rows", path or
                          ", ".join(columns), len(probs))
    return write_array(probs, Path(work_dir), "pred_probs")


@task(name="choose-model", cache_policy=STAGE_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=is_retryable)
def choose(design: Design, model: str, prune: str) -> ModelChoice:
    """Resolve the model settings for this data and log the choice and its reason."""
    n_rows = design.labels.shape[0]
    choice = choose_model(design.plan, n_rows, model, prune)
    get_run_logger().info("model: %s (%s)", choice.label, choice.reason)
    return choice


@task(
    name="estimate-fold",
    task_run_name="estimate-{model}-fold-{fold}{pass_name}",
    cache_policy=STAGE_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=is_retryable,
)
def estimate_fold(
    snapshot: Snapshot, design: Design, fold: int, model: str, seed: int, work_dir: str,
    exclude: ArrayRef | None = None, pass_name: str = "",
) -> ArrayRef:
    """Out-of-fold probabilities of one model for one fold's rows."""
    X = design.matrix.read() if model in ("logreg", "nb") else design_matrix(snapshot, design)
    proba = fit_predict_fold(X, design.labels.read(), design.folds.read(), fold,
                             len(design.classes), model, design.plan, seed,
                             exclude.read() if exclude is not None else None)
    get_run_logger().info("fold %d/%d: %s predicted %d rows%s", fold + 1, design.n_folds, model,
                          len(proba), " (pruned training set)" if exclude is not None else "")
    return write_array(proba, Path(work_dir), "folds")


@task(name="pred-probs", cache_policy=STAGE_CACHE, retries=2, retry_delay_seconds=2)
def pred_probs(design: Design, parts: dict[str, list[ArrayRef]], work_dir: str,
               average_with: ArrayRef | None = None) -> ArrayRef:
    """Assemble folds per model, average the models (and the first pass, when asked)."""
    folds = design.folds.read()
    per_model = [assemble(folds, [p.read() for p in refs], len(design.classes))
                 for refs in parts.values()]
    if average_with is not None:
        per_model = [combine(per_model), average_with.read()]
    return write_array(combine(per_model), Path(work_dir), "pred_probs")


@task(name="first-pass-flags", cache_policy=STAGE_CACHE, retries=2, retry_delay_seconds=2)
def prune_set(design: Design, first_pass: ArrayRef, work_dir: str) -> ArrayRef:
    """The rows to leave out of training in the second pass."""
    flags = first_pass_flags(design.labels.read(), first_pass.read())
    get_run_logger().info("first pass flagged %d of %d rows; retraining without them",
                          int(flags.sum()), len(flags))
    return write_array(flags, Path(work_dir), "prune")
