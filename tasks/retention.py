"""retention: a warehouse and a work folder that run for months.

Every completed run leaves a manifest, `<work>/runs/<run_id>.json`, naming the content-addressed
files it used (snapshots, features, graphs, probabilities, issues, the fold fits). Retention keeps
a dataset's latest `keep_runs` completed runs (its `retention.keep_runs` setting, 10 by default)
and, of the older ones, deletes:

- work files no kept run, no batch of any dataset (`batches.snapshot_path`: a dataset's data)
  and no other dataset's kept run uses;
- Prefect's cache records (`<work>/results/`) that point to a deleted or missing file (a cache
  hit on them would name a file that is gone);
- their rows in `<dataset>_clean_history` and `issues` (one row per input row per run: the big
  per-run tables; `runs`, `issue_summary`, `class_summary`, `validations` and the other small
  per-run tables are kept whole, so trends stay complete) and their HTML reports.

`cleanset gc` also deletes *orphans*: work files no manifest names (left by failed or killed runs,
or by cleanset before manifests), once older than `--grace` hours (default 24, so a run in
progress keeps its files). The files of each dataset's latest kept models (the last full
estimation's fold models, encoder and out-of-fold probabilities, `runs.models`) are always kept:
the incremental runs that follow read them; an older full run's are deleted with that run.
Each completed run applies its dataset's retention right after
publishing (`retain`); the nightly flow runs a whole `gc` after its datasets.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.caching import stage
from tasks.spec import DatasetSpec, Retention
from tasks.warehouse import column_names, connect, quote_ident, read_dicts, table_names

MANIFESTS = "runs"
# work/ folders that hold no content-addressed intermediates of a run
NOT_INTERMEDIATES = {"results", MANIFESTS, "frames"}
DEFAULT_KEEP = Retention().keep_runs
FILE_NAME = re.compile(rb"([0-9a-f]{64}\.(?:parquet|npy|npz|joblib))")
PER_ROW_TABLES = ("issues",)  # besides <dataset>_clean_history


def referenced_files(*objects: object) -> set[str]:
    """The `path` of every file ref (TableRef, ArrayRef, MatrixRef, ...) inside these objects:
    pydantic models, lists, tuples, dicts, walked recursively."""
    found: set[str] = set()

    def walk(obj: object) -> None:
        if isinstance(obj, BaseModel):
            path = getattr(obj, "path", None)
            if isinstance(path, str) and hasattr(obj, "sha256"):
                found.add(str(Path(path).absolute()))
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list | tuple | set):
            for v in obj:
                walk(v)

    for obj in objects:
        walk(obj)
    return found


def write_manifest(work: Path, run_id: str, dataset: str, files: set[str]) -> Path:
    folder = Path(work) / MANIFESTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"run_id": run_id, "dataset": dataset, "files": sorted(files)},
                              indent=1))
    tmp.replace(path)
    return path


def read_manifests(work: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((Path(work) / MANIFESTS).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            out[data["run_id"]] = {"dataset": data.get("dataset"),
                                   "files": {str(Path(f).absolute()) for f in data["files"]},
                                   "path": path}
        except (OSError, ValueError, KeyError):
            continue
    return out


@dataclass
class GcPlan:
    """What a gc deletes (or, dry, would delete)."""

    files: list[tuple[Path, int, str]] = field(default_factory=list)  # (path, bytes, why)
    records: list[tuple[Path, int]] = field(default_factory=list)  # Prefect cache records
    manifests: list[Path] = field(default_factory=list)
    reports: list[tuple[Path, int]] = field(default_factory=list)
    rows: list[tuple[str, str, str, int]] = field(default_factory=list)  # dataset, table, run, n
    pruned: dict[str, list[str]] = field(default_factory=dict)  # dataset -> run ids

    @property
    def bytes(self) -> int:
        return (sum(b for _, b, _ in self.files) + sum(b for _, b in self.records)
                + sum(b for _, b in self.reports))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _keep_setting(spec_json: str | None) -> int | None:
    """keep_runs of a run's recorded settings (the default when they say nothing)."""
    try:
        return json.loads(spec_json or "{}").get("retention", {}).get("keep_runs", DEFAULT_KEEP)
    except (ValueError, AttributeError):
        return DEFAULT_KEEP


def completed_runs(db: Path) -> list[dict]:
    """Every completed run, newest first per dataset: run_id, dataset, snapshot_path, spec."""
    return read_dicts(db, "runs", "SELECT run_id, dataset, snapshot_path, spec FROM runs WHERE "
                      "status = 'completed' ORDER BY dataset, finished_at DESC NULLS LAST")


def kept_models(db: Path) -> set[str]:
    """The files of each dataset's latest kept models (`runs.models` of its latest completed run
    that kept them: the fold models, encoder and stored probabilities an incremental run reads,
    tasks/incremental.py), kept whatever `keep_runs` says."""
    if not Path(db).is_file():
        return set()
    con = connect(Path(db), read_only=True)
    try:
        if "runs" not in table_names(con) or "models" not in column_names(con, "runs"):
            return set()
        stores = [r[0] for r in con.execute(
            "SELECT arg_max(models, finished_at) FROM runs WHERE status = 'completed' AND "
            "models IS NOT NULL GROUP BY dataset").fetchall()]
    finally:
        con.close()
    found: set[str] = set()

    def walk(obj: object) -> None:
        if isinstance(obj, dict):
            if isinstance(obj.get("path"), str) and "sha256" in obj:
                found.add(str(Path(obj["path"]).absolute()))
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    for store in stores:
        try:
            walk(json.loads(store))
        except ValueError:
            continue
    return found


def batch_snapshots(db: Path) -> set[str]:
    return {str(Path(r["snapshot_path"]).absolute()) for r in read_dicts(
        db, "batches", "SELECT snapshot_path FROM batches WHERE snapshot_path IS NOT NULL")}


def plan_gc(db: Path, work: Path, *, dataset: str | None = None, keep: int | None = None,
            orphan_grace_hours: float | None = None) -> GcPlan:
    """What retention deletes: runs beyond each dataset's keep_runs (`keep` overrides it; only
    `dataset`'s runs when given), and with `orphan_grace_hours` also work files no manifest
    names that are older than that."""
    db, work = Path(db), Path(work)
    runs = completed_runs(db)
    manifests = read_manifests(work)
    by_dataset: dict[str, list[dict]] = {}
    for r in runs:
        by_dataset.setdefault(r["dataset"], []).append(r)
    kept_ids, pruned_ids = set(), {}
    for name, rows in by_dataset.items():
        n = keep if keep is not None else _keep_setting(rows[0]["spec"])
        if (dataset is not None and name != dataset) or n is None:
            kept_ids.update(r["run_id"] for r in rows)
            continue
        kept_ids.update(r["run_id"] for r in rows[:max(n, 1)])
        if rows[max(n, 1):]:
            pruned_ids[name] = [r["run_id"] for r in rows[max(n, 1):]]
    snapshot_of = {r["run_id"]: r["snapshot_path"] for r in runs}

    def files_of(run_id: str) -> set[str]:
        files = set(manifests.get(run_id, {}).get("files", set()))
        if snapshot_of.get(run_id):
            files.add(str(Path(snapshot_of[run_id]).absolute()))
        return files

    keep_files = set(batch_snapshots(db)) | kept_models(db)
    for run_id in kept_ids:
        keep_files |= files_of(run_id)
    # manifests of runs the warehouse does not list (another warehouse sharing this work
    # folder, or a run whose publish is in flight) keep their files too
    known = {r["run_id"] for r in runs}
    for run_id, m in manifests.items():
        if run_id not in known:
            keep_files |= m["files"]
    plan = GcPlan(pruned=pruned_ids)
    doomed: set[str] = set()
    for name, ids in pruned_ids.items():
        for run_id in ids:
            for f in sorted(files_of(run_id) - keep_files - doomed):
                if Path(f).is_file():
                    doomed.add(f)
                    plan.files.append((Path(f), _size(Path(f)), f"run {run_id} of {name}"))
            if run_id in manifests:
                plan.manifests.append(manifests[run_id]["path"])
            report = db.parent / "reports" / name / f"{run_id}.html"
            if report.is_file():
                plan.reports.append((report, _size(report)))
    cutoff = 0.0
    if orphan_grace_hours is not None:
        named = keep_files | doomed | {f for m in manifests.values() for f in m["files"]}
        cutoff = time.time() - orphan_grace_hours * 3600
        for folder in sorted(p for p in work.iterdir() if p.is_dir()) if work.is_dir() else []:
            if folder.name in NOT_INTERMEDIATES:
                continue
            for f in sorted(folder.rglob("*")):
                path = str(f.absolute())
                if f.is_file() and path not in named and f.stat().st_mtime < cutoff:
                    doomed.add(path)
                    plan.files.append((f, _size(f), "no run names it"))
    plan.records = stale_records(
        work, {Path(f).name for f in doomed},
        older_than=cutoff if orphan_grace_hours is not None else None,
        keep_names={Path(f).name for f in keep_files})
    plan.rows = _row_counts(db, pruned_ids)
    # list only the old runs something is left of (an earlier gc took the rest)
    left = ({why.split()[1] for _, _, why in plan.files if why.startswith("run ")}
            | {p.stem for p in plan.manifests} | {p.stem for p, _ in plan.reports}
            | {run_id for _, _, run_id, _ in plan.rows})
    plan.pruned = {k: [r for r in v if r in left] for k, v in pruned_ids.items()}
    plan.pruned = {k: v for k, v in plan.pruned.items() if v}
    return plan


def stale_records(work: Path, deleted_names: set[str], older_than: float | None = None,
                  keep_names: set[str] = frozenset()) -> list[tuple[Path, int]]:
    """Prefect cache records under work/results that name a file being deleted or already
    missing from the work folder (a cache hit on them would fail on the missing file); with
    `older_than` (a time), also the records written before it that name no kept file (the
    results of stages that write no file: a later miss recomputes only that stage)."""
    folder = Path(work) / "results"
    if not folder.is_dir():
        return []
    present = {f.name for f in Path(work).rglob("*") if f.is_file()} - deleted_names
    out = []
    for record in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            raw = record.read_bytes()
        except OSError:
            continue
        names = set(FILE_NAME.findall(raw))
        try:  # the result itself is serialized (pickled, base64) inside the JSON record
            blob = json.loads(raw).get("result")
            if isinstance(blob, str):
                names |= set(FILE_NAME.findall(base64.b64decode(blob, validate=False)))
        except (ValueError, AttributeError, TypeError):
            pass
        if any(n.decode() not in present for n in names):
            out.append((record, _size(record)))
        elif older_than is not None and not {n.decode() for n in names} & keep_names and \
                record.stat().st_mtime < older_than:
            out.append((record, _size(record)))
    return out


def _row_counts(db: Path, pruned: dict[str, list[str]]) -> list[tuple[str, str, str, int]]:
    if not pruned or not Path(db).is_file():
        return []
    con = connect(db, read_only=True)
    out = []
    try:
        tables = table_names(con)
        for name, ids in pruned.items():
            for table in (f"{name}_clean_history", *PER_ROW_TABLES):
                if table not in tables:
                    continue
                for run_id, n in con.execute(
                        f"SELECT run_id, count(*) FROM {quote_ident(table)} WHERE run_id IN "
                        "(SELECT unnest(?)) GROUP BY run_id ORDER BY run_id", [ids]).fetchall():
                    out.append((name, table, run_id, n))
    finally:
        con.close()
    return out


def apply_gc(db: Path, plan: GcPlan) -> None:
    """Delete the plan: the warehouse rows in one transaction first, then the files."""
    if plan.rows:
        from tasks.publish import transaction

        with transaction(Path(db)) as con:
            for _, table, run_id, _ in plan.rows:
                con.execute(f"DELETE FROM {quote_ident(table)} WHERE run_id = ?", [run_id])
    for path, _, _ in plan.files:
        path.unlink(missing_ok=True)
    for path, _ in [*plan.records, *plan.reports]:
        path.unlink(missing_ok=True)
    for path in plan.manifests:
        path.unlink(missing_ok=True)


def disk_use(db: Path, work: Path) -> dict[str, int]:
    """Bytes per dataset: the work files its runs' manifests and its batches name (each file
    counted once, for the first dataset naming it) and its HTML reports."""
    manifests = read_manifests(work)
    seen: set[str] = set()
    out: dict[str, int] = {}
    for m in manifests.values():
        name = m["dataset"] or "?"
        for f in sorted(m["files"] - seen):
            seen.add(f)
            out[name] = out.get(name, 0) + _size(Path(f))
    for r in read_dicts(db, "batches", "SELECT dataset, snapshot_path FROM batches WHERE "
                        "snapshot_path IS NOT NULL"):
        path = str(Path(r["snapshot_path"]).absolute())
        if path not in seen:
            seen.add(path)
            out[r["dataset"]] = out.get(r["dataset"], 0) + _size(Path(path))
    reports = Path(db).parent / "reports"
    if reports.is_dir():
        for folder in reports.iterdir():
            if folder.is_dir():
                out[folder.name] = out.get(folder.name, 0) + sum(
                    _size(f) for f in folder.glob("*.html"))
    return out


@stage("retain", cache_policy=NO_CACHE, retries=1)
def retain(spec: DatasetSpec, run_id: str, refs: list) -> int:
    """Write the run's manifest, then apply the dataset's retention (the caller holds the
    warehouse lock). Returns the bytes freed. A failure is a warning: the run is published."""
    logger = get_run_logger()
    write_manifest(spec.work_path, run_id, spec.dataset_name, referenced_files(refs))
    if spec.retention.keep_runs is None:
        return 0
    try:
        plan = plan_gc(spec.db_path, spec.work_path, dataset=spec.dataset_name)
        apply_gc(spec.db_path, plan)
    except Exception as exc:  # noqa: BLE001 - retention must never fail a published run
        logger.warning("retention of %s failed (%s); `cleanset gc` retries it", spec.dataset_name,
                       exc)
        return 0
    if plan.pruned:
        logger.info("retention: kept the latest %d run(s) of %s; deleted %d file(s), %d cache "
                    "record(s), %d report(s), %d history/issues row(s) of %d older run(s): "
                    "%.1f MB", spec.retention.keep_runs, spec.dataset_name, len(plan.files),
                    len(plan.records), len(plan.reports), sum(n for *_, n in plan.rows),
                    sum(len(v) for v in plan.pruned.values()), plan.bytes / 1e6)
    return plan.bytes
