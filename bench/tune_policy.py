"""How the automatic-fix defaults were chosen: on the DESIGN half of bench/do_no_harm.py only.

Reads the per-row results of a do_no_harm run (bench/results/do_no_harm_rows/<name>/) and
replays the decision rule offline for a grid of settings:

- relabel rule (tasks/decide.py `safe_relabel`): a flagged row is relabelled when the model is
  trusted, the suggestion's confidence >= tau and the share of its neighbours carrying the
  suggested label >= nu. Reported per setting: rows relabelled, wrong relabels (in total and on
  the 0%-noise cases, where every relabel is wrong), relabel precision, and the worst case's
  precision.
- fallback for the other label issues (review keeps the row; drop leaves it out; `drop<theta`
  drops only those whose label score, the out-of-fold probability of the given label, is below
  theta, and sends the rest to review): label accuracy of the kept rows against the truth,
  before and after, per variant (cases where it fell, the worst change, right and wrong labels
  dropped), without retraining; with `--retrain` also the test accuracy of the fixed
  downstream model trained on the resulting clean data, against training on the data as given
  and on the script's pruned data (same split as the harness).
- `safe z=<margin> [<calibration>]`: the run's own label drops (text, ambiguous and
  disagreement-only flags already in review) kept only below tasks/decide.py
  `drop_plan(rows, margin, pred_probs, calibration)`, the label score under which dropping is
  estimated to raise label accuracy (the policy's `drop_check`, `drop_margin`,
  `drop_calibration`); the threshold each case gets, and the fitted temperature, are printed.
  Replay a run made with `--set policy.drop_check=false` (every confident flag dropped), so that
  every drop a variant could keep is in the rows.

The HELDOUT half is refused: its figures are reported by do_no_harm.py, never tuned on.

    uv run --frozen python bench/tune_policy.py --rows design_v4 [--retrain [--only VARIANTS]]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import pin_threads  # noqa: E402

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.datasets import DESIGN, load  # noqa: E402
from tasks.decide import CALIBRATIONS, drop_plan  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TAUS = (0.8, 0.85, 0.9, 0.95, 0.98)
NUS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
THETAS = (0.02, 0.05, 0.1, 0.2, 0.3)
MARGINS = (0.0, 1.0, 2.0, 3.0)  # drop_threshold's margin (standard errors)


def cases(name: str) -> list[tuple[str, str, pd.DataFrame, dict]]:
    """(dataset, noise, rows, run facts) of a do_no_harm run, design half only."""
    meta = json.loads((RESULTS / f"{name}.json").read_text())
    out = []
    for row in meta["rows"]:
        if row["dataset"] not in DESIGN:
            continue  # never look at the held-out half here
        path = RESULTS / "do_no_harm_rows" / name / f"{row['dataset']}__{row['noise']}.parquet"
        out.append((row["dataset"], row["noise"], pd.read_parquet(path), row))
    return out


def relabel_mask(rows: pd.DataFrame, trusted: bool, tau: float, nu: float) -> np.ndarray:
    if not trusted:
        return np.zeros(len(rows), dtype=bool)
    flag = rows["is_label_issue"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    conf = rows["suggested_label_confidence"].astype(float).fillna(0).to_numpy()
    agree = rows["suggested_label_agreement"].astype(float).fillna(0).to_numpy()
    differs = rows["suggested_label"].astype(str).to_numpy() != rows["given_label"].astype(
        str).to_numpy()
    return flag & (conf >= tau) & (agree >= nu) & differs


def relabel_grid(all_cases: list) -> pd.DataFrame:
    table = []
    for tau in TAUS:
        for nu in NUS:
            n = wrong = wrong_clean = 0
            worst = 1.0
            for _, noise, rows, row in all_cases:
                trusted = bool(row.get("model_check", {}).get("model_trusted", True))
                m = relabel_mask(rows, trusted, tau, nu)
                right = rows["suggested_label"].astype(str).to_numpy()[m] == rows[
                    "true_label"].astype(str).to_numpy()[m]
                n += int(m.sum())
                wrong += int((~right).sum())
                wrong_clean += int((~right).sum()) if noise == "none" else 0
                if m.sum():
                    worst = min(worst, float(right.mean()))
            table.append({"tau": tau, "nu": nu, "relabelled": n, "wrong": wrong,
                          "wrong_at_0pct": wrong_clean,
                          "precision": (n - wrong) / n if n else float("nan"),
                          "worst_case_precision": worst})
    return pd.DataFrame(table)


def label_masks(rows: pd.DataFrame, row: dict) -> dict[str, np.ndarray]:
    """Rows each fallback variant keeps. Rows the run dropped for another issue type (an exact
    copy, a null row) stay dropped in every variant; ambiguous label issues go to review (the
    default) in every variant."""
    trusted = bool(row.get("model_check", {}).get("model_trusted", True))
    flag = rows["is_label_issue"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    ambiguous = rows["is_ambiguous"].astype("boolean").fillna(False).to_numpy(dtype=bool) \
        if "is_ambiguous" in rows else np.zeros(len(rows), bool)
    kept = rows["kept"].to_numpy(dtype=bool)
    other = ~kept & ~flag  # dropped for another issue type
    droppable = flag & ~ambiguous if trusted else np.zeros(len(rows), bool)
    score = rows["label_score"].astype(float).fillna(1.0).to_numpy()
    out = {"as run": kept, "review": ~other, "drop": ~other & ~droppable}
    for theta in THETAS:
        out[f"drop<{theta}"] = ~other & ~(droppable & (score < theta))
    # tasks/decide.py drop_threshold on top of the run's own label drops (text, ambiguous and
    # disagreement-only rows already in review): drop only under the estimated safe threshold
    label_drop = flag & ~kept
    for name in ("is_exact_duplicate_issue", "is_invalid_issue", "is_null_issue"):
        if name in rows:
            label_drop &= ~rows[name].astype("boolean").fillna(False).to_numpy(dtype=bool)
    probs = row_probs(rows)
    for calibration in CALIBRATIONS:
        for margin in MARGINS:
            below = drop_plan(rows, margin, probs, calibration).below
            out[f"safe z={margin}" + _suffix(calibration)] = kept | (label_drop & ~below)
    return out


def _suffix(calibration: str) -> str:
    """The variant name's calibration part ('' for none: the names design_v4 was replayed by)."""
    return "" if calibration == "none" else f" {calibration}"


def row_probs(rows: pd.DataFrame) -> np.ndarray | None:
    """The run's out-of-fold probabilities of the scored rows, in order (as decide gets them)."""
    scored = rows["label_score"].notna().to_numpy() & rows["pred_probs"].notna().to_numpy() \
        if "pred_probs" in rows else None
    if scored is None or not scored.any():
        return None
    return np.stack(rows["pred_probs"].to_numpy()[scored]).astype("float64")


def accuracy_grid(all_cases: list) -> pd.DataFrame:
    """Per fallback variant: label accuracy of the kept rows against the truth (given labels,
    no relabelling) compared with all rows as given."""
    table = []
    for name, noise, rows, row in all_cases:
        right = rows["given_label"].astype(str).to_numpy() == rows["true_label"].astype(
            str).to_numpy()
        for variant, keep in label_masks(rows, row).items():
            table.append({"dataset": name, "noise": noise, "variant": variant,
                          "change": float(right[keep].mean() - right.mean()),
                          "dropped_right": int((~keep & right).sum()),
                          "dropped_wrong": int((~keep & ~right).sum()),
                          "right_at_0pct": int((~keep & right).sum()) if noise == "none" else 0,
                          "fd_rf": noise == "feature_dependent_rf"})
    frame = pd.DataFrame(table)
    return frame.groupby("variant", sort=False).agg(
        cases_fell=("change", lambda c: int((c < -1e-12).sum())),
        fell_fd_rf=("change", lambda c: int((c[frame.loc[c.index, "fd_rf"]] < -1e-12).sum())),
        worst_change=("change", "min"), mean_change=("change", "mean"),
        dropped_right=("dropped_right", "sum"), dropped_wrong=("dropped_wrong", "sum"),
        right_at_0pct=("right_at_0pct", "sum"))


def retrain(all_cases: list, tau: float, nu: float, only: tuple[str, ...] = ()) -> pd.DataFrame:
    """Test accuracy of the peer's model trained on the clean data of each fallback."""
    from bench.do_no_harm import prepare, single_row_class, test_accuracy

    out = []
    splits: dict[str, dict] = {}
    for name, noise, rows, row in all_cases:
        if name not in splits:
            splits[name] = prepare(load(name))
        split = splits[name]
        ds_kind, plan = row["kind"], split["plan"]
        x_train, x_test = split["x_train"], split["x_test"]
        y_test = split["classes"][split["y_test"]]
        trusted = bool(row.get("model_check", {}).get("model_trusted", True))
        given = rows["given_label"].astype(str).to_numpy()
        flag = rows["is_label_issue"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        relabel = relabel_mask(rows, trusted, tau, nu)
        final = np.where(relabel, rows["suggested_label"].astype(str).to_numpy(), given)
        everything = np.ones(len(rows), bool)
        variants = {
            "given": (everything, given),
            "script_pruned": (~rows["script_flag"].to_numpy(dtype=bool), given),
            "relabel+review": (everything, final),
            "relabel+drop": (~(flag & ~relabel) if trusted else everything, final),
            "drop_untrusted_too": (~flag, given),
        }
        for variant, keep in label_masks(rows, row).items():  # as in accuracy_grid
            variants[variant] = (keep, given)
        if only:  # the reference columns and the variants asked for
            variants = {k: v for k, v in variants.items()
                        if k in ("given", "script_pruned", *only)}
        stable = single_row_class(*(lab[keep] for keep, lab in variants.values()))
        acc = {k: test_accuracy(x_train[keep], lab[keep], x_test, y_test, plan, ds_kind, stable)
               for k, (keep, lab) in variants.items()}
        out.append({"dataset": name, "noise": noise,
                    "skill": row.get("model_check", {}).get("model_skill"), **acc})
        print(f"{name:16s} {noise:17s} " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()),
              flush=True)
    return pd.DataFrame(out)


def flag_grid(all_cases: list) -> dict[str, float]:
    """Mean label-issue F1 (noisy cases) of confident learning's flags as run, against those
    plus every row whose suggested label differs from the given one (tasks/detect.py's
    `label_evidence: disagreement`), for the original shapes and `feature_dependent_rf` apart."""
    from tasks.sample import precision_recall

    out: dict[str, list[float]] = {}
    for _, noise, rows, _ in all_cases:
        if noise == "none":
            continue
        mask = rows["is_planted"].to_numpy(dtype=bool)
        flag = rows["is_label_issue"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        confident = flag & (rows["label_evidence"].to_numpy(dtype=object) != "disagreement") \
            if "label_evidence" in rows else flag
        differs = (rows["suggested_label"].astype(str) != rows["given_label"].astype(str)
                   ).to_numpy() & rows["label_score"].notna().to_numpy()
        group = "fd_rf" if noise == "feature_dependent_rf" else "original"
        for name, f in (("confident", confident), ("confident|disagreement", confident | differs)):
            out.setdefault(f"{group} {name}", []).append(precision_recall(f, mask)[2])
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", required=True, help="the do_no_harm --out name to read")
    parser.add_argument("--retrain", action="store_true", help="also compare fallbacks")
    parser.add_argument("--tau", type=float, default=0.95)
    parser.add_argument("--nu", type=float, default=0.8)
    parser.add_argument("--only", default="", help="with --retrain, comma-separated variants "
                        "to retrain besides given and script_pruned (e.g. 'as run,safe z=2.0')")
    args = parser.parse_args()
    all_cases = cases(args.rows)
    print(f"{len(all_cases)} design cases from {args.rows}")
    grid = relabel_grid(all_cases)
    pd.set_option("display.width", 160)
    print(grid.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nmean label-issue F1 of the flag rules:", {k: round(v, 3)
                                                     for k, v in flag_grid(all_cases).items()})
    print("\nlabel accuracy of the kept rows vs all rows as given, per fallback variant:")
    print(accuracy_grid(all_cases).to_string(float_format=lambda v: f"{v:+.4f}"))
    print("\ndrop_threshold per case (margins " + ", ".join(map(str, MARGINS)) + "), per "
          "calibration (" + ", ".join(CALIBRATIONS) + "; fitted temperature T, noise share e):")
    for name, noise, rows, _ in all_cases:
        probs, parts = row_probs(rows), []
        for calibration in CALIBRATIONS:
            plans = [drop_plan(rows, m, probs, calibration) for m in MARGINS]
            fit = "" if calibration == "none" else \
                f" (T {plans[0].temperature:.2f}, e {plans[0].noise_share:.3f})"
            parts.append(" ".join(f"{p.theta:g}" for p in plans) + fit)
        print(f"  {name:16s} {noise:20s} " + " | ".join(parts))
    if args.retrain:
        table = retrain(all_cases, args.tau, args.nu,
                        tuple(v for v in args.only.split(",") if v))
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        cols = [c for c in table.columns if c not in ("dataset", "noise", "skill")]
        print("mean:", table[cols].mean().round(4).to_dict())
        for c in cols[2:]:
            print(f"{c}: below given on {(table[c] < table['given']).sum()} cases, worst "
                  f"{(table[c] - table['given']).min():+.3f}")
            print(f"{c}: below script_pruned on {(table[c] < table['script_pruned']).sum()} of "
                  f"{len(table)} cases, worst {(table[c] - table['script_pruned']).min():+.3f}")


if __name__ == "__main__":
    main()
