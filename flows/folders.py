"""Datasets that grow (not named datasets.py: Prefect loads an entrypoint with its folder on
sys.path, where a datasets.py would shadow the `datasets` package Datalab imports): the flow of
a dataset folder (`data/landing/<dataset>/cleanset.yaml` plus
its batch files) and the nightly flow over every dataset folder. Wiring only (tasks/batches.py,
tasks/retention.py hold the logic).

    register-batches -> ingest (each new batch) -> audit-batch (each new batch against the
      accepted rows) -> admit-batches
      -> accumulate (all accepted batches) -> validate ... publish (+ batches rows) -> retain
      -> alert (cleanset.dataset.degraded) -> report

A run of a dataset covers all its accepted batches; it is incremental (new rows scored by the
last full estimation's fold models, detection over everything) or full, and `runs.mode` says
which and why (tasks/incremental.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, runtime

from flows.clean import cached, clean_steps
from flows.runners import task_runner
from tasks.batches import (
    Batch,
    accumulate,
    admit_batches,
    alert,
    audit_batch_stage,
    audit_plan_args,
    register_batches,
)
from tasks.errors import CleansetError, hide_user_error_tracebacks
from tasks.ingest import ingest
from tasks.publish import RunSummary, on_flow_failure
from tasks.spec import DEFAULT_DB, DatasetSpec, is_dataset_folder, load_dataset_spec

hide_user_error_tracebacks()


def folder_spec(folder: str, db: str | None = None, work_dir: str | None = None
                ) -> DatasetSpec:
    return load_dataset_spec(folder, db=db, work_dir=work_dir)


def _run_name() -> str:
    folder = runtime.flow_run.parameters.get("folder") or "dataset"
    try:
        return f"clean-{folder_spec(folder).dataset_name}"
    except Exception:  # noqa: BLE001 - a run name must never fail the run
        return f"clean-{Path(str(folder)).name}"


def _on_failure(flow, flow_run, state) -> None:  # noqa: ANN001 - Prefect's hook signature
    """Record the failed run like the one-off flow does (its spec is the folder's)."""
    params = flow_run.parameters
    try:
        spec = folder_spec(params["folder"], params.get("db"), params.get("work_dir"))
    except Exception:  # noqa: BLE001 - no usable settings: no dataset to record it under
        return
    flow_run.parameters = {**params, "spec": spec.model_dump(mode="json")}
    on_flow_failure(flow, flow_run, state)


@flow(name="cleanset-dataset", flow_run_name=_run_name, log_prints=False,
      task_runner=task_runner(), on_failure=[_on_failure])
def clean_folder(folder: str, db: str | None = None, work_dir: str | None = None,
                 refresh: bool = False, arrived: str | None = None, full: bool = False,
                 scheduled: bool = False) -> RunSummary | None:
    """Clean a dataset folder: its new files become batches, audited before they join, and all
    accepted batches are cleaned together. `arrived`: the file whose arrival started this run
    (the on-arrival trigger); when it is already a batch and nothing else is new, the run stops
    early (returns None). The run is incremental when the last full estimation's fold models
    can score what is new (tasks/incremental.py); `full` re-estimates everything; `scheduled`:
    started by the nightly flow (`incremental.full_every: nightly` re-estimates then)."""
    spec = folder_spec(folder, db, work_dir)
    work = str(spec.work_path)
    staged = cached(spec, refresh)
    plan = register_batches(spec)
    if arrived and not plan.new:
        get_run_logger().info("%s brings nothing new to dataset %s (every file is a known "
                              "batch): no run", arrived, spec.dataset_name)
        return None
    snap = {b.batch_id: staged(ingest)(b.file, spec.id, work)
            for b in [*plan.known, *plan.new, *plan.quarantined] if b.snapshot is None}

    def ready(b: Batch) -> Batch:
        return b if b.snapshot else b.model_copy(update={"snapshot": snap[b.batch_id].table})

    known = [ready(b) for b in plan.known]
    added = {bid: s.row_id_added for bid, s in snap.items()}
    audited, reference = [], [b.snapshot for b in known]
    for b in map(ready, plan.new):  # each against the rows accepted before it
        b = staged(audit_batch_stage)(reference=list(reference), batch=b,
                                      **audit_plan_args(spec))
        audited.append(b)
        if b.status == "accepted":
            reference.append(b.snapshot)
    still, late = [], []  # batches quarantined before, audited again: changed settings
    for b in map(ready, plan.quarantined):  # may accept them now
        again = staged(audit_batch_stage)(reference=list(reference), batch=b,
                                          **audit_plan_args(spec))
        if again.status == "accepted":
            late.append(again.model_copy(update={"run_id": None}))  # recorded anew
        else:
            still.append(b)
    admitted = admit_batches(plan, [*audited, *late])
    accepted = [*known, *(b for b in admitted if b.status == "accepted")]
    if late:  # a batch accepted late joins in its arrival order
        accepted.sort(key=lambda b: b.arrived_at)
    if not accepted:
        raise CleansetError(f"dataset {spec.dataset_name}: every batch is quarantined; nothing "
                            "to clean")
    parts = [(b.batch_id, b.snapshot, added.get(b.batch_id, _added(b, spec))) for b in accepted]
    acc = staged(accumulate)(parts=parts, id_column=spec.id, work_dir=work)
    acc = acc.model_copy(update={"batches": (*known, *admitted, *still, *plan.gone)})
    summary = clean_steps(spec, acc.snapshot, refresh, accumulated=acc, full=full,
                          scheduled=scheduled)
    degraded = alert(spec, summary.run_id, summary.label_health_score,
                     list(summary.quarantined_batches))
    return summary.model_copy(update={"degraded": degraded["reason"]}) if degraded else summary


def _added(batch: Batch, spec: DatasetSpec) -> bool:
    """Whether a batch read from its recorded snapshot (its file is gone) carries a row_id
    cleanset added: without an id column ingest puts one first."""
    import pyarrow.parquet as pq

    return spec.id is None and pq.read_schema(batch.snapshot.path).names[:1] == ["row_id"]


def dataset_folders(landing: Path) -> list[Path]:
    """The dataset folders directly under the landing folder (those with a cleanset.yaml)."""
    landing = Path(landing)
    if not landing.is_dir():
        return []
    return [p for p in sorted(landing.iterdir()) if not p.name.startswith(".")
            and is_dataset_folder(p)]


@flow(name="cleanset-nightly", log_prints=False)
def nightly(landing: str = "data/landing", db: str = str(DEFAULT_DB), gc: bool = True
            ) -> dict[str, str]:
    """Clean every dataset folder under `landing`, one subflow run each (a failing dataset
    does not stop the others), then apply retention to the whole warehouse. Returns each
    dataset folder's outcome."""
    logger = get_run_logger()
    outcomes: dict[str, str] = {}
    for folder in dataset_folders(Path(landing)):
        started = time.perf_counter()
        state = clean_folder(str(folder), db=db, scheduled=True, return_state=True)
        seconds = time.perf_counter() - started
        if state.is_completed():
            summary = state.result()
            outcomes[folder.name] = (f"completed run {summary.run_id} in {seconds:.1f} s" if
                                     summary else "nothing new")
        else:
            outcomes[folder.name] = f"{state.name}: {state.message}"
            logger.warning("dataset folder %s: %s", folder, outcomes[folder.name])
    if not outcomes:
        logger.info("no dataset folder (with a cleanset.yaml) under %s", landing)
    if gc:
        from tasks.retention import apply_gc, plan_gc
        from tasks.warehouse_lock import warehouse_slot

        with warehouse_slot(Path(db), logger):
            plan = plan_gc(Path(db), Path(db).parent / "work", orphan_grace_hours=24)
            apply_gc(Path(db), plan)
        logger.info("gc: %d file(s), %.1f MB", len(plan.files) + len(plan.records),
                    plan.bytes / 1e6)
    return outcomes
