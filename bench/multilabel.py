"""Issue 16 benchmark: multi-label label issues, cleanset against cleanlab's multi-label
`find_label_issues` on one-vs-rest logistic regression out-of-fold probabilities.

No real multi-label dataset ships offline in the installed packages (scikit-learn bundles none;
its RCV1 and the Mulan sets are downloads), so both datasets are **generated** by
`sklearn.datasets.make_multilabel_classification` (a bag-of-words generator: each tag has its
own word distribution, a row's words are drawn from its tags'):

- `tabular`: 20 count features, 6 tags, 1,500 rows (the features as numeric columns);
- `text`: the same generator over a 400-word vocabulary, each row written out as a document of
  its words (`w17 w3 w3 ...`), 6 tags, 1,500 rows: cleanset sees a text column (TF-IDF).

Design half: generator seed 1 of each; held-out half: seed 2 (the headline). Planted tag flips
(fixed seed) in 10% and 20% of the rows, one tag per row: half of them a tag dropped, half a tag
added; plus no planted flip (where every flag is a false positive).

Both sides get the same columns. cleanset: its default estimate stage (per-tag models screened
by out-of-fold per-tag log loss on a sample, one-vs-rest per fold, the kNN graph) and its
default flag (tasks/detect.multilabel_label_issues). Peer: scikit-learn `OneVsRestClassifier(
LogisticRegression())` + 5-fold `cross_val_predict(method="predict_proba")` on the encoded
features, then `cleanlab.multilabel_classification.filter.find_label_issues` defaults (n_jobs=1)
and `rank.get_label_quality_scores`. Scores: precision / recall / F1 of the flagged rows
against the planted rows, AUROC of the label score; wall time of each side's whole computation
(medians of alternating repeats, threads pinned to 1).

`--sweep` prints, on the design half, the F1 and the share flagged at 0% of each candidate
margin (detect.MULTILABEL_MARGIN was chosen there).

    uv run python bench/multilabel.py [--repeats 3] [--sweep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, pin_threads, save  # noqa: E402

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cleanlab.multilabel_classification.filter import find_label_issues  # noqa: E402
from cleanlab.multilabel_classification.rank import get_label_quality_scores  # noqa: E402
from sklearn.datasets import make_multilabel_classification  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import KFold, cross_val_predict  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402

from tasks.choose import candidates, choose_model  # noqa: E402
from tasks.detect import MULTILABEL_MARGIN, multilabel_label_issues  # noqa: E402
from tasks.estimate import model_inputs, out_of_fold_probs  # noqa: E402
from tasks.featurize import (  # noqa: E402
    build_transformer,
    infer_roles,
    plan_folds,
    prepare_frame,
    tag_strata,
)
from tasks.knn import dense_embedding, knn_graph  # noqa: E402
from tasks.sample import precision_recall  # noqa: E402

ROWS, TAGS = 1500, 6
RATES = (0.1, 0.2, 0.0)
SEEDS = {"design": 1, "heldout": 2}
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9)


def generate(kind: str, seed: int) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """(features frame, true tag matrix, text columns) of a generated dataset."""
    if kind == "tabular":
        X, Y = make_multilabel_classification(n_samples=ROWS, n_features=20, n_classes=TAGS,
                                              n_labels=2, random_state=seed)
        return pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]), Y, []
    X, Y = make_multilabel_classification(n_samples=ROWS, n_features=400, n_classes=TAGS,
                                          n_labels=2, length=40, random_state=seed)
    rng = np.random.default_rng(seed)
    docs = []
    for row in X.astype(int):
        words = np.repeat(np.arange(len(row)), row)
        docs.append(" ".join(f"w{w}" for w in rng.permutation(words)))
    return pd.DataFrame({"text": docs}), Y, ["text"]


def plant(Y: np.ndarray, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy tag matrix, mask of the rows with a flipped tag): one tag per chosen row, half
    of them a carried tag dropped, half an absent tag added."""
    rng = np.random.default_rng(seed)
    noisy = Y.copy()
    rows = rng.choice(len(Y), size=int(round(rate * len(Y))), replace=False)
    for i, row in enumerate(rows):
        carried, absent = np.flatnonzero(Y[row] == 1), np.flatnonzero(Y[row] == 0)
        drop = (i % 2 == 0 and len(carried)) or not len(absent)
        k = rng.choice(carried if drop else absent)
        noisy[row, k] = 1 - noisy[row, k]
    mask = np.zeros(len(Y), dtype=bool)
    mask[rows] = True
    return noisy, mask


def ours(frame: pd.DataFrame, text: list[str], Y: np.ndarray):  # noqa: ANN201
    """cleanset's estimate + label-issue stage, as the flow runs it (pure functions)."""
    plan = infer_roles(frame, "tags", [], text, None)
    X = prepare_frame(frame, plan)
    inputs = model_inputs(X, plan, tuple(candidates(plan, False)))
    encoded = next(v for k, v in inputs.items() if k.startswith("logreg"))
    inputs["knn"] = dense_embedding(encoded)
    graph, _, _ = knn_graph(inputs["knn"], 10)
    folds = plan_folds(tag_strata(Y, 5), 5, 0)
    choice = choose_model(inputs, Y, Y.shape[1], plan, 5)
    probs = out_of_fold_probs(inputs, Y, folds, Y.shape[1], plan, choice, graph=graph)
    return multilabel_label_issues(Y, probs), probs, choice, plan, X


def peer(encoded, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """What a skilled user writes: OvR logistic regression, 5-fold out-of-fold probabilities,
    cleanlab's multi-label find_label_issues and label quality scores."""
    probs = cross_val_predict(OneVsRestClassifier(LogisticRegression(max_iter=1000)), encoded,
                              Y, cv=KFold(5, shuffle=True, random_state=0),
                              method="predict_proba")
    labels = [np.flatnonzero(r).tolist() for r in Y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flags = find_label_issues(labels, probs, n_jobs=1)
        score = get_label_quality_scores(labels, probs)
    return flags, score


def scores(flags: np.ndarray, quality: np.ndarray, mask: np.ndarray) -> dict:
    p, r, f1 = precision_recall(flags, mask)
    auroc = float(roc_auc_score(mask, -quality)) if 0 < mask.sum() < len(mask) else None
    return {"precision": p, "recall": r, "f1": f1, "auroc": auroc,
            "flagged": int(flags.sum()), "flagged_share": float(flags.mean())}


def run_case(kind: str, half: str, rate: float, repeats: int, sweep: bool) -> dict:
    frame, truth, text = generate(kind, SEEDS[half])
    Y, mask = plant(truth, rate)
    ours_t, peer_t = [], []
    for _ in range(repeats):  # alternate A and B
        start = time.perf_counter()
        found, probs, choice, plan, X = ours(frame, text, Y)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        encoded = build_transformer(infer_roles(frame, "tags", [], text, None)).fit_transform(
            prepare_frame(frame, infer_roles(frame, "tags", [], text, None)))
        peer_flags, peer_score = peer(encoded, Y)
        peer_t.append(time.perf_counter() - start)
    row = {
        "dataset": f"{kind} (generated)", "half": half, "rows": len(frame), "tags": Y.shape[1],
        "rate": rate, "model": choice.label,
        "cleanset": scores(found["is_label_issue"].to_numpy(), found["label_score"].to_numpy(),
                           mask),
        "peer": scores(np.asarray(peer_flags, bool), peer_score, mask),
        "cleanset_s": statistics.median(ours_t), "peer_s": statistics.median(peer_t),
        "cleanset_s_range": [min(ours_t), max(ours_t)],
        "peer_s_range": [min(peer_t), max(peer_t)],
    }
    if sweep:
        row["sweep"] = {}
        for margin in SWEEP:
            flags = multilabel_label_issues(Y, probs, margin)["is_label_issue"].to_numpy()
            row["sweep"][str(margin)] = {"f1": precision_recall(flags, mask)[2],
                                         "flagged_share": float(flags.mean())}
    return row


def summary_line(rows: list[dict], half: str) -> str:
    part = [r for r in rows if r["half"] == half and r["rate"] > 0]
    zero = [r for r in rows if r["half"] == half and r["rate"] == 0]
    if not part:
        return ""
    f1c = statistics.mean(r["cleanset"]["f1"] for r in part)
    f1p = statistics.mean(r["peer"]["f1"] for r in part)
    auc_c = statistics.mean(r["cleanset"]["auroc"] for r in part)
    auc_p = statistics.mean(r["peer"]["auroc"] for r in part)
    ratio = statistics.median(r["cleanset_s"] / r["peer_s"] for r in part + zero)
    at0 = ", ".join(f"{r['dataset']}: {r['cleanset']['flagged_share']:.1%} vs "
                    f"{r['peer']['flagged_share']:.1%}" for r in zero)
    return (f"- **{half}** ({len(part)} noisy cases): mean F1 {f1c:.3f} vs peer {f1p:.3f} "
            f"(ΔF1 {f1c - f1p:+.3f}); mean AUROC {auc_c:.3f} vs {auc_p:.3f}; median time "
            f"ratio cleanset / peer {ratio:.2f}; rows flagged at 0% noise: {at0}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--halves", default="design,heldout")
    parser.add_argument("--kinds", default="tabular,text")
    parser.add_argument("--sweep", action="store_true", help="F1 of other margins (design)")
    parser.add_argument("--name", default="multilabel", help="results file name")
    args = parser.parse_args()
    rows = []
    for half in args.halves.split(","):
        for kind in args.kinds.split(","):
            for rate in RATES:
                row = run_case(kind, half, rate, args.repeats, args.sweep and half == "design")
                rows.append(row)
                c, p = row["cleanset"], row["peer"]
                print(f"{half:8s} {row['dataset']:20s} {rate:4.0%}  F1 {c['f1']:.3f} vs "
                      f"{p['f1']:.3f}  AUROC {c['auroc'] or float('nan'):.3f} vs "
                      f"{p['auroc'] or float('nan'):.3f}  flagged {c['flagged_share']:.1%} vs "
                      f"{p['flagged_share']:.1%}  time {row['cleanset_s']:.1f}s vs "
                      f"{row['peer_s']:.1f}s  model {row['model']}", flush=True)
                if row.get("sweep"):
                    print("    sweep: " + "; ".join(
                        f"margin {m}: F1 {v['f1']:.3f}, flagged {v['flagged_share']:.1%}"
                        for m, v in row["sweep"].items()), flush=True)
    env = machine()
    lines = ["# Multi-label label issues: cleanset vs cleanlab (OvR logistic regression)",
             "", f"{env['date']}, load {env['loadavg_1m']}, {env['cpus']} CPUs, cleanlab "
             f"{env['versions']['cleanlab']}, scikit-learn {env['versions']['scikit-learn']}",
             f"command: `{env['command']}` (default margin {MULTILABEL_MARGIN})", "",
             "Both datasets are generated (no real multi-label set ships offline).", "",
             *(summary_line(rows, h) for h in args.halves.split(",")), "",
             "| half | dataset | noise | cleanset P / R / F1 | peer P / R / F1 | AUROC cleanset "
             "/ peer | flagged cleanset / peer | s cleanset / peer | model |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        c, p = r["cleanset"], r["peer"]
        auc = (f"{c['auroc']:.3f} / {p['auroc']:.3f}" if c["auroc"] is not None else "–")
        lines.append(
            f"| {r['half']} | {r['dataset']} | {r['rate']:.0%} | {c['precision']:.3f} / "
            f"{c['recall']:.3f} / {c['f1']:.3f} | {p['precision']:.3f} / {p['recall']:.3f} / "
            f"{p['f1']:.3f} | {auc} | {c['flagged']} / {p['flagged']} | "
            f"{r['cleanset_s']:.1f} / {r['peer_s']:.1f} | {r['model']} |")
    path = save(args.name, {"machine": env, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(line for line in lines[6:9] if line))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
