"""task type: what kind of target the label column is (classification, regression or
multilabel), decided from the column when the settings say `auto`, with the reason in words
(logged, and stored in `runs.task` / `runs.task_reason`).

Rules for `auto` (pure, on the labelled, non-quarantined values):
- numbers (or text that is all numbers) with more than CONTINUOUS_MIN distinct values and more
  than CONTINUOUS_SHARE of the rows distinct -> regression (taken as classes it would be one
  tiny class per value);
- numbers as text with a few non-numbers mixed in -> refused, naming the text values;
- text of several words with more than FREE_TEXT_SHARE of the rows distinct (and more than
  CONTINUOUS_MIN) -> refused: free text is neither a class nor a number (many short distinct
  codes stay classes: their rare classes are flagged for review);
- anything else -> classification.
Multi-label (tag sets joined by a delimiter, list values, or `label_columns`) is decided before
validation by the tag-sets stage (tasks/tags.py), which uses `looks_like_tags` below; this module
decides between classification and regression for every other label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.errors import CleansetError

TASK_CHOICES = ("auto", "classification", "regression", "multilabel")
CONTINUOUS_MIN = 30  # distinct values above which a numeric label may be a regression target
CONTINUOUS_SHARE = 0.2  # ... when also more than this share of the rows is distinct
FREE_TEXT_SHARE = 0.5  # a text label with more distinct values per row is free text
MIXED_SHARE = 0.9  # text labels of which at least this share parse as numbers: numbers + typos
TAG_DELIMITERS = (";", "|", ",")
TAG_SHARE = 0.2  # text labels of which this share hold a delimiter look like tag sets


NO_TAGS = "-"  # a reviewer's new_label for the empty tag set (review files)


def tags_text(tags: frozenset[str] | set[str] | list[str], delimiter: str) -> str:
    """The canonical text of a tag set: sorted, joined by the delimiter ("" = no tags).
    (Here, not in tasks/tags.py, so the review commands stay light.)"""
    return delimiter.join(sorted(tags))


def split_text(text: str | None, delimiter: str) -> frozenset[str]:
    """The tag set of a canonical (or reviewer's) text; NO_TAGS and "" are the empty set."""
    if text is None or text.strip() in ("", NO_TAGS):
        return frozenset()
    return frozenset(t.strip() for t in str(text).split(delimiter) if t.strip())


def looks_like_tags(values: pd.Series) -> str | None:
    """The delimiter when the text labels look like tag sets ("sports;politics"): at least
    TAG_SHARE of them hold it and its parts are fewer distinct values than the labels."""
    if pd.api.types.is_numeric_dtype(values) or values.empty:
        return None
    text = values.astype(str)
    for d in TAG_DELIMITERS:
        holding = text.str.contains(d, regex=False)
        if holding.mean() >= TAG_SHARE:
            parts = text.str.split(d).explode().str.strip()
            if parts.nunique() < text.nunique():
                return d
    return None


def _numbers(values: pd.Series) -> pd.Series:
    """The values as floats (NaN where not a number); bool is not a number here."""
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index)
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    if isinstance(values.dtype, pd.StringDtype):  # parsed once per distinct value
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        parsed = pd.to_numeric(pd.Series(uniques, dtype=object).astype(str).str.strip(),
                               errors="coerce").to_numpy(dtype="float64")
        out = np.append(parsed, np.nan)[codes]  # -1 (missing): NaN
        return pd.Series(out, index=values.index)
    return pd.to_numeric(values.astype(str).str.strip(), errors="coerce")


def _wordy(values: pd.Series) -> bool:
    """Sentences rather than names or codes: several words, or long strings, on average.
    (Many short distinct values are many classes: the rare ones go to review, not refused.)"""
    text = values.astype(str).head(2000)
    return bool(text.str.split().str.len().mean() >= 3 or text.str.len().mean() > 30)


def _shown(values: pd.Series, k: int = 5) -> str:
    return ", ".join(repr(v) for v in pd.unique(values)[:k])


def decide_task(labels: pd.Series, label: str, requested: str = "auto") -> tuple[str, str]:
    """(task, reason) for the label column's present values; CleansetError when it fits none
    or when the requested task cannot take it."""
    if requested not in TASK_CHOICES:
        raise CleansetError(f"unknown task {requested!r}; choose one of {', '.join(TASK_CHOICES)}")
    if requested == "multilabel":  # the tag-sets stage (tasks/tags.py) takes every such label
        raise CleansetError(f"label column {label!r} could not be read as tag sets")
    values = labels.dropna()
    n, distinct = len(values), int(values.nunique())
    numbers = _numbers(values)
    parsed = int(numbers.notna().sum())
    if requested == "regression":
        if parsed < n:
            bad = values[numbers.isna()]
            raise CleansetError(
                f"label column {label!r} is a regression target but {len(bad):,} of its "
                f"{n:,} values are not numbers (e.g. {_shown(bad)}): fix or blank them")
        if not np.isfinite(numbers.to_numpy()).all():
            raise CleansetError(f"label column {label!r} holds infinite values; a regression "
                                "target must be finite numbers")
        return "regression", "set in the settings (task: regression)"
    if requested == "classification":
        return "classification", "set in the settings (task: classification)"
    many = distinct > CONTINUOUS_MIN and distinct > CONTINUOUS_SHARE * n
    if parsed == n and n and many and not pd.api.types.is_bool_dtype(values):
        if not np.isfinite(numbers.to_numpy()).all():
            raise CleansetError(f"label column {label!r} holds infinite values; a regression "
                                "target must be finite numbers")
        return "regression", (f"numeric label with {distinct:,} distinct values in {n:,} rows "
                              f"(more than {CONTINUOUS_MIN} and {CONTINUOUS_SHARE:.0%} of the "
                              "rows): a regression target")
    if many and n and parsed >= MIXED_SHARE * n:
        bad = values[numbers.isna()]
        raise CleansetError(
            f"label column {label!r} looks like numbers ({parsed:,} of {n:,} values, "
            f"{distinct:,} distinct) with text mixed in (e.g. {_shown(bad)}): fix or blank "
            "those values for a regression target, or set task: classification (--task)")
    if n and distinct > CONTINUOUS_MIN and distinct > FREE_TEXT_SHARE * n and _wordy(values):
        raise CleansetError(
            f"label column {label!r} holds {distinct:,} distinct text values in {n:,} rows "
            f"(e.g. {_shown(values, 3)}): that is free text, neither classes nor numbers. "
            "Choose the class or target column with --label, or give it as --text and label "
            "another column")
    reason = f"{distinct:,} distinct label values in {n:,} rows: classes"
    tags = looks_like_tags(values)
    if tags:  # (auto takes such a column as multilabel before this: tasks/tags.py)
        reason += (f"; the values look like tag sets separated by {tags!r}: each distinct set "
                   "is one class (set task: multilabel to take them as tags)")
    return "classification", reason
