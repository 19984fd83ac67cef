"""Issue 17 item 5 benchmark, "what to label next": with a relabeling budget of 5%, 10% and 20%
of the rows, which rows should a person relabel? Rows chosen by ActiveLab priority
(`active_learning_score`, what `cleanset review export --order priority` hands out), by lowest
label quality score (cleanlab's `get_label_quality_scores`, the order of severity), and at random;
each chosen row gets its TRUE label back, then the default downstream model is retrained and
scored on a test set with true labels. Mean over 5 noise seeds (the random choice uses the same
seed).

Per dataset: the stratified 75/25 split of bench/do_no_harm.py `prepare` (test labels true);
noise planted on the train part (bench/noise.py, 10% by default) with seeds 0..4; out-of-fold
probabilities of the noisy labels from the peer's model for the kind (5-fold cross_val_predict,
bench/do_no_harm.py: LogisticRegression for wide data, HistGradientBoosting otherwise), the same
probabilities for every ranking; the downstream model is the same model trained on all train
rows (bench/do_no_harm.py `test_accuracy`). Also reported: the share of planted errors the budget
fixed. Datasets: scikit-learn's bundled ones (nothing to install).

    uv run --frozen python bench/active_learning.py [--datasets breast_cancer,digits,wine]
        [--noise symmetric,feature_dependent] [--rate 0.1] [--seeds 5] [--unlabeled 0.3]
        [--out active_learning]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, pin_threads, save  # noqa: E402

pin_threads()

import numpy as np  # noqa: E402
from cleanlab.multiannotator import get_active_learning_scores  # noqa: E402
from cleanlab.rank import get_label_quality_scores  # noqa: E402

from bench.datasets import load  # noqa: E402
from bench.do_no_harm import oof_probs, peer_transformer, prepare, test_accuracy  # noqa: E402
from bench.noise import RATE, plant  # noqa: E402

BUDGETS = (0.05, 0.10, 0.20)
METHODS = ("activelab", "label_score", "random")


def rankings(noisy: np.ndarray, probs: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Row order per method, first = relabel first."""
    active, _ = get_active_learning_scores(noisy.reshape(-1, 1).astype(float), probs)
    quality = get_label_quality_scores(noisy, probs)
    rng = np.random.default_rng(seed)
    return {"activelab": np.argsort(active, kind="stable"),
            "label_score": np.argsort(quality, kind="stable"),
            "random": rng.permutation(len(noisy))}


def run_case(prep: dict, kind: str, noise: str, rate: float, seed: int) -> list[dict]:
    y_true, plan = prep["y_true"], prep["plan"]
    noisy, mask = plant(y_true, noise, prep["ref_probs"], rate, seed)
    X = peer_transformer(plan, kind).fit_transform(prep["x_train"])
    probs = oof_probs(X, noisy, kind)
    order = rankings(noisy, probs, seed)

    def accuracy(labels: np.ndarray) -> float:
        return test_accuracy(prep["x_train"], labels, prep["x_test"], prep["y_test"], plan, kind)

    rows = [{"method": "as_given", "budget": 0.0, "seed": seed, "accuracy": accuracy(noisy),
             "fixed": 0.0},
            {"method": "all_true", "budget": 1.0, "seed": seed, "accuracy": accuracy(y_true),
             "fixed": 1.0}]
    for budget in BUDGETS:
        m = int(round(budget * len(noisy)))
        for method in METHODS:
            chosen = order[method][:m]
            fixed = noisy.copy()
            fixed[chosen] = y_true[chosen]
            rows.append({"method": method, "budget": budget, "seed": seed,
                         "accuracy": accuracy(fixed),
                         "fixed": float(mask[chosen].sum() / max(mask.sum(), 1))})
    return rows


def fold_probs(X, y: np.ndarray, X_unlabeled, kind: str, n_folds: int = 5  # noqa: ANN001
               ) -> tuple[np.ndarray, np.ndarray]:
    """What cleanset computes: out-of-fold probabilities of the labeled rows, and for the
    unlabeled rows the mean of the fold models' probabilities."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    from bench.do_no_harm import peer_model

    k = int(y.max()) + 1
    oof = np.zeros((len(y), k))
    unl = np.zeros((X_unlabeled.shape[0], k))
    for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=0).split(X, y):
        model = clone(peer_model(kind)).fit(X[train], y[train])
        oof[np.ix_(test, model.classes_)] = model.predict_proba(X[test])
        unl[:, model.classes_] += model.predict_proba(X_unlabeled) / n_folds
    return oof, unl


def run_unlabeled_case(prep: dict, kind: str, noise: str, rate: float, seed: int,
                       share: float) -> list[dict]:
    """`share` of the train rows have no label (the others carry planted noise). The budget
    (a share of all train rows) labels or relabels rows to their true label: ActiveLab ranks
    labeled and unlabeled rows on one scale; `label_score` relabels the lowest-quality labeled
    rows only; `uncertainty` labels the unlabeled rows the fold models are least sure of;
    `random` picks among all rows. The downstream model trains on every row with a label."""
    y_true, plan = prep["y_true"], prep["plan"]
    noisy, _ = plant(y_true, noise, prep["ref_probs"], rate, seed)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    hidden = np.zeros(n, dtype=bool)
    hidden[rng.choice(n, size=int(round(share * n)), replace=False)] = True
    X = peer_transformer(plan, kind).fit_transform(prep["x_train"])
    labeled, unlabeled = np.flatnonzero(~hidden), np.flatnonzero(hidden)
    probs, probs_unl = fold_probs(X[labeled], noisy[labeled], X[unlabeled], kind)
    active, active_unl = get_active_learning_scores(
        noisy[labeled].reshape(-1, 1).astype(float), probs, probs_unl)
    quality = get_label_quality_scores(noisy[labeled], probs)
    both = np.r_[labeled, unlabeled]
    orders = {"activelab": both[np.argsort(np.r_[active, active_unl], kind="stable")],
              "label_score": labeled[np.argsort(quality, kind="stable")],
              "uncertainty": unlabeled[np.argsort(probs_unl.max(axis=1), kind="stable")],
              "random": rng.permutation(n)}

    def accuracy(has: np.ndarray, labels: np.ndarray) -> float:
        rows = np.flatnonzero(has)
        return test_accuracy(prep["x_train"].iloc[rows].reset_index(drop=True), labels[rows],
                             prep["x_test"], prep["y_test"], plan, kind)

    out = [{"method": "as_given", "budget": 0.0, "seed": seed,
            "accuracy": accuracy(~hidden, noisy), "fixed": 0.0}]
    for budget in BUDGETS:
        m = int(round(budget * n))
        for method, order in orders.items():
            chosen = order[:m]
            labels, has = noisy.copy(), ~hidden
            labels[chosen] = y_true[chosen]
            has = has.copy()
            has[chosen] = True
            out.append({"method": method, "budget": budget, "seed": seed,
                        "accuracy": accuracy(has, labels),
                        "fixed": float(hidden[chosen].mean()) if m else 0.0})
    return out


def case_mean(results: list[dict], method: str, budget: float) -> float:
    """Mean over cases of each case's mean test accuracy (over seeds)."""
    return float(np.mean([np.mean([r["accuracy"] for r in c["rows"] if r["method"] == method
                                   and r["budget"] == budget]) for c in results]))


def unlabeled_markdown(results: list[dict], share: float) -> list[str]:
    methods = ("activelab", "label_score", "uncertainty", "random")
    lines = ["", f"## With {share:.0%} of the train rows unlabeled", "",
             "The budget labels or relabels rows (to their true label) chosen by: ActiveLab "
             "(labeled and unlabeled rows on one scale, as `active_learning_score` in the "
             "issues table), lowest label score (labeled rows only), least confident fold-model "
             "prediction (unlabeled rows only), random. Test accuracy, mean of the seeds; in "
             "brackets the share of the chosen rows that were unlabeled.", "",
             "| dataset | noise | labeled rows only | budget | ActiveLab | lowest label score | "
             "uncertainty | random |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case in results:
        rows = case["rows"]

        def mean(method: str, budget: float, key: str, rows: list[dict] = rows) -> float:
            return float(np.mean([r[key] for r in rows
                                  if r["method"] == method and r["budget"] == budget]))

        for budget in BUDGETS:
            cells = [f"{mean(m, budget, 'accuracy'):.4f} ({mean(m, budget, 'fixed'):.0%})"
                     for m in methods]
            lines.append(f"| {case['dataset']} | {case['noise']} | "
                         f"{mean('as_given', 0.0, 'accuracy'):.4f} | {budget:.0%} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Mean over every dataset and noise shape:", "",
              "| budget | ActiveLab | lowest label score | uncertainty | random |",
              "| --- | --- | --- | --- | --- |"]
    for budget in BUDGETS:
        cells = [f"{case_mean(results, m, budget):.4f}" for m in methods]
        lines.append(f"| {budget:.0%} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: list[dict], env: dict, seconds: float, args: argparse.Namespace) -> str:
    lines = [
        "# What to label next: ActiveLab priority vs lowest label score vs random",
        "",
        f"{env['date']}; cleanlab {env['versions']['cleanlab']}, scikit-learn "
        f"{env['versions']['scikit-learn']}; {env['cpus']} CPUs, load {env['loadavg_1m']}; "
        f"{seconds:.0f} s. Command: `{env['command']}`",
        "",
        f"Noise {args.rate:.0%} planted on the train part, {args.seeds} seeds (mean). Test "
        "accuracy of the downstream model after relabeling (to the true label) a budget of the "
        "train rows chosen by each method; in brackets the share of planted errors fixed.",
        "",
        "| dataset | noise | as given | all true | budget | ActiveLab | lowest label score | "
        "random |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    labeled_cases = [c for c in results if "unlabeled" not in c]
    for case in labeled_cases:
        rows = case["rows"]

        def mean(method: str, budget: float, key: str, rows: list[dict] = rows) -> float:
            return float(np.mean([r[key] for r in rows
                                  if r["method"] == method and r["budget"] == budget]))

        for budget in BUDGETS:
            cells = [f"{mean(m, budget, 'accuracy'):.4f} ({mean(m, budget, 'fixed'):.0%})"
                     for m in METHODS]
            lines.append(f"| {case['dataset']} ({case['n_train']} train rows) | {case['noise']} | "
                         f"{mean('as_given', 0.0, 'accuracy'):.4f} | "
                         f"{mean('all_true', 1.0, 'accuracy'):.4f} | {budget:.0%} | "
                         + " | ".join(cells) + " |")
    lines += ["", "With every row labeled (one annotator), ActiveLab's score is a monotone "
              "function of the label quality score (cleanlab 2.9: (2 x quality + 1/K) / 3), so "
              "the two rankings are the same by construction; they differ when some rows have "
              "no label (next table) or several annotators.",
              "", "Mean over every dataset and noise shape:", "",
              "| budget | ActiveLab | lowest label score | random |", "| --- | --- | --- | --- |"]
    for budget in BUDGETS:
        cells = []
        for m in METHODS:
            per_case = [np.mean([r["accuracy"] for r in c["rows"]
                                 if r["method"] == m and r["budget"] == budget])
                        for c in labeled_cases]
            cells.append(f"{np.mean(per_case):.4f}")
        lines.append(f"| {budget:.0%} | " + " | ".join(cells) + " |")
    if args.unlabeled:
        lines += unlabeled_markdown([c for c in results if "unlabeled" in c], args.unlabeled)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="breast_cancer,digits,wine")
    parser.add_argument("--noise", default="symmetric,feature_dependent")
    parser.add_argument("--rate", type=float, default=RATE)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--unlabeled", type=float, default=0.3,
                        help="also a run with this share of train rows unlabeled (0: none)")
    parser.add_argument("--out", default="active_learning")
    args = parser.parse_args()
    env = machine()
    started = time.perf_counter()
    results = []
    for name in args.datasets.split(","):
        ds = load(name)
        prep = prepare(ds)
        for noise in args.noise.split(","):
            rows = [r for seed in range(args.seeds)
                    for r in run_case(prep, ds.kind, noise, args.rate, seed)]
            results.append({"dataset": name, "kind": ds.kind, "noise": noise,
                            "n_train": len(prep["y_true"]), "rows": rows})
            if args.unlabeled:
                rows = [r for seed in range(args.seeds) for r in run_unlabeled_case(
                    prep, ds.kind, noise, args.rate, seed, args.unlabeled)]
                results.append({"dataset": name, "kind": ds.kind, "noise": noise,
                                "n_train": len(prep["y_true"]), "rows": rows,
                                "unlabeled": args.unlabeled})
            print(f"{name} {noise}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    seconds = time.perf_counter() - started
    text = markdown(results, env, seconds, args)
    path = save(args.out, {"env": env, "args": vars(args), "results": results}, text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
