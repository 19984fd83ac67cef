"""The cleaning flow: ingest -> validate -> featurize -> estimate (per fold) -> detect -> decide
(policy + review decisions) -> evaluate (optional) -> publish -> report. Wiring only; every
stage lives in tasks/."""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.runners import task_runner
from tasks.decide import decide
from tasks.detect import detect, needs_knn
from tasks.errors import hide_user_error_tracebacks
from tasks.estimate import choose, estimate_fold, pred_probs, prune_set, supplied_pred_probs
from tasks.evaluate import evaluate
from tasks.featurize import featurize
from tasks.ingest import ingest
from tasks.knn import knn
from tasks.publish import RunSummary, on_flow_failure, publish
from tasks.report import report
from tasks.review import load_decisions
from tasks.spec import DatasetSpec
from tasks.summary import artifact_key, run_artifacts
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


# log_prints stays off: it reroutes print() inside libraries too, and dill (used by Datalab's
# `datasets`) reads function globals by capturing dis.dis()'s printed output.
# on_failure: a failed run is recorded in the warehouse (runs.status = failed, stage, message).
@flow(name="cleanset", flow_run_name=_run_name, log_prints=False,
      task_runner=task_runner(), on_failure=[on_flow_failure])
def clean_dataset(spec: DatasetSpec, refresh: bool = False) -> RunSummary:
    """Clean one dataset and publish it to DuckDB. `refresh` recomputes every cached stage."""
    work = str(spec.work_path)
    store = {"result_storage": spec.work_path / "results", "persist_result": True,
             "refresh_cache": refresh or None}

    def staged(t):  # noqa: ANN001, ANN202 - every cached task keeps its results beside the data
        return t.with_options(**store)

    required = [*spec.text, *(spec.features or ()), *([spec.group] if spec.group else []),
                *spec.pred_prob_columns]
    suite = load_suite_file(spec.suite_path) if spec.suite_path else None

    snapshot = staged(ingest)(spec.source, spec.id, work)
    validation = staged(validate)(snapshot, spec.label, required, suite, work)
    decisions = load_decisions(spec.db, spec.dataset_name, work)  # reviewers' decisions so far
    design = staged(featurize)(snapshot, validation, spec.label, list(spec.text),
                               list(spec.features) if spec.features else None, spec.folds,
                               spec.seed, work, spec.group, spec.embeddings,
                               spec.pred_prob_columns, decisions)

    fits = {"done": 0, "artifact": None}

    def out_of_fold(models, total, exclude=None, average_with=None, pass_name=""):  # noqa: ANN001, ANN202
        futures = {m: [staged(estimate_fold).submit(snapshot, design, k, m, spec.seed, work,
                                                   exclude, pass_name)
                       for k in range(design.n_folds)] for m in models}
        if fits["artifact"] is None:
            fits["artifact"] = create_progress_artifact(
                0.0, key=f"{artifact_key(spec.dataset_name)}-folds",
                description=f"cross-validation fits ({total} in all)")
        for _ in as_completed([f for fs in futures.values() for f in fs]):
            fits["done"] += 1
            update_progress_artifact(fits["artifact"], 100.0 * fits["done"] / total)
        parts = {m: [f.result() for f in fs] for m, fs in futures.items()}
        return staged(pred_probs)(design, parts, work, average_with)

    if spec.pred_probs or spec.pred_prob_columns:
        probs = staged(supplied_pred_probs)(snapshot, design, spec.label, spec.pred_probs,
                                            list(spec.pred_prob_columns), work)
        model = "supplied pred_probs"
    else:
        choice = staged(choose)(design, spec.model, spec.prune)
        model = f"{choice.label} ({choice.reason})"
        total = len(choice.models) * design.n_folds * (1 if choice.prune == "off" else 2)
        probs = out_of_fold(choice.models, total)
        if choice.prune != "off":
            flagged = staged(prune_set)(design, probs, work)
            probs = out_of_fold(choice.models, total, flagged,
                                probs if choice.prune == "average" else None, "-pass2")
    neighbours = staged(knn)(design, spec.knn_k, spec.seed, work, spec.knn_exact) if needs_knn(
        spec.issue_types) else None
    detection = staged(detect)(snapshot, validation, design, probs, neighbours, spec.label,
                               spec.issue_types, work)
    decided = staged(decide)(detection, spec.policy, decisions, work)
    evaluation = staged(evaluate)(snapshot, design, decided, spec.label, spec.test,
                                  spec.eval_holdout, spec.model, spec.seed, work) if (
        spec.test or spec.eval_holdout) else None
    with warehouse_slot(spec.db_path, get_run_logger()):  # one writer per warehouse file
        summary = publish(spec, snapshot, validation, detection, decided, model, evaluation)
        run_artifacts(spec, summary.run_id)
    # The data is already published: a report that fails is a warning, not a failed run (its
    # task run shows Failed in the UI; `cleanset report` regenerates it).
    reported = report(summary, return_state=True)
    if reported.is_failed():
        get_run_logger().warning("the HTML report failed (%s); the run is published. Regenerate "
                                 "it with `cleanset report --db %s --run %s`", reported.message,
                                 summary.db, summary.run_id)
    return summary
