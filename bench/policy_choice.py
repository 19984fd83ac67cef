"""How the default label-issue policy was chosen: test accuracy of the default model trained on
the training data after each candidate policy, on held-out data with the published labels.

For each dataset (Rotten Tomatoes split by movie; digits, breast_cancer, UCI Adult split 75/25
stratified) and planted symmetric noise 0%, 10%, 20% on the training labels: cleanset's
out-of-fold probabilities (`out_of_fold_probs`, the flow's code), cleanlab's
`find_label_issues`, then the policy; the default model (`tasks/evaluate.train_and_score`) is
trained on the result and scored on the test split.

Policies: `as given` (no cleaning); `drop` (every label issue dropped: what CleanLearning does);
`relabel>=t, else drop`; `relabel>=t, else keep`.

    make bench-data && uv run python bench/policy_choice.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, pin_threads, save  # noqa: E402

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cleanlab.filter import find_label_issues  # noqa: E402
from sklearn.model_selection import GroupShuffleSplit, train_test_split  # noqa: E402

from bench.loaders import LOADERS  # noqa: E402
from tasks.estimate import choose_model, model_inputs, out_of_fold_probs  # noqa: E402
from tasks.evaluate import train_and_score  # noqa: E402
from tasks.featurize import encode_labels, infer_roles, plan_folds, prepare_frame  # noqa: E402
from tasks.sample import plant_noise  # noqa: E402

THRESHOLDS = (0.6, 0.7, 0.8, 0.9)


def policies(labels: np.ndarray, probs: np.ndarray, classes: np.ndarray) -> dict[str, tuple]:
    """name -> (row mask to keep, labels to train on)."""
    flags = find_label_issues(labels, probs, n_jobs=1)
    suggested, confidence = probs.argmax(axis=1), probs.max(axis=1)
    out = {"as given": (np.ones(len(labels), bool), labels),
           "drop": (~flags, labels)}
    for t in THRESHOLDS:
        relabel = flags & (confidence >= t)
        fixed = np.where(relabel, suggested, labels)
        out[f"relabel>={t}, else drop"] = (~flags | relabel, fixed)
        out[f"relabel>={t}, else keep"] = (np.ones(len(labels), bool), fixed)
    return {k: (m, classes[y]) for k, (m, y) in out.items()}


def split(name: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    frame, text, group = LOADERS[name]()
    frame = frame.dropna(subset=["label"]).reset_index(drop=True)
    if group:
        tr, te = next(GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=0)
                      .split(frame, groups=frame[group]))
        frame = frame.drop(columns=[group])
    else:
        tr, te = train_test_split(np.arange(len(frame)), test_size=0.25, random_state=0,
                                  stratify=frame["label"])
    return frame.iloc[tr].reset_index(drop=True), frame.iloc[te].reset_index(drop=True), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="rotten_tomatoes,digits,breast_cancer,adult")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    args = parser.parse_args()
    rows = []
    for name in args.datasets.split(","):
        train, test, text = split(name)
        plan = infer_roles(train, "label", [], text, None)
        x_train = prepare_frame(train, plan)
        x_test = prepare_frame(test, plan)
        y_test = test["label"].astype(str).to_numpy()
        for rate in args.rates:
            noisy, _ = plant_noise(train["label"].astype(str).to_numpy(), rate, seed=0)
            labels, classes = encode_labels(pd.Series(noisy))
            classes = np.array(classes, dtype=object)
            choice = choose_model(plan, len(labels))
            probs = out_of_fold_probs(model_inputs(x_train, plan, choice.models), labels,
                                      plan_folds(labels, 5, 0), len(classes), plan, choice)
            for policy, (keep, y) in policies(labels, probs, classes).items():
                acc = train_and_score(x_train[keep], y[keep], x_test, y_test, plan,
                                      choice.models)["accuracy"]
                rows.append({"dataset": name, "noise": rate, "policy": policy,
                             "accuracy": acc, "n_train": int(keep.sum())})
            print(f"{name} {rate:.0%}: " + ", ".join(
                f"{r['policy']} {r['accuracy']:.4f}" for r in rows
                if r["dataset"] == name and r["noise"] == rate), flush=True)
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index="policy", columns=["dataset", "noise"], values="accuracy")
    gain = wide.sub(wide.loc["as given"], axis=1)
    summary = pd.DataFrame({"mean gain": gain.mean(axis=1), "worst gain": gain.min(axis=1)})
    env = machine()
    cols = [f"{d} {n:.0%}" for d, n in wide.columns]
    lines = ["# Choosing the default label-issue policy", "",
             f"- date: {env['date']}; load average (1 min) at the end: {env['loadavg_1m']}",
             f"- command: `{env['command']}`", "",
             "Test accuracy of the default model trained after each policy:", "",
             "| policy | " + " | ".join(cols) + " | mean gain | worst gain |",
             "|---|" + "---|" * (len(cols) + 2)]
    for policy in wide.index:
        lines.append(f"| {policy} | " + " | ".join(f"{v:.4f}" for v in wide.loc[policy])
                     + f" | {summary.loc[policy, 'mean gain']:+.4f} | "
                     f"{summary.loc[policy, 'worst gain']:+.4f} |")
    path = save("policy_choice", {"machine": env, "rows": rows}, "\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
