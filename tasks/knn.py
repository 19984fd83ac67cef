"""knn: one k-nearest-neighbour graph, shared by every neighbour-based issue check.

cleanlab's Datalab builds its kNN graph by brute force with scikit-learn, which dominates its run
time on large data. We build the same graph with faiss: exact inner-product / L2 search for up to
`EXACT_MAX_ROWS` rows, an IVF index (approximate, nprobe 16) above or when asked, with the metric
Datalab would choose (cosine above 3 dimensions) and cleanlab's own exact-duplicate correction,
in the CSR form Datalab accepts as `knn_graph`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict
from sklearn.decomposition import TruncatedSVD

from tasks.caching import stage
from tasks.featurize import Design
from tasks.store import ArrayRef, MatrixRef, write_array, write_matrix

EXACT_MAX_ROWS = 50_000  # above: IVF search (see bench/results/detection_*.md for the effect)
EMBED_DIM = 64


class Neighbours(BaseModel):
    """The dense embedding the graph was built on and the graph itself."""

    model_config = ConfigDict(frozen=True)
    embedding: ArrayRef
    graph: MatrixRef
    metric: str
    exact: bool
    k: int


def dense_embedding(X, seed: int = 0, dim: int = EMBED_DIM) -> np.ndarray:  # noqa: ANN001
    """A dense float32 embedding of the encoded features: as is when narrow and dense,
    else reduced by TruncatedSVD (TF-IDF and one-hot columns are sparse and wide)."""
    if sp.issparse(X) or X.shape[1] > 4 * dim:
        n_comp = min(dim, X.shape[1] - 1, X.shape[0] - 1)
        if n_comp >= 2:
            return TruncatedSVD(n_components=n_comp, random_state=seed).fit_transform(X).astype(
                np.float32)
        X = X.toarray() if sp.issparse(X) else X
    return np.ascontiguousarray(X, dtype=np.float32)


def metric_for(X: np.ndarray) -> str:
    """Datalab's default: cosine above 3 dimensions, euclidean otherwise."""
    from cleanlab.internal.neighbor.metric import HIGH_DIMENSION_CUTOFF

    return "cosine" if X.shape[1] > HIGH_DIMENSION_CUTOFF else "euclidean"


def _search(X: np.ndarray, k: int, metric: str, exact: bool, seed: int):  # noqa: ANN202
    import faiss

    n, d = X.shape
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(norms == 0, 1, norms)
    quantizer = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
    if exact:
        index = quantizer
    else:
        nlist = int(min(max(16, 4 * np.sqrt(n)), n // 40))
        kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        index = faiss.IndexIVFFlat(quantizer, d, nlist, kind)
        rng = np.random.default_rng(seed)
        sample = X[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = 16
    index.add(X)
    scores, idx = index.search(X, k + 1)
    if metric == "cosine":
        dist = np.clip(1.0 - scores, 0.0, None)
    else:
        dist = np.sqrt(np.clip(scores, 0.0, None))
    return dist, idx


def knn_graph(X: np.ndarray, k: int = 10, exact: bool | None = None, seed: int = 0
              ) -> tuple[sp.csr_matrix, str, bool]:
    """The kNN graph of X as Datalab expects it: CSR, row i holds its k nearest other rows with
    their distances in ascending order. Returns (graph, metric, exact)."""
    from cleanlab.internal.neighbor.knn_graph import correct_knn_graph

    n = X.shape[0]
    k = min(k, n - 1)
    exact = n <= EXACT_MAX_ROWS if exact is None else exact
    metric = metric_for(X)
    dist, idx = _search(X, k, metric, exact, seed)
    rows = np.arange(n)[:, None]
    # drop each row itself (wherever the search put it; with duplicates it may not be first)
    not_self = idx != rows
    keep = np.cumsum(not_self, axis=1) <= k
    take = not_self & keep & (idx >= 0)
    order_dist = np.where(take, dist, np.inf)
    order = np.argsort(order_dist, axis=1, kind="stable")[:, :k]
    nbr = np.take_along_axis(idx, order, axis=1)
    nd = np.take_along_axis(order_dist, order, axis=1)
    missing = ~np.isfinite(nd)  # approximate search may return fewer than k: pad with self-far
    if missing.any():
        nd[missing] = nd[np.isfinite(nd)].max(initial=1.0)
        nbr[missing] = (rows.repeat(k, axis=1)[missing] + 1) % n
    graph = sp.csr_matrix((nd.ravel().astype(np.float32), nbr.ravel(),
                           np.arange(0, n * k + 1, k)), shape=(n, n))
    graph = correct_knn_graph(X, graph) if exact else graph
    return graph, metric, exact


def graph_neighbours(graph) -> np.ndarray:  # noqa: ANN001 - scipy CSR, k entries per row
    """The n x k neighbour indices of a kNN graph in Datalab's CSR form."""
    k = int(np.diff(graph.indptr)[0])
    return graph.indices.reshape(-1, k)


def neighbour_agreement(graph, y: np.ndarray, suggested: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Share of each row's neighbours whose given label is the row's suggested label: a second
    opinion from another model family (its neighbours), used before relabelling."""
    return (y[graph_neighbours(graph)] == suggested[:, None]).mean(axis=1)


@stage("knn")
def knn(design: Design, k: int, seed: int, work_dir: str, exact: bool | None = None
        ) -> Neighbours:
    """Build the shared kNN graph over the scored rows' dense embedding."""
    import time

    started = time.perf_counter()
    X = design.embeddings.read()[design.positions.read()] if design.embeddings else (
        design.matrix.read())
    emb = dense_embedding(X, seed)
    graph, metric, exact = knn_graph(emb, k, exact=exact, seed=seed)
    work = Path(work_dir)
    get_run_logger().info("kNN graph: %d rows, k=%d, %s, %s search, %.1f s", emb.shape[0],
                          min(k, emb.shape[0] - 1), metric, "exact" if exact else "approximate",
                          time.perf_counter() - started)
    return Neighbours(embedding=write_array(emb, work, "embedding"),
                      graph=write_matrix(graph, work, "knn"), metric=metric, exact=exact,
                      k=min(k, emb.shape[0] - 1))
