"""Issue 3 benchmark: the detect stage (faiss kNN graph + every default issue type) against
cleanlab's Datalab building its own kNN graph, on the same features and pred_probs.

Data: sklearn make_classification (5 classes), standardized float32 features, one exact
duplicate, 0.05% planted outliers (axis-aligned points), 10% symmetric label noise, pred_probs
from a noisy oracle (the true class gets most mass, plus Dirichlet noise), so both sides see
identical inputs. Each side runs in a fresh child process (peak RSS from
getrusage(RUSAGE_CHILDREN)); OMP/BLAS threads pinned to 1 unless --threads is given. Times cover
the detection work only: data generation and library imports happen before the clock starts.

    uv run python bench/detection_vs_datalab.py --rows 100000 --dims 32 --repeats 3
    uv run python bench/detection_vs_datalab.py --rows 1000000 --dims 20 --no-peer
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/ (first on sys.path when run as a script) holds datasets.py, which would shadow the
# `datasets` package Datalab imports: import from the project root only.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))


def make_data(n: int, d: int, seed: int = 0):  # noqa: ANN201
    import numpy as np
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=d, n_informative=d // 2, n_classes=5,
                               random_state=seed)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    flip = rng.random(n) < 0.1
    noisy[flip] = (y[flip] + rng.integers(1, 5, flip.sum())) % 5
    probs = rng.dirichlet(np.ones(5), n) * 0.4
    probs[np.arange(n), y] += 0.6
    X[1] = X[0]  # one exact duplicate so near/exact duplicate checks have something to find
    # planted outliers (0.05%): axis-aligned points, unlike any row in cosine terms
    out = rng.choice(np.arange(2, n), size=max(5, n // 2000), replace=False)
    X[out] = 0.0
    X[out, rng.integers(0, d, len(out))] = 5.0
    return X, noisy, probs.astype(np.float32)


def run_side(side: str, n: int, d: int, out: str) -> None:
    """Child process: run one side, write its flags per issue type and its time."""
    import numpy as np
    import pandas as pd

    X, labels, probs = make_data(n, d)
    # imports before the clock on both sides: the figure is the detection work itself
    from cleanlab import Datalab

    from tasks.detect import detect_all, enabled_types
    from tasks.knn import knn_graph

    start = time.perf_counter()
    if side.startswith("cleanset"):
        graph, metric, exact = knn_graph(X, 10, exact=True if side == "cleanset-exact" else None)
        classes = tuple(str(c) for c in range(5))
        frame = detect_all(pd.Series(np.arange(n)), pd.Series(labels), pd.DataFrame(X),
                           np.arange(n), labels, classes, probs, np.array([], dtype=int),
                           np.array([], dtype=int), X, graph, enabled_types({}))
        info = {"metric": metric, "exact": exact}
    else:
        lab = Datalab({"label": labels}, label_name="label", verbosity=0)
        lab.find_issues(pred_probs=probs, features=X)
        frame = lab.get_issues()
        info = {}
    seconds = time.perf_counter() - start
    flags = {c[3:-6]: np.flatnonzero(frame[c].fillna(False).to_numpy(bool)).tolist()
             for c in frame if c.startswith("is_") and c.endswith("_issue")}
    Path(out).write_text(json.dumps({"seconds": seconds, "flags": flags, **info}))


def child(side: str, n: int, d: int, threads: int) -> dict:
    out = ROOT / "bench" / "results" / f".{side}-{n}.json"
    env = {**os.environ, **{k: str(threads) for k in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, __file__, "--child", side, "--rows", str(n), "--dims",
                    str(d), "--out", str(out)], check=True, env=env)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(out.read_text())
    out.unlink()
    result["peak_rss_mib"] = peak_kib / 1024 if peak_kib > before else None  # see note below
    return result


def _runs(results: list[dict]) -> str:
    return ", ".join(f"{r['seconds']:.1f}" for r in results)


def jaccard(a: list[int], b: list[int]) -> float | None:
    a, b = set(a), set(b)
    return None if not a and not b else len(a & b) / len(a | b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-peer", action="store_true", help="cleanset only (large n)")
    parser.add_argument("--child", choices=["cleanset", "cleanset-exact", "datalab"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        run_side(args.child, args.rows, args.dims, args.out)
        return
    from bench.common import machine, save

    ours, exact, theirs = [], [], []
    for _ in range(args.repeats):  # alternate the sides
        ours.append(child("cleanset", args.rows, args.dims, args.threads))
        print(f"cleanset: {ours[-1]['seconds']:.1f} s", flush=True)
        if not args.no_peer and not ours[-1].get("exact"):
            exact.append(child("cleanset-exact", args.rows, args.dims, args.threads))
            print(f"cleanset, exact graph: {exact[-1]['seconds']:.1f} s", flush=True)
        if not args.no_peer:
            theirs.append(child("datalab", args.rows, args.dims, args.threads))
            print(f"datalab:  {theirs[-1]['seconds']:.1f} s", flush=True)
    env = machine()
    t_ours = statistics.median(r["seconds"] for r in ours)
    lines = [f"# Detection stage at {args.rows:,} rows x {args.dims} features", "",
             f"- date: {env['date']}; load average (1 min) at the end: {env['loadavg_1m']}",
             f"- command: `{env['command']}`; {args.threads} thread(s) per side; medians of "
             f"{args.repeats} alternating runs, each side in a fresh process",
             f"- versions: {env['versions']}",
             f"- cleanset graph: {ours[0].get('metric')} metric, "
             f"{'exact' if ours[0].get('exact') else 'approximate (faiss IVF)'} search", "",
             f"cleanset: median {t_ours:.1f} s (runs: {_runs(ours)}); peak RSS "
             f"{max(r['peak_rss_mib'] or 0 for r in ours):.0f} MiB (largest child so far)"]
    payload = {"machine": env, "rows": args.rows, "dims": args.dims, "cleanset": ours}
    if theirs:
        t_theirs = statistics.median(r["seconds"] for r in theirs)
        lines += [f"Datalab: median {t_theirs:.1f} s (runs: {_runs(theirs)}); speed-up "
                  f"**{t_theirs / t_ours:.1f}x**"]
        exact_flags = exact[0]["flags"] if exact else ours[0]["flags"]
        if exact:
            t_exact = statistics.median(r["seconds"] for r in exact)
            lines += [f"cleanset forced to the exact graph: median {t_exact:.1f} s (runs: "
                      f"{_runs(exact)}); speed-up {t_theirs / t_exact:.1f}x"]
        lines += ["", "| issue type | flagged cleanset (default graph) | flagged cleanset (exact) "
                  "| flagged Datalab | Jaccard default vs Datalab | Jaccard exact vs Datalab |",
                  "|---|---|---|---|---|---|"]
        for t in sorted(set(ours[0]["flags"]) | set(theirs[0]["flags"])):
            a, e, b = ours[0]["flags"].get(t), exact_flags.get(t), theirs[0]["flags"].get(t)
            cells = ["—" if v is None else str(len(v)) for v in (a, e, b)]
            for x in (a, e):
                j = jaccard(x, b) if x is not None and b is not None else None
                cells.append("—" if j is None else f"{j:.3f}")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        payload["datalab"], payload["cleanset_exact"] = theirs, exact
    lines += ["", "Peak RSS is the maximum over child processes so far "
              "(getrusage(RUSAGE_CHILDREN)), so the first child's figure is its own.", ""]
    for r in [*ours, *exact, *theirs]:
        r.pop("flags", None)
    name = f"detection_{args.rows}x{args.dims}"
    path = save(name, payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
