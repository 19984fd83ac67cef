"""incremental: a dataset folder's run that costs what is new.

A full run of a dataset folder keeps what its estimation made (`keep-models`): the fitted fold
models (one joblib file per model and fold, `<work>/models/`), the fitted feature encoding, and
each scored row's out-of-fold probabilities with the row's id, a hash of its feature values, its
label and its fold (one Parquet table, `<work>/models/`). The `ModelStore` naming them is
recorded in `runs.models` of that run. A later run of the dataset (`plan-mode`) compares its
scored rows with the stored ones and decides:

- **full** (everything re-estimated, the new models kept) on `--full`, when nothing is stored
  (or its files are gone), when the estimation settings changed (`estimation_fingerprint`), the
  task, the classes (a new class) or the feature plan changed, when the last full estimation is
  older than `incremental.full_every` (or, with `full_every: nightly`, when the nightly flow
  started the run), when new or changed rows exceed `incremental.max_new_share` of the scored
  rows, or rows whose label changed exceed `incremental.max_relabelled_share`;
- **incremental** otherwise (`incremental-pred-probs`): rows whose features and label are as
  stored keep their stored out-of-fold probabilities; new rows get the mean of the fold models'
  probabilities (none of them saw these rows); a stored row whose label or features changed gets
  its own fold's model's (the one model that never trained on it). The kNN family's share comes
  from the run's own kNN graph, as in a full run. Detection then runs over the whole dataset,
  with the new rows in the kNN graph.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, field_validator

from tasks.caching import stage
from tasks.choose import ModelChoice
from tasks.detect import Detection, data_hashes, health, summarize
from tasks.featurize import Design, FeaturePlan, prepare_frame
from tasks.ingest import Snapshot
from tasks.knn import Neighbours
from tasks.spec import DatasetSpec, Incremental, duration_seconds
from tasks.store import ArrayRef, ObjectRef, TableRef, copy_query, write_array, write_table
from tasks.warehouse import connect, read_dicts

FORMAT = 1  # of the stored models; a different one is re-estimated
UNCHANGED, LABEL_CHANGED, DATA_CHANGED, NEW = 0, 1, 2, 3
# The settings that change the estimation (a change re-estimates): not the policy, issue types,
# retention, alerts or the batch audit, which act on the probabilities afterwards.
ESTIMATION_SETTINGS = ("label", "task", "id", "text", "features", "roles", "group", "slices",
                       "model", "budget", "prune", "embeddings", "pred_probs",
                       "pred_prob_columns", "folds", "seed", "knn_k", "knn_exact")


class ModelStore(BaseModel):
    """What a full run's estimation kept for incremental runs (recorded in `runs.models`)."""

    model_config = ConfigDict(frozen=True)
    format: int = FORMAT
    dataset: str
    created_at: datetime
    fingerprint: str  # estimation_fingerprint of the settings it was made with
    task: str
    classes: tuple[str, ...]
    plan: FeaturePlan
    choice: ModelChoice
    n_folds: int
    rows: TableRef  # row_id, data_hash, label, fold, p0..p{K-1} of the scored rows
    encoder: ObjectRef | None = None  # the fitted feature encoding (linear families' input)
    models: dict[str, tuple[ObjectRef, ...]] = {}  # fitted model -> its fold models
    # the full run's kNN graph over the same rows, with its reducer and approximate index: an
    # incremental run extends it (tasks/knn.extend_knn) instead of searching every row again
    neighbours: Neighbours | None = None

    @field_validator("choice")
    @classmethod
    def _without_screening(cls, choice: ModelChoice) -> ModelChoice:
        """The screening table is in `model_screening`; its NaN/inf would not survive JSON."""
        return choice.model_copy(update={"screening": ()})

    @property
    def files(self) -> list[str]:
        refs = [self.rows, *([self.encoder] if self.encoder else []),
                *(r for refs in self.models.values() for r in refs)]
        return [r.path for r in refs] + (self.neighbours.files if self.neighbours else [])


class StoredModels(BaseModel):
    """The dataset's last full estimation that kept its models, or why there is none."""

    model_config = ConfigDict(frozen=True)
    run_id: str | None = None
    store: ModelStore | None = None
    note: str = "no earlier full run of the dataset kept its models"


class ModeDecision(BaseModel):
    """Full or incremental, and why; for an incremental run which stored rows each scored row
    matches (`status`: n x 2, the stored row's index or -1, and its UNCHANGED / LABEL_CHANGED /
    DATA_CHANGED / NEW code)."""

    model_config = ConfigDict(frozen=True)
    mode: Literal["full", "incremental"]
    reason: str
    models_run_id: str | None = None  # incremental: the full run whose models scored
    n_scored: int = 0
    n_new: int = 0
    n_label_changed: int = 0
    n_data_changed: int = 0
    status: ArrayRef | None = None

    @property
    def incremental(self) -> bool:
        return self.mode == "incremental"


class IncrementalProbs(BaseModel):
    model_config = ConfigDict(frozen=True)
    pred_probs: ArrayRef
    unlabeled: ArrayRef | None = None
    n_rescored: int = 0


# ---- pure parts ---------------------------------------------------------------------------------

def estimation_fingerprint(spec: DatasetSpec) -> str:
    """Hash of the settings that change the estimation, and of scikit-learn's version (a stored
    model is a pickled scikit-learn object) and the store's format."""
    payload = spec.model_dump(mode="json", include=set(ESTIMATION_SETTINGS))
    payload["_"] = [FORMAT, version("scikit-learn")]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def label_texts(design: Design, y: np.ndarray) -> np.ndarray:
    """The scored rows' training labels as text (class names; a regression target's value)."""
    if design.regression:
        return np.array([f"{float(v):.17g}" for v in y], dtype=object)
    names = np.asarray(design.classes, dtype=object)
    if y.ndim == 2:  # multilabel: the scored tags as text
        return np.array([";".join(names[row.astype(bool)]) for row in y], dtype=object)
    return names[y]


def _id_texts(ids: np.ndarray | pd.Series) -> np.ndarray:
    """Row ids as an object array of str (a str array stays as it is)."""
    values = np.asarray(ids, dtype=object)
    if len(values) and pd.api.types.infer_dtype(values, skipna=False) != "string":
        values = values.astype(str).astype(object)  # numbers, None: their text
    return values


def align_ids(stored_ids: np.ndarray | pd.Series, ids: np.ndarray | pd.Series) -> np.ndarray:
    """For each id of `ids`, the position of the last stored row with that id as text (-1:
    none). A dataset that grows keeps its earlier rows in place (batches in arrival order), so
    ids equal to the stored one at the same position are taken as they are and only the other
    rows are looked up (the lookup of a million text ids cost 1.4 s in plan-mode and again in
    stabilize)."""
    stored, current = _id_texts(stored_ids), _id_texts(ids)
    pos = np.full(len(current), -1, dtype=np.int64)
    index = pd.Index(stored)
    if not index.is_unique:  # the last row of each id
        last = pd.Series(np.arange(len(index)), index=index).groupby(level=0).last()
        return last.reindex(current).fillna(-1).to_numpy(dtype=np.int64)
    m = min(len(stored), len(current))
    in_place = np.zeros(len(current), dtype=bool)
    in_place[:m] = stored[:m] == current[:m]
    pos[in_place] = np.flatnonzero(in_place)
    rest = np.flatnonzero(~in_place)
    if len(rest):
        pos[rest] = index.get_indexer(current[rest])
    return pos


def match_rows(stored_ids: np.ndarray, stored_hash: np.ndarray, stored_label: np.ndarray,
               ids: np.ndarray, hashes: np.ndarray, labels: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """For each current row: the index of the stored row with its id (-1: none) and its code,
    UNCHANGED, LABEL_CHANGED, DATA_CHANGED (features changed, whatever the label) or NEW."""
    pos = align_ids(stored_ids, ids)
    code = np.full(len(ids), NEW, dtype=np.int64)
    old = pos >= 0
    safe = np.where(old, pos, 0)
    code[old] = UNCHANGED
    code[old & (np.asarray(stored_label, dtype=object)[safe] != np.asarray(labels, dtype=object))
         ] = LABEL_CHANGED
    code[old & (np.asarray(stored_hash, dtype=object)[safe] != np.asarray(hashes, dtype=object))
         ] = DATA_CHANGED
    return pos.astype(np.int64), code


def full_every_due(settings: Incremental, created_at: datetime, now: datetime,
                   scheduled: bool) -> str:
    """Why the cadence asks for a full estimation now ('' when it does not)."""
    every = settings.full_every
    if every is None:
        return ""
    if str(every).strip() == "nightly":
        return "the nightly run re-estimates (incremental.full_every: nightly)" if scheduled \
            else ""
    age = (now - created_at).total_seconds()
    if age >= duration_seconds(every):
        return (f"the last full estimation is {age / 86400:.1f} days old (incremental.full_every:"
                f" {every})")
    return ""


def plan_differences(stored: FeaturePlan, current: FeaturePlan) -> list[str]:
    """The columns whose role changed between two feature plans, as `col: old -> new`."""
    out = []
    for col in sorted(set(stored.used) | set(current.used)):
        a, b = stored.role_of(col), current.role_of(col)
        if a != b:
            out.append(f"{col}: {a} -> {b}")
    return out


def decide_mode(*, settings: Incremental, stored: StoredModels, fingerprint: str,
                task: str, classes: tuple[str, ...], plan: FeaturePlan, codes: np.ndarray | None,
                now: datetime, full: bool = False, scheduled: bool = False) -> tuple[str, str]:
    """(mode, why). `codes`: match_rows's code per scored row (None when nothing is stored)."""
    if full:
        return "full", "--full asked for a full estimation"
    if task == "multilabel":
        return "full", "tag sets are re-estimated every run (incremental runs: classes, values)"
    if not settings.enabled:
        return "full", "incremental runs are off (incremental.enabled: false)"
    store = stored.store
    if store is None:
        return "full", stored.note
    if store.fingerprint != fingerprint:
        return "full", (f"the estimation settings (or scikit-learn) changed since run "
                        f"{stored.run_id}")
    if store.task != task:
        return "full", f"the task changed ({store.task} -> {task})"
    if tuple(store.classes) != tuple(classes):
        new = [c for c in classes if c not in store.classes]
        gone = [c for c in store.classes if c not in classes]
        parts = ([f"new class {', '.join(map(repr, new[:5]))}"] if new else []) + (
            [f"class {', '.join(map(repr, gone[:5]))} no longer scored"] if gone else [])
        return "full", "the classes changed: " + "; ".join(parts or ["order"])
    changed = plan_differences(store.plan, plan)
    if changed:
        return "full", "the feature plan changed: " + ", ".join(changed[:5])
    due = full_every_due(settings, store.created_at, now, scheduled)
    if due:
        return "full", due
    codes = np.asarray(codes if codes is not None else [], dtype=np.int64)
    n = max(len(codes), 1)
    fresh = int((codes != UNCHANGED).sum())
    relabelled = int((codes == LABEL_CHANGED).sum())
    if fresh / n > settings.max_new_share:
        return "full", (f"{fresh:,} new or changed rows are {fresh / n:.1%} of {len(codes):,} "
                        f"(incremental.max_new_share: {settings.max_new_share:.0%})")
    if relabelled / n > settings.max_relabelled_share:
        return "full", (f"{relabelled:,} rows changed label since the full estimation "
                        f"({relabelled / n:.1%}; incremental.max_relabelled_share: "
                        f"{settings.max_relabelled_share:.0%})")
    return "incremental", (f"{int((codes == NEW).sum()):,} new and "
                           f"{int(((codes == LABEL_CHANGED) | (codes == DATA_CHANGED)).sum()):,}"
                           f" changed of {len(codes):,} rows ({fresh / n:.1%}) scored by the "
                           f"fold models of run {stored.run_id}")


def score_rows(models: dict[str, list], frame: pd.DataFrame, plan: FeaturePlan, encoder,  # noqa: ANN001
               own_fold: np.ndarray) -> dict[str, np.ndarray]:
    """Each fitted model's probabilities (or predictions) for prepared rows: the mean of its
    fold models where `own_fold` is -1 (rows no fold model saw), else the row's own fold's model
    (the one that never trained on it)."""
    from tasks.estimate import LINEAR, family

    high = frame[list(plan.high_cardinality)].to_numpy(dtype=object) \
        if plan.high_cardinality else None
    encoded = None
    out = {}
    for model, fold_models in models.items():
        if family(model) in LINEAR:
            if encoded is None:
                encoded = encoder.transform(frame)
            X = encoded
        else:
            X = frame
        per_fold = np.stack([fm.predict(X, high) for fm in fold_models]).astype(np.float64)
        scores = per_fold.mean(axis=0)
        own = own_fold >= 0
        if own.any():
            scores[own] = per_fold[own_fold[own], np.flatnonzero(own)]
        out[model] = scores
    return out


def combine_scores(per_model: dict[str, np.ndarray], knn: np.ndarray | None,
                   choice: ModelChoice, regression: bool) -> np.ndarray:
    """The fitted models' and the kNN family's scores weighted as the full run's ensemble."""
    from tasks.estimate import combine

    weights = dict(zip(choice.models, choice.weights or [1.0] * len(choice.models),
                       strict=True))
    parts, w = [], []
    for model, weight in weights.items():
        if model == "knn":
            if knn is None:
                continue
            parts.append(knn)
        else:
            parts.append(per_model[model])
        w.append(weight)
    return combine(parts, tuple(w), regression)


# ---- stages -------------------------------------------------------------------------------------

def latest_models(db: Path, dataset: str) -> StoredModels:
    """The dataset's latest completed run that kept its models, its files checked."""
    rows = read_dicts(db, "runs", "SELECT * FROM runs WHERE dataset = ? AND status = 'completed'"
                      " ORDER BY finished_at DESC NULLS LAST", [dataset])
    for r in rows:
        if not r.get("models"):
            continue
        try:
            store = ModelStore.model_validate_json(r["models"])
        except ValueError as exc:
            return StoredModels(note=f"the stored models of run {r['run_id']} are unreadable "
                                f"({str(exc).splitlines()[0]})")
        if store.format != FORMAT:
            return StoredModels(note=f"the stored models of run {r['run_id']} have an older "
                                "format")
        missing = [f for f in store.files if not Path(f).is_file()]
        if missing:
            return StoredModels(note=f"the stored models of run {r['run_id']} are gone from "
                                f"the work folder ({Path(missing[0]).name}, ...)")
        return StoredModels(run_id=r["run_id"], store=store)
    return StoredModels()


@stage("find-models", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 10])
def find_models(db: str, dataset: str) -> StoredModels:
    """The last full estimation's kept models (the warehouse's `runs.models`)."""
    found = latest_models(Path(db), dataset)
    get_run_logger().info("stored models: %s", f"run {found.run_id}" if found.store
                          else found.note)
    return found


def _current_rows(snapshot: Snapshot, design: Design, plan: FeaturePlan
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    positions = design.positions.read()
    df = snapshot.table.read(columns=[snapshot.id_column, *plan.used])
    ids = df[snapshot.id_column].astype(str).to_numpy()[positions]
    if design.embeddings is not None:
        features = pd.DataFrame(design.embeddings.read())
    else:
        features = df[list(plan.used)]
    hashes = data_hashes(features.iloc[positions].reset_index(drop=True))
    return ids, hashes, label_texts(design, design.labels.read())


@stage("plan-mode", cache_policy=NO_CACHE)
def plan_mode(spec: DatasetSpec, snapshot: Snapshot, design: Design, stored: StoredModels,
              work_dir: str, full: bool = False, scheduled: bool = False) -> ModeDecision:
    """Full or incremental, and why (decide_mode); never cached: it depends on the time."""
    logger = get_run_logger()
    store = stored.store
    pos = codes = None
    if store is not None and design.embeddings is None and store.task == design.task and \
            design.task != "multilabel":
        rows = store.rows.read(columns=["row_id", "data_hash", "label"])
        ids, hashes, labels = _current_rows(snapshot, design, store.plan)
        pos, codes = match_rows(rows["row_id"].to_numpy(), rows["data_hash"].to_numpy(),
                                rows["label"].to_numpy(), ids, hashes, labels)
    elif store is not None:
        stored = StoredModels(note="supplied --embeddings: every run re-estimates")
    mode, reason = decide_mode(
        settings=spec.incremental, stored=stored, fingerprint=estimation_fingerprint(spec),
        task=design.task, classes=design.classes, plan=design.plan, codes=codes,
        now=datetime.now(UTC), full=full, scheduled=scheduled)
    logger.info("mode: %s (%s)", mode, reason)
    if mode == "full" or codes is None:
        return ModeDecision(mode="full", reason=reason)
    return ModeDecision(
        mode="incremental", reason=reason, models_run_id=stored.run_id, n_scored=len(codes),
        n_new=int((codes == NEW).sum()), n_label_changed=int((codes == LABEL_CHANGED).sum()),
        n_data_changed=int((codes == DATA_CHANGED).sum()),
        status=write_array(np.stack([pos, codes], axis=1), Path(work_dir), "design"))


@stage("keep-models")
def keep_models(snapshot: Snapshot, design: Design, choice: ModelChoice,
                parts: dict[str, list], pred_probs: ArrayRef, fingerprint: str, dataset: str,
                work_dir: str, neighbours: Neighbours | None = None) -> ModelStore | None:
    """Keep a full run's estimation for incremental runs: the fold models (written by the
    estimate-fold tasks), the encoder, the scored rows' out-of-fold probabilities and the kNN
    graph over them (`neighbours`, built with `keep`)."""
    models = {m: tuple(p.model for p in parts.get(m, [])) for m in choice.fitted}
    missing = any(not refs or any(r is None for r in refs) for refs in models.values())
    if missing or (
            design.encoder is None and design.embeddings is None):
        get_run_logger().info("the fold models were not kept: incremental runs need a full "
                              "run first")
        return None
    ids, hashes, labels = _current_rows(snapshot, design, design.plan)
    probs = pred_probs.read()
    table = pd.DataFrame({"row_id": ids, "data_hash": hashes, "label": labels,
                          "fold": design.folds.read()})
    for k in range(probs.shape[1]):
        table[f"p{k}"] = probs[:, k]
    rows = write_table(table, Path(work_dir), "models")
    return ModelStore(dataset=dataset, created_at=datetime.now(UTC), fingerprint=fingerprint,
                      task=design.task, classes=design.classes, plan=design.plan,
                      choice=choice,
                      n_folds=design.n_folds, rows=rows, encoder=design.encoder, models=models,
                      neighbours=neighbours)


@stage("incremental-pred-probs")
def incremental_pred_probs(snapshot: Snapshot, design: Design, store: ModelStore,
                           status: ArrayRef, work_dir: str, neighbours=None,  # noqa: ANN001
                           ) -> IncrementalProbs:
    """The scored rows' probabilities without refitting: stored for unchanged rows, the stored
    fold models' for new and changed rows (score_rows), and the unlabeled rows' (mean of the
    fold models, as a full run gives them)."""
    from tasks.estimate import knn_mean, knn_probs

    pos, codes = status.read().T
    plan, folds_of = store.plan, store.rows.read(columns=["fold"])["fold"].to_numpy()
    width = 1 if design.regression else len(design.classes)
    stored = store.rows.read(columns=[f"p{k}" for k in range(width)]).to_numpy()
    dtype = np.float64 if design.regression else np.float32
    probs = np.zeros((len(codes), width), dtype=dtype)
    keep = codes == UNCHANGED
    probs[keep] = stored[pos[keep]]
    redo = np.flatnonzero(~keep)
    models = {m: [r.read() for r in refs] for m, refs in store.models.items()}
    encoder = store.encoder.read() if store.encoder is not None else None
    positions = design.positions.read()
    y = design.labels.read()
    if len(redo):
        frame = prepare_frame(snapshot.table.read_rows(positions[redo], list(plan.used)), plan)
        own = np.where(codes[redo] == NEW, -1, folds_of[np.clip(pos[redo], 0, None)])
        per_model = score_rows(models, frame, plan, encoder, own.astype(np.int64))
        knn = None
        if "knn" in store.choice.models and neighbours is not None:
            graph = neighbours.graph.read()
            knn = (knn_mean(graph, y) if design.regression else
                   knn_probs(graph, y, width))[redo]
        probs[redo] = combine_scores(per_model, knn, store.choice, design.regression)
    unlabeled = None
    if design.unlabeled is not None and not design.regression and models:
        rows = design.unlabeled.read()
        frame = prepare_frame(snapshot.table.read_rows(rows, list(plan.used)), plan)
        per_model = score_rows(models, frame, plan, encoder, np.full(len(rows), -1))
        fitted = ModelChoice(models=store.choice.fitted, weights=tuple(
            w for m, w in zip(store.choice.models, store.choice.weights or
                              [1.0] * len(store.choice.models), strict=True) if m != "knn"),
            reason="")
        unlabeled = write_array(combine_scores(per_model, None, fitted, False),
                                Path(work_dir), "pred_probs")
    get_run_logger().info("incremental: %d rows keep their stored out-of-fold probabilities, "
                          "%d scored by the stored fold models", int(keep.sum()), len(redo))
    return IncrementalProbs(pred_probs=write_array(probs.astype(dtype), Path(work_dir),
                                                   "pred_probs"),
                            unlabeled=unlabeled, n_rescored=len(redo))


# ---- stable verdicts ----------------------------------------------------------------------------

VERDICT_COLUMNS = ("row_id", "given_label", "data_hash", "label_score", "suggested_label",
                   "is_label_issue", "label_evidence")


class PreviousVerdicts(BaseModel):
    """The dataset's previous completed run: its id, whose models scored it, its rows' label
    verdicts (VERDICT_COLUMNS)."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    models_run_id: str | None = None
    rows: TableRef


def previous_verdicts(db: Path, dataset: str, work_dir: Path) -> PreviousVerdicts | None:
    """The latest completed run's label verdicts, as a content-addressed table."""
    runs = read_dicts(db, "runs", "SELECT * FROM runs WHERE dataset = ? AND status = "
                      "'completed' ORDER BY finished_at DESC NULLS LAST LIMIT 1", [dataset])
    if not runs:
        return None
    con = connect(Path(db), read_only=True)
    try:  # straight from DuckDB to Parquet: a million rows in Python objects cost 5 s
        rows = copy_query(con, f"SELECT {', '.join(VERDICT_COLUMNS)} FROM issues WHERE run_id "
                          "= ?", [runs[0]["run_id"]], Path(work_dir), "verdicts")
    finally:
        con.close()
    return PreviousVerdicts(run_id=runs[0]["run_id"], models_run_id=runs[0].get("models_run_id"),
                            rows=rows)


@stage("load-verdicts", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 10])
def load_verdicts(db: str, dataset: str, work_dir: str) -> PreviousVerdicts | None:
    """The previous run's label verdicts (an incremental run keeps those of unchanged rows)."""
    try:
        return previous_verdicts(Path(db), dataset, Path(work_dir))
    except Exception as exc:  # noqa: BLE001 - an older warehouse without data_hash: no pinning
        get_run_logger().info("no earlier verdicts to keep (%s)", exc)
        return None


def pin_verdicts(current: pd.DataFrame, previous: pd.DataFrame) -> np.ndarray:
    """Which current rows keep the previous run's label verdict, and set it: rows whose given
    label, feature values and out-of-fold probabilities (label score, suggested label) are as
    they were. Confident learning's per-class thresholds move a little whenever rows join, which
    would otherwise flip an unchanged row at the margin. Returns the pinned rows' mask."""
    return _pinned(current, previous, align_ids(previous["row_id"], current["row_id"]))


def _pinned(current: pd.DataFrame, previous: pd.DataFrame, at: np.ndarray) -> np.ndarray:
    """pin_verdicts with `at`: each current row's previous row (align_ids, -1: none)."""
    found = at >= 0
    safe = np.where(found, at, 0)

    def same(col: str) -> np.ndarray:  # equal, or missing in both
        a, b = current[col].astype(object), previous[col].astype(object)
        a = a.where(a.notna(), None).to_numpy()
        b = b.where(b.notna(), None).to_numpy()[safe]
        return (a == b).astype(bool)

    score_now = pd.to_numeric(current["label_score"], errors="coerce").to_numpy(dtype=float)
    score_then = pd.to_numeric(previous["label_score"], errors="coerce").to_numpy(
        dtype=float)[safe]
    flag_then = previous["is_label_issue"].astype("boolean").to_numpy()[safe]
    pinned = (found & same("given_label") & same("data_hash") & same("suggested_label")
              & np.isfinite(score_now) & (np.abs(score_now - score_then) <= 1e-6)
              & ~pd.isna(flag_then))
    return pinned


@stage("stabilize")
def stabilize(detection: Detection, previous: PreviousVerdicts | None,
              models_run_id: str | None, work_dir: str) -> Detection:
    """An incremental run's label verdicts: an earlier row scored by the same fold models as in
    the previous run, whose data, label and probabilities did not change, keeps that run's
    `is_label_issue` (pin_verdicts); every other row keeps this run's."""
    if previous is None or previous.models_run_id != models_run_id or models_run_id is None:
        return detection
    # the verdict columns first: the whole frame is read and written again only when a verdict
    # is kept that this run's thresholds would have flipped
    frame = detection.issues.read(columns=[c for c in VERDICT_COLUMNS if c != "label_evidence"])
    prev = previous.rows.read()
    at = align_ids(prev["row_id"], frame["row_id"])
    pinned = _pinned(frame, prev, at)
    kept = pd.array(prev["is_label_issue"].astype("boolean").to_numpy()[np.clip(at, 0, None)],
                    dtype="boolean")
    kept[at < 0] = pd.NA
    now = frame["is_label_issue"].astype("boolean").to_numpy()
    changed = pinned & (pd.array(kept, dtype="boolean") != pd.array(now, dtype="boolean")
                        ).fillna(False).to_numpy(bool)
    get_run_logger().info("stable verdicts: %d earlier rows keep their label verdict (%d would "
                          "have flipped with the thresholds of the grown data)",
                          int(pinned.sum()), int(changed.sum()))
    if not changed.any():
        return detection
    frame = detection.issues.read()
    flags = frame["is_label_issue"].astype("boolean").copy()
    flags[changed] = pd.array(kept, dtype="boolean")[changed]
    frame["is_label_issue"] = flags
    if "label_evidence" in frame and "label_evidence" in prev:  # why it was flagged, kept too
        evidence = np.where(at >= 0, prev["label_evidence"].to_numpy(dtype=object)[
            np.clip(at, 0, None)], None)
        now_evidence = frame["label_evidence"].to_numpy(dtype=object).copy()
        now_evidence[changed] = evidence[changed]
        frame["label_evidence"] = pd.Series(now_evidence, index=frame.index, dtype=object)
    return detection.model_copy(update={
        "issues": write_table(frame, Path(work_dir), "issues"),
        "summary": tuple(summarize(frame)), "health_score": health(frame)})
