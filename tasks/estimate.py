"""estimate: out-of-fold predicted probabilities, one cached and retryable task per fold and model,
and the check of the model before anything acts on its probabilities.

Each fold fits a model on the other folds' rows and predicts its own rows, so every row's
probabilities come from a model that never saw its label: what confident learning needs. Which
models (and their weights) is decided per dataset by measurement in tasks/choose.py. The k-nearest
neighbours family needs no folds: each row's probabilities are its neighbours' labels in the
shared kNN graph (leave-one-out), smoothed towards the class frequencies.

Prune-and-retrain (`prune`, off by default): a second cross-validation pass trains each fold
without the rows the first pass flagged; `replace` uses the second pass's probabilities,
`average` the mean of both passes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from cleanlab.filter import find_label_issues
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder, TargetEncoder
from threadpoolctl import ThreadpoolController

from tasks.caching import STAGE_CACHE, file_content, stage
from tasks.errors import CleansetError
from tasks.featurize import Design, FeaturePlan, encode, prepare_frame
from tasks.ingest import Snapshot
from tasks.knn import graph_neighbours
from tasks.store import ArrayRef, ObjectRef, write_array, write_object

FAMILIES = ("logreg", "hgb", "nb", "knn")  # regression: ridge (alpha by efficient LOO), hgbr, knn
LINEAR = ("logreg", "nb", "ridge")  # families that take the encoded matrix (featurize.encode)
LINEAR_MODELS = ("logreg-c0.1", "logreg", "logreg-c10", "nb", "ridge")  # their concrete models
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 11))
EPS = 1e-6

# The model is too weak to judge labels when its out-of-fold log loss is not at least MIN_SKILL
# below the class-frequency baseline (skill = 1 - log loss / baseline), when it gets most rows
# wrong (accuracy below MIN_ACCURACY), or when its accuracy is not above always guessing the
# largest class by two standard errors. Chosen on the design half of bench/do_no_harm.py
# (bench/tune_policy.py): on the hard text and ordinal cases it blocks, dropping the flagged
# rows was as likely to lower test accuracy as to raise it.
MIN_SKILL = 0.2
MIN_ACCURACY = 0.5


def family(model: str) -> str:
    return model.split("-")[0]


def is_regressor(model: str) -> bool:
    return family(model) in ("ridge", "hgbr")


def target_encoder(seed: int, regression: bool = False) -> TargetEncoder:
    """Target encoding of high-cardinality columns, cross-fitted inside the training rows."""
    if regression:
        return TargetEncoder(target_type="continuous",
                             cv=KFold(n_splits=5, shuffle=True, random_state=seed))
    return TargetEncoder(cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=seed))


def make_model(model: str, plan: FeaturePlan, seed: int):  # noqa: ANN201 - an sklearn estimator
    """The estimator for a concrete model name (`logreg`, `logreg-c0.1`, `logreg-c10`, `hgb`,
    `nb`). `logreg`/`nb` take the encoded matrix (featurize.encode); `hgb` takes the prepared
    frame and encodes categoricals itself (high-cardinality ones by target encoding, fitted
    inside the training rows with scikit-learn's internal cross-fitting)."""
    fam = family(model)
    if fam == "ridge":
        return RidgeCV(alphas=RIDGE_ALPHAS)
    if fam == "logreg":
        c = float(model.split("-c")[1]) if "-c" in model else 1.0
        return LogisticRegression(max_iter=2000, C=c, random_state=seed)
    if fam == "nb":
        return MultinomialNB(alpha=0.5)
    if fam in ("hgb", "hgbr"):
        cats, high = list(plan.categorical), list(plan.high_cardinality)
        parts = [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                        encoded_missing_value=np.nan, max_categories=250), cats)]
        if high:
            parts.append(("high", target_encoder(seed, fam == "hgbr"), high))
        encoder = ColumnTransformer(parts, remainder="passthrough",
                                    verbose_feature_names_out=False).set_output(transform="pandas")
        # regularised (shallower trees, larger leaves, L2): on noisy labels it measured a lower
        # out-of-fold log loss than 50 rounds at rate 0.2 on every design dataset tried
        # (moons, penguins, wine: bench/tune_policy.py notes), and is faster
        # the regressor: the same trees, smaller leaves (20, not tuned) for small tables
        kind = HistGradientBoostingRegressor if fam == "hgbr" else HistGradientBoostingClassifier
        clf = kind(categorical_features=cats or None, max_iter=100, learning_rate=0.1,
                   max_leaf_nodes=15, min_samples_leaf=20 if fam == "hgbr" else 40,
                   l2_regularization=1.0, random_state=seed)
        return Pipeline([("features", encoder), ("clf", clf)])
    raise CleansetError(f"unknown model {model!r}; choose one of {', '.join(FAMILIES)}")


def model_inputs(frame: pd.DataFrame, plan: FeaturePlan, models: tuple[str, ...],
                 matrix=None) -> dict:  # noqa: ANN001
    """What each model trains on: the encoded matrix (linear families, plus the raw
    high-cardinality values under "high") or the prepared frame (hgb)."""
    linear = [m for m in models if family(m) in LINEAR]
    out: dict = {}
    if linear:
        encoded = matrix if matrix is not None else encode(frame, plan)
        out.update({m: encoded for m in linear})
        if plan.high_cardinality:
            out["high"] = frame[list(plan.high_cardinality)].to_numpy(dtype=object)
    out.update({m: frame for m in models if family(m) in ("hgb", "hgbr")})
    return out


def _take(X, rows: np.ndarray):  # noqa: ANN001, ANN202
    return X.iloc[rows] if isinstance(X, pd.DataFrame) else X[rows]


class PerTag:
    """One-vs-rest for tag sets: a `model` per tag fitted on the training rows' 0/1 column;
    a tag constant in the training rows predicts that constant."""

    def __init__(self, model: str, plan: FeaturePlan, seed: int) -> None:
        self.model, self.plan, self.seed = model, plan, seed
        self.fitted: list = []

    def fit(self, X, Y: np.ndarray) -> PerTag:  # noqa: ANN001
        self.fitted = []
        for k in range(Y.shape[1]):
            column = Y[:, k]
            if len(column) == 0 or column.min() == column.max():
                self.fitted.append(float(column[0]) if len(column) else 0.0)
                continue
            clf = make_model(self.model, self.plan, self.seed)
            if isinstance(clf, LogisticRegression):  # binary: liblinear, 2-4x faster on TF-IDF
                clf.set_params(solver="liblinear")
            clf.fit(X, column)
            self.fitted.append(clf)
        return self

    def predict_tags(self, X) -> np.ndarray:  # noqa: ANN001
        """P(tag) per row and tag (n x K, float32)."""
        out = np.zeros((X.shape[0], len(self.fitted)), dtype=np.float32)
        for k, clf in enumerate(self.fitted):
            if isinstance(clf, float):
                out[:, k] = clf
            else:
                out[:, k] = clf.predict_proba(X)[:, list(clf.classes_).index(1)]
        return out


_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = None  # threadpoolctl's limiter while any fit runs
_pools: tuple[int, ThreadpoolController] | None = None
_pools_lock = threading.Lock()


def thread_pools() -> ThreadpoolController:
    """threadpoolctl's controller of the loaded native thread pools, found again only when a
    module was imported since the last call. Finding them walks every loaded shared object
    (~6 ms here); threadpool_limits() did it on every call, two per fit, which was a fifth of
    a 400-row regression run's estimate (bench/regression.py, carseats: 0.25 s of 1.2 s)."""
    global _pools
    loaded = len(sys.modules)
    with _pools_lock:
        if _pools is None or _pools[0] != loaded:
            _pools = (loaded, ThreadpoolController())
        return _pools[1]


@contextmanager
def one_thread() -> Iterator[None]:
    """Model fits and predictions in one thread: OpenMP (HistGradientBoosting, the kNN search)
    and BLAS (logistic regression's solver). The run's parallelism is across fits: the fold
    tasks run side by side, one worker per core (flows/runners.py), and screening fits a
    sample of at most ~1,300 training rows. Library threads on top of that oversubscribe the
    cores, and waiting OpenMP threads spin: on this 2-core machine under load ~5 one HGB fit
    took 27 s with two OpenMP threads against 0.7 s with one at 1,000 rows, and 17 s against
    3.4 s at 80,000 (bench/fixed_cost.py, "threads per fit"); a 100-row run's model screening
    took 17.6 s instead of 0.7 s. OpenMP's limit is per thread (its own setting); BLAS's is
    process-wide, so it is held while any fit runs and restored when the last one ends."""
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = thread_pools().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        with thread_pools().limit(limits=1, user_api="openmp"):
            yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_saved is not None:
                _blas_saved.restore_original_limits()
                _blas_saved = None


class FoldModel:
    """One fitted fold model: the estimator and, for linear families with high-cardinality
    columns, the target encoder fitted on the same training rows. Kept (joblib) by dataset
    folder runs so that an incremental run can score new rows with it (tasks/incremental.py)."""

    def __init__(self, model: str, pipe, te, n_classes: int) -> None:  # noqa: ANN001
        self.model, self.pipe, self.te, self.n_classes = model, pipe, te, n_classes

    def predict(self, X, high: np.ndarray | None = None) -> np.ndarray:  # noqa: ANN001
        """Probabilities (n x K, float32; classes the fold never saw keep 0), or a regressor's
        predictions (n x 1, float64), of rows encoded like the training rows."""
        if self.te is not None and high is not None:
            stack = sp.hstack if sp.issparse(X) else np.hstack
            X = stack([X, self.te.transform(high)])
            if sp.issparse(X):
                X = X.tocsr()
        with one_thread():
            if is_regressor(self.model):
                return np.asarray(self.pipe.predict(X), dtype=np.float64).reshape(-1, 1)
            if isinstance(self.pipe, PerTag):
                return self.pipe.predict_tags(X)
            proba = self.pipe.predict_proba(X)
        out = np.zeros((proba.shape[0], self.n_classes), dtype=np.float32)
        out[:, self.pipe.classes_] = proba  # a class absent from the training rows keeps 0
        return out


def fit_fold_model(X, y: np.ndarray, train: np.ndarray, n_classes: int, model: str,  # noqa: ANN001
                   plan: FeaturePlan, seed: int, high: np.ndarray | None = None) -> FoldModel:
    """Fit `model` on the `train` rows of X (with the target encoding of `high` for linear
    families)."""
    x_train = _take(X, train)
    te = None
    if high is not None and family(model) in LINEAR:
        te = target_encoder(seed, is_regressor(model) or y.ndim == 2)
        # multilabel: encoded against the row's share of tags (one encoding for every tag)
        target = y[train].mean(axis=1) if y.ndim == 2 else y[train]
        extra_train = te.fit_transform(high[train], target)
        stack = sp.hstack if sp.issparse(x_train) else np.hstack
        x_train = stack([x_train, extra_train])
        if sp.issparse(x_train):
            x_train = x_train.tocsr()
    with one_thread():
        if y.ndim == 2:  # multilabel: one model per tag (one-vs-rest), P(tag) per column
            return FoldModel(model, PerTag(model, plan, seed).fit(x_train, y[train]), te,
                             n_classes)
        pipe = make_model(model, plan, seed)
        pipe.fit(x_train, y[train])
    return FoldModel(model, pipe, te, n_classes)


def fit_predict(
    X, y: np.ndarray, train: np.ndarray, test: np.ndarray, n_classes: int,  # noqa: ANN001
    model: str, plan: FeaturePlan, seed: int, high: np.ndarray | None = None,
    extra: tuple | None = None, return_model: bool = False,
) -> np.ndarray | tuple[np.ndarray, FoldModel]:
    """Fit `model` on the `train` rows of X, return the `test` rows' probabilities (n_test x K),
    or for a regressor its predictions (n_test x 1). `high`: raw high-cardinality values,
    target-encoded inside the training rows for linear models. `extra`: (X, high) of rows
    outside X (the unlabeled rows): their probabilities are appended below the test rows'.
    `return_model`: also return the fitted FoldModel."""
    fitted = fit_fold_model(X, y, train, n_classes, model, plan, seed, high)
    linear_high = high is not None and family(model) in LINEAR
    parts = [fitted.predict(_take(X, test), high[test] if linear_high else None)]
    if extra is not None:
        parts.append(fitted.predict(extra[0], extra[1] if linear_high else None))
    out = np.vstack(parts)
    return (out, fitted) if return_model else out


def fit_predict_fold(
    X, y: np.ndarray, folds: np.ndarray, fold: int, n_classes: int,  # noqa: ANN001
    model: str, plan: FeaturePlan, seed: int, exclude: np.ndarray | None = None,
    high: np.ndarray | None = None, extra: tuple | None = None, return_model: bool = False,
) -> np.ndarray | tuple[np.ndarray, FoldModel]:
    """Fit on rows outside `fold` (minus `exclude`d rows), return the fold's probabilities
    (followed by the `extra` rows', when given: see fit_predict), and the fitted model when
    `return_model`."""
    train, test = folds != fold, folds == fold
    if exclude is not None and (is_regressor(model) or y.ndim == 2):
        train = train & ~exclude
    elif exclude is not None:
        pruned = train & ~exclude
        # keep every class trainable: fall back to the full fold if pruning would empty one
        if len(np.unique(y[pruned])) == len(np.unique(y[train])):
            train = pruned
    return fit_predict(X, y, np.flatnonzero(train), np.flatnonzero(test), n_classes, model,
                       plan, seed, high, extra, return_model)


def knn_smooth(neighbour_labels: np.ndarray, n_classes: int, class_counts: np.ndarray
               ) -> np.ndarray:
    """Class probabilities from the labels of each row's neighbours (n x k ints): vote shares
    with one pseudo-vote spread by class frequency, so no class gets probability 0."""
    n, k = neighbour_labels.shape
    votes = np.zeros((n, n_classes), dtype=np.float64)
    np.add.at(votes, (np.repeat(np.arange(n), k), neighbour_labels.ravel()), 1.0)
    prior = class_counts / max(class_counts.sum(), 1)
    return ((votes + prior) / (k + 1)).astype(np.float32)


def knn_probs(graph, y: np.ndarray, n_classes: int) -> np.ndarray:  # noqa: ANN001
    """Leave-one-out kNN probabilities from the shared graph (a row is never its own
    neighbour)."""
    return knn_smooth(y[graph_neighbours(graph)], n_classes,
                      np.bincount(y, minlength=n_classes))


def knn_tags(graph, Y: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Leave-one-out kNN per-tag probabilities from the shared graph: the share of the row's
    neighbours carrying each tag, with one pseudo-neighbour at the tag's frequency."""
    neighbours = graph_neighbours(graph)
    k = neighbours.shape[1]
    return ((Y[neighbours].sum(axis=1) + Y.mean(axis=0)) / (k + 1)).astype(np.float32)


def knn_estimate(graph, y: np.ndarray, n_classes: int, regression: bool = False  # noqa: ANN001
                 ) -> np.ndarray:
    """The kNN family's out-of-fold estimate for any task (y: classes, targets or tag matrix)."""
    if regression:
        return knn_mean(graph, y)
    return knn_tags(graph, y) if y.ndim == 2 else knn_probs(graph, y, n_classes)


def knn_mean(graph, y: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Leave-one-out kNN regression from the shared graph: the mean target of each row's
    neighbours (n x 1)."""
    return y[graph_neighbours(graph)].mean(axis=1).reshape(-1, 1)


def assemble(folds: np.ndarray, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """Put each fold's rows back in place: an n x K out-of-fold pred_probs matrix (n x 1
    float64 predictions for a regressor)."""
    dtype = parts[0].dtype if parts else np.float32
    pred = np.zeros((len(folds), n_classes), dtype=dtype)
    for k, part in enumerate(parts):
        rows = folds == k
        pred[rows] = part[:int(rows.sum())]  # rows below: the unlabeled rows' (unlabeled_mean)
    return pred


class FoldFit(ArrayRef):
    """One fold's out-of-fold probabilities (an ArrayRef) and, when kept, its fitted model."""

    model: ObjectRef | None = None


def unlabeled_mean(folds: np.ndarray, parts: dict[str, list[np.ndarray]],
                   weights: dict[str, float]) -> np.ndarray | None:
    """Probabilities of the unlabeled rows: each fitted model's mean over its fold models (every
    fold model is out of sample for them: none saw their label), weighted as the ensemble.
    The kNN family has no fold models and is left out; None when no model predicted them."""
    per_model, w = [], []
    for model, weight in weights.items():
        if model == "knn" or model not in parts:
            continue
        tails = [p[int((folds == k).sum()):] for k, p in enumerate(parts[model])]
        if not tails or any(len(t) == 0 for t in tails):
            return None
        per_model.append(np.mean(tails, axis=0))
        w.append(weight)
    return combine(per_model, tuple(w)) if per_model else None


def combine(per_model: list[np.ndarray], weights: tuple[float, ...] | None = None,
            regression: bool = False, multilabel: bool = False) -> np.ndarray:
    """Weighted mean of several models' probabilities (equal weights by default), renormalised
    per row; of regressors' predictions (n x 1, float64) when `regression`; of per-tag
    probabilities (each its own, not renormalised) when `multilabel`."""
    w = np.asarray(weights if weights else [1.0] * len(per_model), dtype=np.float64)
    pred = np.tensordot(w / w.sum(), np.asarray(per_model, dtype=np.float64), axes=1)
    if regression:
        return pred
    if multilabel:
        return pred.astype(np.float32)
    return (pred / pred.sum(axis=1, keepdims=True).clip(min=1e-12)).astype(np.float32)


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log probability of the given labels (clipped at EPS); for a tag matrix
    (multilabel) the mean over rows and tags of each tag's given state."""
    if y.ndim == 2:
        p = np.where(y.astype(bool), probs, 1.0 - probs)
        return float(-np.log(np.clip(p, EPS, 1.0)).mean())
    p = probs[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, EPS, 1.0)).mean())


class ModelCheck(BaseModel):
    """How good the out-of-fold model is, against chance, and whether it may act on labels."""

    model_config = ConfigDict(frozen=True)
    accuracy: float
    log_loss: float
    chance_accuracy: float  # share of the most frequent class
    chance_log_loss: float  # log loss of predicting the class frequencies
    skill: float  # 1 - log_loss / chance_log_loss (0 = chance, 1 = perfect)
    trusted: bool
    warning: str = ""
    micro_f1: float | None = None  # multilabel: out-of-fold micro-F1 of the tags at 0.5


def check_model(y: np.ndarray, probs: np.ndarray, n_classes: int) -> ModelCheck:
    """Out-of-fold accuracy and log loss against their chance baselines. A model that is not
    clearly better than chance can still rank rows, but must not change or drop labels."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    prior = counts / counts.sum()
    chance_acc = float(prior.max())
    present = prior[prior > 0]
    chance_ll = float(-(present * np.log(present)).sum())
    acc = float((probs.argmax(axis=1) == y).mean())
    ll = log_loss(y, probs)
    skill = 1.0 - ll / chance_ll if chance_ll > 0 else 0.0
    reasons = []
    if skill < MIN_SKILL:
        reasons.append(f"its out-of-fold log loss {ll:.3f} is close to chance ({chance_ll:.3f}; "
                       f"skill {skill:.2f} < {MIN_SKILL})")
    if acc < MIN_ACCURACY:
        reasons.append(f"it gets most rows wrong (out-of-fold accuracy {acc:.3f})")
    margin = 2.0 * float(np.sqrt(chance_acc * (1.0 - chance_acc) / max(len(y), 1)))
    if acc <= chance_acc + margin:
        reasons.append(f"its accuracy {acc:.3f} is not above always guessing the largest class "
                       f"({chance_acc:.3f})")
    warning = ("the model is too weak to judge labels: " + "; ".join(reasons) + ". Label "
               "issues are listed for review; no label is changed or dropped automatically"
               ) if reasons else ""
    return ModelCheck(accuracy=acc, log_loss=ll, chance_accuracy=chance_acc,
                      chance_log_loss=chance_ll, skill=float(skill), trusted=not reasons,
                      warning=warning)


def mse(y: np.ndarray, predictions: np.ndarray) -> float:
    """Mean squared error of out-of-fold predictions (n or n x 1)."""
    return float(np.mean((np.ravel(predictions) - y) ** 2))


def check_regression(y: np.ndarray, predictions: np.ndarray) -> ModelCheck:
    """The regression counterpart of check_model: out-of-fold MSE against predicting the mean
    (the variance); skill = R^2. Stored in the same fields (log_loss = MSE, chance_log_loss =
    variance; accuracy fields are NaN). A model below MIN_SKILL may rank rows, not change them."""
    loss, chance = mse(y, predictions), float(np.var(y))
    skill = 1.0 - loss / chance if chance > 0 else 0.0
    warning = (f"the model is too weak to judge values: its out-of-fold R^2 is {skill:.2f} "
               f"(< {MIN_SKILL}; MSE {loss:.4g} vs the variance {chance:.4g}). Label issues are "
               "listed for review; no value is changed or dropped automatically"
               ) if skill < MIN_SKILL else ""
    return ModelCheck(accuracy=float("nan"), log_loss=loss, chance_accuracy=float("nan"),
                      chance_log_loss=chance, skill=float(skill), trusted=not warning,
                      warning=warning)


def micro_f1(Y: np.ndarray, predicted: np.ndarray) -> float:
    """Micro-averaged F1 of predicted 0/1 tags against given ones (1.0 when both are empty)."""
    Y, predicted = Y.astype(bool), predicted.astype(bool)
    tp = float((Y & predicted).sum())
    denominator = float(Y.sum() + predicted.sum())
    return 2 * tp / denominator if denominator else 1.0


def check_multilabel(Y: np.ndarray, probs: np.ndarray) -> ModelCheck:
    """The multilabel counterpart of check_model: the per-tag log loss against predicting each
    tag's frequency (skill as for classes), and the out-of-fold micro-F1 at 0.5 (reported; the
    accuracy fields are NaN: a row's tags are not one right-or-wrong answer)."""
    prior = Y.mean(axis=0, keepdims=True).clip(EPS, 1 - EPS)
    ll, chance = log_loss(Y, probs), log_loss(Y, np.broadcast_to(prior, Y.shape))
    skill = 1.0 - ll / chance if chance > 0 else 0.0
    f1 = micro_f1(Y, probs >= 0.5)
    warning = (f"the model is too weak to judge tags: its out-of-fold per-tag log loss {ll:.3f} "
               f"is close to predicting each tag's frequency ({chance:.3f}; skill {skill:.2f} < "
               f"{MIN_SKILL}; micro-F1 {f1:.3f}). Label issues are listed for review; no tag "
               "is changed or dropped automatically") if skill < MIN_SKILL else ""
    return ModelCheck(accuracy=float("nan"), log_loss=ll, chance_accuracy=float("nan"),
                      chance_log_loss=chance, skill=float(skill), trusted=not warning,
                      warning=warning, micro_f1=f1)


def first_pass_flags(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Rows confident learning flags in the first pass: left out of training in the second."""
    return find_label_issues(labels, pred_probs, n_jobs=1)


def out_of_fold_probs(
    inputs: dict, y: np.ndarray, folds: np.ndarray, n_classes: int, plan: FeaturePlan,
    choice, seed: int = 0, graph=None,  # noqa: ANN001 - a choose.ModelChoice, a CSR graph
) -> np.ndarray:
    """The whole estimate stage in one process (what the flow runs as separate fold tasks):
    every chosen model on every fold, weighted, with the prune-and-retrain pass when chosen."""

    regression = any(is_regressor(m) for m in choice.models)
    multilabel = y.ndim == 2

    def one_model(m: str, exclude: np.ndarray | None) -> np.ndarray:
        if m == "knn":
            return knn_estimate(graph, y, n_classes, regression)
        return assemble(folds, [fit_predict_fold(inputs[m], y, folds, k, n_classes, m, plan,
                                                 seed, exclude, inputs.get("high"))
                                for k in range(int(folds.max()) + 1)], n_classes)

    def one_pass(exclude: np.ndarray | None) -> np.ndarray:
        return combine([one_model(m, exclude) for m in choice.models], choice.weights or None,
                       regression, multilabel)

    first = one_pass(None)
    if choice.prune == "off":
        return first
    second = one_pass(first_pass_flags(y, first))
    return second if choice.prune == "replace" else combine([second, first])


def design_inputs(snapshot: Snapshot, design: Design,
                  models: tuple[str, ...] = ("logreg", "hgb", "ridge", "hgbr")) -> dict:
    """Every family's input over the scored rows, read from the run's files."""
    plan = design.plan
    need_frame = any(family(m) in ("hgb", "hgbr") for m in models) or plan.high_cardinality
    frame = design_matrix(snapshot, design) if need_frame else None
    out: dict = {}
    linear = [m for m in models if family(m) in LINEAR]
    if linear:
        matrix = design.matrix.read()
        out.update({m: matrix for m in LINEAR_MODELS})
        if plan.high_cardinality:
            out["high"] = frame[list(plan.high_cardinality)].to_numpy(dtype=object)
    if any(family(m) in ("hgb", "hgbr") for m in models):
        out["hgb"] = out["hgbr"] = frame
    return out


def unlabeled_inputs(snapshot: Snapshot, design: Design, model: str) -> tuple | None:
    """(X, high) of the unlabeled rows for `model` (see fit_predict's `extra`), or None."""
    if design.unlabeled is None or design.task != "classification":
        return None
    from tasks.featurize import unlabeled_frame

    plan, rows = design.plan, design.unlabeled.read()
    need_frame = family(model) == "hgb" or plan.high_cardinality
    frame = None
    if need_frame:
        df = None if design.embeddings else snapshot.table.read(columns=plan.used)
        frame = unlabeled_frame(df, plan, rows, design.embeddings.read() if design.embeddings
                                else None)
    high = frame[list(plan.high_cardinality)].to_numpy(dtype=object) \
        if plan.high_cardinality else None
    if family(model) in LINEAR:
        return design.unlabeled_matrix.read(), high
    return frame, high


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


@stage("supplied-pred-probs", cache_policy=STAGE_CACHE + file_content("path"))
def supplied_pred_probs(snapshot: Snapshot, design: Design, label: str, path: str | None,
                        columns: list[str], work_dir: str) -> ArrayRef:
    """Use the user's own out-of-fold probabilities (a .npy file or columns of the data)."""
    from tasks.featurize import encode_labels, load_user_array

    df = snapshot.table.read(columns=[label, *columns])
    if design.regression:  # out-of-fold predictions: one column
        given = (load_user_array(path, len(df), "predictions", one_column=True) if path else
                 df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64))
        if given.shape[1] != 1 or not np.isfinite(given).all():
            raise CleansetError("supplied predictions of a regression target must be one "
                                "column of finite numbers, one row per input row")
        get_run_logger().info("using supplied out-of-fold predictions (%s) for %d rows",
                              path or ", ".join(columns), len(design.positions.read()))
        return write_array(given[design.positions.read()].astype(np.float64), Path(work_dir),
                           "pred_probs")
    if design.multilabel:  # one column per tag, in sorted tag order, each P(tag)
        vocabulary = tuple(sorted({t for v in df[label] for t in str(v or "").split(
            design.tag_delimiter) if t}))
        given = (load_user_array(path, len(df), "pred_probs") if path else df[columns].apply(
            pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32))
        if given.shape[1] != len(vocabulary) or not np.isfinite(given).all() or (
                given < 0).any() or (given > 1).any():
            raise CleansetError(f"supplied pred_probs of tag sets must be {len(vocabulary)} "
                                "columns of probabilities in [0, 1], one per tag in sorted order "
                                f"({', '.join(vocabulary[:10])})")
        index = {t: i for i, t in enumerate(vocabulary)}
        probs = given[np.ix_(design.positions.read(), [index[t] for t in design.classes])]
        return write_array(probs.astype(np.float32), Path(work_dir), "pred_probs")
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


@stage(
    "estimate-fold",
    task_run_name="estimate-{model}-fold-{fold}{pass_name}",
    retry_delay_seconds=5,
)
def estimate_fold(
    snapshot: Snapshot, design: Design, fold: int, model: str, seed: int, work_dir: str,
    exclude: ArrayRef | None = None, pass_name: str = "", keep_model: bool = False,
) -> FoldFit:
    """Out-of-fold probabilities of one model for one fold's rows; with `keep_model` the
    fitted model too (work/models/, for incremental runs of a dataset folder)."""
    inputs = design_inputs(snapshot, design, (model,))
    extra = unlabeled_inputs(snapshot, design, model)
    proba, fitted = fit_predict_fold(
        inputs[model], design.labels.read(), design.folds.read(), fold, design.width, model,
        design.plan, seed, exclude.read() if exclude is not None else None, inputs.get("high"),
        extra, return_model=True)
    get_run_logger().info("fold %d/%d: %s predicted %d rows%s", fold + 1, design.n_folds, model,
                          len(proba), " (pruned training set)" if exclude is not None else "")
    ref = write_array(proba, Path(work_dir), "folds")
    kept = write_object(fitted, Path(work_dir), "models") if keep_model else None
    return FoldFit(**ref.model_dump(), model=kept)


@stage("pred-probs")
def pred_probs(design: Design, parts: dict[str, list[ArrayRef]], weights: dict[str, float],
               work_dir: str, neighbours=None,  # noqa: ANN001 - knn.Neighbours
               average_with: ArrayRef | None = None) -> ArrayRef:
    """Assemble folds per model, add the kNN family's probabilities from the shared graph when
    chosen, take the weighted mean (and the mean with the first pass, when asked)."""
    folds, y, k = design.folds.read(), design.labels.read(), design.width
    per_model, w = [], []
    for model, weight in weights.items():
        if model == "knn":
            per_model.append(knn_estimate(neighbours.graph.read(), y, k, design.regression))
        else:
            per_model.append(assemble(folds, [p.read() for p in parts[model]], k))
        w.append(weight)
    probs = combine(per_model, tuple(w), design.regression, design.multilabel)
    if average_with is not None:
        probs = combine([probs, average_with.read()], regression=design.regression,
                        multilabel=design.multilabel)
    return write_array(probs, Path(work_dir), "pred_probs")


@stage("unlabeled-pred-probs")
def unlabeled_pred_probs(design: Design, parts: dict[str, list[ArrayRef]],
                         weights: dict[str, float], work_dir: str) -> ArrayRef | None:
    """The unlabeled rows' probabilities: the mean of the fold models', weighted as the
    ensemble (tasks/estimate.unlabeled_mean)."""
    if design.unlabeled is None or design.regression:
        return None
    probs = unlabeled_mean(design.folds.read(), {m: [p.read() for p in ps]
                                                 for m, ps in parts.items()}, weights)
    if probs is None:
        get_run_logger().info("no fold model predicted the unlabeled rows (kNN only): they get "
                              "no suggested label")
        return None
    return write_array(probs, Path(work_dir), "pred_probs")


@stage("check-model")
def model_check(design: Design, pred_probs: ArrayRef) -> ModelCheck:
    """Out-of-fold accuracy and log loss against chance; warn when too weak to act on."""
    logger = get_run_logger()
    if design.multilabel:
        check = check_multilabel(design.labels.read(), pred_probs.read())
        logger.info("model check: out-of-fold micro-F1 %.3f, per-tag log loss %.3f (chance "
                    "%.3f), skill %.2f", check.micro_f1, check.log_loss, check.chance_log_loss,
                    check.skill)
        if check.warning:
            logger.warning(check.warning)
        return check
    if design.regression:
        check = check_regression(design.labels.read(), pred_probs.read())
        logger.info("model check: out-of-fold R^2 %.3f (MSE %.4g, variance %.4g)", check.skill,
                    check.log_loss, check.chance_log_loss)
        if check.warning:
            logger.warning(check.warning)
        return check
    check = check_model(design.labels.read(), pred_probs.read(), len(design.classes))
    logger.info("model check: out-of-fold accuracy %.3f (chance %.3f), log loss %.3f (chance "
                "%.3f), skill %.2f", check.accuracy, check.chance_accuracy, check.log_loss,
                check.chance_log_loss, check.skill)
    if check.warning:
        logger.warning(check.warning)
    return check


@stage("first-pass-flags")
def prune_set(design: Design, first_pass: ArrayRef, work_dir: str) -> ArrayRef:
    """The rows to leave out of training in the second pass."""
    flags = first_pass_flags(design.labels.read(), first_pass.read())
    get_run_logger().info("first pass flagged %d of %d rows; retraining without them",
                          int(flags.sum()), len(flags))
    return write_array(flags, Path(work_dir), "prune")
