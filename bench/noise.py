"""Planted label noise for the do-no-harm benchmark: four shapes, fixed seeds, the mask kept.

- `none`: no flips (every change a tool makes is a harm);
- `symmetric`: `rate` of the rows, chosen at random, flipped to any other class uniformly;
- `class_conditional`: `rate` of the rows, each flipped into its class's most confusable class
  (the off-diagonal maximum of the confusion matrix of a reference model, out-of-fold on the TRUE
  labels; ties broken by the mean predicted probability); flips are shared among the classes in
  proportion to class size x how often the reference model confuses the class with that
  partner, rows drawn at random within a class: a class that is often mistaken is often
  mislabelled (at most 30% of a class, so its
  true label stays the majority). So the flip rate depends on the class; on binary data it is
  not the same as `symmetric`, which flips both classes alike;
- `feature_dependent`: the `rate` of the rows with the smallest margin of the reference model
  (true class probability minus the best other class), i.e. the hardest rows, each flipped to
  that runner-up class: what real annotators get wrong (at most 30% of a class, as above;
  before 2026-12-07 there was no cap, and results up to heldout_v3 were planted without it).
  The reference model here is the script's own model (the peer's family, 5-fold out-of-fold on
  the true labels), so the rows it finds hardest are the ones its own probabilities single out:
  this shape favours the script;
- `feature_dependent_rf`: the same rule with another reference model, a RandomForest out-of-fold
  on a shuffled StratifiedKFold (seed 1), which neither side uses: hard rows as a third party
  (an annotator) finds them, not as either tool's model does. Reported on its own summary line.

tasks/sample.py `plant_noise` is not reused: its class-conditional noise is a fixed k -> k+1
pairing and its feature-dependent noise ranks rows by the second-highest probability, not by the
margin over the true class.
"""

from __future__ import annotations

import numpy as np

ORIGINAL = ("none", "symmetric", "class_conditional", "feature_dependent")
NOISES = (*ORIGINAL, "feature_dependent_rf")
RATE = 0.10
CLASS_CAP = 0.3  # at most this share of a class is flipped (every shape but symmetric)


def confusion(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each class: the other class the reference model confuses it with most, and the share
    of the class's rows it puts there (at least a small floor, so every class can be drawn)."""
    k = probs.shape[1]
    counts = np.zeros((k, k))
    np.add.at(counts, (y, probs.argmax(axis=1)), 1.0)
    soft = np.zeros((k, k))
    np.add.at(soft, y, probs)
    score = counts + soft / (soft.sum() + 1.0)  # counts first, probability mass breaks ties
    np.fill_diagonal(score, -np.inf)
    partner = score.argmax(axis=1)
    sizes = np.maximum(np.bincount(y, minlength=k), 1)
    share = counts[np.arange(k), partner] / sizes
    return partner, np.maximum(share, 0.01)


def allocate(n_flip: int, sizes: np.ndarray, share: np.ndarray, cap: float = CLASS_CAP
              ) -> np.ndarray:
    """Flips per class, proportional to size x confusion share, no class above `cap` of its
    rows (water-filling: what a capped class cannot take goes to the others)."""
    limit = np.floor(cap * sizes).astype(int)
    out = np.zeros(len(sizes), dtype=int)
    open_ = limit > 0
    left = min(n_flip, int(limit.sum()))
    while left > 0 and open_.any():
        weight = np.where(open_, sizes * share, 0.0)
        want = np.floor(left * weight / weight.sum()).astype(int)
        want[np.argmax(weight)] += left - want.sum()  # rounding remainder to the largest
        take = np.minimum(want, limit - out)
        out += take
        left -= int(take.sum())
        open_ &= out < limit
    return out


def confusable(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """For each class, the other class the reference model confuses it with most."""
    return confusion(y, probs)[0]


def rf_reference(X, y: np.ndarray) -> np.ndarray:  # noqa: ANN001 - dense or sparse features
    """The `feature_dependent_rf` reference: RandomForest out-of-fold probabilities on the TRUE
    labels (shuffled StratifiedKFold, seed 1; one thread)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=1)
    model = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=1,
                                   n_jobs=1)
    return cross_val_predict(model, X, y, cv=folds, method="predict_proba")


def plant(y: np.ndarray, kind: str, probs: np.ndarray | None, rate: float = RATE,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, mask of flipped rows) for integer labels y in 0..K-1. `probs` is the
    reference model's out-of-fold probabilities (for `feature_dependent_rf`: `rf_reference`'s)."""
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
        partner, share = confusion(y, probs)
        counts = allocate(n_flip, np.bincount(y, minlength=k), share)
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), size=m, replace=False)
                              for c, m in enumerate(counts) if m])
        noisy[idx] = partner[y[idx]]
    elif kind in ("feature_dependent", "feature_dependent_rf"):
        others = probs.copy()
        others[np.arange(n), y] = -np.inf
        runner_up = others.argmax(axis=1)
        margin = probs[np.arange(n), y] - others[np.arange(n), runner_up]
        order = np.lexsort((rng.random(n), margin))  # smallest margin first, seeded ties
        # no class loses more than CLASS_CAP of its rows (as in class_conditional): without the
        # cap a rare class the reference model never predicts lost every row (rodent_species,
        # class of 10 rows: all flipped, and no tool can score a class that is gone)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        limit = np.floor(CLASS_CAP * np.bincount(y, minlength=k)).astype(int)
        within = np.zeros(n, dtype=bool)
        for c in range(k):
            rows = np.flatnonzero(y == c)
            within[rows[np.argsort(rank[rows])][:limit[c]]] = True
        idx = order[within[order]][:n_flip]
        noisy[idx] = runner_up[idx]
    else:
        raise ValueError(f"unknown noise {kind!r}; choose one of {', '.join(NOISES)}")
    return noisy, noisy != y
