"""Several annotators per row (issue 17 item 4): the `vote` and `consensus` stages.

Input: one label column per annotator (`annotators: [a, b, c]`, the wide form; a missing value
where an annotator did not label the row). The long form (row id, annotator, label) becomes the
wide one with `long_to_wide` (or DuckDB's PIVOT, README "Several annotators").

- vote (right after ingest): the majority vote of the annotators becomes the label column
  (`spec.label`, a new column), so the models can be trained (`majority_vote`: ties go to the
  class labeled more often overall, then to the first in sorted order: deterministic).
- consensus (after the out-of-fold probabilities): CROWDLAB
  (`cleanlab.multiannotator.get_label_quality_multiannotator`, `crowdlab` below) weighs each
  annotator by its estimated quality together with the model: its consensus label replaces the
  vote in the snapshot and the design, so detection, policy and publish run on it; each row gets
  `consensus_quality` and `annotator_agreement`, each annotator a quality score
  (`annotator_summary`). With one annotator (or no row labeled twice) the vote is the label and
  nothing else changes. Classification only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict

from tasks.caching import stage
from tasks.errors import CleansetError
from tasks.featurize import Design, _label_text, match_decisions
from tasks.ingest import Snapshot
from tasks.spec import label_exists
from tasks.store import ArrayRef, TableRef, write_array, write_table

ANNOTATOR_COLUMNS = ["annotator", "annotator_quality", "agreement_with_consensus",
                     "worst_class", "num_examples_labeled"]
ROW_COLUMNS = ["consensus_quality", "annotator_agreement"]  # the issues table's, per row


def long_to_wide(long: pd.DataFrame, row: str, annotator: str, label: str) -> pd.DataFrame:
    """(row id, annotator, label) rows -> one column per annotator, indexed by row id. An
    annotator labeling one row twice keeps the last label."""
    missing = [c for c in (row, annotator, label) if c not in long.columns]
    if missing:
        raise CleansetError(f"annotation column(s) {', '.join(map(repr, missing))} are not in "
                            f"the data; available: {', '.join(map(str, long.columns))}")
    last = long.drop_duplicates([row, annotator], keep="last")
    return last.pivot(index=row, columns=annotator, values=label)


def annotation_texts(wide: pd.DataFrame) -> np.ndarray:
    """Each annotation as label text (as the issues table writes labels: 1.0 -> "1"), None where
    the annotator did not label the row."""
    values = wide.to_numpy(dtype=object)
    present = ~pd.isna(values)
    out = np.full(values.shape, None, dtype=object)
    out[present] = [_label_text(v) for v in values[present]]
    return out


def annotation_codes(texts: np.ndarray, classes: tuple[str, ...] | None = None
                     ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Annotations (label texts, None = not labeled) as class indices (float, NaN = not labeled
    or a class outside `classes`) and the classes (default: every label given, sorted)."""
    present = np.array([v is not None for v in texts.ravel()], dtype=bool).reshape(texts.shape)
    if classes is None:
        classes = tuple(sorted({str(v) for v in texts[present]}))
    index = {c: float(i) for i, c in enumerate(classes)}
    codes = np.full(texts.shape, np.nan)
    codes[present] = [index.get(v, np.nan) for v in texts[present]]
    return codes, classes


def encode_annotations(wide: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    """Annotator labels as class indices (float, NaN = not labeled) and the sorted classes;
    every row must have a label (for CROWDLAB on its own, as bench/annotators.py uses it)."""
    codes, classes = annotation_codes(annotation_texts(wide))
    if len(classes) < 2:
        raise CleansetError("the annotators' labels hold fewer than two classes")
    empty = np.isnan(codes).all(axis=1)
    if empty.any():
        raise CleansetError(f"{int(empty.sum())} row(s) have no label from any annotator (e.g. "
                            f"row {wide.index[np.flatnonzero(empty)[0]]!r})")
    return codes, classes


def majority_vote(codes: np.ndarray) -> np.ndarray:
    """The most frequent label of each row (class indices; -1 where nobody labeled the row).
    Ties go to the class labeled most often over the whole data, then to the lower index, so
    the same annotations always give the same vote."""
    n, _ = codes.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = int(np.nanmax(codes)) + 1 if np.isfinite(codes).any() else 1
    counts = np.zeros((n, k), dtype=np.int64)
    for column in codes.T:
        seen = ~np.isnan(column)
        np.add.at(counts, (np.flatnonzero(seen), column[seen].astype(np.int64)), 1)
    overall = counts.sum(axis=0)
    order = np.lexsort((np.arange(k)[::-1], overall))  # ascending: least frequent first
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)  # the most frequent class (lowest index on ties) ranks highest
    vote = np.argmax(counts * (k + 1) + rank, axis=1)
    return np.where(counts.sum(axis=1) > 0, vote, -1).astype(np.int64)


def crowdlab(codes: np.ndarray, pred_probs: np.ndarray, annotators: list[str],
             classes: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per row: consensus_label, consensus_quality_score, annotator_agreement,
    num_annotations; per annotator: ANNOTATOR_COLUMNS) from CROWDLAB, with `pred_probs` the
    out-of-fold probabilities of a model trained on the majority vote."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    found = get_label_quality_multiannotator(
        pd.DataFrame(codes, columns=list(annotators)), pred_probs,
        return_detailed_quality=False, return_annotator_stats=True, verbose=False)
    names = np.asarray(classes, dtype=object)
    rows = found["label_quality"]
    consensus = pd.DataFrame({
        "consensus_label": names[rows["consensus_label"].to_numpy(dtype=np.int64)],
        "consensus_quality_score": rows["consensus_quality_score"].to_numpy(dtype="float64"),
        "annotator_agreement": rows["annotator_agreement"].to_numpy(dtype="float64"),
        "num_annotations": rows["num_annotations"].to_numpy(dtype=np.int64)})
    stats = found["annotator_stats"]
    order = [str(a) for a in stats.index]
    summary = pd.DataFrame({
        "annotator": order,
        "annotator_quality": stats["annotator_quality"].to_numpy(dtype="float64"),
        "agreement_with_consensus": stats["agreement_with_consensus"].to_numpy(dtype="float64"),
        "worst_class": names[stats["worst_class"].to_numpy(dtype=np.int64)],
        "num_examples_labeled": stats["num_examples_labeled"].to_numpy(dtype=np.int64)})
    summary = summary.sort_values("annotator_quality", ascending=False, kind="stable")
    return consensus, summary[ANNOTATOR_COLUMNS].reset_index(drop=True)  # best first


def activelab_scores(labels: np.ndarray, pred_probs: np.ndarray,
                     unlabeled_probs: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """ActiveLab priorities with one annotator per labeled row: cleanlab's
    `multiannotator.get_active_learning_scores(labels[:, None], pred_probs, unlabeled_probs)` in
    whole-array numpy (cleanlab loops over rows in Python: ~5 s at 100,000 rows; this takes
    milliseconds). Lower = (re)label it first; labeled and unlabeled scores are comparable.

    With a single annotator cleanlab's consensus is the given label, its quality the
    self-confidence p[i, label_i], the model and annotator weights 1 and the temperature 1, so
    a labeled row scores average((p[i, label_i], 1/K), weights=(2, 1)) and an unlabeled one
    average((max_k p~[i, k], 1/K), weights=(1, 1)), p~ being its probabilities clipped at 1e-30
    and renormalised (cleanlab's temperature scaling at temperature 1). Parity with cleanlab:
    tests/test_annotators.py."""
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    k = pred_probs.shape[1]
    labels = np.asarray(labels).astype(np.int64)
    quality = pred_probs[np.arange(len(labels)), labels]
    labeled = (2.0 * quality + 1.0 / k) / 3.0
    if unlabeled_probs is None:
        return labeled, np.array([])
    p = np.clip(np.asarray(unlabeled_probs, dtype=np.float64), 1e-30, None)
    p /= p.sum(axis=1, keepdims=True)
    p = np.exp(np.log(p))  # cleanlab's softmax at temperature 1 (shift=False), then renormalised
    p /= p.sum(axis=1, keepdims=True)
    return labeled, (p.max(axis=1) + 1.0 / k) / 2.0


# ---- the pipeline's side: vote (after ingest) and consensus (after the probabilities) -------

def check_annotator_columns(columns: list[str], annotators: list[str], label: str) -> None:
    """Every annotator column is in the data and the label column is not (it is written)."""
    missing = [a for a in annotators if a not in columns]
    if missing:
        raise CleansetError(f"annotator column(s) {', '.join(map(repr, missing))} are not in the "
                            f"data; available columns: {', '.join(map(str, columns))}")
    if label in columns:
        raise CleansetError(label_exists(label))


def representatives(table: pa.Table, annotators: list[str]) -> tuple[dict[str, object],
                                                                      pa.DataType | None]:
    """Each label text's first original value in the annotator columns, and the columns' one
    Arrow type (None when they differ: the label column is then text)."""
    types = {table.schema.field(a).type for a in annotators}
    common = types.pop() if len(types) == 1 else None
    if common is not None and pa.types.is_null(common):
        common = None
    found: dict[str, object] = {}
    for a in annotators:
        for v in pd.unique(pd.Series(table.column(a).to_pylist(), dtype=object).dropna()):
            found.setdefault(_label_text(v), v)
    return found, common


def label_array(texts: list[str | None], found: dict[str, object],
                common: pa.DataType | None) -> pa.Array:
    """The label column: each label's original value in the annotators' type (text when the
    annotator columns differ in type)."""
    if common is None:
        return pa.array(texts, type=pa.string())
    try:
        return pa.array([None if t is None else found[t] for t in texts], type=common)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(texts, type=pa.string())


def vote_table(table: pa.Table, annotators: list[str], label: str
               ) -> tuple[pa.Table, dict[str, int]]:
    """The data with the annotators' majority vote appended as column `label` (empty where no
    annotator labeled the row), and counts: rows, rows labeled twice or more, rows with no
    label, rows whose annotators disagree."""
    check_annotator_columns(table.column_names, annotators, label)
    wide = pd.DataFrame({a: table.column(a).to_pylist() for a in annotators})
    texts = annotation_texts(wide)
    codes, classes = annotation_codes(texts)
    vote = majority_vote(codes)
    names = np.asarray(classes, dtype=object)
    voted = [names[v] if v >= 0 else None for v in vote]
    found, common = representatives(table, annotators)
    labeled = (~np.isnan(codes)).sum(axis=1)
    agree = np.array([len({c for c in row if c == c}) <= 1 for row in codes])
    counts = {"rows": len(vote), "labeled_twice": int((labeled >= 2).sum()),
              "unlabeled": int((labeled == 0).sum()), "disagree": int((~agree).sum())}
    return table.append_column(label, label_array(voted, found, common)), counts


@stage("vote")
def vote(snapshot: Snapshot, annotators: list[str], label: str, work_dir: str) -> Snapshot:
    """Several annotators: their majority vote becomes the label column (a new snapshot), so the
    rest of the run can train on it; the consensus stage replaces it with CROWDLAB's."""
    table, counts = vote_table(pq.read_table(snapshot.table.path), annotators, label)
    ref = write_table(table, Path(work_dir), "snapshots")
    get_run_logger().info(
        "vote: %d annotators; %d of %d rows labeled twice or more, %d with no label, %d with "
        "disagreeing annotators; majority vote -> column %r", len(annotators),
        counts["labeled_twice"], counts["rows"], counts["unlabeled"], counts["disagree"], label)
    return snapshot.model_copy(update={"table": ref, "columns": (*snapshot.columns, label)})


class Consensus(BaseModel):
    """The consensus stage's result: the snapshot and design on the consensus label, the rows'
    consensus quality and agreement, and the annotators' quality (None: the vote stands)."""

    model_config = ConfigDict(frozen=True)
    snapshot: Snapshot
    design: Design
    rows: TableRef | None = None  # ROW_COLUMNS, one row per snapshot row
    annotators: TableRef | None = None  # ANNOTATOR_COLUMNS, best first
    n_changed: int = 0  # scored rows whose consensus differs from the majority vote
    method: str = "majority vote"  # or "CROWDLAB", and why not when it could not run


def consensus_labels(texts: np.ndarray, names: list[str], labels: np.ndarray,
                     pred_probs: np.ndarray, classes: tuple[str, ...]
                     ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame] | str:
    """CROWDLAB on the scored rows: (consensus class index per row, rows' ROW_COLUMNS,
    annotators' ANNOTATOR_COLUMNS), or why the vote stands. `texts`: the scored rows'
    annotations; `labels`: their majority vote (class indices); labels outside `classes`
    (rare classes, not scored) are left out."""
    codes, _ = annotation_codes(texts, classes)
    used = ~np.isnan(codes).all(axis=0)
    if used.sum() < 2:
        return "fewer than two annotators labeled the scored rows"
    codes = codes[:, used]
    if not ((~np.isnan(codes)).sum(axis=1) >= 2).any():
        return "no row is labeled by two annotators"
    rows = ~np.isnan(codes).all(axis=1)
    if not rows.all():  # a voted label of a class only others' rare labels share: keep it
        codes[~rows, 0] = labels[~rows]
    found, summary = crowdlab(codes, pred_probs, [n for n, u in zip(names, used, strict=True)
                                                  if u], classes)
    index = {c: i for i, c in enumerate(classes)}
    chosen = found["consensus_label"].map(index).to_numpy(dtype=np.int64)
    per_row = pd.DataFrame({"consensus_quality": found["consensus_quality_score"].to_numpy(),
                            "annotator_agreement": found["annotator_agreement"].to_numpy()})
    summary = summary.rename(columns={"num_examples_labeled": "rows_labeled"})
    return chosen, per_row, summary


@stage("consensus")
def consensus(snapshot: Snapshot, design: Design, pred_probs: ArrayRef, annotators: list[str],
              label: str, work_dir: str, decisions: TableRef | None = None) -> Consensus:
    """CROWDLAB's consensus label (from the annotators and the out-of-fold probabilities of
    the model trained on their majority vote) replaces the vote: in the snapshot's label column
    and in the design's labels (a reviewer's relabel still wins), so detection, policy and
    publish run on it. Rows not scored keep the vote."""
    logger = get_run_logger()
    if design.task != "classification":
        raise CleansetError(f"annotators work for classification only; their label was taken "
                            f"for a {design.task} target (set task: classification)")
    table = pq.read_table(snapshot.table.path)
    positions, labels = design.positions.read(), design.labels.read()
    wide = pd.DataFrame({a: table.column(a).to_pylist() for a in annotators})
    texts = annotation_texts(wide)
    found = consensus_labels(texts[positions], list(annotators), labels, pred_probs.read(),
                             design.classes)
    if isinstance(found, str):
        logger.info("consensus: the majority vote stands (%s)", found)
        return Consensus(snapshot=snapshot, design=design, method=f"majority vote ({found})")
    chosen, per_row, summary = found
    work = Path(work_dir)
    new_labels = chosen.copy()
    if decisions is not None:  # a reviewer's relabel (already in design.labels) wins
        row_ids = pd.Series(table.column(snapshot.id_column).to_pylist(), dtype=object)
        latest, pos, _ = match_decisions(decisions.read(), row_ids)
        relabelled = pos[latest["decision"].to_numpy() == "relabel"]
        keep = np.isin(positions, relabelled)
        new_labels[keep] = labels[keep]
    names = np.asarray(design.classes, dtype=object)
    column = table.column(label).to_pylist()
    texts_out = [None if v is None else _label_text(v) for v in column]
    for p, c in zip(positions, chosen, strict=True):
        texts_out[p] = names[c]
    reps, common = representatives(table, list(annotators))
    index = table.column_names.index(label)
    table = table.set_column(index, label, label_array(texts_out, reps, common))
    rows = pd.DataFrame({c: np.full(table.num_rows, np.nan) for c in ROW_COLUMNS})
    rows.loc[positions, ROW_COLUMNS] = per_row[ROW_COLUMNS].to_numpy()
    n_changed = int((chosen != labels).sum())
    worst = summary.iloc[-1]
    logger.info("consensus: CROWDLAB over %d annotators; consensus differs from the majority "
                "vote on %d of %d rows; lowest annotator quality: %s (%.3f)", len(summary),
                n_changed, len(positions), worst["annotator"], worst["annotator_quality"])
    return Consensus(
        snapshot=snapshot.model_copy(update={"table": write_table(table, work, "snapshots")}),
        design=design.model_copy(update={"labels": write_array(new_labels, work, "design")}),
        rows=write_table(rows, work, "consensus"), annotators=write_table(summary, work,
                                                                          "consensus"),
        n_changed=n_changed, method="CROWDLAB")
