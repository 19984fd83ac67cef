"""Issue 17 item 4 benchmark, several annotators: simulated annotators of known accuracies label
each row of a dataset (each sees a row with probability `--coverage`; a row nobody saw gets one
label from the first annotator), then the consensus label from majority vote and from CROWDLAB
(tasks/annotators.py: cleanlab's get_label_quality_multiannotator, with out-of-fold
probabilities of the peer's model for the kind trained on the majority vote, 5-fold
cross_val_predict as in bench/do_no_harm.py), scored against the truth; and the Spearman rank
correlation of CROWDLAB's annotator quality with the annotators' true accuracies. No offline
dataset with several real annotators per row was found here, so the annotators are simulated.

Annotators: accuracies 0.95, 0.85, 0.75, 0.6 and one answering at random (1/K); a wrong answer
is a uniformly drawn other class. Mean over `--seeds` seeds.

`--pipeline-seeds N` also runs the whole cleanset flow (`cleanset.clean(frame,
annotators=[...])`, a local Prefect server, one warehouse per case) on the first N seeds: the
published consensus (`issues.given_label`) against the truth, beside the same majority vote
(tasks/annotators.majority_vote, the label the pipeline trains on), and the Spearman
correlation of `annotator_summary.annotator_quality` with the annotators' true accuracies.

    uv run --frozen python bench/annotators.py [--datasets breast_cancer,digits,wine]
        [--coverage 0.5] [--seeds 5] [--pipeline-seeds 0] [--out annotators]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, pin_threads, save  # noqa: E402

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from bench.datasets import load  # noqa: E402
from bench.do_no_harm import oof_probs, peer_transformer  # noqa: E402
from tasks.annotators import crowdlab, encode_annotations, majority_vote  # noqa: E402
from tasks.featurize import infer_roles, prepare_frame  # noqa: E402

ACCURACIES = (0.95, 0.85, 0.75, 0.6, None)  # None: at random


def simulate(truth: np.ndarray, k: int, coverage: float, seed: int
             ) -> tuple[pd.DataFrame, list[float]]:
    rng = np.random.default_rng(seed)
    n = len(truth)
    wide, true_acc = {}, []
    for i, acc in enumerate(ACCURACIES):
        acc = 1.0 / k if acc is None else acc
        right = rng.random(n) < acc
        label = np.where(right, truth, (truth + rng.integers(1, k, n)) % k)
        seen = rng.random(n) < coverage
        wide[f"annotator_{i}"] = np.where(seen, label.astype(float), np.nan)
        true_acc.append(float((label[seen] == truth[seen]).mean()))
    frame = pd.DataFrame(wide)
    empty = frame.isna().all(axis=1).to_numpy()
    rows = np.flatnonzero(empty)
    frame.loc[rows, "annotator_0"] = np.where(rng.random(len(rows)) < ACCURACIES[0],
                                              truth[rows], (truth[rows] + 1) % k)
    return frame, true_acc


def run_case(ds, coverage: float, seed: int) -> dict:  # noqa: ANN001
    classes = np.array(sorted(ds.frame[ds.label].unique()), dtype=object)
    truth = ds.frame[ds.label].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    frame, true_acc = simulate(truth, len(classes), coverage, seed)
    codes, names = encode_annotations(frame)  # class indices as text: "0.0", "1.0", ...
    as_index = np.array([int(float(c)) for c in names])
    vote = as_index[majority_vote(codes)]
    plan = infer_roles(ds.frame, ds.label, [], list(ds.text), None)
    X = peer_transformer(plan, ds.kind).fit_transform(prepare_frame(ds.frame, plan))
    probs = oof_probs(X, np.searchsorted(as_index, vote), ds.kind)
    consensus, annotators = crowdlab(codes, probs, list(frame.columns), names)
    crowd = np.array([int(float(c)) for c in consensus["consensus_label"]])
    quality = annotators.set_index("annotator")["annotator_quality"]
    rho = spearmanr([quality[c] for c in frame.columns], true_acc).statistic
    return {"seed": seed, "majority_accuracy": float((vote == truth).mean()),
            "crowdlab_accuracy": float((crowd == truth).mean()), "spearman": float(rho),
            "true_accuracies": true_acc,
            "annotator_quality": [float(quality[c]) for c in frame.columns],
            "labels_per_row": float((~np.isnan(codes)).sum(axis=1).mean())}


def run_pipeline(ds, coverage: float, seed: int, folder: Path) -> dict:  # noqa: ANN001
    """The whole flow on the features plus the simulated annotators' label columns."""
    import duckdb

    import cleanset

    classes = np.array(sorted(ds.frame[ds.label].unique()), dtype=object)
    truth = ds.frame[ds.label].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    codes, true_acc = simulate(truth, len(classes), coverage, seed)
    names = [f"annotator_{i}" for i in range(len(ACCURACIES))]
    frame = ds.frame.drop(columns=[ds.label]).reset_index(drop=True)
    texts = pd.DataFrame({a: [None if v != v else f"c{int(v)}" for v in codes[a]]
                          for a in names})
    frame = pd.concat([frame, texts], axis=1)
    frame.insert(0, "row_id", np.arange(len(frame)))
    codes_m, found = encode_annotations(texts)
    vote = np.array([int(c[1:]) for c in found])[majority_vote(codes_m)]
    dataset = f"{ds.name}_s{seed}"
    db = folder / f"{dataset}.duckdb"
    started = time.perf_counter()
    result = cleanset.clean(frame, annotators=names, id="row_id", dataset=dataset, db=str(db),
                            text=list(ds.text), workers=1)
    seconds = time.perf_counter() - started
    with duckdb.connect(str(db), read_only=True) as con:
        given = con.execute("SELECT CAST(row_id AS BIGINT), given_label FROM issues WHERE "
                            "run_id = ? ORDER BY 1", [result.run_id]).fetchall()
        quality = dict(con.execute("SELECT annotator, annotator_quality FROM "
                                   "annotator_summary WHERE run_id = ?",
                                   [result.run_id]).fetchall())
    consensus = np.array([-1 if g is None else int(g[1:]) for _, g in given])
    rho = spearmanr([quality.get(a, np.nan) for a in names], true_acc).statistic
    return {"seed": seed, "majority_accuracy": float((vote == truth).mean()),
            "consensus_accuracy": float((consensus == truth).mean()), "spearman": float(rho),
            "annotator_quality": [quality.get(a) for a in names], "true_accuracies": true_acc,
            "consensus": result.summary.consensus, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="breast_cancer,digits,wine")
    parser.add_argument("--coverage", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pipeline-seeds", type=int, default=0,
                        help="also run the whole flow on the first N seeds")
    parser.add_argument("--out", default="annotators")
    args = parser.parse_args()
    env = machine()
    started = time.perf_counter()
    results = []
    for name in args.datasets.split(","):
        ds = load(name)
        rows = [run_case(ds, args.coverage, seed) for seed in range(args.seeds)]
        piped = []
        if args.pipeline_seeds:
            with tempfile.TemporaryDirectory(prefix="bench_annotators_") as folder:
                piped = [run_pipeline(ds, args.coverage, seed, Path(folder))
                         for seed in range(args.pipeline_seeds)]
        results.append({"dataset": name, "rows": len(ds.frame), "cases": rows,
                        "pipeline": piped})
        print(f"{name}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    lines = [
        "# Several annotators: CROWDLAB consensus vs majority vote, annotator quality", "",
        f"{env['date']}; cleanlab {env['versions']['cleanlab']}, scikit-learn "
        f"{env['versions']['scikit-learn']}; {env['cpus']} CPUs, load {env['loadavg_1m']}; "
        f"{time.perf_counter() - started:.0f} s. Command: `{env['command']}`", "",
        f"Five simulated annotators (accuracies {', '.join(str(a) for a in ACCURACIES[:-1])} "
        f"and one at random), each labeling a row with probability {args.coverage}; mean (min-"
        f"max) over {args.seeds} seeds.", "",
        "| dataset | rows | labels per row | majority vote accuracy | CROWDLAB accuracy | "
        "Spearman(annotator quality, true accuracy) |", "| --- | --- | --- | --- | --- | --- |"]

    def cell(cases: list[dict], key: str) -> str:
        v = [c[key] for c in cases]
        return f"{np.mean(v):.4f} ({min(v):.3f}-{max(v):.3f})"

    for r in results:
        lines.append(f"| {r['dataset']} | {r['rows']} | "
                     f"{np.mean([c['labels_per_row'] for c in r['cases']]):.2f} | "
                     f"{cell(r['cases'], 'majority_accuracy')} | "
                     f"{cell(r['cases'], 'crowdlab_accuracy')} | {cell(r['cases'], 'spearman')} |")
    if args.pipeline_seeds:
        lines += [
            "", f"The whole flow (`cleanset.clean(frame, annotators=[...])`: vote -> models -> "
            f"CROWDLAB consensus -> published `issues.given_label`), first {args.pipeline_seeds} "
            "seed(s); the majority vote is the label the flow trains on:", "",
            "| dataset | majority vote accuracy | pipeline consensus accuracy | Spearman("
            "annotator_summary quality, true accuracy) | seconds per run |",
            "| --- | --- | --- | --- | --- |"]
        for r in results:
            lines.append(f"| {r['dataset']} | {cell(r['pipeline'], 'majority_accuracy')} | "
                         f"{cell(r['pipeline'], 'consensus_accuracy')} | "
                         f"{cell(r['pipeline'], 'spearman')} | "
                         f"{np.median([c['seconds'] for c in r['pipeline']]):.0f} |")
    text = "\n".join(lines) + "\n"
    path = save(args.out, {"env": env, "args": vars(args), "results": results}, text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
