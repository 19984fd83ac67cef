"""Incremental runs of a dataset folder (tasks/incremental.py): the last full estimation's fold
models score what is new, the stored out-of-fold probabilities of unchanged rows are reused,
and a full re-estimation happens when it should. Flow tests run against the session's real
Prefect server and real DuckDB files, one shared warehouse, runs in sequence."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.featurize import FeaturePlan
from tasks.incremental import (
    DATA_CHANGED,
    LABEL_CHANGED,
    NEW,
    UNCHANGED,
    ModelStore,
    StoredModels,
    decide_mode,
    full_every_due,
    match_rows,
)
from tasks.spec import Incremental
from tests.conftest import blobs
from tests.warehouse import checksums, kill_at_planted_hang

ROOT = Path(__file__).resolve().parents[1]


# ---- pure parts ----------------------------------------------------------------------------------

def test_rows_are_matched_by_id_and_sorted_by_what_changed():
    pos, code = match_rows(np.array(["a", "b", "c", "d"]), np.array(["h1", "h2", "h3", "h4"]),
                           np.array(["x", "y", "x", "y"]),
                           np.array(["d", "b", "c", "e", "a"]),
                           np.array(["h4", "h2", "h9", "h5", "h1"]),
                           np.array(["y", "x", "x", "x", "x"]))
    assert pos.tolist() == [3, 1, 2, -1, 0]
    assert code.tolist() == [UNCHANGED, LABEL_CHANGED, DATA_CHANGED, NEW, UNCHANGED]


def _store(**kw) -> ModelStore:  # noqa: ANN003
    from tasks.choose import ModelChoice
    from tasks.store import TableRef

    values = {"dataset": "d", "created_at": datetime(2026, 1, 1, tzinfo=UTC),
              "fingerprint": "f", "task": "classification", "classes": ("a", "b"),
              "plan": FeaturePlan(numeric=("x",)), "n_folds": 3,
              "choice": ModelChoice(models=("logreg",), weights=(1.0,), reason="r"),
              "rows": TableRef(path="rows.parquet", sha256="0", n_rows=100)}
    return ModelStore(**{**values, **kw})


def test_the_stored_models_survive_their_json_in_runs_models():
    from tasks.choose import ModelChoice, Screened

    nan = float("nan")
    screened = Screened(model="hgb", rows=10, log_loss=nan, accuracy=nan, seconds=1.0,
                        projected_seconds=float("inf"), within_budget=False)
    store = _store(choice=ModelChoice(models=("logreg",), weights=(1.0,), reason="r",
                                      screening=(screened,)))
    assert ModelStore.model_validate_json(store.model_dump_json()) == store


def test_the_mode_is_full_when_it_should_be_and_says_why():
    now = datetime(2026, 1, 2, tzinfo=UTC)
    stored = StoredModels(run_id="r1", store=_store())
    codes = np.array([UNCHANGED] * 95 + [NEW] * 5)
    base = {"settings": Incremental(), "stored": stored, "fingerprint": "f",
            "task": "classification", "classes": ("a", "b"), "plan": FeaturePlan(numeric=("x",)),
            "codes": codes, "now": now}

    def mode(**kw):  # noqa: ANN003, ANN202
        return decide_mode(**{**base, **kw})

    assert mode()[0] == "incremental" and "5 new and 0 changed of 100 rows" in mode()[1]
    assert mode(full=True) == ("full", "--full asked for a full estimation")
    assert "no earlier full run" in mode(stored=StoredModels())[1]
    assert "estimation settings" in mode(fingerprint="g")[1]
    assert "new class 'c'" in mode(classes=("a", "b", "c"))[1]
    assert "x: numeric -> categorical" in mode(plan=FeaturePlan(categorical=("x",)))[1]
    assert "25.0% of 100" in mode(codes=np.array([UNCHANGED] * 75 + [NEW] * 25))[1]
    assert mode(codes=np.array([UNCHANGED] * 75 + [NEW] * 25),
                settings=Incremental(max_new_share=0.3))[0] == "incremental"
    relabelled = np.array([UNCHANGED] * 90 + [LABEL_CHANGED] * 10)
    assert "10 rows changed label" in mode(codes=relabelled)[1]
    assert "8.0 days old" in mode(now=now + timedelta(days=7))[1]
    assert mode(now=now + timedelta(days=7), settings=Incremental(full_every=None))[0] == \
        "incremental"
    nightly = Incremental(full_every="nightly")
    assert mode(settings=nightly)[0] == "incremental"
    assert "nightly" in mode(settings=nightly, scheduled=True)[1]
    assert "incremental.enabled" in mode(settings=Incremental(enabled=False))[1]
    assert "tag sets are re-estimated" in mode(task="multilabel")[1]


def test_unchanged_rows_keep_their_verdict_and_changed_rows_do_not():
    previous = pd.DataFrame({
        "row_id": ["a", "b", "c", "d", "e"], "given_label": ["x", "x", "y", "y", "x"],
        "data_hash": ["1", "2", "3", "4", "5"], "label_score": [0.1, 0.2, 0.3, 0.4, 0.5],
        "suggested_label": ["y", "y", "x", "y", "x"],
        "is_label_issue": [True, False, True, False, None]})
    current = pd.DataFrame({
        "row_id": ["a", "b", "c", "d", "e", "f"], "given_label": ["x", "y", "y", "y", "x", "x"],
        "data_hash": ["1", "2", "9", "4", "5", "6"], "label_score": [0.1, 0.2, 0.3, 0.41, 0.5,
                                                                     0.6],
        "suggested_label": ["y", "y", "x", "y", "x", "x"],
        "is_label_issue": [False, False, True, True, False, False]})
    from tasks.incremental import pin_verdicts

    # a: unchanged (keeps True); b: label changed; c: data changed; d: probabilities changed;
    # e: was not scored before; f: new
    assert pin_verdicts(current, previous).tolist() == [True, False, False, False, False, False]


def test_full_every_reads_durations():
    made = datetime(2026, 1, 1, tzinfo=UTC)
    assert full_every_due(Incremental(full_every="12h"), made, made + timedelta(hours=13), False)
    assert not full_every_due(Incremental(full_every="2w"), made, made + timedelta(days=13),
                              False)
    with pytest.raises(ValueError, match="not a duration"):
        Incremental(full_every="weekly")


def _extend_case(n: int, m: int, exact: bool, seed: int = 0):  # noqa: ANN202
    """A stored graph over n rows; 7 of them change (moved), m new rows come: the extended
    graph, the same graph built anew, the current rows and the new/changed rows' positions."""
    from tasks.knn import deserialize_index, extend_graph, knn_graph, serialize_index

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + m, 8)).astype(np.float32)
    X[:, :2] *= 3
    stored, metric, exact, index = knn_graph(X[:n], 10, exact=exact, keep_index=True)
    changed = rng.choice(n, 7, replace=False)
    kept = np.setdiff1d(np.arange(n), changed)
    stored_to_cur = np.full(n, -1)
    stored_to_cur[kept] = np.arange(len(kept))  # current order: kept, new, changed rows
    fresh_emb = np.concatenate([X[n:], X[changed] + 0.5]).astype(np.float32)
    fresh = np.arange(len(kept), len(kept) + len(fresh_emb))
    graph, emb = extend_graph(X[:n], stored, stored_to_cur, fresh, fresh_emb, metric, exact,
                              None if exact else deserialize_index(serialize_index(index)))
    current = np.concatenate([X[kept], fresh_emb])
    assert np.array_equal(emb, current)
    return graph, knn_graph(current, 10, exact=exact)[0], current, fresh


def _recall(a, b, rows: np.ndarray) -> float:  # noqa: ANN001
    from tasks.knn import graph_neighbours

    na, nb = graph_neighbours(a)[rows], graph_neighbours(b)[rows]
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(na, nb, strict=True)]))


def test_an_extended_exact_graph_is_the_graph_built_anew():
    graph, rebuilt, current, fresh = _extend_case(400, 30, exact=True)
    assert graph.shape == rebuilt.shape == (len(current), len(current))
    assert _recall(graph, rebuilt, fresh) == 1.0  # new and changed rows: searched in full
    assert _recall(graph, rebuilt, np.arange(len(current))) >= 0.97  # the rest: merged
    k = 10
    assert (np.diff(graph.data.reshape(-1, k), axis=1) >= 0).all()  # ascending, as Datalab's
    assert (graph.indices.reshape(-1, k) != np.arange(len(current))[:, None]).all()  # no self


def test_a_graph_extended_by_nothing_is_the_stored_graph():
    """A rerun with nothing new (the nightly run of an unchanged dataset) extends by no rows."""
    from tasks.knn import deserialize_index, extend_graph, knn_graph, serialize_index

    X = np.random.default_rng(5).normal(size=(6_000, 8)).astype(np.float32)
    for exact in (True, False):
        stored, metric, exact, index = knn_graph(X, 10, exact=exact, keep_index=True)
        graph, emb = extend_graph(X, stored, np.arange(len(X)), np.array([], dtype=np.int64),
                                  np.empty((0, 8), dtype=np.float32), metric, exact,
                                  None if exact else deserialize_index(serialize_index(index)))
        assert np.array_equal(emb, X)
        assert np.array_equal(graph.indices, stored.indices)


def test_extended_clusters_are_the_clusters_of_the_whole_graph():
    """New rows of a known cluster join it; a new row far from every cluster is noise."""
    from tasks.knn import extend_clusters, extend_graph, graph_clusters, knn_graph

    rng = np.random.default_rng(7)
    centers = np.array([[0, 0], [6, 0], [0, 6], [6, 6]], float)
    blob = rng.integers(0, 4, 2_300)
    X = (centers[blob] + rng.normal(0, 0.4, (2_300, 2))).astype(np.float32)
    X[-5:] = np.array([[40, -40], [-40, 40], [80, 80], [-80, -80], [120, 0]], np.float32)
    n = 2_000
    stored, metric, exact = knn_graph(X[:n], 10, exact=True)
    stored_clusters = graph_clusters(stored)
    fresh = np.arange(n, len(X))
    graph, _ = extend_graph(X[:n], stored, np.arange(n), fresh, X[n:], metric, exact)
    extended = extend_clusters(stored_clusters, np.arange(n), fresh, graph)
    assert np.array_equal(extended[:n], stored_clusters)  # stored rows keep theirs
    rebuilt = graph_clusters(knn_graph(X, 10, exact=True)[0])
    # the rebuilt clustering's ids in the stored clustering's names (majority over stored rows)
    names = {c: np.bincount(stored_clusters[:n][rebuilt[:n] == c] + 1).argmax() - 1
             for c in set(rebuilt[:n]) - {-1}}
    expected = np.array([names.get(c, -1) for c in rebuilt[fresh]])
    assert (extended[fresh] == expected).mean() >= 0.95
    assert (extended[-5:] == -1).all()


def test_an_extended_approximate_graph_is_as_close_to_exact_as_one_built_anew():
    from tasks.knn import _normed

    graph, rebuilt, current, fresh = _extend_case(6_000, 200, exact=False, seed=3)
    sims = _normed(current, "cosine") @ _normed(current, "cosine").T
    np.fill_diagonal(sims, -np.inf)
    truth = np.argsort(-sims, axis=1)[:, :10]
    import scipy.sparse as sp

    exact = sp.csr_matrix((np.ones(truth.size), truth.ravel(),
                           np.arange(0, truth.size + 1, 10)), shape=sims.shape)
    rows = np.arange(len(current))
    assert _recall(graph, exact, rows) >= _recall(rebuilt, exact, rows) - 0.02
    assert _recall(graph, exact, fresh) >= _recall(rebuilt, exact, fresh) - 0.05


# ---- flows ---------------------------------------------------------------------------------------

def _folder(root: Path, name: str, settings: str) -> Path:
    folder = root / "data" / "landing" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cleanset.yaml").write_text(settings)
    return folder


def _write(path: Path, frame: pd.DataFrame, mtime: float) -> Path:
    frame.to_csv(path, index=False)
    os.utime(path, (mtime, mtime))
    return path


def _data(n: int = 900, seed: int = 1) -> pd.DataFrame:
    """blobs with a categorical column (the stored encoder one-hot encodes it) and 8% flipped
    labels (findable label issues)."""
    frame = blobs(n, seed=seed)
    rng = np.random.default_rng(seed)
    frame["color"] = np.where(frame["x0"] > frame["x0"].median(), "red", "blue")
    flip = rng.random(n) < 0.08
    frame.loc[flip, "label"] = frame.loc[flip, "label"].map(
        {"ant": "bee", "bee": "cat", "cat": "ant"})
    frame.insert(0, "key", [f"k{i}" for i in range(n)])
    return frame


def _verdicts(db: str, run_id: str) -> pd.DataFrame:
    with duckdb.connect(db, read_only=True) as con:
        return con.execute("SELECT row_id, is_label_issue, label_score, action FROM issues "
                           "WHERE run_id = ? ORDER BY row_id", [run_id]).df().set_index("row_id")


@pytest.mark.usefixtures("prefect_server")
def test_full_then_incremental_then_full_when_it_should(workdir):
    from flows.folders import clean_folder

    db = str(workdir / "data" / "warehouse.duckdb")
    folder = _folder(workdir, "growing", "label: label\nid: key\nmodel: logreg\nfolds: 3\n")
    data = _data()
    _write(folder / "b1.csv", data.iloc[:600], mtime=1_000)
    first = clean_folder(str(folder), db=db)
    assert (first.mode, first.models_run_id) == ("full", first.run_id)
    assert "no earlier full run" in first.mode_reason
    assert {"encode", "knn"} <= {st["stage"] for st in first.stages}

    _write(folder / "b2.csv", data.iloc[600:630], mtime=2_000)  # 5% new rows
    second = clean_folder(str(folder), db=db)
    assert second.mode == "incremental", second.mode_reason
    assert second.models_run_id == first.run_id and second.n_new_rows == 30
    assert second.n_rows == 630 and second.run_id != first.run_id
    ran = {st["stage"] for st in second.stages}
    assert "extend-knn" in ran and "knn" not in ran  # the full run's graph, extended
    assert "encode" not in ran  # no fold fits, no graph search: no encoded matrix needed
    before, after = _verdicts(db, first.run_id), _verdicts(db, second.run_id)
    old = before.index
    assert (after.loc[old, "label_score"].to_numpy() == pytest.approx(
        before["label_score"].to_numpy()))  # stored out-of-fold probabilities reused
    assert after.loc[old, "is_label_issue"].tolist() == before["is_label_issue"].tolist()
    new = after.index.difference(old)
    assert len(new) == 30 and after.loc[new, "label_score"].notna().all()
    flipped = data.set_index("key").index[600:630][
        (data.iloc[600:630]["label"] != blobs(900, seed=1).iloc[600:630]["label"]).to_numpy()]
    assert after.loc[flipped, "is_label_issue"].mean() >= 0.5  # new rows' planted flips found
    changed = (after.loc[old, "action"] != before["action"]).sum()
    assert second.n_verdicts_changed == changed  # only kNN-type findings of the new rows
    assert second.verdicts_changed in ("", f"neighbours changed {changed}")
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT mode, models_run_id, n_new_rows, models IS NULL, "
                           "n_verdicts_changed FROM runs WHERE run_id = ?",
                           [second.run_id]).fetchall() == [
            ("incremental", first.run_id, 30, True, changed)]

    forced = clean_folder(str(folder), db=db, full=True)  # --full
    assert (forced.mode, forced.mode_reason) == ("full", "--full asked for a full estimation")
    assert forced.models_run_id == forced.run_id
    assert forced.verdicts_changed in ("",) or "model changed" in forced.verdicts_changed

    dogs = data.iloc[630:650].copy()  # a new class
    dogs["label"] = "dog"
    _write(folder / "b3.csv", dogs, mtime=3_000)
    third = clean_folder(str(folder), db=db)
    assert third.mode == "full" and "new class 'dog'" in third.mode_reason

    _write(folder / "b4.csv", data.iloc[650:900], mtime=4_000)  # 250 of 900 rows: 28% new
    fourth = clean_folder(str(folder), db=db)
    assert fourth.mode == "full" and "incremental.max_new_share" in fourth.mode_reason

    _write(folder / "b5.csv", data.iloc[:10].assign(key=[f"z{i}" for i in range(10)]),
           mtime=5_000)
    result = CliRunner().invoke(app, ["run", f"{folder}/", "--db", db, "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"mode: incremental (10 new and 0 changed of 910 rows (1.1%) scored by the fold " \
           f"models of run {fourth.run_id}); verdicts: " in result.output
    with duckdb.connect(db, read_only=True) as con:  # copies of earlier rows: found in the graph
        near = dict(con.execute(
            "SELECT row_id, is_near_duplicate_issue FROM issues WHERE run_id = (SELECT run_id "
            "FROM runs WHERE dataset = 'growing' ORDER BY finished_at DESC LIMIT 1) AND "
            "(row_id LIKE 'z%' OR row_id IN (SELECT 'k' || i FROM range(10) t(i)))").fetchall())
    assert len(near) == 20 and all(near.values()), near


@pytest.mark.usefixtures("prefect_server")
def test_a_killed_incremental_run_then_a_rerun_loses_no_row(workdir):
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
           "PYTHONPATH": str(ROOT)}
    folder = _folder(workdir, "growing", "label: label\nid: key\nmodel: logreg\nfolds: 3\n")
    data = _data(400)
    _write(folder / "b1.csv", data.iloc[:360], mtime=1_000)
    cli = ["run", "data/landing/growing/", "--db", "wh.duckdb", "--quiet"]
    assert CliRunner().invoke(app, cli).exit_code == 0
    db = workdir / "wh.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        (full_run, models), = con.execute("SELECT run_id, models FROM runs").fetchall()
    store = ModelStore.model_validate_json(models)
    before = checksums(db)
    _write(folder / "b2.csv", data.iloc[360:380], mtime=2_000)
    kill_at_planted_hang(cli, workdir, env, "publish")
    assert checksums(db) == before  # nothing of the killed run
    assert all(Path(f).is_file() for f in store.files)
    result = CliRunner().invoke(app, cli)
    assert result.exit_code == 0, result.output
    assert "mode: incremental (20 new" in result.output
    with duckdb.connect(str(db), read_only=True) as con:
        runs = con.execute("SELECT mode, n_rows, models_run_id FROM runs ORDER BY finished_at"
                           ).fetchall()
        assert runs == [("full", 360, full_run), ("incremental", 380, full_run)]
        assert con.execute("SELECT count(*) FROM growing_clean").fetchall()[0][0] >= 340
        latest = con.execute("SELECT count(DISTINCT row_id) FROM issues WHERE run_id = (SELECT "
                             "run_id FROM runs WHERE mode = 'incremental')").fetchall()
        assert latest == [(380,)]
