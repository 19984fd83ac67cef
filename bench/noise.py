"""Planted label noise for the do-no-harm benchmark: four shapes, fixed seeds, the mask kept.

- `none`: no flips (every change a tool makes is a harm);
- `symmetric`: `rate` of the rows, chosen at random, flipped to any other class uniformly;
- `class_conditional`: `rate` of the rows, chosen at random, each flipped into its class's most
  confusable class: the off-diagonal maximum of the confusion matrix of a reference model
  (out-of-fold on the TRUE labels; ties broken by the mean predicted probability);
- `feature_dependent`: the `rate` of the rows with the smallest margin of the reference model
  (true class probability minus the best other class), i.e. the hardest rows, each flipped to
  that runner-up class: what real annotators get wrong.

tasks/sample.py `plant_noise` is not reused: its class-conditional noise is a fixed k -> k+1
pairing and its feature-dependent noise ranks rows by the second-highest probability, not by the
margin over the true class.
"""

from __future__ import annotations

import numpy as np

NOISES = ("none", "symmetric", "class_conditional", "feature_dependent")
RATE = 0.10


def confusable(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """For each class, the other class the reference model confuses it with most."""
    k = probs.shape[1]
    counts = np.zeros((k, k))
    np.add.at(counts, (y, probs.argmax(axis=1)), 1.0)
    soft = np.zeros((k, k))
    np.add.at(soft, y, probs)
    score = counts + soft / (soft.sum() + 1.0)  # counts first, probability mass breaks ties
    np.fill_diagonal(score, -np.inf)
    return score.argmax(axis=1)


def plant(y: np.ndarray, kind: str, probs: np.ndarray | None, rate: float = RATE,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, mask of flipped rows) for integer labels y in 0..K-1."""
    y = np.asarray(y)
    n = len(y)
    k = int(probs.shape[1]) if probs is not None else int(y.max()) + 1
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    n_flip = int(round(rate * n))
    if kind == "none" or n_flip == 0:
        return noisy, np.zeros(n, dtype=bool)
    if kind == "symmetric":
        idx = rng.choice(n, size=n_flip, replace=False)
        noisy[idx] = (y[idx] + rng.integers(1, k, size=n_flip)) % k
    elif kind == "class_conditional":
        partner = confusable(y, probs)
        idx = rng.choice(n, size=n_flip, replace=False)
        noisy[idx] = partner[y[idx]]
    elif kind == "feature_dependent":
        others = probs.copy()
        others[np.arange(n), y] = -np.inf
        runner_up = others.argmax(axis=1)
        margin = probs[np.arange(n), y] - others[np.arange(n), runner_up]
        order = np.lexsort((rng.random(n), margin))  # smallest margin first, seeded ties
        idx = order[:n_flip]
        noisy[idx] = runner_up[idx]
    else:
        raise ValueError(f"unknown noise {kind!r}; choose one of {', '.join(NOISES)}")
    return noisy, noisy != y
