"""Several annotators per row (issue 17 item 4, the pure part; not wired into the flow yet):
the consensus label and its quality, and each annotator's quality, from CROWDLAB
(`cleanlab.multiannotator.get_label_quality_multiannotator`).

Input: one label column per annotator (`wide`: rows x annotators, a missing value where an
annotator did not label the row), or the long form (row id, annotator, label) turned into it by
`long_to_wide`. CROWDLAB needs out-of-fold probabilities: train the pipeline on the
majority-vote label (`majority_vote`), then call `crowdlab` with its probabilities. Classification
only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.errors import CleansetError

ANNOTATOR_COLUMNS = ["annotator", "annotator_quality", "agreement_with_consensus",
                     "worst_class", "num_examples_labeled"]


def long_to_wide(long: pd.DataFrame, row: str, annotator: str, label: str) -> pd.DataFrame:
    """(row id, annotator, label) rows -> one column per annotator, indexed by row id. An
    annotator labeling one row twice keeps the last label."""
    missing = [c for c in (row, annotator, label) if c not in long.columns]
    if missing:
        raise CleansetError(f"annotation column(s) {', '.join(map(repr, missing))} are not in "
                            f"the data; available: {', '.join(map(str, long.columns))}")
    last = long.drop_duplicates([row, annotator], keep="last")
    return last.pivot(index=row, columns=annotator, values=label)


def encode_annotations(wide: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    """Annotator labels as class indices (float, NaN = not labeled) and the sorted classes."""
    values = wide.to_numpy(dtype=object)
    present = ~pd.isna(values)
    classes = tuple(sorted({str(v) for v in values[present]}))
    if len(classes) < 2:
        raise CleansetError("the annotators' labels hold fewer than two classes")
    index = {c: float(i) for i, c in enumerate(classes)}
    codes = np.full(values.shape, np.nan)
    codes[present] = [index[str(v)] for v in values[present]]
    empty = np.isnan(codes).all(axis=1)
    if empty.any():
        raise CleansetError(f"{int(empty.sum())} row(s) have no label from any annotator (e.g. "
                            f"row {wide.index[np.flatnonzero(empty)[0]]!r})")
    return codes, classes


def majority_vote(codes: np.ndarray, pred_probs: np.ndarray | None = None) -> np.ndarray:
    """cleanlab's majority vote (ties broken by pred_probs when given, else by annotator
    agreement and class frequency)."""
    from cleanlab.multiannotator import get_majority_vote_label

    return get_majority_vote_label(codes, pred_probs, verbose=False).astype(np.int64)


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
