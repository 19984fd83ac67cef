"""validate: run Great Expectations (GX Core 1.x) suites against the snapshot.

Two suites run: a generic one derived from the DatasetSpec (columns present, label non-null
recorded (rows with no label are not quarantined: issue type `unlabeled`), at least two
classes, id unique) and, optionally, the dataset's own suite JSON. GX's `severity`
decides what a failure does: `critical` stops the run before anything is published; a failed
row-level (column map) expectation of severity `warning` quarantines the failing rows (issue
`invalid`); `info` is only recorded.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict

from tasks.caching import stage
from tasks.errors import CleansetError
from tasks.ingest import Snapshot
from tasks.store import ArrayRef, write_array

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class ExpectationOutcome(BaseModel):
    """One expectation's result, as published to the `validations` table."""

    model_config = ConfigDict(frozen=True)
    suite: str
    expectation: str
    column_name: str | None
    severity: str
    success: bool
    unexpected_count: int | None
    details: str  # JSON: kwargs, observed value, a sample of unexpected values


class Validation(BaseModel):
    """All outcomes plus the positions of rows quarantined by row-level failures."""

    model_config = ConfigDict(frozen=True)
    outcomes: tuple[ExpectationOutcome, ...]
    quarantined: ArrayRef  # positional row indices into the snapshot


def generic_suite(
    columns: list[str], label: str, id_column: str | None, required: list[str]
) -> dict[str, Any]:
    """The suite every dataset gets, as GX suite JSON. Column checks only for present columns.

    `id_column` is None when cleanset added the row_id itself (nothing to check).
    """
    exps: list[dict[str, Any]] = []
    for col in dict.fromkeys([label, *([id_column] if id_column else []), *required]):
        exps.append({"type": "expect_column_to_exist", "kwargs": {"column": col},
                     "severity": "critical"})
    if label in columns:
        # info, not warning: a row with no label is not quarantined; it gets a suggested label
        # (issue type `unlabeled`, tasks/detect.py)
        exps.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": label},
                     "severity": "info"})
        exps.append({"type": "expect_column_unique_value_count_to_be_between",
                     "kwargs": {"column": label, "min_value": 2}, "severity": "critical"})
    if id_column and id_column in columns:
        exps.append({"type": "expect_column_values_to_be_unique", "kwargs": {"column": id_column},
                     "severity": "critical"})
        exps.append({"type": "expect_column_values_to_not_be_null",
                     "kwargs": {"column": id_column}, "severity": "critical"})
    return {"name": "cleanset_generic", "expectations": exps}


def load_suite_file(path: Path) -> dict[str, Any]:
    """Read a dataset suite JSON (GX 1.x ExpectationSuite format) with a clear error if bad."""
    if not path.is_file():
        raise CleansetError(f"expectation suite {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CleansetError(f"expectation suite {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise CleansetError(
            f"expectation suite {path} must be a JSON object with an `expectations` list "
            "(GX Core 1.x format: {\"name\": ..., \"expectations\": [{\"type\": ..., "
            "\"kwargs\": {...}, \"severity\": \"critical|warning|info\"}]})"
        )
    data.setdefault("name", path.stem)
    return data


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_suites(
    df: pd.DataFrame, suites: list[dict[str, Any]]
) -> list[tuple[ExpectationOutcome, np.ndarray]]:
    """Validate df against GX suites (given as suite JSON).

    Returns each expectation's outcome with the positions of the rows it found unexpected
    (empty for table-level expectations); `details` keeps only a sample of those positions.
    """
    with _gx_lock:
        gx = import_gx()
        return _run_suites(gx, _batch_definition(), df, suites)


# Importing GX Core costs seconds; two of them are for parts cleanset never uses (measured in
# bench/results/fixed_cost_i18fc_*.md):
# - SQLAlchemy (~0.6 s with GX's compatibility module): GX's SQL data sources, an optional extra
#   GX runs without (`great_expectations[sql]`). GX is imported as if it were not installed,
#   unless the process has imported it already; afterwards `import sqlalchemy` works as ever.
# - Altair (~0.5 s): only the KL-divergence expectation's renderer draws with it (`import altair
#   as alt` at its top, `alt.Chart` in the renderer). It is imported lazily: on first use.
_GX_ABSENT = ("sqlalchemy",)
_GX_LAZY = ("altair",)


def import_gx():  # noqa: ANN201 - the great_expectations module
    """`import great_expectations`, without the parts cleanset does not use (see above)."""
    if "great_expectations" in sys.modules:
        return sys.modules["great_expectations"]
    for name in _GX_LAZY:
        _import_lazily(name)
    with _hidden(_GX_ABSENT):
        import great_expectations as gx
    return gx


@contextmanager
def _hidden(names: tuple[str, ...]) -> Iterator[None]:
    """Within the block, `import <name>` raises ImportError (as if the package were not
    installed) for those of `names` the process has not imported yet."""
    hidden = [n for n in names if n not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment] - the import system's "absent"
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _import_lazily(name: str) -> None:
    """Put a stand-in for module `name` into sys.modules that imports the real module on the
    first attribute asked of it (and answers with the real module's); nothing if `name` is
    imported already or not installed. (importlib's LazyLoader does not do here: an `import`
    statement of the module reads its `__spec__`, which runs the module.)"""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    sys.modules[name] = _Deferred(name)


class _Deferred(types.ModuleType):
    """A module imported on first use (see _import_lazily)."""

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        with _deferred_lock:
            if sys.modules.get(name) is self:
                del sys.modules[name]
            real = importlib.import_module(name)
        return getattr(real, attr)


_deferred_lock = threading.Lock()


_gx_lock = threading.Lock()  # one GX context per process, used by one validation at a time


@functools.cache
def _batch_definition():  # noqa: ANN202 - a GX BatchDefinition
    """One ephemeral GX context per process, with its pandas data source, DataFrame asset and
    whole-frame batch definition: set up once (each setting saves the context's config: ~0.1 s
    per validation), given each validation's frame as a batch parameter."""
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return (ctx.data_sources.add_pandas("cleanset").add_dataframe_asset("snapshot")
            .add_batch_definition_whole_dataframe("all"))


def _run_suites(gx, batch_def, df: pd.DataFrame,  # noqa: ANN001 - the gx module, a BatchDefinition
                suites: list[dict[str, Any]]) -> list[tuple[ExpectationOutcome, np.ndarray]]:
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})
    outcomes: list[ExpectationOutcome] = []
    for spec in suites:
        try:
            suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"])
        except Exception as exc:  # noqa: BLE001 - GX raises many types for a bad suite
            raise CleansetError(f"expectation suite {spec['name']!r} is not valid: {exc}") from None
        result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
        for r in result.results:
            cfg = r.expectation_config
            res = dict(r.result or {})
            error = (r.exception_info or {}).get("exception_message")
            positions = np.array([int(i) for i in res.get("unexpected_index_list") or []
                                  if isinstance(i, (int, np.integer))], dtype=np.int64)
            details = {
                "kwargs": {k: v for k, v in cfg.kwargs.items() if k != "batch_id"},
                "observed_value": res.get("observed_value"),
                "unexpected_sample": (res.get("partial_unexpected_list") or [])[:10],
                "unexpected_rows_sample": positions[:20].tolist(),
                "error": error,
            }
            outcomes.append((ExpectationOutcome(
                suite=spec["name"],
                expectation=cfg.type,
                column_name=cfg.kwargs.get("column"),
                severity=str(getattr(cfg.severity, "value", cfg.severity) or "critical"),
                success=bool(r.success),
                unexpected_count=res.get("unexpected_count"),
                details=json.dumps(_jsonable(details)),
            ), positions))
    return outcomes


def describe_failure(o: ExpectationOutcome) -> str:
    """One readable line for a failed expectation."""
    d = json.loads(o.details)
    kwargs = ", ".join(f"{k}={v!r}" for k, v in d["kwargs"].items())
    line = f"{o.expectation}({kwargs})"
    if o.unexpected_count:
        line += f": {o.unexpected_count} unexpected value(s)"
        if d["unexpected_sample"]:
            line += f", e.g. {d['unexpected_sample'][:3]}"
    elif d.get("observed_value") is not None:
        line += f": observed {d['observed_value']!r}"
    if d.get("error"):
        line += f": {d['error']}"
    return line


RESERVED_COLUMNS = ("run_id",)  # <dataset>_clean_history adds it to every row


def check_reserved(columns: list[str]) -> None:
    """Reject data columns whose names cleanset's tables use (DuckDB names ignore case)."""
    clash = [c for c in columns if str(c).lower() in RESERVED_COLUMNS]
    if clash:
        raise CleansetError(
            f"column {clash[0]!r} has a name cleanset reserves for its history table "
            f"({', '.join(RESERVED_COLUMNS)}); rename the column in the source and run again")


def label_variants(labels: pd.Series) -> list[list[str]]:
    """Groups of distinct text labels that differ only in case or surrounding spaces
    ('cat', 'Cat', 'cat '): almost always one class written several ways."""
    values = pd.Series(pd.unique(labels.dropna()))
    values = values[values.map(lambda v: isinstance(v, str))]
    if values.empty:
        return []
    groups = values.groupby(values.str.strip().str.casefold().to_numpy()).agg(list)
    return [sorted(g) for g in groups if len(g) > 1]


def check(
    df: pd.DataFrame, label: str, id_column: str | None, required: list[str],
    dataset_suite: dict[str, Any] | None, columns: list[str] | None = None,
) -> tuple[list[ExpectationOutcome], np.ndarray]:
    """Run both suites; raise on critical failures; return outcomes and quarantined positions.

    df is the data as the user gave it (without a row_id cleanset added); quarantined rows are
    returned as positions. `columns`: all the data's columns when `df` holds only those the
    suites read.
    """
    columns = list(df.columns) if columns is None else list(columns)
    check_reserved(columns)
    suites = [generic_suite(list(df.columns), label, id_column, required)]
    if dataset_suite is not None:
        suites.append(dataset_suite)
    results = run_suites(df, suites)
    outcomes = [o for o, _ in results]
    critical = [o for o in outcomes if not o.success and o.severity == "critical"]
    if critical:
        missing = [o.column_name for o in critical if o.expectation == "expect_column_to_exist"]
        lines = [f"  - [{o.suite}] {describe_failure(o)}" for o in critical]
        hint = ""
        if missing:
            hint = f"\navailable columns: {', '.join(map(str, columns))}"
        raise CleansetError(
            f"validation failed, nothing was published; {len(critical)} critical "
            f"expectation(s) not met:\n" + "\n".join(lines) + hint
        )
    variants = label_variants(df[label]) if label in df else []
    if variants:
        shown = "; ".join(" / ".join(map(repr, g)) for g in variants[:5])
        raise CleansetError(
            f"validation failed, nothing was published: label values of column {label!r} differ "
            f"only in case or surrounding spaces ({shown}{' ...' if len(variants) > 5 else ''})"
            "; they would count as different classes. Normalise the labels in the source "
            "(e.g. trim and lower-case them) and run again")
    bad = [rows for o, rows in results if not o.success and o.severity == "warning"]
    return outcomes, np.unique(np.concatenate(bad)) if bad else np.array([], dtype=np.int64)


@stage("validate")
def validate(
    snapshot: Snapshot, label: str, required: list[str], dataset_suite: dict[str, Any] | None,
    work_dir: str,
) -> Validation:
    """Validate the snapshot with GX; critical failures stop the run (CleansetError). Without
    a dataset suite only the columns the generic suite checks are read (a million rows of
    twenty feature columns cost seconds to read and were never looked at)."""
    import pyarrow.parquet as pq

    id_column = None if snapshot.row_id_added else snapshot.id_column
    columns = None
    if dataset_suite is None:
        columns = [c for c in pq.read_schema(snapshot.table.path).names
                   if not (snapshot.row_id_added and c == snapshot.id_column)
                   and not c.startswith("__index_level_")]
        wanted = {label, *([id_column] if id_column else []), *required}
        df = snapshot.table.read(columns=[c for c in columns if c in wanted])
    else:
        df = snapshot.table.read()
        if snapshot.row_id_added:
            df = df.drop(columns=[snapshot.id_column])
    outcomes, bad = check(df, label, id_column, required, dataset_suite, columns)
    logger = get_run_logger()
    failed = [o for o in outcomes if not o.success]
    logger.info("%d expectations checked, %d failed (none critical), %d rows quarantined",
                len(outcomes), len(failed), len(bad))
    for o in failed:
        logger.warning("[%s] %s", o.severity, describe_failure(o))
    return Validation(outcomes=tuple(outcomes),
                      quarantined=write_array(bad, Path(work_dir), "quarantine"))
