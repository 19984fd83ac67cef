"""choose-model: pick the model family for this dataset by measurement, within a time budget.

Confident learning consumes probabilities, so candidates are compared by out-of-sample log loss
(not accuracy) on a stratified sample of the dataset itself: a few cross-validated fits per
candidate. The candidates are regularised logistic regression (three strengths),
HistGradientBoosting, multinomial naive Bayes (text / one-hot data only) and k-nearest
neighbours on the run's dense embedding. The best family within the budget is used for the full
K-fold pass; a weighted mean with the best candidate of another family replaces it when that
measures clearly better on the same sample. The projected cost of the full pass (seconds per
training row on the sample, scaled to the data) decides what fits the budget, so wide data only
goes to a slow family when the budget allows it and the measurement says it pays.

Nothing here was tuned on the benchmark's held-out datasets (bench/do_no_harm.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from tasks.caching import stage
from tasks.errors import CleansetError
from tasks.estimate import (
    LINEAR_MODELS,
    combine,
    family,
    fit_predict,
    knn_smooth,
    log_loss,
    micro_f1,
    mse,
    one_thread,
)
from tasks.featurize import Design, FeaturePlan, tag_strata, target_strata

MODEL_CHOICES = ("auto", "logreg", "hgb", "nb", "knn", "ensemble")
PRUNE_CHOICES = ("auto", "off", "replace", "average")
SAMPLE_ROWS = 2_000  # screening sample (stratified); 3-fold CV on it
SCREEN_FOLDS = 3
ENSEMBLE_GAIN = 0.02  # a combination must lower the best log loss by 2% to replace it
DEFAULT_BUDGET_FLOOR = 30.0  # seconds of model fitting any run may spend
MULTILABEL_BUDGET_FLOOR = 10.0  # ... a run of tag sets (every family fits one model per tag)
BUDGET_VS_LINEAR = 3.0  # ... or this many times the projected cost of logistic regression

Prune = Literal["off", "replace", "average"]


def _clock() -> float:
    """Seconds of CPU spent by this thread: what screening measures and projects. The fits run
    on this thread (one_thread: one BLAS / OpenMP thread), so on an idle machine it is the wall
    time; on a busy one wall seconds stretch with the other processes' work, so a budget in
    wall seconds let the machine's load decide which families are screened and chosen. With three
    busy processes beside it on 2 cores, an HGB fit on digits took 3.1x the wall seconds of a
    quieter run and 1.5x the CPU seconds (/tmp/clk.py, a scratch check): less, not nothing."""
    return time.thread_time()


class Screened(BaseModel):
    """One candidate's measurement on the screening sample."""

    model_config = ConfigDict(frozen=True)
    model: str
    rows: int
    log_loss: float
    accuracy: float
    seconds: float  # screening fits and predictions (CPU seconds of the screening thread)
    projected_seconds: float  # the full K-fold pass, scaled from the screening cost
    within_budget: bool
    chosen: bool = False
    stopped: str = ""  # why the screening stopped before its last fold (a regression)
    regression: bool = False  # then log_loss holds the out-of-fold MSE and accuracy the R^2
    multilabel: bool = False  # then log_loss is per tag and accuracy holds the micro-F1


class ModelChoice(BaseModel):
    """Which models estimate the probabilities (weighted), whether to prune, and why."""

    model_config = ConfigDict(frozen=True)
    models: tuple[str, ...]
    weights: tuple[float, ...] = ()
    prune: Prune = "off"
    reason: str
    screening: tuple[Screened, ...] = ()
    budget_seconds: float | None = None

    @property
    def label(self) -> str:
        if len(self.models) > 1 and self.weights:
            body = " + ".join(f"{w:.2f}*{m}" for m, w in zip(self.models, self.weights,
                                                             strict=True))
        else:
            body = "+".join(self.models)
        return body + ("" if self.prune == "off" else f", prune={self.prune}")

    @property
    def fitted(self) -> tuple[str, ...]:
        """The models fitted per fold (knn comes from the shared graph, not from folds)."""
        return tuple(m for m in self.models if m != "knn")


REGRESSION_NAMES = {"logreg": "ridge", "hgb": "hgbr", "knn": "knn"}  # --model for a regression


def candidates(plan: FeaturePlan, has_embedding: bool, regression: bool = False) -> list[str]:
    """The candidate models this data admits (regressors for a regression target: ridge with
    its alpha chosen by efficient leave-one-out, gradient-boosted trees, kNN on the
    embedding)."""
    if regression:  # cheapest first: the trees are raced against the best of the others
        return ["ridge", *(["knn"] if has_embedding else []), *([] if plan.text else ["hgbr"])]
    out = [m for m in LINEAR_MODELS if family(m) == "logreg"]
    if not plan.text:
        out.append("hgb")  # trees on TF-IDF are slow and weak: text goes to linear / nb / knn
    if not (plan.numeric or plan.datetime or plan.high_cardinality):
        out.append("nb")  # needs non-negative features: TF-IDF and one-hot only
    if has_embedding:
        out.append("knn")
    return out


def stratified_sample(y: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Positions of a stratified sample of `rows` rows (every class kept when possible)."""
    n = len(y)
    if n <= rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = max(min(len(members), SCREEN_FOLDS), int(round(rows * len(members) / n)))
        picked.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(picked))


PROBE_ROWS = 300


def probe_seconds(model: str, inputs: dict, y: np.ndarray, n_classes: int, plan: FeaturePlan,
                  seed: int, strata: np.ndarray | None = None) -> float:
    """Seconds per training row of one fit on a small stratified sample (at least one row of
    every class present). Tag sets: one model per tag, so one tag's fit (the most balanced)
    times the number of tags."""
    rows = stratified_sample(y if strata is None else strata, PROBE_ROWS, seed)
    tags = 1
    if y.ndim == 2:
        tags = y.shape[1]
        y = y[:, [int(np.argmin(np.abs(y[rows].mean(axis=0) - 0.5)))]]
    started = _clock()
    fit_predict(inputs[model], y, rows, rows[:10], y.shape[1] if y.ndim == 2 else n_classes,
                model, plan, seed, inputs.get("high"))
    return tags * (_clock() - started) / len(rows)


def screen_one(model: str, inputs: dict, y: np.ndarray, n_classes: int, plan: FeaturePlan,
               seed: int, knn_k: int, strata: np.ndarray | None = None,
               after_fold: AfterFold | None = None) -> tuple[np.ndarray | None, float]:
    """Out-of-sample probabilities of one candidate on the sample (3-fold CV) and the seconds
    (`strata` given: a regression, predictions n x 1, folds stratified by target quantile; or
    multilabel, y a tag matrix, folds stratified by rarest tag). `after_fold(the first fold's
    rows, their predictions, seconds so far)` is asked after the first fold; when it returns
    True the screening stops there and the probabilities are None."""
    started = _clock()
    with one_thread():  # the kNN search's OpenMP too (see estimate.one_thread)
        out = _screen(model, inputs, y, n_classes, plan, seed, knn_k, strata, after_fold,
                      started)
    return out, _clock() - started


AfterFold = Callable[[np.ndarray, np.ndarray, float], bool]


def _screen(model: str, inputs: dict, y: np.ndarray, n_classes: int, plan: FeaturePlan,
            seed: int, knn_k: int, strata: np.ndarray | None,
            after_fold: AfterFold | None = None, started: float = 0.0) -> np.ndarray | None:
    splitter = StratifiedKFold(n_splits=SCREEN_FOLDS, shuffle=True, random_state=seed)
    regression = strata is not None and y.ndim == 1
    out = (np.zeros((len(y), 1), dtype=np.float64) if regression
           else np.zeros((len(y), n_classes), dtype=np.float32))
    done = np.zeros(0, dtype=np.int64)  # the rows predicted so far
    for train, test in splitter.split(np.zeros(len(y)), y if strata is None else strata):
        if model == "knn":
            emb = inputs["knn"]
            k = min(knn_k, len(train) - 1)
            clf = KNeighborsClassifier(n_neighbors=k, metric="cosine" if emb.shape[1] > 3
                                       else "euclidean", algorithm="brute")
            clf.fit(emb[train], np.zeros(len(train), dtype=np.int64) if strata is not None
                    else y[train])
            _, idx = clf.kneighbors(emb[test])
            if y.ndim == 2:  # the neighbours' tag shares, one pseudo-neighbour at frequency
                out[test] = (y[train][idx].sum(axis=1) + y[train].mean(axis=0)) / (k + 1)
            else:
                out[test] = (y[train][idx].mean(axis=1, keepdims=True) if regression else
                             knn_smooth(y[train][idx], n_classes,
                                        np.bincount(y[train], minlength=n_classes)))
        else:
            X = inputs[model]
            out[test] = fit_predict(X, y, train, test, n_classes, model, plan, seed,
                                    inputs.get("high"))
        done = np.concatenate([done, test])
        if after_fold is not None and len(done) < len(y):  # not after the last fold
            if after_fold(done, out[done], _clock() - started):
                return None
    return out


RACE_SLACK = 0.0  # how much worse a raced candidate's first fold may measure and go on


def cannot_pay(y: np.ndarray, pred: np.ndarray, leader_pred: np.ndarray, leader: str,
               others: dict[str, np.ndarray] | None = None) -> str:
    """Why a regression candidate's screening stops after a fold, or "" to go on: on the rows
    screened so far it is worse than the leader (the best candidate screened so far) by more
    than RACE_SLACK, and either no weighted mix of the two lowers the leader's MSE by
    ENSEMBLE_GAIN (within the slack), or another family (`others`: the other screened
    candidates' predictions on those rows, the leader's family left out) is better than it:
    pick() pairs the best family with the second best, so a candidate that is neither is never
    chosen.

    RACE_SLACK 0 was chosen on the design half of bench/regression.py (friedman1, boston,
    diamonds, wage; 10% random, 10% shifted, none): every case whose full screening chose the
    trees (alone or mixed) had a first-fold mix at most 0.958 of the leader's MSE (bar 0.98);
    the two it stopped (wage random, shift: 1.04-1.05 alone, 0.99 mixed) were not chosen by
    the full screening either. The race asks after every fold but the last; with `others`, two
    more design cases stop early (boston and diamonds shifted: the trees ranked behind kNN and
    ridge, not chosen by the full screening) and every design case's choice is unchanged."""
    own, lead = mse(y, pred), mse(y, leader_pred)
    if own <= lead * (1 + RACE_SLACK):
        return ""
    beaten = sorted(name for name, p in (others or {}).items()
                    if mse(y, p) * (1 + RACE_SLACK) < own)
    if beaten:
        return (f"MSE {own:.4g} vs {leader}'s {lead:.4g} and {beaten[0]}'s "
                f"{mse(y, (others or {})[beaten[0]]):.4g} on the same rows: neither the best "
                "family nor the second")
    mixed = min(mse(y, w * np.ravel(pred) + (1 - w) * np.ravel(leader_pred))
                for w in (0.25, 0.5, 0.75))
    if mixed <= lead * (1 - ENSEMBLE_GAIN) * (1 + RACE_SLACK):
        return ""
    return (f"MSE {own:.4g} alone, {mixed:.4g} mixed, vs "
            f"{leader}'s {lead:.4g} on the same rows")


def pick(results: list[Screened], probs: dict[str, np.ndarray], y: np.ndarray,
         regression: bool = False) -> tuple[tuple[str, ...], tuple[float, ...], str]:
    # (multilabel: y is the tag matrix; log loss is per tag, the mix is not renormalised)
    """The best candidate within budget by log loss (regression: MSE), or a weighted pair when
    it is clearly better. Returns (models, weights, reason)."""
    loss_of, what = (mse, "MSE") if regression else (log_loss, "log loss")
    ok = sorted((r for r in results if r.within_budget and r.model in probs),
                key=lambda r: r.log_loss)
    if not ok:
        ok = sorted((r for r in results if r.model in probs),
                    key=lambda r: r.projected_seconds)[:1]
    best = ok[0]
    reason = f"lowest {what} on a {best.rows:,}-row sample ({best.log_loss:.4g})"
    others = [r for r in ok if family(r.model) != family(best.model)]
    if not others:
        return (best.model,), (1.0,), reason
    second = others[0]
    pair = None
    for w in (0.25, 0.5, 0.75):
        mixed = combine([probs[best.model], probs[second.model]], (w, 1 - w), regression,
                        y.ndim == 2)
        loss = loss_of(y, mixed)
        if pair is None or loss < pair[1]:
            pair = (w, loss)
    w, loss = pair
    if loss < best.log_loss * (1 - ENSEMBLE_GAIN):
        return ((best.model, second.model), (w, round(1 - w, 2)),
                f"{w:.2f}/{1 - w:.2f} mix of the two best families: {what} {loss:.4g} vs "
                f"{best.log_loss:.4g} alone on a {best.rows:,}-row sample")
    return (best.model,), (1.0,), reason


def choose_model(
    inputs: dict, y: np.ndarray, n_classes: int, plan: FeaturePlan, n_folds: int,
    model: str = "auto", prune: str = "auto", budget: float | None = None, seed: int = 0,
    knn_k: int = 10, sample_rows: int = SAMPLE_ROWS, regression: bool = False,
) -> ModelChoice:
    """Screen the candidates on a sample of the data and choose (see the module docstring).

    `inputs` maps a model name to its input over all scored rows (featurize.model_inputs plus
    "knn": the dense embedding); `model` other than auto restricts the candidates to that
    family (`ensemble`: the best pair of families, whatever it measures)."""
    if model not in MODEL_CHOICES:
        raise CleansetError(f"unknown model {model!r}; choose one of {', '.join(MODEL_CHOICES)}")
    if prune not in PRUNE_CHOICES:
        raise CleansetError(f"unknown prune mode {prune!r}; choose one of "
                            f"{', '.join(PRUNE_CHOICES)}")
    admitted = candidates(plan, "knn" in inputs, regression)
    if regression and model == "nb":
        raise CleansetError("model 'nb' classifies; a regression target takes logreg (ridge), "
                            "hgb, knn, ensemble or auto")
    if regression and model in REGRESSION_NAMES:
        model = REGRESSION_NAMES[model]
        if model not in admitted:
            raise CleansetError(f"model {model!r} does not fit this data (text columns take "
                                "ridge; knn needs the kNN embedding); use 'auto'")
        admitted = [model]
    elif model not in ("auto", "ensemble"):
        if model == "nb" and "nb" not in admitted:
            raise CleansetError("model 'nb' needs non-negative features (TF-IDF, one-hot) and "
                                "the data has numeric columns; use 'logreg' or 'auto'")
        if model == "hgb" and "hgb" not in admitted:
            raise CleansetError("model 'hgb' does not take text columns; use 'logreg' (TF-IDF) "
                                "or 'auto' for data with --text columns")
        if model == "knn" and "knn" not in admitted:
            raise CleansetError("model 'knn' needs the kNN embedding, which this run has not "
                                "built")
        admitted = [m for m in admitted if family(m) == model]
    multilabel = y.ndim == 2
    if multilabel and prune not in ("auto", "off"):
        raise CleansetError("prune (a second pass without flagged rows) is for classification; "
                            "leave it at auto or off for tag sets")

    def strata_of(values: np.ndarray) -> np.ndarray | None:
        if multilabel:
            return tag_strata(values, SCREEN_FOLDS)
        return target_strata(values, SCREEN_FOLDS) if regression else None

    strata_all = strata_of(y)
    sample = stratified_sample(y if strata_all is None else strata_all, sample_rows, seed)
    ys = y[sample]
    strata = strata_of(ys)
    loss_of = mse if regression else log_loss

    def score(p: np.ndarray) -> float:  # accuracy; R^2 for a regression; micro-F1 for tags
        if regression:
            return 1.0 - mse(ys, p) / max(float(np.var(ys)), 1e-300)
        if multilabel:
            return micro_f1(ys, p >= 0.5)
        return float((p.argmax(1) == ys).mean())

    n = len(y)
    train_rows = max(1.0, len(sample) * (SCREEN_FOLDS - 1) / SCREEN_FOLDS)
    full_rows = n_folds * n * (n_folds - 1) / n_folds  # rows fitted by the full K-fold pass
    results, probs = [], {}

    def sample_inputs(m: str) -> dict:
        """Candidate m's input (and the high-cardinality values) on the sample rows."""
        part = {m: _rows(inputs[m], sample)}
        if "high" in inputs:
            part["high"] = inputs["high"][sample]
        return part

    # a regression (model auto) races each fitted candidate against the best one screened so
    # far: screening stops after its first fold when that fold says it cannot pay (see
    # cannot_pay). A regression's first screening fold times itself instead of a probe fit: on
    # a 400-row table the probe cost as much as a screening fold, and with the sample at most
    # 2,000 rows a too-slow candidate costs at most one fit on 1,333 rows before it stops.
    race = regression and model == "auto"
    for m in admitted:
        part = sample_inputs(m)
        if m != "knn" and budget is not None and not regression:
            # a probe fit on a few hundred rows says what screening and the full pass would cost;
            # a candidate that cannot fit the budget is not screened at all
            per_row = probe_seconds(m, part, ys, n_classes, plan, seed, strata)
            if per_row * full_rows > budget:
                results.append(dict(model=m, rows=len(sample), log_loss=float("nan"),
                                    accuracy=float("nan"), seconds=0.0,
                                    projected_seconds=per_row * full_rows))
                continue
        stopped: dict = {}

        def after_fold(done: np.ndarray, pred: np.ndarray, seconds: float,
                       budget: float | None = budget, stopped: dict = stopped) -> bool:
            folds = max(1, round(len(done) * SCREEN_FOLDS / len(ys)))  # folds screened so far
            projected = seconds / (folds * train_rows) * full_rows
            when = "its first fold" if folds == 1 else f"{folds} of {SCREEN_FOLDS} folds"
            why = ""
            if regression and budget is not None and projected > budget:
                why = f"stopped after {when}: over budget (full pass ~{projected:.0f} s)"
            elif race and probs:
                leader = min((r for r in results if r["model"] in probs),
                             key=lambda r: r["log_loss"])["model"]
                others = {r["model"]: probs[r["model"]][done] for r in results
                          if r["model"] in probs and family(r["model"]) != family(leader)}
                why = cannot_pay(ys[done], pred, probs[leader][done], leader, others)
                why = why and f"stopped after {when}: {why}"
            stopped.update(projected=projected, why=why)
            return bool(why)

        asks = m != "knn" and ((regression and budget is not None) or (race and bool(probs)))
        p, seconds = screen_one(m, part, ys, n_classes, plan, seed, knn_k, strata,
                                after_fold if asks else None)
        if p is None:
            results.append(dict(model=m, rows=len(sample), log_loss=float("nan"),
                                accuracy=float("nan"), seconds=seconds,
                                projected_seconds=stopped["projected"], stopped=stopped["why"]))
            continue
        probs[m] = p
        per_row = seconds / (SCREEN_FOLDS * train_rows)
        projected = 0.0 if m == "knn" else per_row * full_rows
        results.append(dict(model=m, rows=len(sample), log_loss=loss_of(ys, p),
                            accuracy=score(p), seconds=seconds,
                            projected_seconds=projected))
        if m in ("logreg", "ridge") and budget is None:  # the budget follows the linear model
            # tag sets: a 10 s floor, not 30. Every family costs one fit per tag; with the 30 s
            # floor the design half of bench/multilabel.py went to per-tag boosted trees at
            # 10-30x the peer's time (issue 16's target: at most 3x); with none, the choice
            # between logistic strengths followed the machine's load (the same design case
            # chose C=1 in one run, C=10 in another)
            floor = MULTILABEL_BUDGET_FLOOR if multilabel else DEFAULT_BUDGET_FLOOR
            budget = max(floor, BUDGET_VS_LINEAR * projected)
    if budget is None:
        budget = MULTILABEL_BUDGET_FLOOR if multilabel else DEFAULT_BUDGET_FLOOR
    if not probs:  # nothing fits the budget: the cheapest candidate still has to run
        cheapest = min(results, key=lambda r: r["projected_seconds"])
        p, seconds = screen_one(cheapest["model"], sample_inputs(cheapest["model"]), ys,
                                n_classes, plan, seed, knn_k, strata)
        probs[cheapest["model"]] = p
        cheapest.update(log_loss=loss_of(ys, p), accuracy=score(p), seconds=seconds)
    screened = [Screened(**r, within_budget=r["projected_seconds"] <= budget,
                         regression=regression, multilabel=multilabel) for r in results]
    if model == "ensemble":
        screened = [s.model_copy(update={"within_budget": True}) for s in screened]
    models, weights, reason = pick(screened, probs, ys, regression)
    if model == "ensemble" and len(models) == 1:
        others = sorted((s for s in screened if family(s.model) != family(models[0])
                         and s.model in probs), key=lambda s: s.log_loss)
        if others:
            models, weights = (models[0], others[0].model), (0.5, 0.5)
            reason = "set in config (ensemble): the two best families, equal weights"
    elif model != "auto":
        reason = f"set in config ({model}); {reason}"
    screened = [s.model_copy(update={"chosen": s.model in models}) for s in screened]
    if regression and prune not in ("auto", "off"):
        raise CleansetError("prune (a second pass without flagged rows) is for classification; "
                            "leave it at auto or off for a regression target")
    return ModelChoice(models=models, weights=weights,
                       prune="off" if prune == "auto" else prune, reason=reason,
                       screening=tuple(screened), budget_seconds=round(budget, 1))


def _rows(X, positions: np.ndarray):  # noqa: ANN001, ANN202 - matrix, frame or array
    return X.iloc[positions].reset_index(drop=True) if isinstance(X, pd.DataFrame) else (
        X[positions])


@stage("choose-model")
def choose(design: Design, snapshot, neighbours, model: str, prune: str,  # noqa: ANN001
           budget: float | None, seed: int, knn_k: int) -> ModelChoice:
    """Screen the candidate models on a sample of this dataset and log the choice."""
    from tasks.estimate import design_inputs

    inputs = design_inputs(snapshot, design)
    if neighbours is not None:
        inputs["knn"] = neighbours.embedding.read()
    choice = choose_model(inputs, design.labels.read(), len(design.classes), design.plan,
                          design.n_folds, model, prune, budget, seed, knn_k,
                          regression=design.regression)
    logger = get_run_logger()
    loss, score = ("MSE", "R^2") if design.regression else (
        ("per-tag log loss", "micro-F1") if design.multilabel else ("log loss", "accuracy"))
    for s in choice.screening:
        if s.stopped:
            logger.info("screened %-12s %s, %.1f s", s.model, s.stopped, s.seconds)
            continue
        logger.info("screened %-12s %s %.4g, %s %.3f, %.1f s (full pass ~%.0f s%s)",
                    s.model, loss, s.log_loss, score, s.accuracy, s.seconds, s.projected_seconds,
                    "" if s.within_budget else ", over budget")
    logger.info("model: %s (%s)", choice.label, choice.reason)
    return choice
