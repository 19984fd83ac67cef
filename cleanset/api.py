"""The Python entry point for notebooks and scripts: the same flow as `cleanset run`.

`clean(df_or_path, label="y", **settings)` builds the DatasetSpec (any of its settings as keyword
arguments), runs `flows.clean.clean_dataset` and reads this run's results back from the warehouse.
A DataFrame is first written as Parquet under the work folder, named by its content hash, so the
same frame gives the same file, the same cache keys and the same run id. Imports of Prefect and
the stages wait for the first call: `import cleanset` stays quick.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tasks.publish import RunSummary

# Quiet, offline-friendly defaults, as for the CLI; a user's own settings win.
for _key, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "GX_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_key, _value)

# The dataset name of a DataFrame when `dataset=` is not given (a path's default is its stem).
FRAME_DATASET = "dataframe"


@dataclass(frozen=True, eq=False)
class CleanResult:
    """One finished run: `.issues` (one row per input row: flags, scores, suggested label,
    action), `.clean` (the rows kept, relabels applied), `.summary` (the RunSummary the CLI
    prints), `.report_path` (the HTML report, None when it was not written)."""

    summary: RunSummary
    issues: pd.DataFrame = field(repr=False)
    clean: pd.DataFrame = field(repr=False)
    report_path: Path | None
    flow_run_id: str = ""

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    def __repr__(self) -> str:
        s = self.summary
        return (f"CleanResult(dataset={s.dataset!r}, run_id={s.run_id!r}, rows={s.n_rows}, "
                f"clean_rows={s.n_clean_rows}, label_issues={s.n_label_issues}, "
                f"health={s.health_score:.3f})")

    def _repr_html_(self) -> str:
        return result_html(self.summary, self.report_path)


def result_html(summary: RunSummary, report: Path | None) -> str:
    """The key figures of a run as a short HTML table (Jupyter shows it for a CleanResult)."""
    s, e = summary, html.escape
    dropped = s.n_rows - s.n_clean_rows
    others = ", ".join(f"{t} {n:,}" for t, n in s.issue_counts.items() if n and t != "label")
    actions = (f"{dropped:,} dropped, {s.n_relabelled:,} relabelled, {s.n_review:,} to review"
               + ("" if s.auto_fix else " (dry run: nothing changed)"))
    rows = [("dataset", e(s.dataset)), ("run", f"<code>{e(s.run_id)}</code>"),
            ("rows", f"{s.n_rows:,}"),
            ("clean rows", f"{s.n_clean_rows:,} &rarr; table <code>{e(s.clean_table)}</code>"),
            ("label issues", f"{s.n_label_issues:,}"), ("other issues", e(others or "none")),
            ("actions", e(actions))]
    check = s.model_check
    if s.model:
        rows.append(("model", e(s.model)))
    if check:
        verdict = ("trusted to act on labels" if check.get("model_trusted")
                   else "<b>too weak: label issues go to review</b>")
        from tasks.summary import model_check_text

        rows.append(("model check", f"{e(model_check_text(check))}; {verdict}"))
        if check.get("model_warning"):
            rows.append(("warning", f"<span style='color:#b45309'>"
                         f"{e(str(check['model_warning']))}</span>"))
    rows.append(("health", f"{s.health_score:.3f} of rows have no issue; label health "
                 f"{s.label_health_score:.3f}"))
    if report is not None:
        rows.append(("report", f"<a href='{e(report.resolve().as_uri())}' target='_blank'>"
                     f"{e(str(report))}</a>"))
    rows.append(("warehouse", f"<code>{e(s.db)}</code>"))
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th>"
                   f"<td style='text-align:left'>{v}</td></tr>" for k, v in rows)
    return f"<table><caption style='text-align:left'><b>cleanset run</b></caption>{body}</table>"


def clean(data: pd.DataFrame | str | os.PathLike, label: str | None = None, *,
          config: str | os.PathLike | None = None, refresh: bool = False,
          runner: str = "threads", address: str | None = None, **settings: Any) -> CleanResult:
    """Clean a DataFrame or a file/folder/glob (anything `cleanset run` reads) and publish it.

    `settings` are DatasetSpec settings (dataset, db, id, text, features, model, policy, roles,
    group, folds, seed, dry_run, ...; `cleanset run --help` explains each); `config` a YAML file
    of them (keyword arguments win). Default warehouse: data/warehouse.duckdb, as for the CLI.
    `refresh` recomputes every cached stage; `runner`/`address` as `--runner`/`--address`.
    Runs report to PREFECT_API_URL when set (visible in the Prefect UI), else to a local
    server kept for the life of this process. Mistakes raise tasks.errors.CleansetError.
    """
    import pandas as pd

    from tasks.errors import CleansetError
    from tasks.sources import precheck
    from tasks.spec import DatasetSpec, build_spec

    unknown = sorted(set(settings) - set(DatasetSpec.model_fields) - {"dry_run", "source"})
    if unknown:
        raise CleansetError(f"unknown setting(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted([*DatasetSpec.model_fields, 'dry_run']))}")
    if "source" in settings:
        raise CleansetError("give the data as the first argument, not as source=")
    if isinstance(data, pd.DataFrame):
        probe = build_spec(config, source=FRAME_DATASET, label=label, **settings)
        settings["dataset"] = probe.dataset_name  # given, from config, else FRAME_DATASET
        source = str(frame_file(data, probe.work_path))
    elif isinstance(data, str | os.PathLike):
        source = os.fspath(data)
    else:
        raise CleansetError(f"clean() takes a pandas DataFrame or a path, not "
                            f"{type(data).__name__}")
    spec = build_spec(config, source=source, label=label, **settings)
    precheck(spec)  # files and named columns: fail fast, before any server starts
    summary = _run(spec, refresh, runner, address)
    issues, clean_rows, flow_run_id = read_run(summary)
    from tasks.report import report_path

    page = report_path(Path(summary.db), summary.dataset, summary.run_id)
    return CleanResult(summary=summary, issues=issues, clean=clean_rows,
                       report_path=page if page.exists() else None, flow_run_id=flow_run_id)


def frame_file(frame: pd.DataFrame, work: Path) -> Path:
    """The frame as Parquet under <work>/frames/<sha256>.parquet: the same frame, the same file.
    A named index becomes a column; an unnamed one is dropped (as `to_csv(index=False)`)."""
    from tasks.errors import CleansetError
    from tasks.store import write_table

    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    odd = [c for c in frame.columns if not isinstance(c, str)]
    if odd:
        raise CleansetError(f"column names must be text; rename {odd[:5]!r} "
                            "(e.g. df.columns = df.columns.astype(str))")
    if frame.columns.duplicated().any():
        twice = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise CleansetError(f"column name(s) {', '.join(map(repr, twice[:5]))} appear more "
                            "than once; rename them")
    try:
        return Path(write_table(frame, Path(work), "frames").path)
    except (TypeError, ValueError) as exc:  # pyarrow: a column of mixed or unsupported values
        raise CleansetError(f"the DataFrame cannot be stored as Parquet: {exc}; convert the "
                            "column named there to one type (e.g. .astype(str))") from None


def _run(spec, refresh: bool, runner: str, address: str | None) -> RunSummary:  # noqa: ANN001
    """The flow run, reporting to the configured Prefect API or to a kept local server."""
    from flows.local_server import kept_server, reporting_to, wanted
    from flows.runners import task_runner

    chosen = task_runner(runner, spec.workers, address)
    from prefect.settings import PREFECT_API_URL

    server = kept_server() if not PREFECT_API_URL.value() and wanted() else None
    from flows.clean import clean_dataset

    with reporting_to(server, stop=False):  # raises the run's error (a CleansetError as itself)
        return clean_dataset.with_options(task_runner=chosen)(spec, refresh=refresh)


def read_run(summary: RunSummary) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """This run's issues (input row order), clean rows and Prefect flow run id, read back from
    the warehouse."""
    import duckdb

    from tasks.warehouse import quote_ident

    with duckdb.connect(summary.db, read_only=True) as con:
        issues = con.execute("SELECT * EXCLUDE (run_id, dataset) FROM issues WHERE run_id = ? "
                             "ORDER BY rowid", [summary.run_id]).df()
        flow_run_id = con.execute("SELECT flow_run_id FROM runs WHERE run_id = ?",
                                  [summary.run_id]).fetchall()[0][0] or ""
        latest = con.execute(
            "SELECT run_id, id_column FROM runs WHERE dataset = ? AND status = 'completed' "
            "ORDER BY finished_at DESC LIMIT 1", [summary.dataset]).fetchall()
        if latest and latest[0][0] == summary.run_id:
            # in input order: the clean table keeps unchanged rows in place and adds changed
            # ones at its end (publish.replace_clean); the issues rows are in input order
            table = quote_ident(summary.clean_table)
            key = latest[0][1]
            if key in {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}:
                clean_rows = con.execute(
                    f"SELECT c.* FROM {table} c LEFT JOIN (SELECT row_id, min(rowid) AS "
                    "position FROM issues WHERE run_id = ? GROUP BY row_id) i ON "
                    f"CAST(c.{quote_ident(key)} AS VARCHAR) = i.row_id ORDER BY i.position "
                    "NULLS LAST", [summary.run_id]).df()
            else:
                clean_rows = con.execute(f"SELECT * FROM {table}").df()
        else:  # another run has since replaced the clean table: this run's rows from history
            history = quote_ident(f"{summary.dataset}_clean_history")
            clean_rows = con.execute(f"SELECT * EXCLUDE (run_id) FROM {history} WHERE "
                                     "run_id = ?", [summary.run_id]).df().dropna(axis=1,
                                                                                how="all")
    return issues, clean_rows, flow_run_id
