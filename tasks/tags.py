"""tag-sets: multi-label labels as sets of tags, before validation.

A multi-label label comes as one text column of tags joined by a delimiter ("sports;politics"),
a list column (Parquet / JSON Lines lists), or several 0/1 columns (`label_columns`). This stage
decides whether the run is multi-label (`task: multilabel`, `label_columns`, or `task: auto` when
the column looks like tag sets: tasks/task_type.looks_like_tags, or holds lists) and, when it is,
rewrites the label column of the snapshot as canonical text: the row's tags, sorted, joined by
the delimiter (";" for lists and 0/1 columns). Every later stage reads that one form.

- An empty tag set is allowed and means "no tags" (an empty list, an empty string or a missing
  value, or all 0/1 columns 0): it is stored as the empty string, never as "no label".
- A tag seen in fewer than MIN_TAG_ROWS rows cannot be cross-checked (most folds never see it):
  it is warned about and not scored (it stays in the row's given tags).
- A column mixing lists and non-list values is refused, naming an example of each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from tasks.caching import stage
from tasks.errors import CleansetError
from tasks.ingest import Snapshot
from tasks.store import write_table
from tasks.task_type import (  # noqa: F401 - NO_TAGS, split_text, tags_text: light, used here
    NO_TAGS,
    TAG_DELIMITERS,
    looks_like_tags,
    split_text,
    tags_text,
)

MIN_TAG_ROWS = 3  # a tag in fewer rows is not scored (warned): too few to cross-check


class TagSets(BaseModel):
    """A multi-label run's tags: the snapshot with the canonical label column, the delimiter,
    every tag with its row count, and why the run is multi-label."""

    model_config = ConfigDict(frozen=True)
    snapshot: Snapshot
    delimiter: str
    tags: tuple[tuple[str, int], ...]  # (tag, rows carrying it), by tag
    n_empty: int  # rows with no tags
    reason: str
    warnings: tuple[str, ...] = ()

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.tags)

    @property
    def scored(self) -> tuple[str, ...]:
        """Tags seen often enough to be cross-checked."""
        return tuple(t for t, n in self.tags if n >= MIN_TAG_ROWS)

    @property
    def rare(self) -> tuple[str, ...]:
        return tuple(t for t, n in self.tags if n < MIN_TAG_ROWS)


def _is_list(v: object) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _json_list(v: object) -> list | None:
    """A JSON array written as text ('["a", "b"]', as DuckDB gives a JSON column), else None."""
    if isinstance(v, str) and v.strip().startswith("[") and v.strip().endswith("]"):
        try:
            parsed = json.loads(v)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) else None
    return None


def _missing(v: object) -> bool:
    return v is None or (not _is_list(v) and (pd.isna(v) or (isinstance(v, str) and not
                                                               v.strip())))


def as_lists(values: pd.Series) -> pd.Series | None:
    """The values as lists when the column holds lists (or JSON arrays as text), with missing
    values as empty lists; None when it holds no list. A column mixing lists and other values
    is a CleansetError."""
    if isinstance(values.dtype, pd.StringDtype) and not any(
            _json_list(v) is not None for v in pd.unique(values.dropna())):
        return None  # text, none of it a JSON array (each distinct value looked at once)
    listed = values.map(lambda v: list(v) if _is_list(v) else _json_list(v))
    is_list = listed.map(lambda v: v is not None)
    if not is_list.any():
        return None
    other = ~is_list & ~values.map(_missing)
    if other.any():
        raise CleansetError(
            f"label column {values.name!r} mixes lists ({int(is_list.sum()):,} rows, e.g. "
            f"{listed[is_list].iloc[0]!r}) and other values ({int(other.sum()):,} rows, e.g. "
            f"{values[other].iloc[0]!r}): give every row's tags as a list, or every row as text "
            "joined by one delimiter")
    return listed.map(lambda v: [] if v is None else v)


def parse_tags(values: pd.Series, delimiter: str | None) -> list[frozenset[str]]:
    """Each row's tag set: list values as they are, text split on `delimiter`; tags are
    stripped, empty parts ignored; a missing value or empty text is the empty set."""
    lists = as_lists(values)
    if lists is not None:
        rows = lists.tolist()
    else:
        text = values.astype(object).where(values.notna(), "").astype(str)
        rows = [s.split(delimiter) if delimiter else [s] for s in text]
    return [frozenset(str(t).strip() for t in row if t is not None and str(t).strip())
            for row in rows]


def from_columns(df: pd.DataFrame, columns: tuple[str, ...]) -> list[frozenset[str]]:
    """Tag sets from several 0/1 columns (a column's name is its tag; 1/true = tagged; a
    missing value = not tagged). Other values are a CleansetError naming the column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CleansetError(f"label_columns {', '.join(map(repr, missing))} are not in the data; "
                            f"available columns: {', '.join(map(str, df.columns))}")
    flags = []
    for c in columns:
        col = df[c]
        as_num = pd.to_numeric(col.map(lambda v: {True: 1, False: 0}.get(v, v) if isinstance(
            v, bool) else v), errors="coerce")
        bad = col.notna() & ~as_num.isin([0, 1])
        if bad.any():
            raise CleansetError(f"label column {c!r} (label_columns) must hold 0/1 values; found "
                                f"{col[bad].iloc[0]!r} ({int(bad.sum()):,} rows)")
        flags.append(as_num.fillna(0).to_numpy(dtype=bool))
    matrix = np.column_stack(flags) if flags else np.zeros((len(df), 0), dtype=bool)
    names = np.array([str(c) for c in columns], dtype=object)
    return [frozenset(names[row]) for row in matrix]


def tag_matrix(sets: list[frozenset[str]], vocabulary: tuple[str, ...]) -> np.ndarray:
    """n x K 0/1 matrix (int8) of the sets over the vocabulary (other tags are ignored)."""
    index = {t: k for k, t in enumerate(vocabulary)}
    out = np.zeros((len(sets), len(vocabulary)), dtype=np.int8)
    for i, s in enumerate(sets):
        for t in s:
            k = index.get(t)
            if k is not None:
                out[i, k] = 1
    return out


def guess_delimiter(values: pd.Series) -> tuple[str | None, str]:
    """The delimiter the text labels use, and the evidence in words (None when none fits)."""
    text = values.dropna().astype(str)
    d = looks_like_tags(text)
    if d is None:
        return None, ""
    share = float(text.str.contains(d, regex=False).mean())
    parts = text.str.split(d).explode().str.strip()
    return d, (f"{share:.0%} of the labels hold {d!r}; their {parts.nunique():,} distinct tags "
               f"are fewer than the {text.nunique():,} distinct labels")


def decide_tags(df: pd.DataFrame, label: str, task: str, label_columns: tuple[str, ...] = (),
                delimiter: str | None = None) -> tuple[list[frozenset[str]], str, str] | None:
    """(tag sets, delimiter, reason) when the run is multi-label, else None (the task is
    decided later from the label column: tasks/task_type.py)."""
    if label_columns:
        if task not in ("auto", "multilabel"):
            raise CleansetError(f"label_columns make a multi-label target; task {task!r} cannot "
                                "take them (use task: multilabel or auto)")
        return (from_columns(df, label_columns), delimiter or ";",
                f"label_columns: {len(label_columns)} 0/1 columns ({', '.join(label_columns[:5])}"
                f"{' ...' if len(label_columns) > 5 else ''}), one tag each")
    if task not in ("auto", "multilabel") or label not in df.columns:
        return None
    values = df[label]
    lists = as_lists(values)
    if lists is not None:
        reason = (f"the label column holds lists ({int(lists.map(len).gt(0).sum()):,} rows with "
                  "tags): tag sets")
        return parse_tags(values, None), delimiter or ";", reason
    if delimiter:
        if task == "auto" and not values.dropna().astype(str).str.contains(
                delimiter, regex=False).any():
            return None
        return (parse_tags(values, delimiter), delimiter,
                f"tag sets separated by {delimiter!r} (label_delimiter)"
                + ("" if task == "auto" else "; set in the settings (task: multilabel)"))
    guessed, evidence = guess_delimiter(values)
    if guessed is None and task == "multilabel":
        text = values.dropna().astype(str)
        counts = {d: int(text.str.contains(d, regex=False).sum()) for d in TAG_DELIMITERS}
        guessed = max(counts, key=counts.get) if any(counts.values()) else ";"
        seen = ", ".join(f"{d!r} in {n:,} rows" for d, n in counts.items())
        evidence = (f"no delimiter is clearly used ({seen}); taking {guessed!r} (set "
                    "label_delimiter to choose)")
    if guessed is None:
        return None
    how = "set in the settings (task: multilabel)" if task == "multilabel" else "task auto"
    return (parse_tags(values, guessed), guessed,
            f"tag sets separated by {guessed!r}: {evidence} ({how})")


def summarize_tags(sets: list[frozenset[str]]) -> tuple[tuple[tuple[str, int], ...], int,
                                                        tuple[str, ...]]:
    """(tag counts by tag, rows with no tags, warnings: tags seen once or too rarely)."""
    counts = pd.Series([t for s in sets for t in s], dtype=object).value_counts()
    tags = tuple(sorted((str(t), int(n)) for t, n in counts.items()))
    n_empty = sum(1 for s in sets if not s)
    warnings = []
    once = [t for t, n in tags if n == 1]
    if once:
        warnings.append(f"{len(once)} tag(s) appear in one row only (a typo?): "
                        f"{', '.join(map(repr, once[:10]))}{' ...' if len(once) > 10 else ''}; "
                        "they are kept as given but not scored")
    rare = [t for t, n in tags if 1 < n < MIN_TAG_ROWS]
    if rare:
        warnings.append(f"{len(rare)} tag(s) appear in fewer than {MIN_TAG_ROWS} rows: "
                        f"{', '.join(map(repr, rare[:10]))}; kept as given but not scored")
    return tags, n_empty, tuple(warnings)


@stage("tag-sets")
def tag_sets(snapshot: Snapshot, label: str, task: str, label_columns: tuple[str, ...],
             delimiter: str | None, work_dir: str) -> TagSets | None:
    """Multi-label or not; when it is, the snapshot with the label column as canonical tag text
    (`label` is added from `label_columns` when given), the tag vocabulary and the warnings."""
    from prefect import get_run_logger

    if task not in ("auto", "multilabel") and not label_columns:
        return None
    columns = set(snapshot.columns)
    if not label_columns and label not in columns:
        return None  # validation names the missing label column
    if label_columns and label in columns and label not in label_columns:
        raise CleansetError(f"label_columns build the label column {label!r}, but the data "
                            f"already has a column {label!r}: name the tag column with --label "
                            "something else")
    # only the label's columns first: most runs are not multi-label and need nothing more
    wanted = [c for c in label_columns if c in columns] if label_columns else [label]
    found = decide_tags(snapshot.table.read(columns=wanted), label, task, tuple(label_columns),
                        delimiter)
    if found is None:
        return None
    df = snapshot.table.read()
    sets, delim, reason = found
    bad = sorted({t for s in sets for t in s if delim in t})
    if bad:
        raise CleansetError(f"tag(s) {', '.join(map(repr, bad[:5]))} contain the delimiter "
                            f"{delim!r}: set label_delimiter to another character")
    tags, n_empty, warnings = summarize_tags(sets)
    if len([t for t, n in tags if n >= MIN_TAG_ROWS]) < 1:
        raise CleansetError(f"label column {label!r}: no tag appears in at least {MIN_TAG_ROWS} "
                            f"rows ({len(tags)} distinct tags), so no tag can be cross-checked")
    df[label] = [tags_text(s, delim) for s in sets]
    logger = get_run_logger()
    logger.info("tag sets: %d tags, %d row(s) with no tags (%s)", len(tags), n_empty, reason)
    for w in warnings:
        logger.warning(w)
    table = write_table(df, Path(work_dir), "snapshots")
    columns = tuple(df.columns)
    return TagSets(snapshot=snapshot.model_copy(update={"table": table, "columns": columns}),
                   delimiter=delim, tags=tags, n_empty=n_empty, reason=reason,
                   warnings=warnings)
