"""batches: a dataset that grows. A dataset folder (`data/landing/<dataset>/cleanset.yaml` plus
its files) is cleaned as the union of its accepted batches; every file whose content the
warehouse's `batches` table has not seen for the dataset becomes a new batch.

- `plan_batches`: which files are new batches, which are known (accepted or quarantined) and
  which repeat a known batch's content (the same sha256 is never a second batch).
- `audit_new_batch` / `admit_batches`: each new batch is audited against the dataset's accepted
  rows before it joins (tasks/audit.py: schema, drift, labels, cross-batch copies): accepted,
  accepted with warnings, or `quarantined` with the audit's reason: nothing of a quarantined
  batch is used. The first batch of a dataset has nothing to be audited against: accepted.
- `accumulate`: one snapshot of all accepted batches in arrival order. Row identity across
  batches: the dataset's id column, and an id that comes again in a later batch replaces the
  earlier row (the earlier version stays in `<dataset>_clean_history`); without an id column
  a row is `<batch_id>-<row number in its file>` (0-based), stable for as long as the batch is.
  A provenance table (row id -> batch id) goes beside it into `issues.batch_id`.
- `degradation` / `alert`: the `cleanset.dataset.degraded` event when label health falls by more
  than `alert.health_drop` since the previous run, or a batch was quarantined.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.caching import stage
from tasks.errors import CleansetError
from tasks.ingest import ROW_ID, Snapshot
from tasks.landing import data_files
from tasks.spec import AuditSettings, DatasetSpec
from tasks.store import TableRef, copy_query, file_sha256
from tasks.warehouse import connect, quote_ident, read_dicts, table_names

DEGRADED_EVENT = "cleanset.dataset.degraded"
UNREGISTERED_EVENT = "cleanset.file.unregistered"
BATCH_COLUMN = "__cleanset_batch"
ORDER_COLUMN = "__cleanset_order"
ROW_COLUMN = "__cleanset_row"


class Batch(BaseModel):
    """One file of a dataset folder, as the `batches` table records it."""

    model_config = ConfigDict(frozen=True)
    batch_id: str  # the first 12 hex digits of the file's sha256
    file: str
    sha256: str
    arrived_at: datetime  # the file's modification time when first seen
    snapshot: TableRef | None = None  # its own Parquet snapshot (None: to be ingested)
    status: str = "accepted"  # accepted | quarantined
    reason: str = ""
    run_id: str | None = None  # the run that accepted (or quarantined) it; None while new
    audit: dict | None = None  # its audit against the dataset (audit.AuditResult as a dict)


class BatchPlan(BaseModel):
    """What a dataset folder holds against what the warehouse knows of it."""

    model_config = ConfigDict(frozen=True)
    dataset: str
    folder: str
    known: tuple[Batch, ...] = ()  # accepted before, in arrival order
    quarantined: tuple[Batch, ...] = ()  # quarantined before, file or snapshot at hand:
    #                                      audited again (its settings may have changed)
    gone: tuple[Batch, ...] = ()  # quarantined before, neither file nor snapshot left
    new: tuple[Batch, ...] = ()  # never seen: to be audited, in arrival order
    repeats: tuple[tuple[str, str], ...] = ()  # (file, why): content of a batch already seen


class Accumulated(BaseModel):
    """The dataset as one snapshot of its accepted batches, and the batches of this run."""

    model_config = ConfigDict(frozen=True)
    snapshot: Snapshot
    provenance: TableRef  # row id (text) -> batch id, in the snapshot's row order
    n_replaced: int = 0  # rows of an earlier batch replaced by a later one (same id)
    batches: tuple[Batch, ...] = ()  # every batch this run knows: accepted, new, quarantined


def batch_id(sha256: str) -> str:
    return sha256[:12]


def recorded_batches(db: Path, dataset: str) -> list[dict]:
    """The dataset's rows of the `batches` table, oldest first ([] when there is none)."""
    return read_dicts(db, "batches", "SELECT * FROM batches WHERE dataset = ? ORDER BY "
                      "arrived_at, batch_id", [dataset])


def plan_batches(db: Path, dataset: str, folder: Path) -> BatchPlan:
    """Sort the folder's files into new batches and repeats of known ones, and the recorded
    batches into accepted and quarantined. A known accepted batch is read from its file while
    the folder holds its content, else from its recorded snapshot; when both are gone, the run
    stops naming the batch and what to do."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CleansetError(f"dataset folder {folder} does not exist")
    recorded = recorded_batches(db, dataset)
    by_sha = {r["sha256"]: r for r in recorded}
    on_disk: dict[str, Path] = {}
    new: list[Batch] = []
    repeats: list[tuple[str, str]] = []
    for f in sorted(data_files(folder), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        sha = file_sha256(f)
        if sha in by_sha:
            r = by_sha[sha]
            on_disk.setdefault(sha, f)
            if Path(r["file"]).name != f.name:
                repeats.append((str(f), f"same content as batch {r['batch_id']} "
                                        f"({Path(r['file']).name}, {r['status']})"))
            continue
        if sha in on_disk:
            repeats.append((str(f), f"same content as {on_disk[sha].name}, a new batch of this "
                                    "run"))
            continue
        on_disk[sha] = f
        arrived = datetime.fromtimestamp(f.stat().st_mtime, UTC)
        new.append(Batch(batch_id=batch_id(sha), file=str(f.absolute()), sha256=sha,
                         arrived_at=arrived))
    known, quarantined, gone = [], [], []
    for r in recorded:
        snap = r.get("snapshot_path")
        ref = None  # read again from its file (cached) while it is there, else its snapshot
        if r["sha256"] not in on_disk and snap and Path(snap).is_file():
            ref = TableRef(path=snap, sha256=Path(snap).stem, n_rows=int(r["rows"] or 0))
        batch = Batch(batch_id=r["batch_id"], file=r["file"], sha256=r["sha256"],
                      arrived_at=r["arrived_at"], snapshot=ref, status=r["status"],
                      reason=r.get("reason") or "", run_id=r["run_id"])
        if r["status"] != "accepted":  # audited again each run (cached): a changed audit
            source = on_disk.get(r["sha256"])  # setting can accept it
            if source is not None:
                batch = batch.model_copy(update={"file": str(Path(source).absolute())})
            if source is not None or ref is not None:
                quarantined.append(batch)
            else:
                gone.append(batch)
            continue
        if ref is None:
            source = on_disk.get(r["sha256"])
            if source is None and Path(r["file"]).is_file() and \
                    file_sha256(r["file"]) == r["sha256"]:
                source = Path(r["file"])
            if source is None:
                raise CleansetError(
                    f"batch {r['batch_id']} of dataset {dataset} ({r['file']}) is needed but "
                    f"neither its file nor its snapshot ({snap}) exists any more: put the file "
                    f"back into {folder}")
            batch = batch.model_copy(update={"file": str(Path(source).absolute())})
        known.append(batch)
    return BatchPlan(dataset=dataset, folder=str(folder), known=tuple(known),
                     quarantined=tuple(quarantined), gone=tuple(gone), new=tuple(new),
                     repeats=tuple(repeats))


@stage("register-batches", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 10])
def register_batches(spec: DatasetSpec) -> BatchPlan:
    """The dataset folder against the warehouse's `batches` table (never cached: it reads the
    warehouse)."""
    plan = plan_batches(spec.db_path, spec.dataset_name, Path(spec.source))
    logger = get_run_logger()
    for file, why in plan.repeats:
        logger.info("not a new batch: %s (%s)", file, why)
    logger.info("dataset %s: %d accepted batch(es), %d new, %d quarantined before",
                plan.dataset, len(plan.known), len(plan.new),
                len(plan.quarantined) + len(plan.gone))
    if not plan.known and not plan.new:
        raise CleansetError(f"dataset folder {plan.folder} holds no data file that is or can "
                            "become an accepted batch (CSV/TSV/Parquet/JSON Lines/Excel)")
    return plan


FIRST_BATCH = "the dataset's first batch: nothing accepted before it to audit it against"


def _is_regression(ref, label: str, task: str) -> bool:  # noqa: ANN001 - a DataFrame
    """Whether the dataset's label is a regression target: the task set, or auto's decision on
    the accepted rows (a label auto cannot place is audited as classes)."""
    if task != "auto" or label not in ref.columns:
        return task == "regression"
    from tasks.task_type import decide_task

    try:
        return decide_task(ref[label], label, "auto")[0] == "regression"
    except CleansetError:
        return False


def _tag_delimiter(ref, label: str, task: str,  # noqa: ANN001 - a DataFrame
                   delimiter: str | None) -> str | None:
    """The delimiter of the dataset's tag sets when its label column holds them (the tag-sets
    stage's decision on the accepted rows), else None."""
    if task not in ("auto", "multilabel") or label not in ref.columns:
        return None
    from tasks.tags import decide_tags

    try:
        decided = decide_tags(ref, label, task, (), delimiter)
    except CleansetError:
        return None
    return decided[1] if decided else None


def audit_new_batch(reference: list[TableRef], batch: Batch, label: str, exclude: list[str],
                    text: list[str], features: list[str] | None, roles: dict[str, str] | None,
                    settings: AuditSettings, seed: int = 0, id_column: str | None = None,
                    task: str = "auto", label_delimiter: str | None = None) -> Batch:
    """`batch` (its snapshot ingested) audited against the dataset's accepted rows (`reference`:
    their snapshots): accepted, accepted with warnings (accepted, its warned checks recorded) or
    quarantined with the audit's reason (which says how to accept it anyway). The feature plan
    is featurize's inference on the reference. The first batch of a dataset is accepted."""
    import pandas as pd

    from tasks.audit import audit_batch
    from tasks.featurize import infer_roles

    if not reference:
        return batch.model_copy(update={"status": "accepted", "reason": FIRST_BATCH})
    ref = pd.read_parquet(reference[0].path) if len(reference) == 1 else pd.concat(
        [pd.read_parquet(r.path) for r in reference], ignore_index=True)  # one: no copy
    new = pd.read_parquet(batch.snapshot.path)
    skip = [ROW_ID, *exclude]  # ids, the group, supplied pred_probs: not features
    plan = infer_roles(ref, label, [c for c in dict.fromkeys(skip) if c in ref.columns],
                       list(text), list(features) if features else None, dict(roles or {}))
    result = audit_batch(ref, new, plan, label, settings,
                         id_column=id_column if id_column in ref.columns else None, seed=seed,
                         regression=_is_regression(ref, label, task),
                         tag_delimiter=_tag_delimiter(ref, label, task, label_delimiter))
    status = "quarantined" if result.decision == "quarantine" else "accepted"
    return batch.model_copy(update={"status": status, "reason": result.reason,
                                    "audit": result.model_dump(mode="json")})


@stage("audit-batch")
def audit_batch_stage(reference: list[TableRef], batch: Batch, label: str, exclude: list[str],
                      text: list[str], features: list[str] | None,
                      roles: dict[str, str] | None, settings: AuditSettings, seed: int = 0,
                      id_column: str | None = None, task: str = "auto",
                      label_delimiter: str | None = None) -> Batch:
    """One new batch audited against the accepted rows (cached on their snapshots and the
    audit settings)."""
    return audit_new_batch(reference, batch, label, exclude, text, features, roles, settings,
                           seed, id_column, task, label_delimiter)


def audit_plan_args(spec: DatasetSpec) -> dict:
    """The dataset settings the audit of a batch depends on (audit_batch_stage's arguments)."""
    exclude = [c for c in (spec.id, spec.group, *spec.pred_prob_columns) if c]
    return {"label": spec.label, "exclude": exclude, "text": list(spec.text),
            "features": list(spec.features) if spec.features else None,
            "roles": dict(spec.feature_roles) if spec.feature_roles else None,
            "settings": spec.audit, "seed": spec.seed, "id_column": spec.id, "task": spec.task,
            "label_delimiter": spec.label_delimiter}


@stage("admit-batches", cache_policy=NO_CACHE)
def admit_batches(plan: BatchPlan, new: list[Batch]) -> list[Batch]:
    """The new batches as audited (audit_batch_stage), logged: each `accepted` or `quarantined`
    with its reason; nothing of a quarantined batch is used."""
    logger = get_run_logger()
    for b in new:
        rows = b.snapshot.n_rows if b.snapshot else 0
        log = logger.warning if b.status != "accepted" else logger.info
        log("batch %s (%s, %d rows): %s: %s", b.batch_id, Path(b.file).name, rows, b.status,
            b.reason)
    return list(new)


def accumulate_snapshots(parts: list[tuple[str, TableRef, bool]], id_column: str | None,
                         work: Path) -> Accumulated:
    """One snapshot of the accepted batches `(batch_id, snapshot, row_id added)`, oldest first:
    with an id column the latest batch's row wins for each id (rows without an id are all
    kept); without one, row ids become `<batch_id>-<row>`. Returns (snapshot, provenance,
    rows replaced) as an Accumulated without its batches (the flow adds them)."""
    if not parts:
        raise CleansetError("no accepted batch to clean")
    con = duckdb.connect()
    try:
        selects = []
        for order, (bid, ref, added) in enumerate(parts):
            exclude = "file_row_number" + (f", {quote_ident(ROW_ID)}" if added else "")
            ident = (f"'{bid}-' || CAST(file_row_number AS VARCHAR) AS {quote_ident(ROW_ID)}, "
                     if added else "")
            path = ref.path.replace("'", "''")  # a view takes no parameters
            selects.append(f"SELECT {ident}* EXCLUDE ({exclude}), '{bid}' AS {BATCH_COLUMN}, "
                           f"{order} AS {ORDER_COLUMN}, file_row_number AS {ROW_COLUMN} "
                           f"FROM read_parquet('{path}', file_row_number = true)")
        union = " UNION ALL BY NAME ".join(selects)
        all_added = all(added for _, _, added in parts)
        ident = id_column or ROW_ID
        q = quote_ident(ident)
        # A view, not a table: each query below reads only its own columns of the batches'
        # files (the id count reads the ids; materialising a million rows first cost 3.4 s
        # before the 3.1 s of writing them).
        con.execute(f"CREATE TEMP VIEW acc AS {union}")
        # the window that keeps the latest row of each id runs only when an id repeats (a
        # million-row dataset grown by a batch of new ids pays one count instead of a sort)
        repeated = not all_added and con.execute(
            f"SELECT count(*) > count(DISTINCT {q}) FROM acc WHERE {q} IS NOT NULL"
        ).fetchall()[0][0]
        if repeated:
            con.execute(f"CREATE TEMP TABLE latest AS SELECT * FROM acc QUALIFY {q} IS "
                        f"NULL OR row_number() OVER (PARTITION BY {q} ORDER BY {ORDER_COLUMN} "
                        f"DESC, {ROW_COLUMN} DESC) = 1")
            con.execute("CREATE OR REPLACE TEMP VIEW acc AS SELECT * FROM latest")
        total = sum(ref.n_rows for _, ref, _ in parts)
        order = f"ORDER BY {ORDER_COLUMN}, {ROW_COLUMN}"
        table = copy_query(con, f"SELECT * EXCLUDE ({BATCH_COLUMN}, {ORDER_COLUMN}, "
                           f"{ROW_COLUMN}) FROM acc {order}", [], work, "snapshots")
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * EXCLUDE ({BATCH_COLUMN}, "
                                             f"{ORDER_COLUMN}, {ROW_COLUMN}) FROM acc"
                                             ).fetchall()]
        provenance = copy_query(con, f"SELECT CAST({q} AS VARCHAR) AS row_id, {BATCH_COLUMN} "
                                f"AS batch_id FROM acc {order}", [], work, "provenance")
    except duckdb.Error as exc:
        raise CleansetError(f"cannot put the batches together: {str(exc).splitlines()[0]}"
                            ) from None
    finally:
        con.close()
    digest = content_id([bid for bid, _, _ in parts], [r.sha256 for _, r, _ in parts])
    snap = Snapshot(table=table, source_sha256=digest, files=tuple(bid for bid, _, _ in parts),
                    id_column=ident, columns=tuple(columns), row_id_added=all_added)
    return Accumulated(snapshot=snap, provenance=provenance, n_replaced=total - table.n_rows)


def content_id(ids: list[str], shas: list[str]) -> str:
    """The dataset's content id: its accepted batches in order (part of the run id)."""
    import hashlib

    h = hashlib.sha256()
    for bid, sha in zip(ids, shas, strict=True):
        h.update(f"{bid}\0{sha}\n".encode())
    return h.hexdigest()


@stage("accumulate")
def accumulate(parts: list[tuple[str, TableRef, bool]], id_column: str | None, work_dir: str
               ) -> Accumulated:
    """The accepted batches as one snapshot (cached on the batches' snapshots)."""
    acc = accumulate_snapshots(parts, id_column, Path(work_dir))
    get_run_logger().info("dataset of %d batch(es): %d rows%s", len(parts),
                          acc.snapshot.table.n_rows, f"; {acc.n_replaced} row(s) replaced by a "
                          "later batch" if acc.n_replaced else "")
    return acc


# ---- someone hears about it --------------------------------------------------------------------

def degradation(previous: float | None, current: float, threshold: float,
                quarantined: list[str]) -> dict | None:
    """The degraded event's figures, or None: label health fell by more than `threshold` since
    the previous run, or batches were quarantined."""
    drop = None if previous is None else previous - current
    fell = drop is not None and drop > threshold
    if not fell and not quarantined:
        return None
    reasons = []
    if fell:
        reasons.append(f"label health fell from {previous:.3f} to {current:.3f} (by {drop:.3f}, "
                       f"more than {threshold:.3f})")
    if quarantined:
        reasons.append(f"{len(quarantined)} batch(es) quarantined: {', '.join(quarantined)}")
    return {"previous_label_health": previous, "label_health": current,
            "health_drop": drop, "threshold": threshold, "quarantined": quarantined,
            "reason": "; ".join(reasons)}


def previous_label_health(db: Path, dataset: str, run_id: str) -> float | None:
    """Label health of the dataset's latest completed run other than `run_id`."""
    con = connect(Path(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT label_health_score FROM runs WHERE dataset = ? AND run_id <> ? AND status = "
            "'completed' ORDER BY finished_at DESC NULLS LAST LIMIT 1", [dataset, run_id]
        ).fetchall()
    finally:
        con.close()
    return rows[0][0] if rows and rows[0][0] is not None else None


@stage("alert", cache_policy=NO_CACHE)
def alert(spec: DatasetSpec, run_id: str, label_health: float, quarantined: list[str]
          ) -> dict | None:
    """Emit `cleanset.dataset.degraded` (resource `cleanset.dataset.<name>`) with the figures
    when the run degraded; returns its payload (None: nothing to say)."""
    from prefect.events import emit_event

    previous = previous_label_health(spec.db_path, spec.dataset_name, run_id)
    figures = degradation(previous, label_health, spec.alert.health_drop, quarantined)
    if figures is None:
        return None
    payload = {"dataset": spec.dataset_name, "run_id": run_id, "db": spec.db, **figures}
    emit_event(DEGRADED_EVENT, resource={"prefect.resource.id": f"cleanset.dataset."
                                         f"{spec.dataset_name}",
                                         "prefect.resource.name": spec.dataset_name},
               payload=payload)
    get_run_logger().warning("dataset %s degraded: %s (event %s emitted)", spec.dataset_name,
                             figures["reason"], DEGRADED_EVENT)
    return payload


# ---- what `cleanset datasets` shows ----------------------------------------------------------

def overview(landing: Path, db: Path) -> list[dict]:
    """One row per dataset (the dataset folders under `landing` and every dataset with runs in
    `db`): folder, accepted and quarantined batches, rows, last run and its status, health,
    label health, bytes on disk (tasks/retention.disk_use)."""
    from tasks.retention import disk_use
    from tasks.spec import folder_dataset_name, is_dataset_folder, load_dataset_spec

    folders: dict[str, str] = {}
    if Path(landing).is_dir():
        for p in sorted(Path(landing).iterdir()):
            if is_dataset_folder(p):
                try:
                    name = load_dataset_spec(p).dataset_name
                except CleansetError:
                    name = folder_dataset_name(p)
                folders[name] = str(p)
    runs: dict[str, tuple] = {}
    counts: dict[str, tuple[int, int]] = {}
    if Path(db).is_file():
        con = connect(Path(db), read_only=True)
        try:
            tables = table_names(con)
            if "runs" in tables:
                for row in con.execute(
                        "SELECT dataset, n_rows, finished_at, status, health_score, "
                        "label_health_score FROM runs QUALIFY row_number() OVER (PARTITION BY "
                        "dataset ORDER BY finished_at DESC NULLS LAST) = 1").fetchall():
                    runs[row[0]] = row[1:]
            if "batches" in tables:
                for name, ok, bad in con.execute(
                        "SELECT dataset, count(*) FILTER (WHERE status = 'accepted'), count(*) "
                        "FILTER (WHERE status <> 'accepted') FROM batches GROUP BY dataset"
                ).fetchall():
                    counts[name] = (ok, bad)
        finally:
            con.close()
    disk = disk_use(Path(db), Path(db).parent / "work")
    out = []
    for name in sorted(set(folders) | set(runs)):
        n_rows, last, status, health, label_health = runs.get(name, (None,) * 5)
        ok, bad = counts.get(name, (0, 0))
        out.append({"dataset": name, "folder": folders.get(name), "accepted": ok,
                    "quarantined": bad, "rows": n_rows, "last_run": last, "status": status,
                    "health": health, "label_health": label_health, "disk": disk.get(name, 0)})
    return out
