"""Sample data that ships offline (scikit-learn's bundled datasets) and planted label noise.

Used by `cleanset demo`, the tests and the benchmarks: the planted mask is the ground truth that
precision and recall are measured against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import datasets

from tasks.errors import CleansetError

BUILTIN = {
    "digits": datasets.load_digits,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "iris": datasets.load_iris,
}


def load_builtin(name: str) -> pd.DataFrame:
    """A bundled scikit-learn dataset as a frame of features plus a `label` column."""
    if name not in BUILTIN:
        raise CleansetError(f"unknown sample dataset {name!r}; choose one of {', '.join(BUILTIN)}")
    bunch = BUILTIN[name](as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label"})
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


def plant_noise(
    labels: np.ndarray, rate: float, seed: int = 0, kind: str = "symmetric",
    pred_probs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip a `rate` fraction of labels; return (noisy labels, mask of flipped rows).

    kind: `symmetric` (to any other class uniformly), `class_conditional` (class k to the next
    class k+1, a fixed confusable pairing), or `feature_dependent` (the rows a reference model is
    least sure about, flipped to its second choice; needs `pred_probs`).
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    k = len(classes)
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(labels)))
    noisy = labels.copy()
    if n_flip == 0:
        return noisy, np.zeros(len(labels), dtype=bool)
    if kind == "feature_dependent":
        if pred_probs is None:
            raise ValueError("feature_dependent noise needs pred_probs from a reference model")
        order = np.argsort(-np.sort(pred_probs, axis=1)[:, -2] + rng.random(len(labels)) * 1e-9)
        idx = order[:n_flip]
        second = np.argsort(pred_probs[idx], axis=1)[:, -2]
        noisy[idx] = classes[second]
        still = noisy[idx] == labels[idx]
        noisy[idx[still]] = classes[(np.searchsorted(classes, labels[idx[still]]) + 1) % k]
    else:
        idx = rng.choice(len(labels), size=n_flip, replace=False)
        pos = np.searchsorted(classes, labels[idx])
        if kind == "symmetric":
            shift = rng.integers(1, k, size=n_flip)
        elif kind == "class_conditional":
            shift = np.ones(n_flip, dtype=int)
        else:
            raise ValueError(f"unknown noise kind {kind!r}")
        noisy[idx] = classes[(pos + shift) % k]
    mask = noisy != labels
    return noisy, mask


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of a boolean flag vector against the planted mask."""
    flagged, truth = np.asarray(flagged, bool), np.asarray(truth, bool)
    tp = int((flagged & truth).sum())
    p = tp / flagged.sum() if flagged.sum() else 0.0
    r = tp / truth.sum() if truth.sum() else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return float(p), float(r), float(f)
