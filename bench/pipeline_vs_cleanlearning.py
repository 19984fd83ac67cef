"""Issue 2 benchmark: `cleanset run` against cleanlab's CleanLearning on the same data.

For scikit-learn's bundled digits, wine and breast_cancer (and a 50k-row synthetic set, where the
cache has real work to save) with 10% and 30% symmetric planted noise
(fixed seed): precision / recall / F1 of `is_label_issue` against the plant, for cleanset's
defaults and for `CleanLearning(LogisticRegression()).find_label_issues(X, labels)` on the same
feature columns; and the wall time of a first `cleanset run` against a cached re-run of the same
command (whole CLI processes, ephemeral Prefect server included).

    uv run python bench/pipeline_vs_cleanlearning.py
"""

from __future__ import annotations

import argparse
import shutil
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
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from tasks.sample import load_builtin, plant_noise, precision_recall  # noqa: E402

DATASETS = ("digits", "wine", "breast_cancer")
RATES = (0.1, 0.3)


def peer(X: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    issues = CleanLearning(LogisticRegression(), seed=0).find_label_issues(X, labels)
    return issues["is_label_issue"].to_numpy(), time.perf_counter() - start


def cleanset(csv: Path, folder: Path) -> tuple[np.ndarray, float, float]:
    db = folder / "w.duckdb"
    cmd = [sys.executable, "-m", "flows.cli", "run", str(csv), "--label", "label",
           "--db", str(db), "--quiet"]
    first, _ = timed_cmd(cmd, folder, OWN_SERVER)
    cached, _ = timed_cmd(cmd, folder, OWN_SERVER)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT CAST(row_id AS BIGINT), is_label_issue FROM issues "
                           "ORDER BY 1").fetchall()
    flags = np.array([bool(f) for _, f in rows])
    return flags, first, cached


def scores(flags: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return dict(zip(("precision", "recall", "f1"), precision_recall(flags, mask), strict=True))


def cases() -> list[tuple[str, pd.DataFrame]]:
    """The bundled datasets, plus a larger synthetic one where caching has work to save."""
    out = [(name, load_builtin(name)) for name in DATASETS]
    X, y = make_classification(n_samples=50_000, n_features=20, n_informative=10, n_classes=4,
                               class_sep=1.5, random_state=0)
    synth = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)]).assign(label=y)
    return [*out, ("synthetic_50k", synth)]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    results = []
    for name, frame in cases():
        X = frame.drop(columns="label").to_numpy()
        for rate in RATES:
            noisy, mask = plant_noise(frame["label"].to_numpy(), rate, seed=0)
            folder = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
            try:
                csv = folder / f"{name}.csv"
                frame.assign(label=noisy).to_csv(csv, index=False)
                ours, first, cached = cleanset(csv, folder)
                theirs, peer_s = peer(X, noisy)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            row = {"dataset": name, "rows": len(frame), "noise": rate,
                   "planted": int(mask.sum()),
                   "cleanset": scores(ours, mask), "peer": scores(theirs, mask),
                   "cleanset_first_run_s": first, "cleanset_cached_run_s": cached,
                   "peer_s": peer_s}
            results.append(row)
            print(f"{name:14s} noise {rate:.0%}: cleanset P/R/F1 "
                  f"{row['cleanset']['precision']:.3f}/{row['cleanset']['recall']:.3f}/"
                  f"{row['cleanset']['f1']:.3f}  peer {row['peer']['precision']:.3f}/"
                  f"{row['peer']['recall']:.3f}/{row['peer']['f1']:.3f}  | first run "
                  f"{first:.1f}s, cached re-run {cached:.1f}s ({first / cached:.1f}x), "
                  f"peer {peer_s:.1f}s", flush=True)
    env = machine()
    lines = [
        "# cleanset run vs CleanLearning(LogisticRegression()) — label issue detection",
        "",
        f"- date: {env['date']}; load average (1 min) at the end: {env['loadavg_1m']}",
        f"- command: `{env['command']}`; threads pinned to 1 for both sides",
        f"- versions: {env['versions']}",
        "",
        "| dataset | noise | cleanset P | R | F1 | peer P | R | F1 | first run s | cached "
        "re-run s | peer s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, p = r["cleanset"], r["peer"]
        lines.append(
            f"| {r['dataset']} | {r['noise']:.0%} | {c['precision']:.3f} | {c['recall']:.3f} | "
            f"{c['f1']:.3f} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | "
            f"{r['cleanset_first_run_s']:.1f} | {r['cleanset_cached_run_s']:.1f} | "
            f"{r['peer_s']:.1f} |")
    mean = {k: float(np.mean([r[k]["f1"] for r in results])) for k in ("cleanset", "peer")}
    lines += ["", f"Mean F1: cleanset {mean['cleanset']:.3f}, peer {mean['peer']:.3f}.", ""]
    path = save("pipeline_vs_cleanlearning", {"machine": env, "results": results},
                "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
