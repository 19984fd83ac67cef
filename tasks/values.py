"""Per-value work done once per distinct value: a label column of a million rows holds a handful
of classes, and a Python function called on every row cost seconds in every run (featurize,
tag-sets, detect, the batch audit)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def exact_uniques(values: pd.Series) -> bool:
    """Whether grouping `values` by equality keeps apart values that print differently: a
    string, numeric or boolean column. (An object column may hold 1, 1.0 and True, which are
    equal, and hash alike, but are different labels as text.)"""
    dtype = values.dtype
    return isinstance(dtype, pd.StringDtype) or pd.api.types.is_numeric_dtype(dtype) or \
        pd.api.types.is_bool_dtype(dtype)


def map_values(values: pd.Series, fn: Callable[[object], object]) -> pd.Series:
    """`fn` of every present value, None where the value is missing (an object Series on the
    same index): `fn` runs once per distinct value when exact_uniques allows, else per row."""
    if exact_uniques(values):
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        mapped = np.empty(len(uniques) + 1, dtype=object)
        mapped[:-1] = [fn(v) for v in uniques]
        mapped[-1] = None  # code -1: missing
        return pd.Series(mapped[codes], index=values.index, dtype=object)
    out = values.astype(object).where(values.notna(), None)
    return pd.Series([None if v is None else fn(v) for v in out], index=values.index,
                     dtype=object)


def all_missing_flags(n: int) -> pd.arrays.BooleanArray:
    """A nullable boolean array of `n` missing values (pd.array([pd.NA] * n) boxes n objects)."""
    return pd.arrays.BooleanArray(np.zeros(n, dtype=bool), np.ones(n, dtype=bool))
