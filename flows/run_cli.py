"""`cleanset run` and `cleanset demo`: clean a dataset (or a bundled one with planted errors)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from flows.options import DbOpt, console, fail, split_commas
from flows.progress import print_summary, quiet_prefect, run_flow


def run(
    source: Annotated[str | None, typer.Argument(
        help="CSV/TSV/Parquet/JSON Lines/Excel file, a folder of them, or a quoted glob "
        "like 'landing/*.csv'. May instead be `source:` in --config.", show_default=False)
    ] = None,
    label: Annotated[str | None, typer.Option(
        "--label", "-l", help="Label column (required here or in --config; with --annotators "
        "the new column the consensus goes to).")] = None,
    task: Annotated[str | None, typer.Option(
        "--task", help="auto (default: many distinct numbers -> regression; tags joined by "
        "';', '|' or ',', or lists -> multilabel; else classification), classification, "
        "regression or multilabel.")
    ] = None,
    label_columns: Annotated[list[str] | None, typer.Option(
        "--label-columns", help="Multilabel from several 0/1 columns, one tag each "
        "(comma-separated or repeated); the tag column they make is --label (default `tags`).",
        callback=split_commas)] = None,
    label_delimiter: Annotated[str | None, typer.Option(
        "--label-delimiter", help="Multilabel: the text between tags (default: guessed among "
        "';', '|', ',').")] = None,
    id: Annotated[str | None, typer.Option(
        "--id", help="Unique id column; without it a `row_id` (0, 1, ...) is added.")] = None,
    text: Annotated[list[str] | None, typer.Option(
        "--text", help="Free-text columns (TF-IDF): comma-separated or repeated, e.g. "
        "--text title,body.", callback=split_commas)] = None,
    features: Annotated[list[str] | None, typer.Option(
        "--feature", "--features", help="Use only these feature columns: comma-separated or "
        "repeated. Default: all columns but label and id.", callback=split_commas)] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Dataset name (tables are named after it). Default: file stem.")
    ] = None,
    db: Annotated[Path | None, typer.Option(
        "--db", help="DuckDB warehouse file. Default: data/warehouse.duckdb.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML file with DatasetSpec settings; flags override it.")] = None,
    suite: Annotated[Path | None, typer.Option(
        "--suite", help="GX Core 1.x suite JSON for this dataset. Default: "
        "expectations/<dataset>.json when present.")] = None,
    group: Annotated[str | None, typer.Option(
        "--group", help="Rows sharing this column's value stay in one fold (e.g. a user or "
        "product id), so near-copies cannot leak between training and scoring.")] = None,
    slices: Annotated[list[str] | None, typer.Option(
        "--slices", help="Columns to audit label quality by (e.g. --slices source,annotator): "
        "issue rate per value against the rest, table slice_summary. Not used as features "
        "unless also given with --feature.", callback=split_commas)] = None,
    annotators: Annotated[list[str] | None, typer.Option(
        "--annotators", help="Several annotators: one label column each (comma-separated or "
        "repeated, e.g. --annotators ann,bob,cy; empty where one did not label a row). "
        "CROWDLAB's consensus becomes the label (written to --label, a new column, default "
        "consensus_label); annotator quality in table annotator_summary.",
        callback=split_commas)] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="auto (default: candidates measured by log loss on a sample of the data),"
        " or force a family: logreg, hgb, nb (text only), knn, ensemble (best two).")] = None,
    budget: Annotated[float | None, typer.Option(
        "--budget", help="Seconds the model fits may take (projected from the screening). "
        "Default: 3x logistic regression's, at least 30 s.", min=0.1)] = None,
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="Force a column's role: COLUMN=numeric|categorical|text|datetime|"
        "high_cardinality|ignore; repeat for several.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Publish every finding but change nothing: no relabel, no drop "
        "(<dataset>_clean = the data as given).")] = False,
    prune: Annotated[str | None, typer.Option(
        "--prune", help="Second pass without first-pass flagged rows: auto (default), off, "
        "replace, average.")] = None,
    pred_probs: Annotated[Path | None, typer.Option(
        "--pred-probs", help="Your own out-of-fold probabilities (.npy, one row per input row, "
        "one column per class in sorted order); skips training. A regression target: your own "
        "out-of-fold predictions, one value per input row.")] = None,
    pred_prob_columns: Annotated[list[str] | None, typer.Option(
        "--pred-prob-column", help="Or: data columns holding each class's probability, one "
        "per class in sorted class order (comma-separated or repeated).",
        callback=split_commas)] = None,
    embeddings: Annotated[Path | None, typer.Option(
        "--embeddings", help="Your own features (.npy, one row per input row) instead of the "
        "data's columns.")] = None,
    test: Annotated[Path | None, typer.Option(
        "--test", help="A labelled test file with the same columns: train the default model on "
        "the data as given and on the cleaned data and report both accuracies.")] = None,
    eval_holdout: Annotated[float | None, typer.Option(
        "--eval-holdout", help="Or: hold out this share of rows (e.g. 0.2) as the test set; "
        "its labels are taken as given.", min=0.01, max=0.89)] = None,
    folds: Annotated[int | None, typer.Option(
        "--folds", help="Cross-validation folds (default 5).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Tasks run at once (fold fits in parallel). Default: one per core.")
    ] = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="Where intermediates and cache live. Default: <db folder>/work.")
    ] = None,
    runner: Annotated[str, typer.Option(
        "--runner", help="Where the fold fits run: threads (this machine, default) or dask "
        "(a temporary local Dask cluster, or the one at --address).")] = "threads",
    address: Annotated[str | None, typer.Option(
        "--address", help="Dask scheduler address for --runner dask, e.g. tcp://host:8786.")
    ] = None,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Recompute every stage instead of reusing cached results.")] = False,
    full: Annotated[bool, typer.Option(
        "--full", help="A dataset folder: re-estimate every fold model now instead of an "
        "incremental run (a run of files is always full).")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No live progress: only warnings and the summary.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show Prefect's full run log.")] = False,
) -> None:
    """Clean a dataset and publish it to DuckDB.

    Ingests SOURCE, validates it with Great Expectations, estimates out-of-fold probabilities,
    finds label issues with cleanlab, and publishes the tables runs, issues, issue_summary,
    validations and <dataset>_clean in one transaction. Re-running on unchanged data reuses
    every cached stage and republishes the same run id.

    Examples:

      cleanset run data/reviews.csv --label sentiment --text review

      cleanset run 'landing/*.parquet' --label y --id customer_id --dataset churn

      cleanset run data/iris.csv --config cleanset.yaml --db /srv/warehouse.duckdb

      cleanset run reviews.parquet --label y --text body --group product_id

      cleanset run images.csv --label y --embeddings clip.npy
    """
    quiet_prefect(verbose)  # before anything imports Prefect (it reads logging settings once)
    from tasks.errors import CleansetError
    from tasks.sources import precheck
    from tasks.spec import build_spec, is_dataset_folder, parse_roles

    if source and is_dataset_folder(source):  # a dataset folder: its batches, its settings
        from flows.datasets_cli import run_folder

        settings = {"label": label, "task": task, "label-columns": label_columns,
                    "label-delimiter": label_delimiter, "id": id, "text": text, "feature": features,
                    "dataset": dataset, "config": config, "suite": suite, "group": group,
                    "slices": slices, "annotators": annotators, "model": model,
                    "budget": budget, "role": role,
                    "dry-run": dry_run, "prune": prune, "pred-probs": pred_probs,
                    "pred-prob-column": pred_prob_columns, "embeddings": embeddings,
                    "test": test, "eval-holdout": eval_holdout, "folds": folds, "seed": seed}
        given = [f"--{k}" for k, v in settings.items() if v not in (None, False, [], ())]
        return run_folder(source, db, work_dir, refresh, quiet, runner, address, given, full)

    try:
        spec = build_spec(
            config, source=source, label=label, task=task,
            label_columns=tuple(label_columns) if label_columns else None,
            label_delimiter=label_delimiter, id=id, text=tuple(text or ()),
            features=tuple(features) if features else None, dataset=dataset,
            db=str(db) if db else None, suite=str(suite) if suite else None, folds=folds,
            seed=seed, work_dir=str(work_dir) if work_dir else None, group=group, model=model,
            slices=tuple(slices) if slices else None,
            annotators=tuple(annotators) if annotators else None, prune=prune,
            pred_probs=str(pred_probs) if pred_probs else None,
            pred_prob_columns=tuple(pred_prob_columns or ()),
            embeddings=str(embeddings) if embeddings else None, workers=workers,
            test=str(test) if test else None, eval_holdout=eval_holdout, budget=budget,
            roles=parse_roles(role), dry_run=dry_run or None,
        )
        precheck(spec)  # files and named columns: fail fast, before anything heavy starts
    except CleansetError as exc:
        fail(str(exc))
    started = time.perf_counter()
    summary = run_flow(spec, refresh, quiet, runner, address)
    print_summary(summary, time.perf_counter() - started)


def demo(
    name: Annotated[str, typer.Option(
        "--data", help="Bundled scikit-learn dataset: digits, wine, breast_cancer, iris.")
    ] = "digits",
    noise: Annotated[float, typer.Option(
        "--noise", help="Fraction of labels to flip (planted errors).", min=0.0, max=0.9)] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the planted noise.")] = 0,
    db: DbOpt = Path("data/warehouse.duckdb"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show Prefect's full run log.")] = False,
) -> None:
    """Run the whole pipeline on a bundled dataset with planted label errors.

    Builds a CSV from scikit-learn's bundled data (no download), flips --noise of its labels with
    a fixed seed, cleans it, publishes to --db, and scores what was found against the plant.

    Example: cleanset demo --data wine --noise 0.2
    """
    import duckdb
    import numpy as np

    quiet_prefect(verbose)
    from tasks.errors import CleansetError
    from tasks.sample import load_builtin, plant_noise, precision_recall
    from tasks.spec import build_spec

    try:
        frame = load_builtin(name)
    except CleansetError as exc:
        fail(str(exc))
    truth = frame["label"].astype(str).to_numpy()
    noisy, mask = plant_noise(frame["label"].to_numpy(), noise, seed)
    frame["label"] = noisy
    out_dir = db.parent / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / f"{name}_noisy.csv"
    frame.to_csv(csv, index=False)
    console.print(f"[bold]demo:[/bold] {name}, {len(frame):,} rows, {int(mask.sum())} labels "
                  f"flipped ({noise:.0%}, seed {seed}) -> {csv}")
    spec = build_spec(source=str(csv), label="label", dataset=f"demo_{name}", db=str(db))
    started = time.perf_counter()
    summary = run_flow(spec, refresh=False, quiet=quiet)
    seconds = time.perf_counter() - started
    with duckdb.connect(str(db), read_only=True) as con:
        flagged = con.execute(
            "SELECT CAST(row_id AS BIGINT), is_label_issue, action, final_label FROM issues "
            "WHERE run_id = ? ORDER BY 1", [summary.run_id]).fetchall()
    found = np.zeros(len(mask), dtype=bool)
    dropped = np.zeros(len(mask), dtype=bool)
    relabelled = right = 0
    for rid, flag, action, final in flagged:
        found[rid] = bool(flag)
        dropped[rid] = action == "drop"
        if action == "relabel":
            relabelled += 1
            right += final == truth[rid]
    p, r, f1 = precision_recall(found, mask)
    print_summary(summary, seconds)
    kept = ~dropped
    before, after = 1 - mask.mean(), 1 - mask[kept].mean() if kept.any() else float("nan")
    fixes = f"; {right} of {relabelled} relabelled rows got their true label back" if (
        relabelled) else ""
    console.print(f"[bold]against the planted errors:[/bold] precision {p:.2f}, recall {r:.2f}, "
                  f"F1 {f1:.2f} ({int((found & mask).sum())} of {int(mask.sum())} found); "
                  f"{int(dropped.sum())} rows left out, {int((dropped & mask).sum())} of them "
                  f"planted errors; labels right {before:.1%} as given -> {after:.1%} in the "
                  f"clean table{fixes}", soft_wrap=True)
    query = (f"SELECT row_id, given_label, suggested_label, round(label_score, 3) AS score "
             f"FROM issues WHERE run_id = '{summary.run_id}' AND is_label_issue "
             f"ORDER BY label_score LIMIT 10")
    db_flag = "" if db == Path("data/warehouse.duckdb") else f" --db {db}"
    console.print("[bold]look at the worst rows:[/bold]")
    console.print(f'  uv run cleanset query{db_flag} "{query}"', highlight=False, soft_wrap=True)
