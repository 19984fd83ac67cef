"""Which disagreement-only rows are label issues: flag rules replayed offline (issue 13).

tasks/detect.py `label_issues` flags a row when cleanlab's confident learning does
(`find_label_issues` defaults: "confident") or, failing that, by a rule on the rows where the
out-of-fold model's top class differs from the given label ("disagreement": such rows go to
review, never dropped or relabelled by the policy, tasks/decide.py). This script replays
alternative rules for that second part on the per-row results of a bench/do_no_harm.py run
(bench/results/do_no_harm_rows/<name>/: the flow's own out-of-fold probabilities), so the
confident flags, and with them every drop and relabel, stay as they were run.

Per rule: mean label-issue F1 against the planted errors on the noisy cases and its difference
from the obvious cleanlab script's (same case, the run's `script_flag`), the worst case, the
original shapes and `feature_dependent_rf` apart, and the rows flagged at 0% noise (every flag
there is a right label sent to review). AUROC and P@n rank by `label_score`, which no rule
changes (do_no_harm.py reports them).

The DESIGN half is replayed for the whole grid. The HELDOUT half is refused except with
`--heldout-once`, which replays the rule of tasks/detect.py as committed (`label_issues`
itself, so the figure equals what the flow would flag on the same probabilities) beside the
flags the run carried: the held-out figure, read once after the choice was made on design.

    uv run --frozen python bench/flag_rules.py --rows design_v6
    uv run --frozen python bench/flag_rules.py --rows heldout_v6 --heldout-once
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import pin_threads  # noqa: E402

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cleanlab.count import num_label_issues  # noqa: E402
from cleanlab.filter import find_label_issues  # noqa: E402
from cleanlab.rank import get_label_quality_scores  # noqa: E402

from bench.datasets import DESIGN, HELDOUT  # noqa: E402
from tasks.sample import precision_recall  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROWS = RESULTS / "do_no_harm_rows"


def load_cases(name: str, half: tuple[str, ...]) -> list[dict]:
    """The run's cases of one half, with the scored rows' labels and probabilities."""
    meta_path = RESULTS / f"{name}.json"
    meta = {(r["dataset"], r["noise"]): r
            for r in json.loads(meta_path.read_text())["rows"]} if meta_path.exists() else {}
    out = []
    for path in sorted((ROWS / name).glob("*.parquet")):
        dataset, noise = path.stem.split("__")
        if dataset not in half:
            continue
        rows = pd.read_parquet(path)
        scored = rows["label_score"].notna().to_numpy() & rows["pred_probs"].notna().to_numpy()
        probs = np.stack(rows["pred_probs"].to_numpy()[scored]).astype("float64")
        names = (meta.get((dataset, noise)) or {}).get("class_names") \
            or sorted(set(rows["suggested_label"].dropna().astype(str)) | set(
                rows["given_label"].astype(str)[scored]))
        names = np.asarray([str(c) for c in names], dtype=object)
        if len(names) != probs.shape[1]:
            raise SystemExit(f"{path.name}: {len(names)} class names, {probs.shape[1]} columns")
        given = rows["given_label"].astype(str).to_numpy()[scored]
        index = {c: i for i, c in enumerate(names)}
        labels = np.array([index[g] for g in given])
        if not (names[probs.argmax(axis=1)] == rows["suggested_label"].astype(str).to_numpy()[
                scored]).all():
            raise SystemExit(f"{path.name}: argmax does not match suggested_label")
        out.append({"dataset": dataset, "noise": noise, "rows": rows,
                    "kind": (meta.get((dataset, noise)) or {}).get("kind", "?"), "scored": scored,
                    "labels": labels, "probs": probs,
                    "run_flag": rows["is_label_issue"].astype("boolean").fillna(False)
                    .to_numpy(dtype=bool),
                    "planted": rows["is_planted"].to_numpy(dtype=bool),
                    "script": rows["script_flag"].to_numpy(dtype=bool)})
    return out


# --- the rules: each returns the disagreement-only rows it flags (confident flags are kept) ---

def _given_prob(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return probs[np.arange(len(labels)), labels]


def _thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Confident learning's per-class thresholds: the mean probability of class j over the
    rows labelled j."""
    k = probs.shape[1]
    out = np.ones(k)
    for j in range(k):
        if (labels == j).any():
            out[j] = probs[labels == j, j].mean()
    return out


def skill(labels: np.ndarray, probs: np.ndarray) -> float:
    """Out-of-fold accuracy against the given labels above the majority-class share, as a
    share of what is left above it (0: no better than always guessing the largest class)."""
    acc = float((probs.argmax(axis=1) == labels).mean())
    chance = float(np.bincount(labels, minlength=probs.shape[1]).max() / len(labels))
    return (acc - chance) / (1 - chance) if chance < 1 else 0.0


def rule_all(labels, probs, confident, score):  # noqa: ANN001, ANN201 - the current rule
    return probs.argmax(axis=1) != labels


def rule_none(labels, probs, confident, score):  # noqa: ANN001, ANN201 - confident learning
    return np.zeros(len(labels), dtype=bool)


def rule_margin(m: float) -> Callable:
    def rule(labels, probs, confident, score):  # noqa: ANN001, ANN202
        return (probs.argmax(axis=1) != labels) & (probs.max(axis=1) - _given_prob(
            labels, probs) >= m)
    return rule


def rule_ratio(r: float) -> Callable:
    """The suggested class at least r times as likely as the given one."""
    def rule(labels, probs, confident, score):  # noqa: ANN001, ANN202
        return (probs.argmax(axis=1) != labels) & (probs.max(axis=1) >= r * _given_prob(
            labels, probs))
    return rule


def rule_count(method: str, factor: float = 1.0) -> Callable:
    """Disagreement rows only among the n lowest-scored rows, n = cleanlab's estimate of the
    number of label issues (times factor)."""
    def rule(labels, probs, confident, score):  # noqa: ANN001, ANN202
        n = int(round(factor * num_label_issues(labels, probs, estimation_method=method)))
        low = np.zeros(len(labels), dtype=bool)
        low[np.argsort(score, kind="stable")[:n]] = True
        return (probs.argmax(axis=1) != labels) & low
    return rule


def rule_skill(s: float, inner: Callable = rule_all) -> Callable:
    """The inner rule only when the model's skill over the majority guess is at least s."""
    def rule(labels, probs, confident, score):  # noqa: ANN001, ANN202
        if skill(labels, probs) < s:
            return np.zeros(len(labels), dtype=bool)
        return inner(labels, probs, confident, score)
    return rule


def rule_trusted(min_skill: float | None = None, inner: Callable = rule_all) -> Callable:
    """The inner rule only when the model passes tasks/estimate.check_model (the policy's
    trust check: log-loss skill, accuracy above chance), or, with min_skill, only when its
    log-loss skill over the class-frequency baseline is at least that."""
    from tasks.estimate import check_model

    def rule(labels, probs, confident, score):  # noqa: ANN001, ANN202
        check = check_model(labels, np.clip(probs, 1e-12, 1), probs.shape[1])
        ok = check.trusted if min_skill is None else check.skill >= min_skill
        return inner(labels, probs, confident, score) if ok else np.zeros(len(labels), bool)
    return rule


def rule_lowered(f: float) -> Callable:
    """Confident learning's per-class thresholds lowered by a factor: the suggested class's
    probability at least f times its threshold."""
    def rule(labels, probs, confident, score):  # noqa: ANN001, ANN202
        t = _thresholds(labels, probs)
        sugg = probs.argmax(axis=1)
        return (sugg != labels) & (probs.max(axis=1) >= f * t[sugg])
    return rule


def rule_cleanlab(filter_by: str) -> Callable:
    def rule(labels, probs, confident, score):  # noqa: ANN001, ANN202
        return np.asarray(find_label_issues(labels, probs, filter_by=filter_by, n_jobs=1),
                          dtype=bool)
    return rule


def rule_and(*rules: Callable) -> Callable:
    def rule(labels, probs, confident, score):  # noqa: ANN001, ANN202
        out = np.ones(len(labels), dtype=bool)
        for r in rules:
            out &= r(labels, probs, confident, score)
        return out
    return rule


RULES: dict[str, Callable] = {
    "current: confident or disagreement": rule_all,
    "confident only": rule_none,
    **{f"margin >= {m}": rule_margin(m) for m in (0.05, 0.1, 0.2, 0.3)},
    **{f"ratio >= {r}": rule_ratio(r) for r in (1.5, 2.0, 3.0)},
    **{f"count {m} x{f}": rule_count(m, f) for m in ("off_diagonal", "off_diagonal_calibrated")
       for f in (1.0, 1.5)},
    **{f"accuracy skill >= {s}": rule_skill(s) for s in (0.3, 0.5, 0.7)},
    "model trusted (check_model)": rule_trusted(),
    **{f"log-loss skill >= {s}": rule_trusted(s) for s in (0.3, 0.4, 0.5)},
    **{f"lowered thresholds x{f}": rule_lowered(f) for f in (0.9, 0.8, 0.7, 0.5)},
    **{f"cleanlab {f}": rule_cleanlab(f) for f in ("low_normalized_margin",
                                                   "low_self_confidence")},
    "count calibrated & margin >= 0.1": rule_and(rule_count("off_diagonal_calibrated"),
                                                 rule_margin(0.1)),
    "skill >= 0.5 & margin >= 0.1": rule_skill(0.5, rule_margin(0.1)),
    "log-loss skill >= 0.4 & margin >= 0.1": rule_trusted(0.4, rule_margin(0.1)),
    "trusted & lowered x0.8": rule_trusted(None, rule_lowered(0.8)),
    **{f"log-loss skill >= {s} & margin >= {m}": rule_trusted(s, rule_margin(m))
       for s in (0.3, 0.4, 0.5) for m in (0.05, 0.1, 0.15, 0.2) if (s, m) != (0.4, 0.1)},
    **{f"accuracy skill >= {s} & margin >= {m}": rule_skill(s, rule_margin(m))
       for s in (0.3, 0.5) for m in (0.1, 0.2)},
}


def replay(case: dict, rule: Callable) -> tuple[np.ndarray, np.ndarray]:
    """(flags over all rows, disagreement-only flags over all rows) of a rule."""
    labels, probs = case["labels"], case["probs"]
    confident = np.asarray(find_label_issues(labels, probs, n_jobs=1), dtype=bool)
    score = get_label_quality_scores(labels, probs)
    extra = rule(labels, probs, confident, score) & ~confident
    flags = np.zeros(len(case["scored"]), dtype=bool)
    flags[case["scored"]] = confident | extra
    only = np.zeros(len(case["scored"]), dtype=bool)
    only[case["scored"]] = extra
    return flags, only


def evaluate(cases: list[dict], flagger: Callable[[dict], np.ndarray]) -> dict:
    per_case, at_zero = [], 0
    for case in cases:
        flags = flagger(case)
        if case["noise"] == "none":
            at_zero += int(flags.sum())
            continue
        f1 = precision_recall(flags, case["planted"])[2]
        f1_script = precision_recall(case["script"], case["planted"])[2]
        per_case.append({"dataset": case["dataset"], "noise": case["noise"], "f1": f1,
                         "kind": case["kind"],
                         "delta": f1 - f1_script, "flags": int(flags.sum())})
    frame = pd.DataFrame(per_case)
    out = {"flags_at_0pct": at_zero, "cases": frame}
    for group, part in (("orig", frame[frame["noise"] != "feature_dependent_rf"]),
                        ("fd_rf", frame[frame["noise"] == "feature_dependent_rf"])):
        if len(part):
            worst = part.loc[part["delta"].idxmin()]
            out[group] = {"n": len(part), "f1": part["f1"].mean(), "delta": part["delta"].mean(),
                          "worst": worst["delta"], "worst_case": f"{worst['dataset']}/"
                          f"{worst['noise']}", "below_0.01": int((part["delta"] < -0.01).sum())}
    return out


def row(name: str, res: dict) -> str:
    o, r = res.get("orig", {}), res.get("fd_rf", {})
    return (f"| {name} | {o.get('f1', float('nan')):.3f} | {o.get('delta', float('nan')):+.3f} "
            f"| {o.get('worst', float('nan')):+.3f} ({o.get('worst_case', '')}) | "
            f"{o.get('below_0.01', '')} | {r.get('delta', float('nan')):+.3f} | "
            f"{r.get('worst', float('nan')):+.3f} | {res['flags_at_0pct']:,} |")


HEADER = ("| rule | mean F1 | mean ΔF1 | worst ΔF1 (case) | cases < −0.01 | FD_RF mean ΔF1 | "
          "FD_RF worst | flags at 0% |\n|---|---|---|---|---|---|---|---|")


def per_kind(cases: list[dict], results: dict[str, dict]) -> str:
    """ΔF1 per case for each rule compared (the original shapes and FD_RF)."""
    names = list(results)
    frames = [results[n]["cases"].set_index(["dataset", "noise"])["delta"].rename(n)
              for n in names]
    table = pd.concat(frames, axis=1).reset_index()
    lines = ["| dataset | noise | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for _, r in table.iterrows():
        lines.append(f"| {r['dataset']} | {r['noise']} | "
                     + " | ".join(f"{r[n]:+.3f}" for n in names) + " |")
    return "\n".join(lines)


def by_group(results: dict[str, dict], key: str) -> str:
    """Mean ΔF1 vs the script per noise shape or dataset kind, for each rule."""
    names = [n for n in results if n != "script"]
    frames = {n: results[n]["cases"].groupby(key)["delta"].mean() for n in names}
    groups = sorted(frames[names[0]].index)
    lines = [f"| {key} | " + " | ".join(f"mean ΔF1 {n}" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{frames[n][g]:+.3f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", required=True, help="the do_no_harm --out name to read")
    parser.add_argument("--heldout-once", action="store_true",
                        help="replay tasks/detect.label_issues as committed on the HELDOUT "
                        "half, beside the run's own flags")
    parser.add_argument("--only", default="", help="comma-separated rule names (design)")
    parser.add_argument("--per-case", action="store_true", help="print ΔF1 per case")
    parser.add_argument("--out", default="", help="also write what is printed to "
                        "bench/results/<out>.md")
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    from bench.common import machine

    env = machine()
    say(f"# Flag rules replayed: {args.rows}\n\n- date: {env['date']}; command: "
        f"`{env['command']}`; versions: {env['versions']}\n")
    pd.set_option("display.width", 200)
    from tasks.detect import label_issues
    from tasks.estimate import check_model

    def committed(case: dict) -> np.ndarray:
        flags = np.zeros(len(case["scored"]), dtype=bool)
        flags[case["scored"]] = label_issues(case["labels"], case["probs"])[
            "is_label_issue"].to_numpy(dtype=bool)
        return flags

    if args.heldout_once:
        cases = load_cases(args.rows, HELDOUT)
        say(f"{len(cases)} HELDOUT cases from {args.rows}: tasks/detect.label_issues as "
            "committed, against the flags the run carried\n")
        check = sum(int((replay(c, rule_all)[0] != c["run_flag"]).sum()) for c in cases)
        say(f"the rule before (confident or any disagreement) replayed vs the run's flags: "
            f"{check} rows differ\n")
        results = {"as run": evaluate(cases, lambda c: c["run_flag"]),
                   "label_issues (committed)": evaluate(cases, committed),
                   "script": evaluate(cases, lambda c: c["script"])}
    else:
        cases = load_cases(args.rows, DESIGN)
        say(f"{len(cases)} DESIGN cases from {args.rows}\n")

        for c in cases:
            m = check_model(c["labels"], np.clip(c["probs"], 1e-12, 1), c["probs"].shape[1])
            say(f"- {c['dataset']:16s} {c['noise']:20s} classes {c['probs'].shape[1]:3d} "
                  f"log-loss skill {m.skill:.2f} accuracy {m.accuracy:.3f} "
                  f"(chance {m.chance_accuracy:.3f}) accuracy skill "
                  f"{skill(c['labels'], c['probs']):.2f}")
        check = sum(int((replay(c, rule_all)[0] != c["run_flag"]).sum()) for c in cases)
        say(f"\ncurrent rule replayed vs the run's flags: {check} rows differ\n")
        wanted = [n for n in args.only.split(",") if n] or list(RULES)
        results = {n: evaluate(cases, lambda c, r=RULES[n]: replay(c, r)[0]) for n in wanted}
        results["label_issues (tasks/detect.py)"] = evaluate(cases, committed)
        results["script"] = evaluate(cases, lambda c: c["script"])
    say(HEADER)
    for name, res in results.items():
        say(row(name, res))
    if args.per_case or args.heldout_once:
        say()
        say(per_kind(cases, results))
        say()
        say(by_group(results, "noise"))
        say()
        say(by_group(results, "kind"))
    if args.out:
        path = RESULTS / f"{args.out}.md"
        path.write_text("\n".join(lines) + "\n")
        print(f"written to {path}")


if __name__ == "__main__":
    main()
