"""The kNN stage alone on bench/scale_1m.py's table: seconds per step and recall against exact.

Encodes the table as the CLI does (featurize's plan and encoder), then times the embedding
(tasks.knn.embedder) and the graph (tasks.knn.knn_graph, approximate above EXACT_MAX_ROWS) in
CPU and wall seconds, and scores the graph on 2,000 random rows against exact search (faiss flat
inner product over every row): recall@10 = share of a row's 10 neighbours whose distance is
within the exact 10th neighbour's (ties count as found).

    OMP_NUM_THREADS=1 nice -n 5 uv run --frozen python bench/knn_1m.py [--rows N] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale_1m import make_data  # noqa: E402
from tasks.featurize import encode, infer_roles, prepare_frame  # noqa: E402
from tasks.knn import _normed, embedder, graph_neighbours, ivf_settings, knn_graph  # noqa: E402


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.process_time() - cpu, 1), round(time.perf_counter() - wall, 1)


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", default="knn_1m")
    args = ap.parse_args()
    n, k = args.rows, 10
    frame = make_data(n)
    plan = infer_roles(frame, "label", [], [], None)
    X = encode(prepare_frame(frame, plan), plan)
    del frame
    (emb, reducer), emb_cpu, emb_wall = timed(embedder, X, 0)
    (graph, metric, exact), g_cpu, g_wall = timed(knn_graph, emb, k)
    rows = np.random.default_rng(1).choice(n, min(n, 2000), replace=False)
    normed = _normed(emb, metric)
    flat = faiss.IndexFlatIP(normed.shape[1])
    flat.add(normed)
    scores, _ = flat.search(normed[rows], k + 1)
    kth = 1 - scores[:, k]  # the exact 10th other neighbour's cosine distance (self first)
    found = graph.data.reshape(-1, k)[rows]
    recall = float((found <= kth[:, None] + 1e-5).mean())
    same = graph_neighbours(graph)[rows]
    assert same.shape == (len(rows), k)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "rows": n,
              "matrix": list(X.shape), "reducer": type(reducer).__name__, "metric": metric,
              "exact": exact, "ivf": ivf_settings(n).model_dump() if not exact else None,
              "embed_cpu_s": emb_cpu, "embed_wall_s": emb_wall, "graph_cpu_s": g_cpu,
              "graph_wall_s": g_wall, "recall_at_10": round(recall, 3),
              "omp_threads": faiss.omp_get_max_threads(), "load_after": os.getloadavg(),
              "python": platform.python_version(), "faiss": faiss.__version__,
              "command": " ".join(sys.argv)}
    print(json.dumps(result), flush=True)
    (ROOT / "bench" / "results" / f"{args.out}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
