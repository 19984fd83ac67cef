"""The benchmark's planted noise (bench/noise.py): every shape flips the asked share, and no
class loses more than CLASS_CAP of its rows (a rare class the reference model never predicts
once lost every row, so no tool could score the case)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.noise import CLASS_CAP, NOISES, plant


@pytest.mark.parametrize("kind", [k for k in NOISES if k != "none"])
def test_a_rare_class_the_reference_never_predicts_keeps_most_of_its_rows(kind):
    y = np.repeat(np.arange(4), [500, 400, 90, 10])
    probs = np.full((len(y), 4), 0.05)
    probs[np.arange(len(y)), y] = 0.85  # right, and sure of it ...
    probs[y == 3] = [0.85, 0.05, 0.05, 0.05]  # ... but class 3 is always called class 0
    noisy, mask = plant(y, kind, probs, rate=0.1, seed=0)
    assert mask.sum() == 100 and (noisy[mask] != y[mask]).all()
    lost = np.bincount(y[mask], minlength=4) / np.bincount(y)
    if kind != "symmetric":  # symmetric draws rows at random, whatever their class
        assert lost.max() <= CLASS_CAP
    assert (np.bincount(noisy, minlength=4) > 0).all()
