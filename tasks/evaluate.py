"""evaluate: does cleaning help? Train the default model on the data as given and on the cleaned
data, score both on a test set (a labelled file, or a held-out share of the rows), and report
accuracy and macro-F1 before and after (regression: RMSE, MAE and R^2; table `evaluations`).

With a held-out share the test labels are the data's own (possibly noisy) labels; a separate,
trusted test file (`--test`) is the better measure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.model_selection import train_test_split

from tasks.caching import STAGE_CACHE, file_content, stage
from tasks.decide import Decided
from tasks.errors import CleansetError
from tasks.estimate import LINEAR, family, fit_predict, is_regressor
from tasks.featurize import Design, FeaturePlan, _label_text, build_transformer, prepare_frame
from tasks.ingest import Snapshot, read_snapshot


class Evaluation(BaseModel):
    """Accuracy and macro-F1 of the default model trained on the given vs the cleaned data."""

    model_config = ConfigDict(frozen=True)
    model: str
    test_set: str
    rows: tuple[dict, ...]  # one per trained_on: given, cleaned

    def by(self, trained_on: str) -> dict:
        return next(r for r in self.rows if r["trained_on"] == trained_on)


def _predict_test(train: pd.DataFrame, y_train: np.ndarray, test: pd.DataFrame,
                  plan: FeaturePlan, models: tuple[str, ...], n_outputs: int,
                  seed: int) -> np.ndarray:
    """The mean output (probabilities; a regressor's prediction in column 0) over `models`, each
    fitted on the training rows (encoders fitted on them only) and applied to the test rows.
    `y_train` is the encoded target of the training rows (a vector, or a tag matrix)."""
    rows = np.arange(len(train) + len(test))
    fit_rows, test_rows = rows[:len(train)], rows[len(train):]
    y_train = np.asarray(y_train)
    y_all = np.concatenate([y_train, np.zeros((len(test), *y_train.shape[1:]),
                                              dtype=y_train.dtype)])
    both = pd.concat([train, test], ignore_index=True)
    high = (both[list(plan.high_cardinality)].to_numpy(dtype=object)
            if plan.high_cardinality else None)
    out = []
    for m in models:
        if family(m) in LINEAR:
            X = build_transformer(plan).fit(train).transform(both)
            X = X.tocsr() if sp.issparse(X) else X
        else:
            X = both
        out.append(fit_predict(X, y_all, fit_rows, test_rows, n_outputs, m, plan, seed, high))
    return np.mean(out, axis=0)


def train_and_score(train: pd.DataFrame, y_train: np.ndarray, test: pd.DataFrame,
                    y_test: np.ndarray, plan: FeaturePlan, models: tuple[str, ...],
                    seed: int = 0) -> dict:
    """Fit each model on the training rows (labels as text), average their probabilities, and
    score the test rows. Encoders are fitted on the training rows only."""
    classes, y = np.unique(np.asarray(y_train, dtype=object).astype(str), return_inverse=True)
    probs = _predict_test(train, y, test, plan, models, len(classes), seed)
    predicted = classes[probs.argmax(axis=1)]
    truth = np.asarray(y_test, dtype=object).astype(str)
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0))}


def train_and_score_regression(train: pd.DataFrame, y_train: np.ndarray, test: pd.DataFrame,
                               y_test: np.ndarray, plan: FeaturePlan, models: tuple[str, ...],
                               seed: int = 0) -> dict:
    """The regression counterpart of train_and_score: the mean prediction of the regressors
    trained on the training rows, scored by RMSE, MAE and R^2 on the test rows."""
    y = np.asarray(y_train, dtype=np.float64)
    predicted = _predict_test(train, y, test, plan, models, 1, seed)[:, 0]
    truth = np.asarray(y_test, dtype=np.float64)
    return {"rmse": float(root_mean_squared_error(truth, predicted)),
            "mae": float(mean_absolute_error(truth, predicted)),
            "r2": float(r2_score(truth, predicted))}


def train_and_score_multilabel(train: pd.DataFrame, y_train: np.ndarray, test: pd.DataFrame,
                               y_test: np.ndarray, plan: FeaturePlan, models: tuple[str, ...],
                               seed: int = 0, tags: tuple[str, ...] = (),
                               delimiter: str = ";") -> dict:
    """The multilabel counterpart of train_and_score: tag sets as text (`delimiter`) over the
    scored `tags`; one model per tag (averaged over `models`), a tag predicted at probability
    0.5; micro-F1, macro-F1 over tags and the mean Jaccard index of the rows' sets."""
    from sklearn.metrics import jaccard_score

    from tasks.tags import split_text, tag_matrix

    def matrix(texts: np.ndarray) -> np.ndarray:
        return tag_matrix([split_text(None if pd.isna(v) else str(v), delimiter)
                           for v in texts], tags)

    Y = matrix(np.asarray(y_train, dtype=object))
    predicted = _predict_test(train, Y, test, plan, models, len(tags), seed) >= 0.5
    truth = matrix(np.asarray(y_test, dtype=object)).astype(bool)
    return {"micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=1.0)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=1.0)),
            "jaccard": float(jaccard_score(truth, predicted, average="samples",
                                           zero_division=1.0))}


def label_text(values: pd.Series) -> pd.Series:
    """Labels as the text the issues table uses (1.0 -> '1'); missing stays missing."""
    return values.map(_label_text, na_action="ignore")


def evaluation_sets(frame: pd.DataFrame, given: pd.Series, decided: pd.DataFrame,
                    test: tuple[pd.DataFrame, pd.Series] | None, holdout: float | None,
                    seed: int, regression: bool = False) -> dict:
    """The training and test rows: `given` = every labelled row as it came, `cleaned` = the rows
    the clean table keeps, with their final labels. A held-out share is taken from both."""
    labelled = given.notna().to_numpy()
    keep = labelled & (decided["action"] != "drop").to_numpy() & decided["final_label"].notna(
    ).to_numpy()
    idx = np.arange(len(frame))
    if test is None:
        rows = idx[labelled]
        y = given.iloc[rows].to_numpy()
        counts = pd.Series(y).value_counts()
        stratify = y if counts.min() >= 2 and not regression else None
        try:
            _, held = train_test_split(rows, test_size=holdout, random_state=seed,
                                       stratify=stratify)
        except ValueError as exc:  # e.g. fewer held-out rows than classes
            raise CleansetError(f"cannot hold out {holdout:.0%} of {len(rows)} labelled rows as "
                                f"a test set ({exc}); choose a larger --eval-holdout or give "
                                "--test FILE") from None
        in_test = np.zeros(len(frame), dtype=bool)
        in_test[held] = True
        test_frame, test_y = frame.iloc[held], given.iloc[held].to_numpy()
    else:
        in_test = np.zeros(len(frame), dtype=bool)
        test_frame, test_y = test[0], test[1].to_numpy()
    given_rows, clean_rows = idx[labelled & ~in_test], idx[keep & ~in_test]
    return {
        "given": (frame.iloc[given_rows], given.iloc[given_rows].to_numpy()),
        "cleaned": (frame.iloc[clean_rows], decided["final_label"].iloc[clean_rows].to_numpy()),
        "test": (test_frame, test_y),
    }


def _features(df: pd.DataFrame, design: Design, what: str) -> pd.DataFrame:
    missing = [c for c in design.plan.used if c not in df.columns]
    if missing:
        raise CleansetError(f"{what} lacks the feature column(s) {', '.join(missing)}")
    return prepare_frame(df.reset_index(drop=True), design.plan)


@stage("evaluate", cache_policy=STAGE_CACHE + file_content("test_source"))
def evaluate(snapshot: Snapshot, design: Design, decided: Decided, label: str,
             test_source: str | None, holdout: float | None, models: tuple[str, ...],
             seed: int, work_dir: str) -> Evaluation:
    """Train on the given and on the cleaned data, score both on the test set."""
    if design.embeddings is not None:
        if test_source:
            raise CleansetError("--test needs the data's own columns; with --embeddings use "
                                "--eval-holdout instead")
        frame = pd.DataFrame(design.embeddings.read(), columns=list(design.plan.numeric))
    else:
        frame = _features(snapshot.table.read(columns=design.plan.used), design, "the data")
    given = label_text(snapshot.table.read(columns=[label])[label])
    if design.regression:
        given = pd.to_numeric(given, errors="coerce")
        models = tuple(m for m in models if is_regressor(m)) or ("ridge",)
    test = None
    if test_source:
        test_snap = read_snapshot(test_source, None, Path(work_dir))
        test_df = test_snap.table.read()
        if label not in test_df.columns:
            raise CleansetError(f"test file {test_source} has no label column {label!r}")
        test_df = test_df[test_df[label].notna()]
        if test_df.empty:
            raise CleansetError(f"test file {test_source} has no labelled rows")
        test_y = label_text(test_df[label])
        if design.multilabel:  # the test file's tag sets (text or lists) as canonical text
            from tasks.tags import parse_tags, tags_text

            test_y = pd.Series([tags_text(s, design.tag_delimiter) for s in parse_tags(
                test_df[label].reset_index(drop=True), design.tag_delimiter)])
        if design.regression:
            test_y = pd.to_numeric(test_y, errors="coerce")
            if test_y.isna().any():
                raise CleansetError(f"test file {test_source}: label column {label!r} holds "
                                    "values that are not numbers; a regression test set needs "
                                    "numeric targets")
        test = (_features(test_df, design, f"test file {test_source}"), test_y)
    decided_rows = decided.table.read(columns=["action", "final_label"])
    if design.regression:
        decided_rows["final_label"] = pd.to_numeric(decided_rows["final_label"], errors="coerce")
    sets = evaluation_sets(frame, given, decided_rows, test, holdout, seed,
                           design.task != "classification")
    test_set = test_source or f"holdout {holdout:.0%} (labels as given)"
    rows = []
    score = train_and_score_regression if design.regression else train_and_score
    if design.multilabel:
        def score(*args):  # noqa: ANN002, ANN202
            return train_and_score_multilabel(*args, tags=design.classes,
                                              delimiter=design.tag_delimiter)
    for trained_on in ("given", "cleaned"):
        x, y = sets[trained_on]
        scores = score(x, y, *sets["test"], design.plan, models, seed)
        rows.append({"trained_on": trained_on, "model": "+".join(models), "test_set": test_set,
                     "n_train": len(y), "n_test": len(sets["test"][1]), **scores})
    before, after = rows
    if design.multilabel:
        get_run_logger().info(
            "evaluation on %s: micro-F1 %.3f -> %.3f, macro-F1 %.3f -> %.3f, Jaccard %.3f -> "
            "%.3f (given -> cleaned)", test_set, before["micro_f1"], after["micro_f1"],
            before["macro_f1"], after["macro_f1"], before["jaccard"], after["jaccard"])
        return Evaluation(model="+".join(models), test_set=test_set, rows=tuple(rows))
    if design.regression:
        get_run_logger().info(
            "evaluation on %s: RMSE %.4g -> %.4g, MAE %.4g -> %.4g, R^2 %.3f -> %.3f (given -> "
            "cleaned)", test_set, before["rmse"], after["rmse"], before["mae"], after["mae"],
            before["r2"], after["r2"])
        return Evaluation(model="+".join(models), test_set=test_set, rows=tuple(rows))
    get_run_logger().info(
        "evaluation on %s: accuracy %.3f -> %.3f, macro-F1 %.3f -> %.3f (given -> cleaned)",
        test_set, before["accuracy"], after["accuracy"], before["macro_f1"], after["macro_f1"])
    return Evaluation(model="+".join(models), test_set=test_set, rows=tuple(rows))
