"""The cleaning flow: ingest [-> vote] -> [tag-sets] -> validate -> featurize -> estimate (per
fold) [-> consensus] -> detect -> decide (policy + review decisions) -> evaluate (optional) ->
publish -> report. vote and consensus run with several annotators (tasks/annotators.py);
tag-sets decides whether the label is multi-label (tasks/tags.py). Wiring only; every stage
lives in tasks/."""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.runners import task_runner
from tasks.annotators import consensus, vote
from tasks.batches import Accumulated
from tasks.choose import choose
from tasks.decide import decide, load_decisions
from tasks.detect import detect, enabled_types
from tasks.errors import hide_user_error_tracebacks
from tasks.estimate import (
    estimate_fold,
    model_check,
    pred_probs,
    prune_set,
    supplied_pred_probs,
    unlabeled_pred_probs,
)
from tasks.evaluate import evaluate
from tasks.featurize import encode_features, featurize
from tasks.incremental import (
    estimation_fingerprint,
    find_models,
    incremental_pred_probs,
    keep_models,
    load_verdicts,
    plan_mode,
    stabilize,
)
from tasks.ingest import ingest
from tasks.knn import extend_knn, knn
from tasks.publish import RunSummary, on_flow_failure, publish
from tasks.report import report
from tasks.retention import retain
from tasks.spec import DatasetSpec
from tasks.summary import artifact_key, record_stages, run_artifacts
from tasks.tags import tag_sets
from tasks.validate import load_suite_file, validate
from tasks.warehouse_lock import warehouse_slot

hide_user_error_tracebacks()


def _run_name() -> str:
    spec = runtime.flow_run.parameters.get("spec")
    try:
        spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.model_validate(spec)
        return f"clean-{spec.dataset_name}"
    except Exception:  # noqa: BLE001 - a run name must never fail the run
        return "clean-dataset"


class FitProgress:
    """The Prefect progress artifact of the model fits, advanced as fold tasks finish."""

    def __init__(self, dataset: str, total: int) -> None:
        self.total, self.done = max(total, 1), 0
        self.artifact = create_progress_artifact(
            0.0, key=f"{artifact_key(dataset)}-folds",
            description=f"cross-validation fits ({total} in all)")

    def advance(self) -> None:
        self.done += 1
        update_progress_artifact(self.artifact, 100.0 * self.done / self.total)


def out_of_fold(*, snapshot, design, choice, neighbours, spec: DatasetSpec, staged,  # noqa: ANN001
                progress: FitProgress, exclude=None, average_with=None,  # noqa: ANN001
                pass_name: str = "", files: list | None = None,
                keep: bool = False):  # noqa: ANN202
    """Fan out one estimate-fold task per (fitted model, fold), then assemble pred_probs.
    `keep`: the fold tasks keep their fitted models (a dataset folder's run)."""
    futures = {m: [staged(estimate_fold).submit(
        snapshot=snapshot, design=design, fold=k, model=m, seed=spec.seed,
        work_dir=str(spec.work_path), exclude=exclude, pass_name=pass_name, keep_model=keep)
        for k in range(design.n_folds)] for m in choice.fitted}
    for _ in as_completed([f for fs in futures.values() for f in fs]):
        progress.advance()
    parts = {m: [f.result() for f in fs] for m, fs in futures.items()}
    if files is not None:
        files.append(parts)
    return staged(pred_probs)(design=design, parts=parts,
                              weights=dict(zip(choice.models, choice.weights, strict=True)),
                              work_dir=str(spec.work_path), neighbours=neighbours,
                              average_with=average_with)


def cached(spec: DatasetSpec, refresh: bool):  # noqa: ANN201
    """`staged(task)`: the task with its results kept beside the data (work/results)."""
    store = {"result_storage": spec.work_path / "results", "persist_result": True,
             "refresh_cache": refresh or None}
    return lambda t: t.with_options(**store)


# log_prints stays off: it reroutes print() inside libraries too, and dill (used by Datalab's
# `datasets`) reads function globals by capturing dis.dis()'s printed output.
# on_failure: a failed run is recorded in the warehouse (runs.status = failed, stage, message).
@flow(name="cleanset", flow_run_name=_run_name, log_prints=False,
      task_runner=task_runner(), on_failure=[on_flow_failure])
def clean_dataset(spec: DatasetSpec, refresh: bool = False) -> RunSummary:
    """Clean one dataset and publish it to DuckDB. `refresh` recomputes every cached stage."""
    snapshot = cached(spec, refresh)(ingest)(spec.source, spec.id, str(spec.work_path))
    return clean_steps(spec, snapshot, refresh)


def clean_steps(spec: DatasetSpec, snapshot, refresh: bool = False,  # noqa: ANN001
                accumulated: Accumulated | None = None, full: bool = False,
                scheduled: bool = False) -> RunSummary:
    """Everything after ingest, inside a flow: validate ... publish, retention, report.
    `accumulated`: the dataset folder's batches the snapshot was made of (flows/folders.py);
    its runs keep their fold models and may be incremental (tasks/incremental.py) unless
    `full`; `scheduled`: the nightly flow started the run (incremental.full_every: nightly)."""
    work = str(spec.work_path)
    staged = cached(spec, refresh)
    stages = [snapshot]  # earlier stages' refs the later ones replace (for the manifest)
    if spec.annotators:  # several annotators: their majority vote is the label to train on
        snapshot = staged(vote)(snapshot=snapshot, annotators=list(spec.annotators),
                                label=spec.label, work_dir=work)
    required = [*spec.text, *(spec.features or ()), *([spec.group] if spec.group else []),
                *spec.pred_prob_columns, *spec.slices]
    suite = load_suite_file(spec.suite_path) if spec.suite_path else None
    supplied = bool(spec.pred_probs or spec.pred_prob_columns)
    keep = accumulated is not None and not supplied  # a dataset folder's estimation is kept

    tags = staged(tag_sets)(snapshot, spec.label, spec.task, spec.label_columns,
                            spec.label_delimiter, work)  # None unless multi-label
    if tags is not None:  # the label column as canonical tag text from here on
        stages.append(snapshot)
        snapshot = tags.snapshot
    validation = staged(validate)(snapshot, spec.label, required, suite, work)
    decisions = load_decisions(spec.db, spec.dataset_name, work)  # reviewers' decisions so far
    design = staged(featurize)(
        snapshot=snapshot, validation=validation, label=spec.label, text=list(spec.text),
        features=list(spec.features) if spec.features else None, n_folds=spec.folds,
        seed=spec.seed, work_dir=work, group=spec.group, embeddings=spec.embeddings,
        pred_prob_columns=spec.pred_prob_columns, decisions=decisions, roles=spec.feature_roles,
        task=spec.task, keep_encoder=keep, tags=tags, label_columns=spec.label_columns,
        with_matrix=not keep)  # a dataset folder's run encodes once it knows it must (below)
    choice = mode = kept = stored = None
    unlabeled = None
    files: list = []  # the fold fits' files, for the run's manifest (tasks/retention.py)
    if keep:
        stored = find_models(db=spec.db, dataset=spec.dataset_name)
        mode = plan_mode(spec=spec, snapshot=snapshot, design=design, stored=stored,
                         work_dir=work, full=full, scheduled=scheduled)
    extend = bool(mode is not None and mode.incremental and stored.store.neighbours and
                  stored.store.encoder)  # the full run's graph, extended by what is new
    needs_matrix = not extend or bool(spec.test or spec.eval_holdout)  # fits, search, eval
    if design.matrix is None and needs_matrix:
        design = staged(encode_features)(snapshot=snapshot, design=design, keep_encoder=keep,
                                work_dir=work)
    clustered = "underperforming_group" in enabled_types(spec.issue_types, design.task)
    if extend:
        neighbours = staged(extend_knn)(
            snapshot=snapshot, design=design, stored=stored.store.neighbours,
            encoder=stored.store.encoder, plan=stored.store.plan, status=mode.status,
            work_dir=work)
    else:
        neighbours = staged(knn)(design=design, k=spec.knn_k, seed=spec.seed, work_dir=work,
                                 exact=spec.knn_exact, keep=keep, clusters=clustered)
    if supplied:
        probs = staged(supplied_pred_probs)(
            snapshot=snapshot, design=design, label=spec.label, path=spec.pred_probs,
            columns=list(spec.pred_prob_columns), work_dir=work)
        model = "supplied pred_probs"
    elif mode is not None and mode.incremental:
        scored = staged(incremental_pred_probs)(
            snapshot=snapshot, design=design, store=stored.store, status=mode.status,
            work_dir=work, neighbours=neighbours)
        probs, unlabeled, choice = scored.pred_probs, scored.unlabeled, stored.store.choice
        model = f"{choice.label} (the fold models of run {mode.models_run_id})"
    else:
        choice = staged(choose)(design=design, snapshot=snapshot, neighbours=neighbours,
                                model=spec.model, prune=spec.prune, budget=spec.budget,
                                seed=spec.seed, knn_k=spec.knn_k)
        model = f"{choice.label} ({choice.reason})"
        passes = 1 if choice.prune == "off" else 2
        progress = FitProgress(spec.dataset_name, len(choice.fitted) * design.n_folds * passes)
        fan_out = {"snapshot": snapshot, "design": design, "choice": choice,
                   "neighbours": neighbours, "spec": spec, "staged": staged,
                   "progress": progress, "keep": keep}
        probs = out_of_fold(**fan_out, files=files)
        if choice.prune != "off":
            flagged = staged(prune_set)(design=design, first_pass=probs, work_dir=work)
            probs = out_of_fold(**fan_out, files=files, exclude=flagged, pass_name="-pass2",
                                average_with=probs if choice.prune == "average" else None)
        unlabeled = staged(unlabeled_pred_probs)(  # rows with no label: the fold models' mean
            design=design, parts=files[-1], work_dir=work, weights=dict(
                zip(choice.models, choice.weights, strict=True))) if (
                    files and design.unlabeled is not None) else None
        if keep:  # the fold models of the last pass, for the incremental runs that follow
            kept = staged(keep_models)(
                snapshot=snapshot, design=design, choice=choice, parts=files[-1] if files
                else {}, pred_probs=probs, fingerprint=estimation_fingerprint(spec),
                dataset=spec.dataset_name, work_dir=work, neighbours=neighbours)
    check = staged(model_check)(design=design, pred_probs=probs)
    agreed = None
    if spec.annotators:  # CROWDLAB's consensus replaces the vote from here on
        agreed = staged(consensus)(snapshot=snapshot, design=design, pred_probs=probs,
                                   annotators=list(spec.annotators), label=spec.label,
                                   work_dir=work, decisions=decisions)
        stages += [snapshot, design, agreed]
        snapshot, design = agreed.snapshot, agreed.design
    detection = staged(detect)(
        snapshot=snapshot, validation=validation, design=design, pred_probs=probs,
        neighbours=neighbours, label=spec.label, issue_types=spec.issue_types, work_dir=work,
        trusted=check.trusted, slices=list(spec.slices), unlabeled_probs=unlabeled,
        consensus_rows=agreed.rows if agreed else None)
    if mode is not None and mode.incremental:  # unchanged earlier rows keep their verdicts
        previous = load_verdicts(db=spec.db, dataset=spec.dataset_name, work_dir=work)
        detection = staged(stabilize)(detection=detection, previous=previous,
                                      models_run_id=mode.models_run_id, work_dir=work)
    decided = staged(decide)(detection=detection, policy=spec.policy, decisions=decisions,
                             work_dir=work, trusted=check.trusted, task=design.task,
                             text=bool(design.plan.text), pred_probs=probs)
    evaluation = staged(evaluate)(
        snapshot=snapshot, design=design, decided=decided, label=spec.label,
        test_source=spec.test, holdout=spec.eval_holdout,
        models=choice.fitted if choice and choice.fitted else ("logreg",), seed=spec.seed,
        work_dir=work) if (spec.test or spec.eval_holdout) else None
    with warehouse_slot(spec.db_path, get_run_logger()):  # one writer per warehouse file
        summary = publish(spec=spec, snapshot=snapshot, validation=validation,
                          detection=detection, decided=decided, model=model,
                          evaluation=evaluation, check=check,
                          choice=None if mode is not None and mode.incremental else choice,
                          design=design, accumulated=accumulated, mode=mode, kept=kept,
                          consensus=agreed)
        run_artifacts(spec, summary.run_id)
        retain(spec, summary.run_id, [*stages, snapshot, validation, decisions, design,
                                      neighbours, probs, files, check, detection, decided,
                                      evaluation, accumulated, unlabeled, kept, stored])
    # The data is already published: a report that fails is a warning, not a failed run (its
    # task run shows Failed in the UI; `cleanset report` regenerates it).
    reported = report(summary, return_state=True)
    report_error = ""
    if reported.is_failed():
        report_error = reported.message or "failed"
        get_run_logger().warning("the HTML report failed (%s); the run is published. Regenerate "
                                 "it with `cleanset report --db %s --run %s`", reported.message,
                                 summary.db, summary.run_id)
    with warehouse_slot(spec.db_path, get_run_logger()):
        stages = record_stages(spec, summary.run_id)
    return summary.model_copy(update={"stages": tuple(stages), "report_error": report_error})
