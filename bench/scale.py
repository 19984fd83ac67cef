"""Scale (issue 18): the whole CLI at 1k / 10k / 100k rows x 32 numeric features, next to the
obvious cleanlab script's label-only time at the same size, with cleanset's per-stage split.

    uv run --frozen python bench/scale.py                        # 1k, 10k, 100k; 3 repeats
    uv run --frozen python bench/scale.py --rows 100000 --repeats 1
    uv run --frozen python bench/scale.py --million              # adds 1M rows (slow)

Data: `make_classification` (32 numeric features, 16 informative, 4 classes, seed 0) as
Parquet, with 10% of labels flipped to another class, 0.5% of rows exact copies of others and
0.2% far outliers planted (so every issue type has something to find).

For each size and repeat, alternating:
- cleanset: `.venv/bin/cleanset run FILE --label label --db NEW --model M --quiet` in a fresh
  process (a new warehouse and work folder: nothing cached; it starts its own local Prefect
  server);
- the peer: `python -c SCRIPT FILE M` (pandas, scikit-learn and cleanlab imports, read the
  Parquet, 5-fold `cross_val_predict(..., method="predict_proba")` of the same model family M:
  HistGradientBoostingClassifier(random_state=0) for the default `--model hgb`,
  `cleanlab.filter.find_label_issues` defaults): the label-only script.
(Left to choose, cleanset picks its kNN model on this data; `--model knn` compares that family
with scikit-learn's KNeighborsClassifier.)
Both under `/usr/bin/time -v` (wall seconds, peak RSS of the largest process: the CLI's own
Python, not its Prefect server), one thread per process (OMP/OPENBLAS/MKL_NUM_THREADS=1).
Medians of --repeats with min-max; the ratio is cleanset / peer of the medians.

cleanset's per-stage split at the largest size comes from its `run_stages` table (median over
the repeats); "non-model share" is the share of the flow's seconds outside the model stages
(tasks/timing.MODEL_STAGES), and "startup" the CLI's time outside the flow. The issue types each
run found come from `issue_summary`. Written to bench/results/<--name>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import SINGLE_THREAD, machine, save  # noqa: E402

VENV_BIN = Path(sys.executable).parent
FEATURES = 32

PEER = """
import sys, time
t0 = time.perf_counter()
import pandas as pd
from cleanlab.filter import find_label_issues
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import cross_val_predict
df = pd.read_parquet(sys.argv[1])
y = df.pop("label").astype("category").cat.codes.to_numpy()
t1 = time.perf_counter()
if sys.argv[2] == "hgb":
    model = HistGradientBoostingClassifier(random_state=0)
elif sys.argv[2] == "logreg":
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
else:
    from sklearn.neighbors import KNeighborsClassifier
    model = KNeighborsClassifier(n_neighbors=10)
probs = cross_val_predict(model, df.to_numpy(), y, cv=5, method="predict_proba")
t2 = time.perf_counter()
issues = find_label_issues(y, probs, n_jobs=1)
t3 = time.perf_counter()
print(f"PEER {int(issues.sum())} {t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f}")
"""


def make_data(path: Path, rows: int, seed: int = 0) -> dict:
    """rows x 32 numeric features + a 4-class label; planted: 10% flipped labels, 0.5% exact
    duplicates, 0.2% outliers. Returns the planted counts."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=FEATURES, n_informative=16,
                               n_redundant=4, n_classes=4, class_sep=1.0, random_state=seed)
    rng = np.random.default_rng(seed)
    flip = rng.random(rows) < 0.10
    y[flip] = (y[flip] + rng.integers(1, 4, size=int(flip.sum()))) % 4
    dup = rng.choice(rows, size=max(rows // 200, 1), replace=False)
    src = rng.choice(np.setdiff1d(np.arange(rows), dup), size=len(dup), replace=False)
    X[dup], y[dup], flip[dup] = X[src], y[src], flip[src]
    out = rng.choice(np.setdiff1d(np.arange(rows), np.concatenate([dup, src])),
                     size=max(rows // 500, 1), replace=False)
    X[out] += rng.normal(0, 12, size=(len(out), FEATURES))
    frame = pd.DataFrame(X.astype(np.float64), columns=[f"x{i}" for i in range(FEATURES)])
    frame["label"] = np.array(["a", "b", "c", "d"])[y]
    frame.to_parquet(path, index=False)
    return {"flipped": int(flip.sum()), "duplicates": len(dup), "outliers": len(out)}


def env() -> dict:
    # PYTHONPATH: this checkout's code even where the console script's install points elsewhere
    # CLEANSET_SERVER_KEEP=0: each run boots its own Prefect server, as in the earlier results
    # (the CLI's default reuses the one an earlier run left: bench/fixed_cost.py measures both)
    return {**os.environ, **SINGLE_THREAD, "DO_NOT_TRACK": "1", "PYTHONPATH": str(ROOT),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "CLEANSET_SERVER_KEEP": "0"}


def timed(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GiB of the largest process, output) under /usr/bin/time -v."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}"
                           f"\n{proc.stderr[-3000:]}")
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return seconds, kib / 2**20, proc.stdout + proc.stderr


def run_cleanset(data: Path, folder: Path, model: str) -> dict:
    import duckdb

    db = folder / "w.duckdb"
    seconds, peak, _ = timed([str(VENV_BIN / "cleanset"), "run", str(data), "--label", "label",
                              "--db", str(db), "--model", model, "--quiet"], folder)
    with duckdb.connect(str(db), read_only=True) as con:
        (run_id, model, n_label), = con.execute(
            "SELECT run_id, model, n_label_issues FROM runs").fetchall()
        stages = con.execute("SELECT stage, seconds, peak_rss_mib, model_stage FROM run_stages "
                             "WHERE run_id = ? ORDER BY position", [run_id]).fetchall()
        found = dict(con.execute("SELECT issue_type, num_issues FROM issue_summary WHERE "
                                 "run_id = ?", [run_id]).fetchall())
    flow = sum(s[1] for s in stages)
    model_s = sum(s[1] for s in stages if s[3])
    return {"seconds": seconds, "peak_rss_gib": peak, "model": model, "label_issues": n_label,
            "stages": {s[0]: s[1] for s in stages}, "flow_seconds": flow,
            "model_seconds": model_s, "startup_seconds": seconds - flow,
            "non_model_share": (flow - model_s) / flow if flow else None, "issue_types": found}


def run_peer(data: Path, folder: Path, model: str) -> dict:
    seconds, peak, out = timed([sys.executable, "-c", PEER, str(data), model], folder)
    _, n, load, fit, find = next(ln for ln in out.splitlines() if ln.startswith("PEER ")).split()
    return {"seconds": seconds, "peak_rss_gib": peak, "label_issues": int(n),
            "load_seconds": float(load), "cv_seconds": float(fit), "find_seconds": float(find)}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--million", action="store_true", help="also 1,000,000 rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="hgb", choices=("hgb", "logreg", "knn"),
                        help="the model family of both sides (cleanset --model, the peer's "
                        "estimator); default hgb")
    parser.add_argument("--name", default="scale")
    parser.add_argument("--note", default="", help="what this run measures (e.g. before/after)")
    args = parser.parse_args()
    sizes = sorted(set(args.rows) | ({1_000_000} if args.million else set()))
    tmp = Path(tempfile.mkdtemp(prefix="cleanset_scale_"))
    results = []
    try:
        for n in sizes:
            data = tmp / f"scale_{n}.parquet"
            planted = make_data(data, n)
            load_before = os.getloadavg()[0]
            ours, peer = [], []
            for i in range(args.repeats):  # alternating, cleanset first
                folder = tmp / f"run_{n}_{i}"
                folder.mkdir()
                ours.append(run_cleanset(data, folder, args.model))
                peer.append(run_peer(data, folder, args.model))
                shutil.rmtree(folder, ignore_errors=True)
                print(f"{n:>9,} rows #{i + 1}: cleanset {ours[-1]['seconds']:.1f} s "
                      f"({ours[-1]['peak_rss_gib']:.2f} GiB, flow {ours[-1]['flow_seconds']:.1f}"
                      f" s, non-model {ours[-1]['non_model_share']:.0%}), peer "
                      f"{peer[-1]['seconds']:.1f} s ({peer[-1]['peak_rss_gib']:.2f} GiB)",
                      flush=True)
            row = {"rows": n, "features": FEATURES, "planted": planted,
                   "load_before": round(load_before, 2),
                   "load_after": round(os.getloadavg()[0], 2),
                   "cleanset": {k: spread([r[k] for r in ours]) for k in (
                       "seconds", "peak_rss_gib", "flow_seconds", "model_seconds",
                       "startup_seconds", "non_model_share")},
                   "peer": {k: spread([r[k] for r in peer]) for k in (
                       "seconds", "peak_rss_gib", "cv_seconds", "find_seconds")},
                   "model": ours[-1]["model"], "issue_types": ours[-1]["issue_types"],
                   "label_issues": {"cleanset": ours[-1]["label_issues"],
                                    "peer": peer[-1]["label_issues"]},
                   "stages": {s: spread([r["stages"].get(s, 0.0) for r in ours])
                              for s in ours[-1]["stages"]}}
            row["ratio_seconds"] = row["cleanset"]["seconds"]["median"] / \
                row["peer"]["seconds"]["median"]
            row["ratio_peak_rss"] = row["cleanset"]["peak_rss_gib"]["median"] / \
                row["peer"]["peak_rss_gib"]["median"]
            results.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {**machine(), "note": args.note, "repeats": args.repeats, "results": results}
    lines = [f"# Scale: cleanset end to end vs the label-only cleanlab script ({payload['date']})",
             "", f"`{payload['command']}`" + (f" - {args.note}" if args.note else ""), "",
             f"{payload['cpus']} cores (shared), one thread per process; medians of "
             f"{args.repeats} (min-max), alternating; peak RSS of the largest process "
             f"(/usr/bin/time -v). Both sides use the model family `{args.model}` (cleanset "
             f"`--model {args.model}`); peer: its 5-fold cross_val_predict + "
             "find_label_issues.", "",
             "| rows | cleanset s | peer s | ratio | cleanset peak GiB | peer peak GiB | in flow s "
             "| startup s | non-model share | load before -> after |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        c, p = r["cleanset"], r["peer"]
        lines.append(
            f"| {r['rows']:,} | {c['seconds']['median']:.1f} ({c['seconds']['min']:.1f}-"
            f"{c['seconds']['max']:.1f}) | {p['seconds']['median']:.1f} ({p['seconds']['min']:.1f}"
            f"-{p['seconds']['max']:.1f}) | **{r['ratio_seconds']:.2f}x** | "
            f"{c['peak_rss_gib']['median']:.2f} | {p['peak_rss_gib']['median']:.2f} | "
            f"{c['flow_seconds']['median']:.1f} | {c['startup_seconds']['median']:.1f} | "
            f"{c['non_model_share']['median']:.0%} | {r['load_before']} -> {r['load_after']} |")
    for r in results:
        lines += ["", f"{r['rows']:,} rows: model `{r['model']}`; label issues cleanset "
                  f"{r['label_issues']['cleanset']:,}, peer {r['label_issues']['peer']:,} "
                  f"(planted {r['planted']}); issue types found: "
                  + ", ".join(f"{t} {n:,}" for t, n in sorted(r["issue_types"].items()))]
    big = results[-1]
    flow = big["cleanset"]["flow_seconds"]["median"]
    lines += ["", f"## cleanset's stages at {big['rows']:,} rows (run_stages, median of "
              f"{args.repeats})", "", "| stage | seconds (min-max) | share of flow |",
              "|---|---:|---:|"]
    for s, v in sorted(big["stages"].items(), key=lambda kv: -kv[1]["median"]):
        lines.append(f"| {s} | {v['median']:.2f} ({v['min']:.2f}-{v['max']:.2f}) | "
                     f"{v['median'] / flow:.0%} |")
    lines.append(f"| peer: 5-fold cross_val_predict | {big['peer']['cv_seconds']['median']:.2f} "
                 "| |")
    lines.append(f"| peer: find_label_issues | {big['peer']['find_seconds']['median']:.2f} | |")
    text = "\n".join(lines) + "\n"
    path = save(args.name, payload, text)
    print(text)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
