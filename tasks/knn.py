"""knn: one k-nearest-neighbour graph, shared by every neighbour-based issue check.

cleanlab's Datalab builds its kNN graph by brute force with scikit-learn, which dominates its run
time on large data. We build the same graph with faiss: exact inner-product / L2 search for up to
`EXACT_MAX_ROWS` rows, an IVF index (approximate, `ivf_settings`) above or when asked, with the
metric Datalab would choose (cosine above 3 dimensions) and cleanlab's own exact-duplicate
correction, in the CSR form Datalab accepts as `knn_graph`.

faiss runs on the threads OpenMP allows (OMP_NUM_THREADS; all cores when unset): the kNN stage
runs alone in the flow (before the model fits), so it is the one stage that may use every core.
Benchmarks set OMP_NUM_THREADS=1 for both sides (shared/BENCHMARKING.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict
from sklearn.decomposition import TruncatedSVD

from tasks.caching import stage
from tasks.featurize import Design, FeaturePlan, prepare_frame
from tasks.ingest import Snapshot
from tasks.store import ArrayRef, MatrixRef, ObjectRef, write_array, write_matrix, write_object

EXACT_MAX_ROWS = 50_000  # above: IVF search (see bench/results/detection_*.md for the effect)
EMBED_DIM = 64
GRAM_MAX_COLUMNS = 512  # up to: the embedding by the exact SVD of the d x d Gram matrix (GramSVD)
DBSCAN_EPS = 0.5  # Datalab's underperforming_group clustering radius (DBSCAN's default)


class IvfSettings(BaseModel):
    """How the approximate (IVF) index is built and searched (see `ivf_settings`)."""

    model_config = ConfigDict(frozen=True)
    nlist: int  # inverted lists (k-means centroids)
    nprobe: int  # lists searched per query
    train_rows: int  # rows the k-means is trained on
    niter: int  # k-means iterations


NPROBE = 16


def ivf_settings(n: int) -> IvfSettings:
    """The IVF index for n rows (above EXACT_MAX_ROWS, or when an approximate graph is asked for).

    Measured on bench/scale_1m.py's 1,000,000 x 20 table (its 64-dim cosine embedding), one
    thread, CPU seconds, recall@10 = share of returned neighbours within the exact 10th
    neighbour's distance on 2,000 rows (scratch measurements of branch i18knn, see
    bench/results/scale_1m_i18knn.md):

    | index | train | add | search all rows | recall |
    | --- | --- | --- | --- | --- |
    | IVF4000 nprobe 16, 64 rows/list, 25 iterations (was) | 40 | 16 | 182 | 0.599 |
    | same, 32 rows/list, 10 its, one coarse pass, list by list (now) | 16 | 1 | 19 + 103 | 0.593 |
    | IVF4000 nprobe 8 | 10 | 16 | 98 | 0.448 |
    | IVF1000 nprobe 4 | 2 | 4 | 118 | 0.442 |
    | IVF4000,PQ32x4fs nprobe 16, exact re-rank of 44 | 12 | 16 | 67 | 0.409 |
    | HNSW M=12, efConstruction 16, efSearch 16 | 161 (build) | | 133 | 0.420 |

    This embedding's neighbours are hard to find (14 independent numeric columns): fewer lists or
    probes, compressed codes and HNSW all lose recall for the time they save, so the index stays
    IVF-Flat with 4 sqrt(n) lists and 16 probes, and the seconds come from the k-means (32 rows
    per list and 10 iterations instead of 64 and 25: 40 s -> 16 s for -0.006 recall) and from
    the search (`_ivf_self_search`). Small n: at least 40 rows per list."""
    nlist = int(min(max(16, 4 * np.sqrt(n)), max(1, n // 40)))
    big = n >= 200_000  # below, the k-means costs seconds: trained as before (64 rows, 25 its)
    return IvfSettings(nlist=nlist, nprobe=NPROBE, train_rows=min(n, (32 if big else 64) * nlist),
                       niter=10 if big else 25)


class Neighbours(BaseModel):
    """The dense embedding the graph was built on and the graph itself."""

    model_config = ConfigDict(frozen=True)
    embedding: ArrayRef
    graph: MatrixRef
    metric: str
    exact: bool
    k: int
    # kept by a dataset folder's full run, for the incremental runs that extend its graph:
    reducer: ObjectRef | None = None  # the fitted TruncatedSVD of a sparse or wide matrix
    index: ArrayRef | None = None  # the approximate (IVF) faiss index, serialized
    # the graph's DBSCAN clusters (graph_clusters), for underperforming_group; None: not asked
    clusters: ArrayRef | None = None

    @property
    def files(self) -> list[str]:
        return [r.path for r in (self.embedding, self.graph, self.reducer, self.index,
                                 self.clusters) if r]


def dense_embedding(X, seed: int = 0, dim: int = EMBED_DIM) -> np.ndarray:  # noqa: ANN001
    """A dense float32 embedding of the encoded features: as is when narrow and dense,
    else reduced by TruncatedSVD (TF-IDF and one-hot columns are sparse and wide)."""
    return embedder(X, seed, dim)[0]


class GramSVD:
    """TruncatedSVD's embedding (X times its top right singular vectors, uncentred) computed
    exactly from the d x d Gram matrix X'X: for a tall matrix with few columns it is one pass
    over the rows instead of randomized SVD's several (1,000,000 x 106 one-hot and numeric
    columns to 64: 5.9 s instead of 36 s, one thread; explained variance 0.961 vs 0.960)."""

    def __init__(self, n_components: int) -> None:
        self.n_components = n_components
        self.components_: np.ndarray | None = None

    def fit_transform(self, X) -> np.ndarray:  # noqa: ANN001
        d = X.shape[1]
        gram = np.zeros((d, d))
        for start in range(0, X.shape[0], 100_000):  # float64 sums, a block of rows at a time
            block = X[start:start + 100_000]
            block = block.astype(np.float64) if sp.issparse(block) else np.asarray(
                block, dtype=np.float64)
            part = block.T @ block
            gram += part.toarray() if sp.issparse(part) else part
        _, vectors = np.linalg.eigh(gram)  # ascending eigenvalues
        self.components_ = np.ascontiguousarray(vectors[:, ::-1][:, :self.n_components].T)
        return self.transform(X)

    def transform(self, X) -> np.ndarray:  # noqa: ANN001
        out = X @ self.components_.T.astype(np.float64 if sp.issparse(X) else X.dtype)
        return np.ascontiguousarray(out, dtype=np.float32)


def embedder(X, seed: int = 0, dim: int = EMBED_DIM):  # noqa: ANN001, ANN201
    """(dense_embedding of X, the fitted reducer or None), the reducer for rows to come:
    GramSVD up to GRAM_MAX_COLUMNS columns, else TruncatedSVD (randomized)."""
    if sp.issparse(X) or X.shape[1] > 4 * dim:
        n_comp = min(dim, X.shape[1] - 1, X.shape[0] - 1)
        if n_comp >= 2:
            svd = (GramSVD(n_comp) if X.shape[1] <= GRAM_MAX_COLUMNS else
                   TruncatedSVD(n_components=n_comp, random_state=seed))
            return svd.fit_transform(X).astype(np.float32), svd
        X = X.toarray() if sp.issparse(X) else X
    return np.ascontiguousarray(X, dtype=np.float32), None


def embed_with(X, reducer) -> np.ndarray:  # noqa: ANN001
    """New rows' encoded features in an embedding made by `embedder` (its reducer or None)."""
    if reducer is not None:
        return reducer.transform(X).astype(np.float32)
    X = X.toarray() if sp.issparse(X) else X
    return np.ascontiguousarray(X, dtype=np.float32)


def metric_for(X: np.ndarray) -> str:
    """Datalab's default: cosine above 3 dimensions, euclidean otherwise."""
    from cleanlab.internal.neighbor.metric import HIGH_DIMENSION_CUTOFF

    return "cosine" if X.shape[1] > HIGH_DIMENSION_CUTOFF else "euclidean"


def _normed(X: np.ndarray, metric: str) -> np.ndarray:
    """The vectors as the index holds them (unit length for cosine)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(norms == 0, 1, norms)
    return np.ascontiguousarray(X, dtype=np.float32)


def _distances(scores: np.ndarray, metric: str) -> np.ndarray:
    """faiss's scores as the graph's distances (cosine distance, or euclidean)."""
    if metric == "cosine":
        return np.clip(1.0 - scores, 0.0, None)
    return np.sqrt(np.clip(scores, 0.0, None))


def _trained_ivf(X: np.ndarray, metric: str, seed: int):  # noqa: ANN202
    """An empty IVF-Flat index over the normed rows X, its k-means trained (`ivf_settings`)."""
    import faiss

    n, d = X.shape
    plan = ivf_settings(n)
    quantizer = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
    kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    index = faiss.IndexIVFFlat(quantizer, d, plan.nlist, kind)
    index.cp.niter = plan.niter
    index.cp.min_points_per_centroid = 1  # 32 rows per list is a measured choice, not a mistake
    rng = np.random.default_rng(seed)
    index.train(X[np.sort(rng.choice(n, size=plan.train_rows, replace=False))])
    index.nprobe = plan.nprobe
    return index


def build_index(X: np.ndarray, metric: str, exact: bool, seed: int):  # noqa: ANN201
    """A faiss index over the normed rows X: flat (exact) or IVF (approximate, `ivf_settings`);
    row i has id i."""
    import faiss

    if exact:
        index = faiss.IndexFlatIP(X.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(
            X.shape[1])
    else:
        index = _trained_ivf(X, metric, seed)
    index.add(X)
    return index


def _ivf_self_search(X: np.ndarray, k: int, metric: str, seed: int):  # noqa: ANN202
    """Every row of X searched in an IVF index of X: (scores, ids, index). The coarse
    quantizer runs once (each row's nprobe nearest lists; the first is the list it is added
    to), and the rows are searched list by list, so that consecutive queries scan the same
    lists while they are in cache: at 1M rows 19 + 103 s instead of 16 (add) + 182 s (search),
    the same neighbours as index.search."""
    from faiss.contrib.ivf_tools import add_preassigned

    index = _trained_ivf(X, metric, seed)
    coarse_d, coarse_i = index.quantizer.search(X, index.nprobe)
    add_preassigned(index, X, np.ascontiguousarray(coarse_i[:, 0]))
    order = np.argsort(coarse_i[:, 0], kind="stable")
    scores = np.empty((len(X), k), dtype=np.float32)
    ids = np.empty((len(X), k), dtype=np.int64)
    for start in range(0, len(X), 100_000):
        rows = order[start:start + 100_000]
        scores[rows], ids[rows] = index.search_preassigned(X[rows], k, coarse_i[rows],
                                                           coarse_d[rows])
    return scores, ids, index


def _search(X: np.ndarray, k: int, metric: str, exact: bool, seed: int,  # noqa: ANN202
            keep_index: bool = False):
    X = _normed(X, metric)
    if exact:
        index = build_index(X, metric, exact, seed)
        scores, idx = index.search(X, k + 1)
    else:
        scores, idx, index = _ivf_self_search(X, k + 1, metric, seed)
    return _distances(scores, metric), idx, (index if keep_index else None)


def knn_graph(X: np.ndarray, k: int = 10, exact: bool | None = None, seed: int = 0,
              keep_index: bool = False):  # noqa: ANN201
    """The kNN graph of X as Datalab expects it: CSR, row i holds its k nearest other rows with
    their distances in ascending order. Returns (graph, metric, exact), plus the faiss index
    when `keep_index`."""
    from cleanlab.internal.neighbor.knn_graph import correct_knn_graph

    n = X.shape[0]
    k = min(k, n - 1)
    exact = n <= EXACT_MAX_ROWS if exact is None else exact
    metric = metric_for(X)
    dist, idx, index = _search(X, k, metric, exact, seed, keep_index)
    graph = _graph_from(dist, idx, k)
    graph = correct_knn_graph(X, graph) if exact else graph
    return (graph, metric, exact, index) if keep_index else (graph, metric, exact)


def _graph_from(dist: np.ndarray, idx: np.ndarray, k: int) -> sp.csr_matrix:
    """Search results (each row's k + 1 nearest, itself usually among them) as the CSR graph."""
    n = len(idx)
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
    return sp.csr_matrix((nd.ravel().astype(np.float32), nbr.ravel(),
                          np.arange(0, n * k + 1, k)), shape=(n, n))


def graph_clusters(graph) -> np.ndarray:  # noqa: ANN001 - scipy CSR
    """The clusters Datalab's underperforming_group check finds in a kNN graph: scikit-learn's
    DBSCAN over the graph's distances with Datalab's settings (its defaults: eps 0.5, 5 samples;
    -1: noise). Computed with the graph so that an incremental run extends them with the graph
    (extend_clusters) instead of clustering every row again: DBSCAN took 3.7 s at 310,000 rows,
    the extension of 10,000 new rows 0.04 s."""
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=DBSCAN_EPS, metric="precomputed").fit_predict(graph.copy()).astype(
        np.int32)


def extend_clusters(stored: np.ndarray, stored_to_cur: np.ndarray, fresh: np.ndarray,
                    graph) -> np.ndarray:  # noqa: ANN001 - scipy CSR over the current rows
    """The clusters of an extended graph (extend_graph's arguments and result): a stored row
    keeps its cluster; a fresh row joins the cluster most of its neighbours within DBSCAN's
    radius belong to, or is noise (-1) when none does (as a DBSCAN border point would). Clusters
    that the new rows would join together or new dense regions wait for the next full run."""
    out = np.full(graph.shape[0], -1, dtype=np.int32)
    kept = stored_to_cur >= 0
    out[stored_to_cur[kept]] = stored[kept]
    if not len(fresh):
        return out
    k = int(np.diff(graph.indptr)[0])
    near = graph.data.reshape(-1, k)[fresh] <= DBSCAN_EPS
    votes = np.where(near, out[graph_neighbours(graph)[fresh]], -1)
    counts = np.where(votes >= 0, (votes[:, :, None] == votes[:, None, :]).sum(axis=2), 0)
    best = counts.argmax(axis=1)
    out[fresh] = np.where(counts.max(axis=1) > 0, votes[np.arange(len(fresh)), best], -1)
    return out


def graph_neighbours(graph) -> np.ndarray:  # noqa: ANN001 - scipy CSR, k entries per row
    """The n x k neighbour indices of a kNN graph in Datalab's CSR form."""
    k = int(np.diff(graph.indptr)[0])
    return graph.indices.reshape(-1, k)


def neighbour_agreement(graph, y: np.ndarray, suggested: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Share of each row's neighbours whose given label is the row's suggested label: a second
    opinion from another model family (its neighbours), used before relabelling."""
    near = graph_neighbours(graph)
    return np.count_nonzero(y[near] == suggested[:, None], axis=1) / near.shape[1]


def extend_graph(stored_emb: np.ndarray, stored_graph, stored_to_cur: np.ndarray,  # noqa: ANN001
                 fresh: np.ndarray, fresh_emb: np.ndarray, metric: str, exact: bool,
                 index=None) -> tuple[sp.csr_matrix, np.ndarray]:  # noqa: ANN001
    """The kNN graph of the current rows from a stored graph, without searching the rows it
    already holds. `stored_to_cur`: each stored row's current position (-1: gone or its
    features changed); `fresh`: the current positions of rows the stored graph does not hold
    (new or changed), `fresh_emb` their embedding in the stored embedding's space; `index`: the
    stored approximate faiss index (ids = stored rows), None to search the current rows exactly.

    The fresh rows, and the stored rows that lost a neighbour, are searched in full. Every other
    stored row keeps its neighbours, merged with the fresh rows that came closer than its k-th
    (found among each fresh row's 2k + 1 nearest: the reverse direction of the search). Returns
    (graph, the current rows' embedding)."""
    k = int(np.diff(stored_graph.indptr)[0])
    n_stored = len(stored_to_cur)
    kept = np.flatnonzero(stored_to_cur >= 0)
    n = len(kept) + len(fresh)
    emb = np.empty((n, stored_emb.shape[1]), dtype=np.float32)
    if len(kept) == n_stored and np.array_equal(stored_to_cur, np.arange(n_stored)):
        emb[:n_stored] = stored_emb  # every stored row in its place (rows were appended)
    else:
        emb[stored_to_cur[kept]] = stored_emb[kept]
    emb[fresh] = fresh_emb
    if index is None:  # exact: a flat index over the current rows, ids = positions
        index = build_index(_normed(emb, metric), metric, True, 0)
        lookup = np.arange(n)
    else:  # the stored IVF index: drop what is gone, add the fresh rows after the stored ids
        gone = np.flatnonzero(stored_to_cur < 0)
        if len(gone):
            index.remove_ids(gone.astype(np.int64))
        if len(fresh):
            index.add_with_ids(_normed(fresh_emb, metric), n_stored + np.arange(len(fresh)))
        lookup = np.concatenate([stored_to_cur, fresh]).astype(np.int64)

    def search(positions: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = index.search(_normed(emb[positions], metric), width)
        found = np.where(ids >= 0, lookup[np.clip(ids, 0, None)], -1)
        dist = np.where(found >= 0, _distances(scores, metric), np.inf)
        return dist, found

    nbr = np.full((n, k), -1, dtype=np.int64)
    nd = np.full((n, k), np.inf, dtype=np.float32)
    old_nbr = graph_neighbours(stored_graph)[kept]
    rows_at = stored_to_cur[kept]
    nbr[rows_at] = stored_to_cur[old_nbr]
    nd[rows_at] = stored_graph.data.reshape(-1, k)[kept]
    broken = rows_at[(nbr[rows_at] < 0).any(axis=1)]
    redo = np.concatenate([fresh, broken]).astype(np.int64)
    if len(redo):
        dist, found = search(redo, min(2 * k + 1, n))
        own = np.where(found == redo[:, None], -2, found)
        self_free = np.where(own >= 0, dist, np.inf)
        order = np.argsort(self_free, axis=1, kind="stable")[:, :k]
        nbr[redo] = np.take_along_axis(np.where(own >= 0, own, -1), order, axis=1)
        nd[redo] = np.take_along_axis(self_free, order, axis=1)
        # reverse direction: stored rows a fresh row came closer to than their k-th
        is_fresh = np.zeros(n, dtype=bool)
        is_fresh[fresh] = True
        f_dist, f_found = dist[: len(fresh)], found[: len(fresh)]
        src = np.repeat(fresh, f_found.shape[1])
        tgt, dd = f_found.ravel(), f_dist.ravel()
        ok = (tgt >= 0) & (tgt != src)
        ok[ok] &= ~is_fresh[tgt[ok]]
        redone = np.zeros(n, dtype=bool)
        redone[redo] = True
        ok[ok] &= ~redone[tgt[ok]]
        src, tgt, dd = src[ok], tgt[ok], dd[ok]
        closer = dd < nd[tgt, -1]
        src, tgt, dd = src[closer], tgt[closer], dd[closer]
        if len(tgt):
            rows = np.unique(tgt)
            at = np.searchsorted(rows, tgt)
            order = np.lexsort((dd, at))
            at, src, dd = at[order], src[order], dd[order]
            rank = np.arange(len(at)) - np.searchsorted(at, at)
            take = rank < k
            c_nbr = np.full((len(rows), k), -1, dtype=np.int64)
            c_d = np.full((len(rows), k), np.inf, dtype=np.float32)
            c_nbr[at[take], rank[take]] = src[take]
            c_d[at[take], rank[take]] = dd[take]
            both_d = np.concatenate([nd[rows], c_d], axis=1)
            both_n = np.concatenate([nbr[rows], c_nbr], axis=1)
            order = np.argsort(both_d, axis=1, kind="stable")[:, :k]
            nd[rows] = np.take_along_axis(both_d, order, axis=1)
            nbr[rows] = np.take_along_axis(both_n, order, axis=1)
    missing = (nbr < 0) | ~np.isfinite(nd)
    if missing.any():  # fewer than k found (a tiny dataset): pad as knn_graph does
        nd[missing] = nd[~missing].max(initial=1.0)
        nbr[missing] = ((np.arange(n)[:, None] + 1) % n).repeat(k, axis=1)[missing]
    graph = sp.csr_matrix((nd.ravel().astype(np.float32), nbr.ravel(),
                           np.arange(0, n * k + 1, k)), shape=(n, n))
    if exact:
        from cleanlab.internal.neighbor.knn_graph import correct_knn_graph

        graph = correct_knn_graph(emb, graph)
    return graph, emb


def serialize_index(index) -> np.ndarray:  # noqa: ANN001
    import faiss

    return faiss.serialize_index(index)


def deserialize_index(data: np.ndarray):  # noqa: ANN201
    import faiss

    index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
    faiss.extract_index_ivf(index).nprobe = NPROBE
    return index


@stage("knn")
def knn(design: Design, k: int, seed: int, work_dir: str, exact: bool | None = None,
        keep: bool = False, clusters: bool = False) -> Neighbours:
    """Build the shared kNN graph over the scored rows' dense embedding. `keep`: also keep
    what an incremental run needs to extend the graph (the reducer, the approximate index);
    `clusters`: also cluster the graph for underperforming_group (graph_clusters)."""
    import time

    started = time.perf_counter()
    X = design.embeddings.read()[design.positions.read()] if design.embeddings else (
        design.matrix.read())
    emb, reducer = embedder(X, seed)
    graph, metric, exact, index = knn_graph(emb, k, exact=exact, seed=seed, keep_index=True)
    work = Path(work_dir)
    get_run_logger().info("kNN graph: %d rows, k=%d, %s, %s search, %.1f s", emb.shape[0],
                          min(k, emb.shape[0] - 1), metric, "exact" if exact else "approximate",
                          time.perf_counter() - started)
    kept = {}
    if keep:
        kept["reducer"] = write_object(reducer, work, "models") if reducer is not None else None
        kept["index"] = None if exact else write_array(serialize_index(index), work, "models")
    if clusters:
        kept["clusters"] = write_array(graph_clusters(graph), work, "knn")
    return Neighbours(embedding=write_array(emb, work, "embedding"),
                      graph=write_matrix(graph, work, "knn"), metric=metric, exact=exact,
                      k=min(k, emb.shape[0] - 1), **kept)


@stage("extend-knn")
def extend_knn(snapshot: Snapshot, design: Design, stored: Neighbours, encoder: ObjectRef,
               plan: FeaturePlan, status: ArrayRef, work_dir: str) -> Neighbours:
    """An incremental run's kNN graph: the last full run's graph (`stored`, over its scored
    rows) extended by the new and changed rows, embedded with that run's encoder and reducer
    (extend_graph). `status`: plan-mode's (stored row, code) per scored row."""
    import time

    from tasks.incremental import DATA_CHANGED, NEW

    started = time.perf_counter()
    pos, codes = status.read().T
    same = (codes != NEW) & (codes != DATA_CHANGED)
    stored_graph = stored.graph.read()
    stored_to_cur = np.full(stored_graph.shape[0], -1, dtype=np.int64)
    stored_to_cur[pos[same]] = np.flatnonzero(same)
    fresh = np.flatnonzero(~same)
    stored_emb = stored.embedding.read()
    fresh_emb = np.empty((0, stored_emb.shape[1]), dtype=np.float32)  # nothing new: a rerun
    if len(fresh):
        rows = design.positions.read()[fresh]
        frame = prepare_frame(snapshot.table.read_rows(rows, list(plan.used)), plan)
        fresh_emb = embed_with(encoder.read().transform(frame),
                               stored.reducer.read() if stored.reducer else None)
    graph, emb = extend_graph(stored_emb, stored_graph, stored_to_cur, fresh,
                              fresh_emb, stored.metric, stored.exact,
                              deserialize_index(stored.index.read()) if stored.index else None)
    work = Path(work_dir)
    clusters = None if stored.clusters is None else write_array(extend_clusters(
        stored.clusters.read(), stored_to_cur, fresh, graph), work, "knn")
    get_run_logger().info("kNN graph extended: %d rows kept their neighbours' search, %d new or "
                          "changed rows searched, %s, %.1f s", int(same.sum()), len(fresh),
                          "exact" if stored.exact else "approximate",
                          time.perf_counter() - started)
    return Neighbours(embedding=write_array(emb, work, "embedding"),
                      graph=write_matrix(graph, work, "knn"), metric=stored.metric,
                      exact=stored.exact, k=stored.k, clusters=clusters)
